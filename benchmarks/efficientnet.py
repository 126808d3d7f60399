"""EfficientNet-B0 inference: ours vs keras.applications (same process, interleaved, ratios) and
timm's tf_efficientnet_b0 (a subprocess: torch and TensorFlow crash in one process).

    python -m benchmarks.efficientnet [--batch 8] [--rounds 10] [--size 224]

Writes benchmarks/results/efficientnet-<date>.json and .md. Wall and CPU seconds per batch
(medians over rounds); the machine is shared, so read the paired ratios, not the absolutes.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

from tqdm import tqdm

RESULTS = Path(__file__).parent / "results"

TIMM = """
import json, resource, sys, time
import torch, timm
torch.set_num_threads(int(sys.argv[3]))
torch.manual_seed(0)
m = timm.create_model("tf_efficientnet_b0", pretrained=False).eval()
x = torch.randn(int(sys.argv[1]), 3, int(sys.argv[2]), int(sys.argv[2]))
wall, cpu = [], []
with torch.inference_mode():
    m(x)
    for _ in range(int(sys.argv[4])):
        c0 = resource.getrusage(resource.RUSAGE_SELF); t0 = time.perf_counter()
        m(x)
        c1 = resource.getrusage(resource.RUSAGE_SELF)
        wall.append(time.perf_counter() - t0)
        cpu.append(c1.ru_utime + c1.ru_stime - c0.ru_utime - c0.ru_stime)
print("RESULT" + json.dumps({"wall": wall, "cpu": cpu,
                             "params": sum(p.numel() for p in m.parameters())}))
"""


def _cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def keras_rounds(batch: int, size: int, rounds: int) -> dict:
    """Interleaved rounds of ours and keras.applications' B0 under one compiled call each."""
    import keras
    import numpy as np
    import tensorflow as tf

    import keras_resnet_suite as krs

    shape = (size, size, 3)
    models = {"ours": krs.build("efficientnet_b0", input_shape=shape),
              "keras.applications": keras.applications.EfficientNetB0(weights=None,
                                                                      input_shape=shape)}
    x = tf.constant(np.random.default_rng(0).uniform(0, 255, (batch, *shape)).astype("float32"))
    fns = {k: tf.function(lambda t, m=m: m(t, training=False), jit_compile=False)
           for k, m in models.items()}
    for fn in fns.values():
        fn(x)  # trace and warm up
    out = {k: {"wall": [], "cpu": [], "params": int(m.count_params())}
           for k, m in models.items()}
    for _ in tqdm(range(rounds), desc="B0 rounds"):
        for name, fn in fns.items():
            c0, t0 = _cpu(), time.perf_counter()
            fn(x).numpy()
            out[name]["wall"].append(time.perf_counter() - t0)
            out[name]["cpu"].append(_cpu() - c0)
    return out


def timm_rounds(batch: int, size: int, rounds: int, threads: int) -> dict | None:
    """timm's tf_efficientnet_b0 in a subprocess (None where timm is not installed)."""
    env = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE"}
    proc = subprocess.run([sys.executable, "-c", TIMM, str(batch), str(size), str(threads),
                           str(rounds)], capture_output=True, text=True, env=env, timeout=900)
    line = [s for s in proc.stdout.splitlines() if s.startswith("RESULT")]
    return json.loads(line[0][len("RESULT"):]) if line else None


def table(results: dict, batch: int, size: int) -> str:
    """A Markdown table: medians and the ratio of each contender's wall time to ours."""
    ours = statistics.median(results["ours"]["wall"])
    rows = [f"EfficientNet-B0, batch {batch} at {size}x{size}, float32, CPU "
            f"({os.cpu_count()} cores visible)\n",
            "| contender | params | wall s/batch (median) | CPU s/batch (median) | wall / ours |",
            "|---|---:|---:|---:|---:|"]
    for name, r in results.items():
        wall, cpu = statistics.median(r["wall"]), statistics.median(r["cpu"])
        rows.append(f"| {name} | {r['params']:,} | {wall:.4f} | {cpu:.4f} | {wall / ours:.2f} |")
    return "\n".join(rows) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--threads", type=int, default=2, help="torch threads for timm")
    args = parser.parse_args(argv)
    if min(args.batch, args.size, args.rounds, args.threads) < 1 or args.size < 32:
        parser.error("--batch, --rounds, --threads must be >= 1 and --size >= 32")
    results = keras_rounds(args.batch, args.size, args.rounds)
    reference = timm_rounds(args.batch, args.size, args.rounds, args.threads)
    if reference is not None:
        results["timm tf_efficientnet_b0 (subprocess)"] = reference
    RESULTS.mkdir(exist_ok=True)
    stem = RESULTS / f"efficientnet-{datetime.date.today().isoformat()}"
    stem.with_suffix(".json").write_text(json.dumps(
        {"batch": args.batch, "size": args.size, "rounds": args.rounds,
         "load_before": os.getloadavg()[0], "results": results}, indent=1))
    text = table(results, args.batch, args.size)
    stem.with_suffix(".md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
