"""`keras-resnet-suite export --precision int8|bf16 --format openvino|onnx|litert`: a trained
run's classifier quantized by `export.quantize`, calibrated on images of the run's training data
(or a .npy file of model inputs), gated on its test data (or a .npz file of `x`, `y`)."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from keras_resnet_suite.file_errors import reading


def _array_file(path: str, flag: str, keys: tuple[str, ...]):
    """A .npy array, or the `keys` of a .npz file, read with one line naming the file."""
    file = Path(path)
    if not file.is_file():
        raise SystemExit(f"error: {flag} {path}: no such file (a .npy of model inputs"
                         f"{', or .npz with ' + ', '.join(keys) if len(keys) > 1 else ''})")
    with reading(file, f"{flag} file"):
        loaded = np.load(file, allow_pickle=False)
        if isinstance(loaded, np.ndarray):
            if len(keys) > 1:
                raise SystemExit(f"error: {flag} {path}: expected a .npz with "
                                 f"{', '.join(keys)}, got one array")
            return loaded
        with loaded:
            missing = [k for k in keys if k not in loaded.files]
            if missing:
                raise SystemExit(f"error: {flag} {path}: no array named {', '.join(missing)} "
                                 f"(has {', '.join(loaded.files) or 'none'})")
            values = tuple(loaded[k] for k in keys)
    return values[0] if len(keys) == 1 else values


def _from_run(cfg: dict, split: str, count: int):
    """`count` images (and labels) of the run's `split` (eval preprocessing for test), as the
    model takes them; the split's own seeded order."""
    from keras_resnet_suite.train_cli import load_data

    ds = getattr(load_data(cfg), split)
    xs, ys, n = [], [], 0
    for x, y in ds:
        xs.append(np.asarray(x))
        ys.append(np.asarray(y))
        n += len(xs[-1])
        if n >= count:
            break
    return np.concatenate(xs)[:count], np.concatenate(ys)[:count]


def _source(value: str, flag: str, cfg: dict, split: str, keys: tuple[str, ...]):
    if value.isdigit():
        if int(value) < 1:
            raise SystemExit(f"error: {flag} must be a file or a count >= 1, got {value}")
        found = _from_run(cfg, split, int(value))
        return found[0] if len(keys) == 1 else found
    return _array_file(value, flag, keys)


def cmd_quantize(args, model, cfg: dict, norm: dict) -> Path:
    """Quantize a run's model as `--format`/`--precision` into `--out` (refused in one line,
    exit 1, when the accuracy gate fails or an input is bad)."""
    from keras_resnet_suite import export

    fmt = args.format or "openvino"
    calibration = _source(args.calibration, "--calibration", cfg, "train", ("x",))
    validation = None if args.validation is None else _source(
        args.validation, "--validation", cfg, "test", ("x", "y"))
    mean, std = norm.get("mean"), norm.get("std")
    try:
        path = export.quantize(model, args.out, calibration, format=fmt,
                               precision=args.precision, validation=validation,
                               max_drop=args.max_drop, num_samples=args.num_samples,
                               seed=args.seed, mean=mean, std=std,
                               class_names=cfg.get("class_names"), top_k=args.top_k)
    except (ValueError, TypeError, ImportError, FileExistsError) as e:
        raise SystemExit(f"error: {e}") from None
    report = export.load_predictor(path).meta.get("accuracy")
    line = f"{args.precision} {fmt} model written to {path}"
    if report:
        line += (f": top-1 {report['quantized_top1']:.2f}% vs float32 "
                 f"{report['float32_top1']:.2f}% on {report['images']} images, argmax "
                 f"agreement {report['argmax_agreement']:.2f}%")
    print(line)
    return path


def configure(p: argparse.ArgumentParser) -> None:
    """The quantization flags of `keras-resnet-suite export`."""
    from keras_resnet_suite.schema import Number, arg_type

    p.add_argument("--precision", default="float32", choices=["float32", "int8", "bf16"],
                   help="float32: the SavedModel; int8/bf16: a quantized model (export.quantize)")
    p.add_argument("--format", choices=["openvino", "onnx", "litert"],
                   help="runtime of an int8/bf16 model (default openvino)")
    p.add_argument("--calibration", default="300",
                   help="N images of the run's training data, or a .npy of model inputs")
    p.add_argument("--validation",
                   help="N images of the run's test data, or a .npz with x, y: the accuracy gate")
    p.add_argument("--max-drop", type=arg_type(Number(float, low=0.0), "--max-drop"),
                   help="refuse when top-1 drops by more points")
    p.add_argument("--num-samples", type=arg_type(Number(int, low=1), "--num-samples"),
                   default=300, help="calibration images used")
    p.add_argument("--seed", type=arg_type(Number(int, low=0), "--seed"), default=0,
                   help="seed of the calibration sample")
