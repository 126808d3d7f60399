"""`load_predictor(path)`: one small loader over every exported form of a model, so swapping
float32 for int8 is changing a path.

`path` is a `quantize` folder (OpenVINO / ONNX / LiteRT, int8 or bf16: `metadata.json` says
which), a float32 SavedModel written by `export_saved_model`, or a `.keras` file. Every
predictor answers `predict(images)` (the model's normalised float input, like
`serving_default`) and `predict_bytes(image_bytes)` (encoded JPEG/PNG/GIF/BMP files, decoded
and preprocessed exactly as `serving_bytes` does), with the same output names. A folder whose
metadata names a `"predictor": "module:Class"` (detectors) is served by `Class(path)`, imported
only then.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from keras_resnet_suite.convert import load_model_file
from keras_resnet_suite.export import runtimes
from keras_resnet_suite.export.quantize import _serving
from keras_resnet_suite.export.saved_model import _preprocess, map_decoded


def _softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


class Predictor:
    """Runs one exported model with `serving_default`/`serving_bytes`' decoding, preprocessing
    and outputs (probabilities, top-k classes/probabilities/labels; features for a backbone)."""

    def __init__(self, run: runtimes.Runner, meta: dict):
        self.run, self.meta = run, meta
        self.kind = meta.get("kind", "classifier")
        self.output_names = list(meta["output_names"])

    def _outputs(self, raw: list[np.ndarray]) -> dict[str, np.ndarray]:
        if self.kind != "classifier":
            return dict(zip(self.output_names, raw, strict=True))
        scores = raw[0].astype(np.float32)
        probs = _softmax(scores) if self.meta.get("from_logits", True) else scores
        k = min(int(self.meta.get("top_k", 5)), probs.shape[-1])
        top = np.argsort(-probs, axis=-1, kind="stable")[:, :k].astype(np.int32)
        out = {"probabilities": probs, "top_k_classes": top,
               "top_k_probabilities": np.take_along_axis(probs, top, -1)}
        if self.meta.get("class_names"):
            out["top_k_labels"] = np.asarray(self.meta["class_names"], dtype=object)[top]
        return out

    def predict(self, images: np.ndarray) -> dict[str, np.ndarray]:
        """The outputs for float32 `[batch, H, W, 3]` images normalised like the model's input."""
        images = np.asarray(images, np.float32)
        shape = tuple(self.meta["input_shape"])
        if images.ndim != 4 or any(s is not None and s != d for s, d in
                                   zip(shape, images.shape[1:], strict=True)):
            raise ValueError(f"images: expected shape [batch, {', '.join(map(str, shape))}], "
                             f"got {list(images.shape)}")
        if not np.all(np.isfinite(images)):
            raise ValueError("images: contain NaN or infinite values")
        if not len(images):
            raise ValueError("images: no images")
        return self._outputs(runtimes.in_batches(self.run, images))

    __call__ = predict

    def predict_bytes(self, image_bytes: Sequence[bytes], max_pixels: int | None = None
                      ) -> dict[str, np.ndarray]:
        """The outputs for encoded images, each decoded and preprocessed as `serving_bytes`
        does; a bad element gets `valid` False, its `error`, zero probabilities and class -1."""
        import tensorflow as tf

        pre = self.meta.get("preprocessing") or {}
        size = tuple(self.meta["input_shape"][:2])
        if None in size or self.kind != "classifier":
            raise ValueError("predict_bytes needs a classifier with a fixed input size")
        mean = None if pre.get("mean") is None else np.asarray(pre["mean"], np.float32)
        std = None if pre.get("std") is None else np.asarray(pre["std"], np.float32)
        batch, valid, error = map_decoded(
            lambda image: _preprocess(image, size, pre.get("resize") or min(size), mean, std),
            tf.constant(list(image_bytes), tf.string),
            tf.TensorSpec([*size, 3], tf.float32), max_pixels)
        valid = valid.numpy()
        if not len(valid):
            raise ValueError("image_bytes: no images")
        out = self._outputs(runtimes.in_batches(self.run, batch.numpy()))
        out["probabilities"][~valid] = 0
        out["top_k_probabilities"][~valid] = 0
        out["top_k_classes"][~valid] = -1
        if "top_k_labels" in out:
            out["top_k_labels"][~valid] = ""
        out["valid"] = valid
        out["error"] = np.asarray([e.decode() for e in error.numpy()], dtype=object)
        return out


class SavedModelPredictor:
    """Our float32 SavedModel through its own signatures (`serving_default`, `serving_bytes`)."""

    def __init__(self, path: Path):
        import tensorflow as tf

        self.signatures = tf.saved_model.load(str(path)).signatures

    @staticmethod
    def _numpy(out: dict) -> dict[str, np.ndarray]:
        res = {}
        for key, value in out.items():
            value = value.numpy()
            res[key] = (np.vectorize(bytes.decode, otypes=[object])(value)
                        if value.dtype == object and value.size else value)
        return res

    def predict(self, images: np.ndarray) -> dict[str, np.ndarray]:
        """`serving_default` on float32 normalised images."""
        return self._numpy(self.signatures["serving_default"](images=np.asarray(images,
                                                                                np.float32)))

    __call__ = predict

    def predict_bytes(self, image_bytes: Sequence[bytes], max_pixels: int | None = None
                      ) -> dict[str, np.ndarray]:
        """`serving_bytes` on encoded images."""
        import tensorflow as tf

        return self._numpy(self.signatures["serving_bytes"](
            image_bytes=tf.constant(list(image_bytes), tf.string)))


def _keras_predictor(path: Path) -> Predictor:
    model = load_model_file(path, compile=False)
    meta = {"kind": "backbone" if isinstance(model.output, dict) else "classifier",
            "input_shape": list(model.input_shape[1:]),
            "output_names": list(model.output) if isinstance(model.output, dict) else ["logits"],
            **_serving(model, None, None, None, 5, None)}

    def run(x):
        out = model.predict_on_batch(x)
        return [np.asarray(out[n]) for n in meta["output_names"]] if isinstance(out, dict) \
            else [np.asarray(out)]

    return Predictor(run, meta)


def load_predictor(path: str | os.PathLike):
    """A predictor for `path`: a `quantize` folder, a SavedModel folder or a `.keras` file (see
    the module docstring); one line naming the path when it is none of them."""
    path = Path(path)
    if path.is_file() and path.suffix == ".keras":
        return _keras_predictor(path)
    if (path / "saved_model.pb").is_file():
        return SavedModelPredictor(path)
    meta_file = path / "metadata.json"
    if not meta_file.is_file():
        raise FileNotFoundError(f"{path}: not a quantize folder (no metadata.json), SavedModel "
                                "(no saved_model.pb) or .keras file")
    try:
        meta = json.loads(meta_file.read_text())
        fmt = meta["format"]
    except (ValueError, KeyError, TypeError) as e:
        raise ValueError(f"{meta_file}: unreadable metadata ({type(e).__name__}: {e})") from None
    if meta.get("predictor"):
        return runtimes.by_reference(meta["predictor"])(path)
    if fmt not in runtimes.FORMATS or not (path / runtimes.MODEL_FILES[fmt]).is_file():
        raise FileNotFoundError(f"{path}: metadata.json names format {fmt!r} but "
                                f"{runtimes.MODEL_FILES.get(fmt, 'its model file')} is missing")
    return Predictor(runtimes.open_folder_runner(path, meta), meta)
