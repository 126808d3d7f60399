"""`keras-resnet-suite export --precision int8|bf16 --format openvino|onnx|litert`: a trained
run's classifier quantized by `export.quantize`, calibrated on images of the run's training data
(or a .npy file of model inputs), gated on its test data (or a .npz file of `x`, `y`)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from keras_resnet_suite import export
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


def _from_run(cfg: dict, split: str, count: int, load_data):
    """`count` images (and labels) of the run's `split` (eval preprocessing for test), as the
    model takes them; the split's own seeded order (`load_data(cfg)`: the run's data)."""
    ds = getattr(load_data(cfg), split)
    xs, ys, n = [], [], 0
    for x, y in ds:
        xs.append(np.asarray(x))
        ys.append(np.asarray(y))
        n += len(xs[-1])
        if n >= count:
            break
    return np.concatenate(xs)[:count], np.concatenate(ys)[:count]


def _source(value: str, flag: str, cfg: dict, split: str, keys: tuple[str, ...], load_data):
    if value.isdigit():
        if int(value) < 1:
            raise SystemExit(f"error: {flag} must be a file or a count >= 1, got {value}")
        found = _from_run(cfg, split, int(value), load_data)
        return found[0] if len(keys) == 1 else found
    return _array_file(value, flag, keys)


def cmd_quantize(args, model, cfg: dict, norm: dict, load_data) -> Path:
    """Quantize a run's model as `--format`/`--precision` into `--out` (refused in one line,
    exit 1, when the accuracy gate fails or an input is bad)."""
    fmt = args.format or "openvino"
    calibration = _source(args.calibration, "--calibration", cfg, "train", ("x",), load_data)
    validation = None if args.validation is None else _source(
        args.validation, "--validation", cfg, "test", ("x", "y"), load_data)
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
