"""`python -m detection export --precision int8|bf16 --format openvino`: the quantized export
of a trained detector (`detection.export.quantize`), calibrated and gated on its config's data."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from detection.data.build import dataset_from_config
from detection.export.quantize import quantize_detector


def _split_images(config, split: str, count: int):
    """The first `count` elements of the config's `data.<split>` (unbatched, with labels)."""
    spec = getattr(config.data, split, None)
    if not spec:
        raise ValueError(f"export: the config has no data.{split} to calibrate or validate on")
    return dataset_from_config(spec, config.class_names(), verbose=False).take(count)


def calibration_source(value: str, config, count: int):
    """`--calibration`: a `.npy` file of images `[N, H, W, 3]`, or a data split of the config
    (`train`, `eval`)."""
    if value.endswith(".npy"):
        path = Path(value)
        if not path.is_file():
            raise ValueError(f"--calibration {value}: no such file")
        return np.load(path)
    if config is None:
        raise ValueError(f"--calibration {value}: a data split needs --config (or give a .npy "
                         f"file of images [N, H, W, 3])")
    return _split_images(config, value, count)


def run_quantized(args, model, config) -> int:
    """Quantize `model` as the export arguments say and print where and how it did."""
    validation = None
    if args.validation and config is not None:
        validation = _split_images(config, args.validation, args.validation_images)
    calibration = calibration_source(args.calibration, config, args.calibration_images)
    path = quantize_detector(model, args.out, calibration, format=args.format,
                             precision=args.precision, validation=validation,
                             max_drop=args.max_drop, num_samples=args.calibration_images)
    print(f"{args.precision} {args.format} detector written to {path} (predictor: "
          f"detection.export.quantize.DetectorPredictor)")
    report = (path / "metadata.json").read_text()
    if validation is not None:
        acc = json.loads(report)["accuracy"]
        print("; ".join(f"{k}: float32 {acc['float32'][k]:.4f}, {args.precision} "
                        f"{acc[args.precision][k]:.4f}" for k in acc["float32"]))
    return 0
