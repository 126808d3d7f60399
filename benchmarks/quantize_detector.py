"""Detector int8 in OpenVINO: which parts to keep float32 so a trained detector stays within
1 point of float32 mAP@0.5, and the speed per image (paired, same process).

    python -m benchmarks.quantize_detector --run RUN_DIR [--images 200] [--calibration 300]

RUN_DIR is a trained run folder (config.yaml + final.weights.h5, e.g. from `python -m
detection demo --out RUN_DIR`); evaluation is on its config's eval split (shapes loader).
Writes benchmarks/results/<date>-quantize-detector.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import resource
import tempfile
import time
from pathlib import Path

import numpy as np

HEADS = ("rpn", "roi_heads")
VARIANTS = (  # (label, keep_float, preset, nncf options)
    ("all int8 (performance)", (), "performance", {}),
    ("all int8 (mixed)", (), "mixed", {}),
    ("rpn float (mixed)", ("rpn",), "mixed", {}),
    ("roi_heads float (mixed)", ("roi_heads",), "mixed", {}),
    ("rpn + roi_heads float (mixed)", HEADS, "mixed", {}),
    ("rpn + roi_heads float (mixed, full bias correction)", HEADS, "mixed",
     {"fast_bias_correction": False}),
    ("rpn + roi_heads float (performance)", HEADS, "performance", {}),
)


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _speed(predictors: dict, image: np.ndarray, rounds: int = 5, calls: int = 20) -> dict:
    """Per-image wall and CPU ms of each predictor, interleaved rounds (paired)."""
    times = {k: [] for k in predictors}
    cpu = {k: [] for k in predictors}
    for p in predictors.values():
        p.predict(image)
    for _ in range(rounds):
        for name, p in predictors.items():
            t, c = time.perf_counter(), _cpu()
            for _ in range(calls):
                p.predict(image)
            times[name].append((time.perf_counter() - t) / calls * 1e3)
            cpu[name].append((_cpu() - c) / calls * 1e3)
    return {k: {"wall_ms": float(np.median(times[k])), "cpu_ms": float(np.median(cpu[k]))}
            for k in predictors}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", required=True)
    parser.add_argument("--images", type=int, default=200)
    parser.add_argument("--calibration", type=int, default=300)
    parser.add_argument("--only", nargs="*", default=None, help="variant labels to run")
    parser.add_argument("--tag", default="", help="suffix of the result files")
    args = parser.parse_args(argv)

    from detection.config import load_config
    from detection.data import synthetic
    from detection.engine.evaluate import load_detector
    from detection.export.quantize import DetectorPredictor, quantize_detector

    run = Path(args.run)
    config = load_config(run / "config.yaml")
    model = load_detector(config, str(run / "final.weights.h5"))
    spec = {k: v for k, v in config.data.eval.items() if k not in ("loader", "num_images")}
    train = {k: v for k, v in config.data.train.items() if k not in ("loader", "num_images")}
    validation = synthetic.shapes(args.images, **spec)
    calibration = np.stack([s["image"] for s in synthetic.samples(args.calibration, **train)])
    rows, predictors = [], {}
    tmp = Path(tempfile.mkdtemp())
    float_dir = quantize_detector(model, tmp / "float32", None, precision="float32")
    predictors["float32"] = DetectorPredictor(float_dir)
    for label, keep, preset, options in VARIANTS:
        if args.only and label not in args.only:
            continue
        start = time.time()
        folder = quantize_detector(model, tmp / label.replace(" ", "_"), calibration,
                                   validation=validation, max_drop=None, keep_float=keep,
                                   preset=preset, **options)
        report = json.loads((folder / "metadata.json").read_text())["accuracy"]
        predictors[label] = DetectorPredictor(folder)
        rows.append({"variant": label, "keep_float": list(keep), "preset": preset,
                     "float32_mAP": report["float32"]["mAP"], "int8_mAP": report["int8"]["mAP"],
                     "drop_points": report["drop_points"]["mAP"],
                     "seconds": round(time.time() - start, 1)})
        print(rows[-1], flush=True)
    image = calibration[:1]
    speed = _speed(predictors, image)
    for row in rows:
        row.update({f"int8_{k}": v for k, v in speed[row["variant"]].items()})
        row["speedup_cpu"] = speed["float32"]["cpu_ms"] / speed[row["variant"]]["cpu_ms"]
    date = "2026-12-08"
    out = Path(__file__).parent / "results" / f"{date}-quantize-detector{args.tag}"
    result = {"run": str(run), "config": config.name, "images": args.images,
              "calibration": args.calibration, "float32": speed["float32"],
              "image_size": list(image.shape[1:3]), "variants": rows}
    out.with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n")
    lines = [f"# Detector int8 in OpenVINO ({config.name}, {args.images} eval images, "
             f"{args.calibration} calibration images), {date}", "",
             f"float32 per image: {speed['float32']['cpu_ms']:.1f} ms CPU, "
             f"{speed['float32']['wall_ms']:.1f} ms wall", "",
             "| variant | float32 mAP@0.5 | int8 mAP@0.5 | drop (points) | int8 CPU ms/img | "
             "speed-up (CPU time) |", "|---|---:|---:|---:|---:|---:|"]
    lines += [f"| {r['variant']} | {r['float32_mAP']:.4f} | {r['int8_mAP']:.4f} | "
              f"{r['drop_points']:.2f} | {r['int8_cpu_ms']:.1f} | {r['speedup_cpu']:.2f}x |"
              for r in rows]
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
