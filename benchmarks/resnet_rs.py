"""ResNet-RS-50 inference: this library (Keras 3 on TensorFlow) against timm (PyTorch), same
weights, same inputs, same cores.

Our model gets seeded weights; timm's `resnetrs50` loads them through `to_torchvision`'s
layout in a child process (torch and TensorFlow crash in one process), so the run also checks
logit parity at the full 160-px size. Timing: the median of `--runs` batches after warm-up,
per side, wall and process CPU seconds; ours is timed before and after timm (drift check).

    python -m benchmarks.resnet_rs [--batch 8] [--size 160] [--runs 10] [--threads 2]

Writes benchmarks/results/resnet-rs-<date>.json and .md.
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
import tempfile
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
RESULTS = os.path.join(HERE, "results")

_CHILD = r"""
import json, sys, time, resource, statistics
import numpy as np, torch, timm
path, runs, threads = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
torch.set_num_threads(threads)
data = np.load(path)
x = torch.from_numpy(data["images"].transpose(0, 3, 1, 2).copy())
model = timm.create_model("resnetrs50", pretrained=False).eval()
state = {k[6:]: torch.from_numpy(data[k]) for k in data.files if k.startswith("state/")}
model.load_state_dict(state, strict=False)
with torch.inference_mode():
    for _ in range(2):
        logits = model(x)
    wall, cpu = [], []
    for _ in range(runs):
        c0, t0 = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
        model(x)
        t1, c1 = time.perf_counter(), resource.getrusage(resource.RUSAGE_SELF)
        wall.append(t1 - t0)
        cpu.append(c1.ru_utime + c1.ru_stime - c0.ru_utime - c0.ru_stime)
np.save(path + ".logits.npy", logits.numpy())
print(json.dumps({"wall_s": statistics.median(wall), "cpu_s": statistics.median(cpu),
                  "torch": torch.__version__, "timm": timm.__version__}))
"""


def _time_ours(model, images: np.ndarray, runs: int) -> dict:
    for _ in range(2):
        model.predict_on_batch(images)
    wall, cpu = [], []
    for _ in range(runs):
        c0, t0 = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
        model.predict_on_batch(images)
        t1, c1 = time.perf_counter(), resource.getrusage(resource.RUSAGE_SELF)
        wall.append(t1 - t0)
        cpu.append(c1.ru_utime + c1.ru_stime - c0.ru_utime - c0.ru_stime)
    return {"wall_s": statistics.median(wall), "cpu_s": statistics.median(cpu)}


def run(batch: int, size: int, runs: int, threads: int) -> dict:
    """Time both sides and compare their logits; returns the result record."""
    import keras
    import tensorflow as tf

    import keras_resnet_suite as krs
    from keras_resnet_suite import weights
    from keras_resnet_suite.compat import flatten_layers

    tf.config.threading.set_intra_op_parallelism_threads(threads)
    keras.utils.set_random_seed(0)
    model = krs.build("resnetrs50", input_shape=(size, size, 3), classifier_activation=None)
    # Non-trivial BN statistics, so that parity checks them too.
    rng = np.random.default_rng(0)
    for layer in flatten_layers(model):
        if isinstance(layer, keras.layers.BatchNormalization):
            g, b, m, v = (w.shape for w in layer.weights)
            layer.set_weights([rng.uniform(0.5, 1.5, g).astype("float32"),
                               rng.normal(0, 0.1, b).astype("float32"),
                               rng.normal(0, 0.1, m).astype("float32"),
                               rng.uniform(0.5, 2.0, v).astype("float32")])
    images = rng.uniform(-1, 1, (batch, size, size, 3)).astype("float32")
    ours = model.predict_on_batch(images)
    before = _time_ours(model, images, runs)
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "rs50.npz")
        state = weights.to_torchvision(model)
        np.savez(path, images=images, **{f"state/{k}": v for k, v in state.items()})
        env = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE", "OMP_NUM_THREADS": str(threads)}
        child = subprocess.run([sys.executable, "-c", _CHILD, path, str(runs), str(threads)],
                               capture_output=True, text=True, env=env, check=True)
        timm_result = json.loads(child.stdout.strip().splitlines()[-1])
        theirs = np.load(path + ".logits.npy")
    after = _time_ours(model, images, runs)
    diff = float(np.abs(ours - theirs).max())
    return {
        "date": datetime.date.today().isoformat(), "model": "resnetrs50", "batch": batch,
        "size": size, "runs": runs, "threads": threads,
        "load_avg": os.getloadavg()[0], "max_abs_logit_diff": diff,
        "max_abs_logit": float(np.abs(theirs).max()),
        "ours_before": before, "ours_after": after, "timm": timm_result,
        "keras": keras.__version__, "tensorflow": tf.__version__,
        "ratio_wall": statistics.mean([before["wall_s"], after["wall_s"]]) /
        timm_result["wall_s"],
        "ratio_cpu": statistics.mean([before["cpu_s"], after["cpu_s"]]) / timm_result["cpu_s"],
    }


def markdown(r: dict) -> str:
    """The result as a Markdown table."""
    rows = [("ours (before timm)", r["ours_before"]), ("timm", r["timm"]),
            ("ours (after timm)", r["ours_after"])]
    lines = [f"# ResNet-RS-50 inference, {r['date']}", "",
             f"batch {r['batch']} x {r['size']} px, {r['threads']} threads, median of "
             f"{r['runs']} batches; load average {r['load_avg']:.1f} at the end; Keras "
             f"{r['keras']} / TF {r['tensorflow']} vs torch {r['timm']['torch']} / timm "
             f"{r['timm']['timm']}", "",
             "| side | wall s / batch | CPU s / batch | images / s (wall) |",
             "|---|---:|---:|---:|"]
    for name, t in rows:
        lines.append(f"| {name} | {t['wall_s']:.3f} | {t['cpu_s']:.3f} | "
                     f"{r['batch'] / t['wall_s']:.1f} |")
    lines += ["", f"ours / timm: wall {r['ratio_wall']:.2f}x, CPU {r['ratio_cpu']:.2f}x "
              "(below 1: ours faster).",
              f"Same weights, same inputs: max |logit diff| {r['max_abs_logit_diff']:.2e} "
              f"(logits up to {r['max_abs_logit']:.2f}).", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--size", type=int, default=160)
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", default=RESULTS)
    args = parser.parse_args(argv)
    for name in ("batch", "size", "runs", "threads"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be >= 1, got {getattr(args, name)}")
    result = run(args.batch, args.size, args.runs, args.threads)
    stem = os.path.join(args.out, f"resnet-rs-{result['date']}")
    os.makedirs(args.out, exist_ok=True)
    with open(stem + ".json", "w") as f:
        json.dump(result, f, indent=2)
    with open(stem + ".md", "w") as f:
        f.write(markdown(result))
    print(markdown(result))


if __name__ == "__main__":
    main()
