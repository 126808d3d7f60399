"""ResNet-50 inference with a batch size known only at run time (SavedModel signatures,
`model.predict`, Keras' `model.export`): which BN path each batch size takes, and its cost.

    python -m benchmarks.bn_paths [--rounds 12] [--batches 1 8]

Three traces of the same model, each `tf.function` with a `[None, 224, 224, 3]` signature, called
alternately in one process and timed in process CPU seconds (all threads; on a shared machine
it barely depends on how much of the CPU the scheduler granted) and wall seconds:
- `fused`: every BN as TensorFlow's fused kernel (the graph before the batch-of-one branch);
- `branch`: the model as it is (one image takes the multiply-add BN where the rule says so:
  `normalization.batch_of_one_branch`, forced on here so every machine times the same graph);
- `folded`: `export.fold_batchnorm(model)`, what `export_saved_model` serves by default.
`--settings` runs each TensorFlow setting in a process of its own (oneDNN on, capped at AVX2;
oneDNN on; oneDNN off) and writes `benchmarks/results/bn-paths-<host>-<date>.{json,md}`.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

from benchmarks.settings import fresh_process

REPO = Path(__file__).resolve().parents[1]
SETTINGS = {"oneDNN on, AVX2 cap": {"TF_ENABLE_ONEDNN_OPTS": "1", "ONEDNN_MAX_CPU_ISA": "AVX2"},
            "oneDNN on": {"TF_ENABLE_ONEDNN_OPTS": "1"},
            "oneDNN off": {"TF_ENABLE_ONEDNN_OPTS": "0"}}


def measure(batches: list[int], rounds: int, name: str = "resnet50", size: int = 224
            ) -> list[dict]:
    """Median CPU and wall milliseconds per call of each trace at each batch size (and the
    largest difference of each trace's outputs from the fused one's: the paths must agree)."""
    import numpy as np
    import tensorflow as tf

    import keras_resnet_suite as krs
    from keras_resnet_suite import export, normalization

    model = krs.build(name, input_shape=(size, size, 3))
    folded, _ = export.fold_batchnorm(model)
    spec = tf.TensorSpec([None, size, size, 3], tf.float32)

    def trace(m, branch: bool):
        rule = normalization._affine_inference
        normalization._affine_inference = lambda: branch
        try:
            return tf.function(lambda x: m(x, training=False),
                               input_signature=[spec]).get_concrete_function()
        finally:
            normalization._affine_inference = rule

    fns = {"fused": trace(model, False), "branch": trace(model, True),
           "folded": trace(folded, False)}
    rng = np.random.default_rng(0)
    x = {b: tf.constant(rng.normal(size=(b, size, size, 3)).astype("float32")) for b in batches}
    cpu = {(n, b): [] for n in fns for b in batches}
    wall = {(n, b): [] for n in fns for b in batches}
    diff = {(n, b): float(np.abs(fns[n](x[b]).numpy() - fns["fused"](x[b]).numpy()).max())
            for n in fns for b in batches}
    names = list(fns)
    for r in range(rounds + 1):  # round 0 warms up
        for b in batches:
            for name in names[r % 3:] + names[: r % 3]:
                c, t = time.process_time(), time.perf_counter()
                fns[name](x[b]).numpy()
                if r:
                    cpu[(name, b)].append(time.process_time() - c)
                    wall[(name, b)].append(time.perf_counter() - t)
    return [{"path": n, "batch": b, "cpu_ms": round(1000 * statistics.median(cpu[(n, b)]), 1),
             "wall_ms": round(1000 * statistics.median(wall[(n, b)]), 1),
             "max_abs_diff": diff[(n, b)]} for n in fns for b in batches]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=12)
    p.add_argument("--batches", type=int, nargs="+", default=[1, 8])
    p.add_argument("--settings", action="store_true",
                   help="each TensorFlow setting in its own process; write the results files")
    p.add_argument("--out", default=str(REPO / "benchmarks" / "results"))
    a = p.parse_args(argv)
    if not a.settings:
        print(json.dumps(measure(a.batches, a.rounds)), flush=True)
        return 0
    rows = []
    for setting, env in SETTINGS.items():
        found = fresh_process([sys.executable, "-m", "benchmarks.bn_paths", "--rounds",
                               str(a.rounds), "--batches", *map(str, a.batches)], env,
                              what=setting, starts="[")
        rows += [{"setting": setting, **row} for row in found]
        print(f"{setting}: {found}", flush=True)
    stem = f"bn-paths-{platform.node() or 'host'}-{datetime.date.today()}"
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{stem}.json").write_text(json.dumps({"rows": rows, "rounds": a.rounds,
                                                  "load": os.getloadavg()}, indent=2))
    lines = ["ResNet-50, `[None, 224, 224, 3]` traces, medians of "
             f"{a.rounds} alternating calls: CPU ms (wall ms)", "",
             "| setting | batch | fused | branch (ours) | folded (our export) |",
             "| --- | --- | --- | --- | --- |"]
    for setting in SETTINGS:
        for b in a.batches:
            cell = {r["path"]: f"{r['cpu_ms']:.0f} ({r['wall_ms']:.0f})" for r in rows
                    if r["setting"] == setting and r["batch"] == b}
            lines.append(f"| {setting} | {b} | {cell['fused']} | {cell['branch']} | "
                         f"{cell['folded']} |")
    (out / f"{stem}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
