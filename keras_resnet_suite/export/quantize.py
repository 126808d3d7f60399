"""`quantize(model, path, calibration, ...)`: a classifier or backbone as an int8 (or bf16) model
for a CPU runtime (OpenVINO, ONNX Runtime, LiteRT), in a folder with the model file(s) and a
`metadata.json` that `load_predictor` reads, behind an accuracy gate.

The folder: `model.xml`+`model.bin` | `model.onnx` | `model.tflite`, and `metadata.json` (kind,
format, precision, input size, preprocessing, class names, output names, calibration, accuracy
report, and what the model knows about itself). A detector (a model whose `quantizer` names
its own quantizing function, "module:function") writes its own folder through it.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import keras
import numpy as np

from keras_resnet_suite.export import runtimes
from keras_resnet_suite.export.saved_model import _folded_or_none, _is_softmax
from keras_resnet_suite.metadata import describe, jsonable
from keras_resnet_suite.preprocessing import IMAGENET_MEAN, IMAGENET_STD

METADATA = "metadata.json"


class QuantizationRefused(ValueError):
    """The quantized model lost more accuracy than `max_drop` allows: nothing was written."""


def _first_of_pair(batch):
    return batch[0] if isinstance(batch, (tuple, list)) else batch


def _as_images(value: Any, what: str, shape: tuple) -> np.ndarray:
    """`value` (one array, or an (x, y) pair) as float32 model inputs of `shape`, or one line."""
    x = np.asarray(_first_of_pair(value))
    if x.dtype == object or not np.issubdtype(x.dtype, np.number):
        raise ValueError(f"{what}: expected numeric images, got dtype {x.dtype}")
    if x.ndim != len(shape) + 1 or any(s is not None and s != d for s, d in zip(shape, x.shape[1:],
                                                                                strict=False)):
        raise ValueError(f"{what}: expected images of shape [N, {', '.join(map(str, shape))}] "
                         f"(the model's input), got {list(x.shape)}")
    if len(x) == 0:
        raise ValueError(f"{what}: no images")
    if not np.all(np.isfinite(x)):
        raise ValueError(f"{what}: contains NaN or infinite values")
    return x.astype(np.float32)


def _from_dataset(dataset, what: str, limit: int | None) -> list:
    """`(x, y)` numpy batches of a tf.data dataset (or any iterable of batches), up to `limit`
    images."""
    out, count = [], 0
    for batch in dataset:
        batch = [np.asarray(b) for b in batch] if isinstance(batch, (tuple, list)) else \
            [np.asarray(batch)]
        out.append(batch)
        count += len(batch[0])
        if limit is not None and count >= limit:
            break
    if not out:
        raise ValueError(f"{what}: the dataset yielded no batches")
    return out


def calibration_samples(calibration: Any, shape: tuple, num_samples: int, seed: int
                        ) -> np.ndarray:
    """Up to `num_samples` model inputs from `calibration` (arrays, an (x, y) pair, or a
    tf.data dataset / iterable of batches as `model.predict` takes): a seeded random subset of
    arrays; the first `num_samples` images of a dataset (its order is its own)."""
    if isinstance(num_samples, bool) or not isinstance(num_samples, int) or num_samples < 1:
        raise ValueError(f"num_samples must be a positive int, got {num_samples!r}")
    if calibration is None:
        raise ValueError("calibration: required (model inputs, as model.predict takes them)")
    if not isinstance(calibration, (np.ndarray, tuple, list)) and hasattr(calibration, "__iter__"):
        batches = _from_dataset(calibration, "calibration", num_samples)
        return _as_images(np.concatenate([b[0] for b in batches]), "calibration",
                          shape)[:num_samples]
    images = _as_images(calibration, "calibration", shape)
    if len(images) <= num_samples:
        return images
    pick = np.sort(np.random.default_rng(seed).choice(len(images), num_samples, replace=False))
    return images[pick]


def validation_arrays(validation: Any, shape: tuple) -> tuple[np.ndarray, np.ndarray]:
    """`(images, labels)` from an `(x, y)` pair or a dataset of `(x, y)` batches; one-hot labels
    become class indices."""
    if isinstance(validation, (tuple, list)) and len(validation) == 2:
        x, y = np.asarray(validation[0]), np.asarray(validation[1])
    elif hasattr(validation, "__iter__") and not isinstance(validation, np.ndarray):
        batches = _from_dataset(validation, "validation", None)
        if len(batches[0]) < 2:
            raise ValueError("validation: the dataset must yield (images, labels) batches")
        x, y = (np.concatenate([b[i] for b in batches]) for i in (0, 1))
    else:
        raise ValueError("validation: expected (images, labels) or a dataset of such batches")
    x = _as_images(x, "validation images", shape)
    y = y.argmax(-1) if y.ndim == 2 else y.reshape(-1)
    if len(y) != len(x):
        raise ValueError(f"validation: {len(x)} images but {len(y)} labels")
    return x, y.astype(np.int64)


def accuracy_report(float_scores: np.ndarray, quant_scores: np.ndarray, labels: np.ndarray
                    ) -> dict:
    """float32 vs quantized top-1 (percent), their drop in points and the argmax agreement."""
    f, q = float_scores.argmax(-1), quant_scores.argmax(-1)
    top1_f, top1_q = 100 * float(np.mean(f == labels)), 100 * float(np.mean(q == labels))
    return {"images": int(len(labels)), "float32_top1": round(top1_f, 4),
            "quantized_top1": round(top1_q, 4), "drop_points": round(top1_f - top1_q, 4),
            "argmax_agreement": round(100 * float(np.mean(f == q)), 4)}


def _normalisation(model: keras.Model, mean, std) -> tuple[list | None, list | None, str | None]:
    """The pixel normalisation the encoded-image path applies: given, or from the model's
    preprocessing mode ("torch", "tf"; "caffe" flips channels, which mean/std cannot say)."""
    mode = getattr(model, "preprocessing", None)
    if mean is None and std is None and mode in ("torch", "tf"):
        mean, std = ((np.array(IMAGENET_MEAN) * 255, np.array(IMAGENET_STD) * 255)
                     if mode == "torch" else ([127.5] * 3, [127.5] * 3))
    def as_list(v):
        return (None if v is None else np.asarray(v, np.float64).reshape(-1).tolist())
    return as_list(mean), as_list(std), mode if isinstance(mode, str) else None


def _kind(model: keras.Model) -> str:
    return "backbone" if isinstance(model.output, dict) else "classifier"


def _metadata(model, fmt, precision, written, samples, seed, serving) -> dict:
    shape = tuple(model.input_shape[1:])
    names = list(model.output.keys()) if isinstance(model.output, dict) else ["logits"]
    return {"kind": _kind(model), "format": fmt, "precision": precision,
            "model_file": runtimes.MODEL_FILES[fmt], **written,
            "input_name": "images", "input_shape": list(shape),
            "output_names": names, "calibration": {"num_samples": len(samples), "seed": seed},
            **serving, "model": jsonable(describe(model))}


def _serving(model, mean, std, class_names, top_k, resize) -> dict:
    mean, std, mode = _normalisation(model, mean, std)
    size = model.input_shape[1:3]
    if class_names is not None and len(class_names) != int(model.output_shape[-1]):
        raise ValueError(f"class_names has {len(class_names)} names for "
                         f"{int(model.output_shape[-1])} classes")
    if resize is None and None not in size:
        resize = min(size) if min(size) <= 64 else round(min(size) * 8 / 7)
    return {"preprocessing": {"mode": mode, "mean": mean, "std": std, "resize": resize},
            "class_names": None if class_names is None else [str(c) for c in class_names],
            "top_k": int(top_k), "from_logits": not _is_softmax(model)}


def _runs(folder: Path, meta: dict, samples: np.ndarray) -> None:
    """Refuse (nothing written) a model its runtime cannot load or run, e.g. a quantizer's
    choice the runtime's kernels lack, rather than leave a folder that fails when served."""
    try:
        outputs = runtimes.open_folder_runner(folder, meta)(samples[:1])
    except Exception as error:
        reason = str(error).strip().splitlines()[-1] if str(error).strip() else type(error).__name__
        raise RuntimeError(f"quantize: the {meta['format']} {meta['precision']} model does not "
                           f"run in its runtime ({reason}); nothing written") from None
    if not all(np.all(np.isfinite(np.asarray(o, "float32"))) for o in outputs):
        raise RuntimeError(f"quantize: the {meta['format']} {meta['precision']} model outputs "
                           "non-finite values on a calibration image; nothing written")


def _gate(model, folder: Path, meta: dict, validation, max_drop) -> dict | None:
    if validation is None:
        return None
    x, y = validation_arrays(validation, tuple(model.input_shape[1:]))
    float_scores = model.predict(x, batch_size=64, verbose=0)
    quant_scores = runtimes.in_batches(runtimes.open_folder_runner(folder, meta), x)[0]
    report = accuracy_report(float_scores, quant_scores, y)
    if max_drop is not None and report["drop_points"] > max_drop:
        raise QuantizationRefused(
            f"quantize: {meta['format']} {meta['precision']} top-1 {report['quantized_top1']:.2f}"
            f"% vs float32 {report['float32_top1']:.2f}% on {report['images']} validation images"
            f" (argmax agreement {report['argmax_agreement']:.2f}%): drop "
            f"{report['drop_points']:.2f} points exceeds max_drop {max_drop}; nothing written")
    return report


def quantize(model: Any, path: str | os.PathLike, calibration: Any, *, format: str = "openvino",
             precision: str = "int8", validation: Any = None, max_drop: float | None = None,
             num_samples: int = 300, seed: int = 0, mean: Sequence[float] | None = None,
             std: Sequence[float] | None = None, class_names: Sequence[str] | None = None,
             top_k: int = 5, resize: int | None = None, **options) -> Path:
    """Write `model` as a `precision` model for the `format` runtime into the folder `path`
    (model file(s) + `metadata.json`), calibrated on `num_samples` inputs of `calibration`
    (seeded), and return the folder. With `validation` (images, labels), float32 and quantized
    top-1 and argmax agreement go into the metadata; a drop above `max_drop` points refuses
    (`QuantizationRefused`) and writes nothing. `mean`/`std`/`class_names`/`top_k`/`resize` are
    what `load_predictor(path).predict_bytes` applies (as `export_saved_model`'s); `**options`
    go to the runtime's quantizer (e.g. NNCF's `preset`, `ignored_scope`)."""
    if getattr(model, "quantizer", None):  # detectors write their own folder
        if max_drop is not None:  # else the detector's own default gate
            options["max_drop"] = max_drop
        return runtimes.by_reference(model.quantizer)(
            model, path, calibration, format=format, precision=precision,
            validation=validation, num_samples=num_samples, seed=seed, **options)
    if not isinstance(model, keras.Model) or not getattr(model, "inputs", None):
        raise TypeError(f"quantize takes a built keras.Model, got {type(model).__name__}")
    runtimes.check_supported(format, precision)
    if max_drop is not None and (isinstance(max_drop, bool) or not isinstance(max_drop, (int, float))
                                 or not 0 <= max_drop < float("inf")):
        raise ValueError(f"max_drop must be a number of top-1 points >= 0, got {max_drop!r}")
    if max_drop is not None and validation is None:
        raise ValueError("max_drop needs validation data (images, labels) to measure the drop")
    if max_drop is not None and _kind(model) != "classifier":
        raise ValueError("max_drop gates a classifier's top-1; this model outputs features")
    path = Path(path)
    if path.exists() and (not path.is_dir() or any(path.iterdir())):
        raise FileExistsError(f"{path}: exists and is not an empty folder")
    samples = calibration_samples(calibration, tuple(model.input_shape[1:]), num_samples, seed)
    serving = _serving(model, mean, std, class_names, top_k, resize)
    served = _folded_or_none(model, required=False) or model
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".quantize-", dir=path.parent) as tmp:
        folder = Path(tmp)
        written = runtimes.write(served, folder, format, precision, samples, options)
        meta = _metadata(model, format, precision, written, samples, seed, serving)
        _runs(folder, meta, samples)
        meta["accuracy"] = _gate(model, folder, meta, validation, max_drop)
        (folder / METADATA).write_text(json.dumps(meta, indent=1))
        if path.exists():
            path.rmdir()
        shutil.move(str(folder), str(path))
        folder.mkdir()  # the context manager removes what it made
    return path
