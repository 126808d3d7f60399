"""Why is ResNet-50 training under KERAS_BACKEND=jax so slow on a CPU? Variants side by side.

    python -m benchmarks.jax_cpu                    # ResNet-50, batch 16, 224x224
    python -m benchmarks.jax_cpu --variants tf-onednn jax jax-onednn --steps 2

Each variant runs in a fresh interpreter (XLA_FLAGS, TF_ENABLE_ONEDNN_OPTS and the backend are
read at import) and times, after one warm-up call that includes compilation: the inference
call (`predict_on_batch`), the training step (`train_on_batch`, forward + backward + SGD) and,
for JAX, the backward pass alone (jitted `jax.grad` of the loss minus the jitted forward).
The variants are run in order, then the reference again, so drift shows. Results go to
`benchmarks/results/<machine>-<date>-jax-cpu.{json,md}`.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

# name -> (environment, model, description)
VARIANTS: dict[str, tuple[dict[str, str], str, str]] = {
    "tf-onednn": ({"KERAS_BACKEND": "tensorflow", "TF_ENABLE_ONEDNN_OPTS": "1"}, "ours",
                  "TensorFlow, oneDNN on (the reference)"),
    "tf-eigen": ({"KERAS_BACKEND": "tensorflow", "TF_ENABLE_ONEDNN_OPTS": "0"}, "ours",
                 "TensorFlow, oneDNN off"),
    "jax": ({"KERAS_BACKEND": "jax"}, "ours", "JAX, XLA defaults (jit on, NHWC)"),
    "jax-onednn": ({"KERAS_BACKEND": "jax", "XLA_FLAGS": "--xla_cpu_use_onednn=true"}, "ours",
                   "JAX, XLA_FLAGS=--xla_cpu_use_onednn=true"),
    "jax-xnnpack": ({"KERAS_BACKEND": "jax", "XLA_FLAGS": "--xla_cpu_use_xnnpack=true"}, "ours",
                    "JAX, XLA_FLAGS=--xla_cpu_use_xnnpack=true"),
    "jax-legacy-runtime": ({"KERAS_BACKEND": "jax",
                            "XLA_FLAGS": "--xla_cpu_use_thunk_runtime=false"}, "ours",
                           "JAX, XLA_FLAGS=--xla_cpu_use_thunk_runtime=false"),
    "jax-nchw": ({"KERAS_BACKEND": "jax", "KRS_BENCH_NCHW": "1"}, "keras.applications",
                 "JAX, keras.applications ResNet50 in channels_first (NCHW)"),
    "jax-nhwc-apps": ({"KERAS_BACKEND": "jax"}, "keras.applications",
                      "JAX, keras.applications ResNet50 in channels_last (NHWC)"),
    "jax-eager": ({"KERAS_BACKEND": "jax", "KRS_BENCH_NO_JIT": "1"}, "ours",
                  "JAX, jit_compile=False (op by op), inference only"),
}
DEFAULT = ["tf-onednn", "jax", "jax-onednn", "jax-xnnpack", "jax-legacy-runtime"]


def _timed(fn, steps: int) -> tuple[float, list[float]]:
    t = time.perf_counter()
    fn()
    first = time.perf_counter() - t
    times = []
    for _ in range(steps):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return first, times


def measure(model_name: str, batch: int, size: int, steps: int) -> dict:
    """Run in the child: time inference, the training step and (JAX) the backward pass."""
    import keras
    import numpy as np

    keras.utils.set_random_seed(0)
    nchw = bool(os.environ.get("KRS_BENCH_NCHW"))
    no_jit = bool(os.environ.get("KRS_BENCH_NO_JIT"))
    if nchw:
        keras.config.set_image_data_format("channels_first")
    shape = (3, size, size) if nchw else (size, size, 3)
    if model_name == "ours":
        import keras_resnet_suite as krs

        model = krs.build("resnet50", input_shape=shape)
    else:
        model = keras.applications.ResNet50(weights=None, input_shape=shape)
    rng = np.random.default_rng(0)
    x = rng.uniform(-1, 1, (batch, *shape)).astype("float32")
    y = rng.integers(0, 1000, (batch,)).astype("int32")
    model.compile(optimizer=keras.optimizers.SGD(0.01, momentum=0.9),
                  loss="sparse_categorical_crossentropy",
                  jit_compile=False if no_jit else "auto")
    out = {"backend": keras.backend.backend()}
    out["infer_first_s"], out["infer_s"] = _timed(lambda: model.predict_on_batch(x), steps)
    if no_jit:  # op by op: a training step would take minutes; the forward tells enough
        return out
    out["train_first_s"], out["train_s"] = _timed(lambda: model.train_on_batch(x, y), steps)
    if keras.backend.backend() == "jax":
        import jax

        trainable = [v.value for v in model.trainable_variables]
        frozen = [v.value for v in model.non_trainable_variables]
        loss_fn = keras.losses.SparseCategoricalCrossentropy()

        def loss(tv, xb, yb):
            pred, _ = model.stateless_call(tv, frozen, xb, training=True)
            return loss_fn(yb, pred)

        fwd = jax.jit(loss)
        grad = jax.jit(jax.grad(loss))
        out["fwd_train_first_s"], out["fwd_train_s"] = _timed(
            lambda: fwd(trainable, x, y).block_until_ready(), steps)
        out["grad_first_s"], out["grad_s"] = _timed(
            lambda: jax.block_until_ready(grad(trainable, x, y)), steps)
    return out


def _median(values: list[float]) -> float | None:
    import statistics

    return statistics.median(values) if values else None


def run_variant(name: str, batch: int, size: int, steps: int) -> dict:
    env_extra, model, what = VARIANTS[name]
    env = {k: v for k, v in os.environ.items()
           if k not in ("XLA_FLAGS", "KRS_BENCH_NCHW", "KRS_BENCH_NO_JIT")}
    env.update({"TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONPATH": str(REPO), **env_extra})
    t = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "benchmarks.jax_cpu", "--child", model,
                           "--batch", str(batch), "--size", str(size), "--steps", str(steps)],
                          cwd=REPO, env=env, capture_output=True, text=True)
    result = {"variant": name, "description": what, "model": model,
              "env": {k: v for k, v in env_extra.items() if not k.startswith("KRS_")},
              "wall_s": round(time.perf_counter() - t, 1)}
    if proc.returncode != 0:
        result["error"] = proc.stderr.strip().splitlines()[-1:] or ["exit " + str(proc.returncode)]
        return result
    result.update(json.loads(proc.stdout.strip().splitlines()[-1]))
    for key in ("infer", "train", "fwd_train", "grad"):
        if f"{key}_s" in result:
            result[f"{key}_median_s"] = round(_median(result[f"{key}_s"]), 3)
    return result


def markdown(result: dict) -> str:
    ref = next((r for r in result["variants"] if r.get("train_median_s")), None)
    lines = [f"# ResNet-50 on the CPU under JAX: variants ({result['date']})", "",
             f"- machine: {result['cpu']}, {result['cores']} cores; load average at start "
             f"{result['load_start']}, at end {result['load_end']}",
             f"- batch {result['batch']}, {result['size']}x{result['size']}, float32, SGD "
             f"momentum; median of {result['steps']} timed calls after one warm-up call "
             "(which compiles); each variant in a fresh process, run in the order below",
             "- backward = jitted `jax.grad` of the loss (forward + backward) minus the jitted "
             "forward; `vs ref` = reference training step / this one (> 1 is faster)", "",
             "| variant | inference s | train step s | vs ref | forward (train mode) s "
             "| forward+backward s | first call s (compile) |", "|---|---|---|---|---|---|---|"]
    for r in result["variants"]:
        if "error" in r:
            lines.append(f"| {r['description']} | failed: {r['error'][0][:80]} | | | | | |")
            continue
        vs = (f"{ref['train_median_s'] / r['train_median_s']:.2f}"
              if ref and r.get("train_median_s") else "-")
        lines.append(f"| {r['description']} | {r.get('infer_median_s', '-')} | "
                     f"{r.get('train_median_s', '-')} | {vs} | "
                     f"{r.get('fwd_train_median_s', '-')} | {r.get('grad_median_s', '-')} | "
                     f"{round(r.get('train_first_s', r.get('infer_first_s', 0)), 1)} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.jax_cpu",
                                description=__doc__.splitlines()[0])
    p.add_argument("--variants", nargs="+", choices=sorted(VARIANTS), default=DEFAULT)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--steps", type=int, default=3, help="timed calls per figure")
    p.add_argument("--out", type=Path, default=None)
    p.add_argument("--child", default=None, help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a.child:
        print(json.dumps(measure(a.child, a.batch, a.size, a.steps)))
        return 0
    from benchmarks import report
    from benchmarks.timing import load_average

    order = a.variants + a.variants[:1] if len(a.variants) > 1 else a.variants
    result = {"date": report.today(), "batch": a.batch, "size": a.size, "steps": a.steps,
              "load_start": load_average(), "variants": []}
    info = {"host": os.uname().nodename, "cores": os.cpu_count(), "accelerators": []}
    with open("/proc/cpuinfo") as f:
        result["cpu"] = next((ln.split(":", 1)[1].strip() for ln in f
                              if ln.startswith("model name")), "?")
    result["cores"] = info["cores"]
    for name in order:
        r = run_variant(name, a.batch, a.size, a.steps)
        print(json.dumps(r), flush=True)
        result["variants"].append(r)
    result["load_end"] = load_average()
    out = a.out or report.RESULTS_DIR
    out.mkdir(parents=True, exist_ok=True)
    stem = f"{report.machine_slug(info)}-{result['date']}-jax-cpu"
    (out / f"{stem}.json").write_text(json.dumps(result, indent=1) + "\n")
    (out / f"{stem}.md").write_text(markdown(result))
    print(markdown(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
