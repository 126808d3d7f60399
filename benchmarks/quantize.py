"""`export.quantize` measured: accuracy of every route on the published CIFAR ResNet-20/56 over
the 10,000 real test images, and ResNet-50 images/s of each route against our float32
SavedModel at batch 1 and 16 (paired rounds in one process, wall and process-CPU time).

    python -m benchmarks.quantize [--only accuracy|speed] [--rounds 6] [--limit N]

Calibration: 300 training images drawn with seed 0 (CIFAR); 32 seeded random inputs for the
ResNet-50 speed case (random weights: speed only). Writes
`benchmarks/results/quantize-<host>-<date>.{json,md}`.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks.timing import Case, alternate, load_average, median, paired_ratio

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("KRS_DATA_DIR", REPO.parent / "shared" / "data"))
ROUTES = (("openvino", "int8"), ("onnx", "int8"), ("litert", "int8"), ("openvino", "bf16"))
CHECKPOINTS = {"resnet20": "resnet20-12fca82f.th", "resnet56": "resnet56-4bfd9763.th"}


def accuracy(archs=("resnet20", "resnet56"), routes=ROUTES, limit: int | None = None,
             calibration: int = 300) -> list[dict]:
    """Float32 vs quantized top-1 and argmax agreement per (model, route), on the test images
    (the gate's own report)."""
    import keras_resnet_suite as krs
    from keras_resnet_suite import export
    from keras_resnet_suite.data import load_cifar_arrays

    train, _, test, labels, _, _ = load_cifar_arrays(str(DATA / "cifar10-jpeg.tar.gz"))
    test, labels = (test, labels) if limit is None else (test[:limit], labels[:limit])
    rows = []
    for arch in archs:
        model = krs.build(arch, weights=str(DATA / "cifar-resnet-checkpoints" / CHECKPOINTS[arch]),
                          classifier_activation=None)
        pick = np.random.default_rng(0).choice(len(train), calibration, replace=False)
        cal = np.asarray(model.preprocess_input(train[np.sort(pick)]))
        x = np.asarray(model.preprocess_input(test))
        for fmt, precision in routes:
            with tempfile.TemporaryDirectory() as tmp:
                t = time.perf_counter()
                path = export.quantize(model, Path(tmp) / "q", cal, format=fmt,
                                       precision=precision, validation=(x, labels),
                                       num_samples=calibration)
                report = json.loads((path / "metadata.json").read_text())["accuracy"]
            rows.append({"model": arch, "format": fmt, "precision": precision, **report,
                         "quantize_and_validate_s": round(time.perf_counter() - t, 1)})
            print(rows[-1], flush=True)
    return rows


def _predictors(tmp: Path, routes) -> dict:
    """`{name: images -> outputs}`: ResNet-50 (seeded random weights) as our float32 SavedModel
    and as each quantized route."""
    import keras

    import keras_resnet_suite as krs
    from keras_resnet_suite import export

    keras.utils.set_random_seed(0)
    model = krs.build("resnet50", input_shape=(224, 224, 3))
    cal = np.random.default_rng(1).normal(0, 1, (32, 224, 224, 3)).astype(np.float32)
    sm = export.load_predictor(export.export_saved_model(model, tmp / "float32"))
    out = {"float32 SavedModel (TF)": sm.predict}
    for fmt, precision in routes:
        path = export.quantize(model, tmp / f"{fmt}-{precision}", cal, format=fmt,
                               precision=precision, num_samples=len(cal))
        out[f"{fmt} {precision}"] = export.load_predictor(path).run
        print(f"written {fmt} {precision}", flush=True)
    return out


def speed(batches=(1, 16), rounds: int = 6, routes=ROUTES) -> list[dict]:
    """ResNet-50 images/s per route and its paired speed-up over the float32 SavedModel (wall
    and process-CPU time), per batch size."""
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        predictors = _predictors(Path(tmp), routes)
        for batch in batches:
            x = np.random.default_rng(0).normal(0, 1, (batch, 224, 224, 3)).astype(np.float32)
            cases = [Case(name, lambda f=fn, x=x: f(x), batch) for name, fn in predictors.items()]
            alternate(cases, warmup=2, repeats=rounds,
                      progress=lambda s, b=batch: print(f"batch {b} {s}", flush=True))
            base = cases[0]
            for case in cases:
                rows.append({"batch": batch, "route": case.name,
                             "images_per_s": round(batch / median(case.times), 2),
                             "images_per_cpu_s": round(batch / median(case.cpu_times), 2),
                             "speedup_wall": round(paired_ratio(case, base), 2),
                             "speedup_cpu": round(paired_ratio(case, base, cpu=True), 2)})
                print(rows[-1], flush=True)
    return rows


def _markdown(result: dict) -> str:
    lines = [f"# export.quantize, {result['date']} ({result['host']}, {result['cpu']})", "",
             f"Load average at start/end: {result['load_start']} / {result['load_end']}.", ""]
    if result.get("accuracy"):
        lines += ["## Accuracy: published CIFAR ResNets, real test images", "",
                  "| model | route | images | float32 top-1 | quantized top-1 | drop (points) "
                  "| argmax agreement |", "|---|---|---:|---:|---:|---:|---:|"]
        lines += [f"| {r['model']} | {r['format']} {r['precision']} | {r['images']} | "
                  f"{r['float32_top1']:.2f} | {r['quantized_top1']:.2f} | {r['drop_points']:.2f} "
                  f"| {r['argmax_agreement']:.2f} |" for r in result["accuracy"]]
        lines.append("")
    if result.get("speed"):
        lines += ["## ResNet-50 224x224 speed vs our float32 SavedModel (paired rounds)", "",
                  "| batch | route | images/s (wall) | images per CPU-s | speed-up (wall) | "
                  "speed-up (CPU) |", "|---:|---|---:|---:|---:|---:|"]
        lines += [f"| {r['batch']} | {r['route']} | {r['images_per_s']} | "
                  f"{r['images_per_cpu_s']} | {r['speedup_wall']}x | {r['speedup_cpu']}x |"
                  for r in result["speed"]]
    return "\n".join(lines) + "\n"


def _cpu() -> str:
    try:
        flags = next(ln for ln in open("/proc/cpuinfo") if ln.startswith("flags")).split()
        name = next(ln for ln in open("/proc/cpuinfo") if ln.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor()
    isa = [f for f in ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_int8", "amx_bf16")
           if f in flags]
    return f"{name.split(':', 1)[1].strip()}, {os.cpu_count()} cores, {' '.join(isa)}"


def run(only: str | None = None, rounds: int = 6, limit: int | None = None,
        write: bool = True) -> dict:
    """Both sections (or `only` one); results JSON + Markdown in benchmarks/results/."""
    result = {"date": datetime.date.today().isoformat(), "host": platform.node(), "cpu": _cpu(),
              "load_start": load_average()}
    if only in (None, "accuracy"):
        result["accuracy"] = accuracy(limit=limit)
    if only in (None, "speed"):
        result["speed"] = speed(rounds=rounds)
    result["load_end"] = load_average()
    if write:
        stem = REPO / "benchmarks" / "results" / f"quantize-{result['host']}-{result['date']}"
        if only:
            stem = stem.with_name(stem.name + f"-{only}")
        stem.with_suffix(".json").write_text(json.dumps(result, indent=1))
        stem.with_suffix(".md").write_text(_markdown(result))
        print(f"written {stem}.json / .md")
    return result


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--only", choices=["accuracy", "speed"])
    p.add_argument("--rounds", type=int, default=6)
    p.add_argument("--limit", type=int, help="first N test images only (a quick check)")
    args = p.parse_args(argv)
    run(args.only, args.rounds, args.limit)


if __name__ == "__main__":
    main()
