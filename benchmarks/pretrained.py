"""Pretrained detectors: seconds per image at the reference size, ours vs the library whose
checkpoint it runs (torchvision R50-FPN, detectron2 R101-C4), as ratios from one run.

    python -m benchmarks.pretrained [--repeats 3] [--rounds 2] [--cases tv_r50_fpn_v1 ...]

Both sides run the same seeded weights (`tests/detection/parity/seeded.py`, so both do the
same work: proposals, NMS, detections) on the same photo, with their own preprocessing,
on this machine's cores (torch limited to 2 threads). The reference runs in a subprocess
(torch and TensorFlow cannot share one), rounds alternate ours/theirs so that a noisy
neighbour hits both. Results: `benchmarks/results/pretrained-<host>-<date>.{json,md}`.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from keras_resnet_suite import runtime

REPO = Path(__file__).resolve().parents[1]
PARITY = REPO / "tests" / "detection" / "parity"
CASES = {"tv_r50_fpn_v1": ("torchvision/fasterrcnn_resnet50_fpn", "torchvision 0.29"),
         "d2_r101_c4": ("detectron2/faster_rcnn_R_101_C4_3x", "detectron2")}
IMAGE = "coco139"


def photo(arch_key: str) -> np.ndarray:
    """The parity reference's photo of `arch_key`, uint8 RGB [H, W, 3]."""
    from PIL import Image

    with np.load(PARITY / "reference" / f"{arch_key}__{IMAGE}.npz") as ref:
        meta = json.loads(str(ref["meta"]))
    data = Path(os.environ.get("KRS_DATA_DIR", REPO.parent / "shared" / "data"))
    return np.asarray(Image.open(data / meta["image"]).convert("RGB"))


def seeded_module():
    """The parity tests' `seeded` module (pure numpy: no torch, no TensorFlow)."""
    if str(PARITY.parent) not in sys.path:
        sys.path.insert(0, str(PARITY.parent))
    from parity import seeded

    return seeded


def seeded_detector(arch_key: str, cls: type | None = None, *, masks: str | None = None,
                    **overrides: object):
    """(model, photo as a float [1, H, W, 3] batch, canvas): our detector of `arch_key` with
    the parity tests' seeded weights, built at the photo's reference canvas; `cls` another
    detector class of the same parts (`MaskRCNN`), `masks` a Mask R-CNN parity skeleton whose
    seeded weights to load instead (e.g. "tv_mask_r50_fpn_v1": a `MaskRCNN` gets its mask head
    too, a `FasterRCNN` the box parts), `overrides` preset options (e.g. `score_threshold`)."""
    from detection import FasterRCNN
    from detection.checkpoints import presets, pretrained, registry

    seeded = seeded_module()
    pixels = photo(arch_key).astype("float32")[None]
    state = seeded.seeded_state(seeded.load_skeleton(masks or arch_key), seed=0)
    arch = pretrained.Architecture.of(registry.get(CASES[arch_key][0]))
    if masks:  # the architecture the mask state's keys tell
        arch = pretrained.infer_architecture(arch.library, state, masks)
    size = presets.reference_size(arch.preset, arch.head, *pixels.shape[1:3])
    model = (cls or FasterRCNN).from_architecture(arch, size, **overrides)
    pretrained.load_state(model, state, arch, source=masks or arch_key)
    return model, pixels, size


def _ours(arch_key: str, repeats: int):
    """A timing function for our detector on the photo at the reference canvas."""
    model, pixels, size = seeded_detector(arch_key)
    model.predict(pixels, verbose=0)  # warm-up (trace)

    def run() -> list[float]:
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            model.predict(pixels, verbose=0)
            times.append(time.perf_counter() - start)
        return times

    return run, size


def reference_times(arch_key: str, repeats: int, python: str) -> list[float]:
    """The reference library's seconds per image, timed in a torch-only subprocess (a Mask
    R-CNN parity arch, e.g. "tv_mask_r50_fpn_v1", by its own generator, on the same photo)."""
    script = "make_mask_rcnn_reference.py" if "_mask_" in arch_key else "make_reference.py"
    image = [] if "_mask_" in arch_key else ["--image", IMAGE]
    proc = subprocess.run([python, str(PARITY / script), "--time", arch_key, *image,
                           "--repeats", str(repeats)],
                          capture_output=True, text=True, timeout=3600)
    if proc.returncode != 0:
        raise RuntimeError(f"reference timing failed:\n{proc.stderr[-3000:]}")
    line = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")][-1]
    return list(json.loads(line)["times_s"])


def main(argv: list[str] | None = None) -> int:
    runtime.default_for_our_commands()  # the CPU fast path, as users' commands run, before TF
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=3, help="timed images per round and side")
    p.add_argument("--rounds", type=int, default=2, help="alternating rounds (ours, theirs)")
    p.add_argument("--cases", nargs="+", default=list(CASES), choices=list(CASES))
    p.add_argument("--python", default=os.environ.get("KRS_TORCH_PYTHON", sys.executable),
                   help="interpreter with torch/torchvision (and detectron2's dependencies)")
    p.add_argument("--out", default=str(REPO / "benchmarks" / "results"))
    a = p.parse_args(argv)
    rows = []
    for key in a.cases:
        run, size = _ours(key, a.repeats)
        ours, theirs = [], []
        for _ in range(a.rounds):
            ours += run()
            theirs += reference_times(key, a.repeats, a.python)
        row = {"case": key, "checkpoint": CASES[key][0], "peer": CASES[key][1],
               "canvas": list(size), "ours_s": statistics.median(ours),
               "theirs_s": statistics.median(theirs), "ours_all": ours, "theirs_all": theirs}
        row["speedup"] = row["theirs_s"] / row["ours_s"]
        rows.append(row)
        print(f"{key}: ours {row['ours_s']:.2f} s, {row['peer']} {row['theirs_s']:.2f} s "
              f"-> {row['speedup']:.2f}x", flush=True)
    stem = f"pretrained-{platform.node() or 'host'}-{datetime.date.today()}"
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{stem}.json").write_text(json.dumps({"rows": rows, "image": IMAGE,
                                                   "repeats": a.repeats, "rounds": a.rounds,
                                                   "tensorflow": runtime.describe()},
                                                  indent=2))
    lines = ["| checkpoint | canvas | ours (s/image) | peer | peer (s/image) | peer / ours |",
             "| --- | --- | --- | --- | --- | --- |"]
    lines += [f"| {r['checkpoint']} | {r['canvas'][0]}x{r['canvas'][1]} | {r['ours_s']:.2f} | "
              f"{r['peer']} | {r['theirs_s']:.2f} | {r['speedup']:.2f}x |" for r in rows]
    (out / f"{stem}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
