"""Images each input pipeline decodes: one worker vs two MultiWorkerMirroredStrategy workers.

    python -m benchmarks.worker_decodes [--steps 4 40]

A tiny C4 detector (`benchmarks.run_faults`' shapes config, batch 4 global) is trained with
`detection.engine.train.train` from an 8-image VOC set for each `--steps`, once on one worker
and once on two workers on 127.0.0.1 (batch 2 each); every process counts its image decodes.
The difference between two step counts removes the pipeline's fixed read-ahead: per step it
should be the global batch on one worker and half of it on each of two.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

WORKER = r"""
import os, sys
import tensorflow as tf
import detection.data.records as records
count, decode = [], records.decode_rgb
def counting(data):
    tick = tf.py_function(lambda: count.append(1) or 0, [], tf.int32)
    with tf.control_dependencies([tick]):
        return decode(data)
records.decode_rgb = counting
from detection.config import load_config
from detection.engine.train import train
train(load_config(sys.argv[1]), sys.argv[2], verbose=0, evaluate=False)
print("DECODED", len(count))
"""


def _config(root: Path, steps: int, workers: int) -> Path:
    import yaml

    from detection.data.synthetic import CLASS_NAMES, write_voc

    write_voc(root / "data" / "VOC2007", 8, "train", image_size=64, seed=1)
    config = {
        "name": "decodes",
        "model": {"backbone": "resnet18", "backbone_kwargs": {"depths": [1, 1, 1, 1], "widths": [8, 16, 32, 64],
                                      "stem_width": 8},
                  "head": "c4", "image_size": [64, 64], "anchor_sizes": [16, 32],
                  "rpn_pre_nms_topk": [200, 100], "rpn_post_nms_topk": [32, 16],
                  "rpn_batch_size": 64, "roi_batch_size": 16, "roi_pooled_size": 6,
                  "max_detections": 10, "fc_dims": [32], "seed": 0},
        "data": {"num_classes": len(CLASS_NAMES), "class_names": list(CLASS_NAMES),
                 "train": {"loader": "voc", "data_dir": str(root / "data"), "year": 2007,
                           "split": "train"}, "max_boxes": 4, "seed": 0},
        "train": {"batch_size": 4 // workers, "optimizer": "sgd", "learning_rate": 0.01,
                  "steps": steps, "checkpoint_every": steps,
                  "distribution": "multiworker" if workers > 1 else "none"},
    }
    path = root / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def decodes(steps: int, workers: int) -> list[int]:
    """Images decoded by each worker's process for a run of `steps`."""
    with tempfile.TemporaryDirectory() as tmp:
        config = _config(Path(tmp), steps, workers)
        ports = []
        for _ in range(workers):
            with socket.socket() as s:
                s.bind(("127.0.0.1", 0))
                ports.append(s.getsockname()[1])
        procs = []
        for i in range(workers):
            env = {k: v for k, v in os.environ.items() if k != "TF_CONFIG"}
            if workers > 1:
                env["TF_CONFIG"] = json.dumps({"cluster": {"worker": [
                    f"127.0.0.1:{p}" for p in ports]}, "task": {"type": "worker", "index": i}})
            procs.append(subprocess.Popen([sys.executable, "-c", WORKER, str(config),
                                           str(Path(tmp) / "run")], env=env, text=True,
                                          stdout=subprocess.PIPE, stderr=subprocess.DEVNULL))
        outs = [p.communicate(timeout=900)[0] for p in procs]
    return [int(next(ln for ln in o.splitlines() if ln.startswith("DECODED")).split()[1])
            for o in outs]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, nargs=2, default=[4, 40])
    args = parser.parse_args(argv)
    short, long = args.steps
    rows = {w: (decodes(short, w), decodes(long, w)) for w in (1, 2)}
    print(f"| workers | decoded per worker at {short} steps | at {long} | "
          f"per step per worker |\n|---|---|---|---|")
    for w, (a, b) in rows.items():
        per = [(y - x) / (long - short) for x, y in zip(a, b, strict=True)]
        print(f"| {w} | {a} | {b} | {', '.join(f'{p:.2f}' for p in per)} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
