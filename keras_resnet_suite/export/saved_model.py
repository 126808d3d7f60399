"""SavedModel export for serving (TF Serving, `tf.saved_model.load`), with optional BN folding.

    from keras_resnet_suite import export
    export.export_saved_model(model, "served/resnet20", mean=data.mean, class_names=data.class_names)

Two signatures, both with named inputs and outputs:
- `serving_default(images)`: float32 `[batch, H, W, 3]` exactly as the Keras model takes them
  (already normalised), so its probabilities equal the Keras model's;
- `serving_bytes(image_bytes)`: a `[batch]` string tensor of encoded JPEG/PNG/GIF/BMP images;
  decoding (EXIF orientation applied, as the Python loaders do) and the evaluation
  preprocessing (shorter side resized, centre crop, mean/std normalisation) run inside the
  graph, so a client needs nothing but the file bytes.
Outputs: `probabilities` `[batch, classes]`, `top_k_classes` (int32) and `top_k_probabilities`
`[batch, k]`, and `top_k_labels` (strings) when `class_names` are given; `serving_bytes` adds
`valid` (bool `[batch]`) and `error` (string `[batch]`, "" when valid).

Bad input: a loaded signature checks its inputs' dtypes but not their shapes, so both enforce
their declared shape in-graph first and refuse with one line naming the input and the expected
shape ("Shape of tensor images [1,32,32,4] is not compatible with expected shape [?,32,32,3]");
`serving_default` also refuses NaN or infinite pixels ("images: contain NaN ..."). In
`serving_bytes` an element that is not a whole JPEG/PNG/GIF/BMP, or declares more than
`max_pixels` pixels, is judged from its header before any decoding and answered per element:
`valid` False, `error` "image_bytes[i]: <what is wrong>", zero probabilities and top-k classes
-1; the other elements of the batch are served as if sent alone.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import keras
import numpy as np

from keras_resnet_suite import compat
from keras_resnet_suite.data import augment
from keras_resnet_suite.data.images import DECODER_MAX_PIXELS, decode_checked
from keras_resnet_suite.data.images import max_pixels as loaders_limit
from keras_resnet_suite.metadata import describe, write_asset
from keras_resnet_suite.normalization import portable_batch_branch

SIGNATURES = ("serving_default", "serving_bytes")


class NothingToFold(ValueError):
    """`fold_batchnorm` found no Conv2D -> BN pair inside this project's blocks."""


def _folds(chain: list) -> list[int]:
    """Indices `i` where `chain[i]` is a Conv2D whose output feeds only `chain[i + 1]`, a BN."""
    return [
        i for i in range(len(chain) - 1)
        if type(chain[i]) is keras.layers.Conv2D
        and isinstance(chain[i + 1], keras.layers.BatchNormalization)
        and chain[i + 1].axis in (-1, 3)
    ]  # fmt: skip


def _folded_conv(conv: keras.layers.Conv2D, bn: keras.layers.BatchNormalization):
    """A biased Conv2D computing `bn(conv(x))` in inference mode: W' = W * g / sqrt(var + eps),
    b' = beta + (b - mean) * g / sqrt(var + eps) (per output channel)."""
    kernel = np.asarray(conv.kernel, np.float64)
    bias = np.asarray(conv.bias, np.float64) if conv.use_bias else np.zeros(kernel.shape[-1])
    gamma = np.asarray(bn.gamma, np.float64) if bn.scale else 1.0
    beta = np.asarray(bn.beta, np.float64) if bn.center else 0.0
    scale = gamma / np.sqrt(np.asarray(bn.moving_variance, np.float64) + bn.epsilon)
    config = {**conv.get_config(), "use_bias": True, "name": f"{conv.name}_folded"}
    folded = keras.layers.Conv2D.from_config(config)
    folded.build((None, None, None, kernel.shape[2] * conv.groups))
    folded.set_weights([(kernel * scale).astype(np.float32),
                        (beta + (bias - np.asarray(bn.moving_mean, np.float64)) * scale)
                        .astype(np.float32)])  # fmt: skip
    return folded


def fold_batchnorm(model: keras.Model) -> tuple[keras.Model, int]:
    """A copy of `model` for inference in which every BN that directly follows a convolution
    inside this project's blocks (Stem, BasicBlock, Bottleneck, Shortcut) is folded into that
    convolution; returns `(copy, number_of_folds)`. The copy is for serving only (the BN
    statistics it drops cannot be trained again); `model` is left untouched."""
    copy = keras.models.clone_model(model)
    copy.set_weights(model.get_weights())
    count = 0
    for layer in compat.flatten_layers(copy):
        for attr, chain in list(vars(layer).items()):
            if attr.startswith("_") or not isinstance(chain, list):
                continue
            folds = _folds(chain)
            if not folds:
                continue
            new = list(chain)
            for i in reversed(folds):
                new[i : i + 2] = [_folded_conv(chain[i], chain[i + 1])]
            # The block is built, so Keras locked its layer tracking; swapping a chain is the
            # one structural edit an inference copy needs, hence the brief unlock.
            with compat.unlocked_tracking(layer):
                setattr(layer, attr, new)
            count += len(folds)
    if not count:
        raise NothingToFold(f"{model.name}: no Conv2D -> BatchNormalization pair inside this "
                         "project's blocks to fold")  # fmt: skip
    return copy, count


def _folded_or_none(model: keras.Model, required: bool) -> keras.Model | None:
    """`fold_batchnorm(model)`'s copy, or None where nothing folds and folding is optional."""
    try:
        return fold_batchnorm(model)[0]
    except NothingToFold:
        if required:
            raise
        return None


def _constant(value: np.ndarray | None):
    """A normalisation constant for the metadata asset: per-channel values as a list, a
    per-pixel mean by its shape only (it lives in the graph)."""
    if value is None or value.size <= 3:
        return None if value is None else value.reshape(-1).tolist()
    return f"per-pixel array of shape {list(value.shape)}"


def require_tensorflow_backend() -> None:
    """SavedModels are TensorFlow graphs: refuse clearly under another Keras backend."""
    if keras.backend.backend() != "tensorflow":
        raise RuntimeError(f"SavedModel export needs KERAS_BACKEND=tensorflow, running "
                           f"{keras.backend.backend()}")  # fmt: skip


def pixel_limit(max_pixels: int | None) -> int:
    """The decompression-bomb limit of a `serving_bytes` signature: `max_pixels`, or the
    loaders' limit (`data.images.max_pixels`: `$KRS_MAX_PIXELS`, else `MAX_PIXELS`) when None;
    refused unless TensorFlow's decoders can reach it."""
    limit = loaders_limit(None) if max_pixels is None else max_pixels
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= DECODER_MAX_PIXELS:
        raise ValueError(f"max_pixels must be an int from 1 to {DECODER_MAX_PIXELS} (the largest "
                         f"image TensorFlow decodes), got {max_pixels!r}")
    return limit


def map_decoded(fn: Callable, image_bytes, output_signature: Any, max_pixels: int | None = None):
    """`fn(image)` for each of a `[batch]` string tensor of encoded images, decoded to upright
    uint8 RGB `[H, W, 3]` (each its own size), stacked as `output_signature` says: the input
    side of every `serving_bytes` signature. Returns `(outputs, valid, error)`: an element
    that is not a decodable image or has more than `max_pixels` pixels (`data.images.
    decode_checked`) gets `fn` of a 1x1 black placeholder, `valid` False and `error`
    "image_bytes[i]: <what is wrong>", so one bad upload does not fail the batch."""
    import tensorflow as tf

    limit = pixel_limit(max_pixels)
    # A loaded signature checks its inputs' dtypes but not their shapes; EnsureShape refuses a
    # wrong one at the boundary, naming the input ("Shape of tensor image_bytes [] is not
    # compatible with expected shape [?]"), where a traced check would be folded away.
    image_bytes = tf.ensure_shape(image_bytes, [None])

    def one(element):
        contents, index = element
        image, valid, problem = decode_checked(contents, limit)
        error = tf.where(valid, "", tf.strings.join(
            ["image_bytes[", tf.strings.as_string(index), "]: ", problem]))
        return fn(image), valid, error

    index = tf.range(tf.shape(image_bytes)[0])
    return tf.map_fn(one, (image_bytes, index), fn_output_signature=(
        output_signature, tf.TensorSpec([], tf.bool), tf.TensorSpec([], tf.string)))


def call_batched(fn: Callable, inputs: Any) -> Any:
    """`fn(inputs)` for a batch (a tensor or a structure of them, batch axis first) that may be
    empty: the model's kernels refuse a batch of 0, so an empty one runs as one black element
    and comes back as empty outputs (what a client sending no images expects)."""
    import tensorflow as tf

    flat = tf.nest.flatten(inputs)
    n = tf.shape(flat[0])[0]

    def one_if_empty(t):
        # sides of at least 1, so a [0, 0, 0, 3] batch pads to a 1x1 image, not a 0x0 one
        filler = tf.zeros(tf.maximum(tf.shape(t), 1), t.dtype)
        return tf.cond(n > 0, lambda: t, lambda: tf.ensure_shape(filler[:1], t.shape))

    out = fn(tf.nest.map_structure(one_if_empty, inputs))
    return tf.nest.map_structure(lambda o: o[:n], out)


def invalid_to_zero(outputs: Mapping[str, Any], valid, fill: Mapping[str, Any] | None = None
                    ) -> dict:
    """`outputs` ([batch, ...] each) with the rows of invalid elements set to zero (or
    `fill[key]`), plus the `valid` flags: what a `serving_bytes` returns for a bad upload."""
    import tensorflow as tf

    fill = fill or {}
    out = {}
    for key, value in outputs.items():
        mask = tf.reshape(valid, [-1] + [1] * (value.shape.rank - 1))
        out[key] = tf.where(mask, value, tf.cast(fill.get(key, 0), value.dtype))
    out["valid"] = valid
    return out


def write_saved_model(model: keras.Model, path: str | os.PathLike,
                      endpoints: Mapping[str, tuple[Callable, list]],
                      verbose: bool = False) -> Path:
    """Write `model`'s variables and one signature per `endpoints` entry, `name: (fn,
    input_specs)` (named `tf.TensorSpec`s, so clients call with keywords), as a SavedModel
    that plain `tf.saved_model.load` serves without this project."""
    require_tensorflow_backend()
    archive = keras.export.ExportArchive()
    archive.track(model)
    path = Path(path)
    # Served on other CPUs than this one: one image must find its fast BN path everywhere.
    with portable_batch_branch():
        for name, (fn, specs) in endpoints.items():
            archive.add_endpoint(name, fn, specs)
        archive.write_out(str(path), verbose=verbose)
    return path


def _preprocess(image, size: tuple[int, int], resize: int, mean, std):
    """Decoded image -> the model's float input: shorter side to `resize`, centre crop,
    normalise."""
    import tensorflow as tf

    image = augment.resize_shorter_side(image, resize)
    h, w = tf.shape(image)[0], tf.shape(image)[1]
    top, left = (h - size[0]) // 2, (w - size[1]) // 2
    image = image[top : top + size[0], left : left + size[1]]
    image = augment.normalize(image, mean, std)
    image.set_shape([size[0], size[1], 3])
    return image


def _checked_images(images, size: tuple[int, int]):
    """`images` once they are `[batch, *size, 3]` (enforced in-graph: a loaded signature checks
    only dtypes, see `map_decoded`) and finite (NaN pixels would give NaN probabilities)."""
    import tensorflow as tf

    images = tf.ensure_shape(images, [None, *size, 3])
    finite = tf.debugging.Assert(tf.reduce_all(tf.math.is_finite(images)),
                                 ["images: contain NaN or infinite values"])
    with tf.control_dependencies([finite]):
        return tf.identity(images)


def _is_softmax(model: keras.Model) -> bool:
    activation = getattr(model.layers[-1], "activation", None)
    return getattr(activation, "__name__", "") == "softmax"


def _checked_arguments(model: keras.Model, class_names, top_k: int, resize: int | None
                       ) -> tuple[tuple[int, int], int, int]:
    """(input size, k, resize) for `export_saved_model`, or a ValueError naming the argument."""
    shape = tuple(model.input_shape[1:])
    if len(shape) != 3 or shape[-1] != 3:
        raise ValueError(f"export_saved_model expects an image model [H, W, 3], got input {shape}")
    if shape[0] is None or shape[1] is None:
        raise ValueError("serving_bytes needs a fixed input size: build the model with "
                         "input_shape=(H, W, 3)")  # fmt: skip
    num_classes = int(model.output_shape[-1])
    if class_names is not None and len(class_names) != num_classes:
        raise ValueError(f"class_names has {len(class_names)} names for {num_classes} classes")
    if top_k < 1:
        raise ValueError(f"top_k must be >= 1, got {top_k}")
    size = (int(shape[0]), int(shape[1]))
    if resize is None:
        resize = min(size) if min(size) <= 64 else round(min(size) * 8 / 7)
    if resize < min(size):
        raise ValueError(f"resize {resize} is smaller than the input side {min(size)}")
    return size, min(top_k, num_classes), resize


def export_saved_model(
    model: keras.Model,
    path: str | os.PathLike,
    *,
    mean: np.ndarray | Sequence[float] | None = None,
    std: np.ndarray | Sequence[float] | None = None,
    class_names: Sequence[str] | None = None,
    top_k: int = 5,
    resize: int | None = None,
    from_logits: bool | None = None,
    fold_bn: bool | None = None,
    max_pixels: int | None = None,
    verbose: bool = False,
) -> Path:
    """Write `model` as a SavedModel with the `serving_default` (float images) and
    `serving_bytes` (encoded images) signatures described in the module docstring.

    `mean` (per-pixel `[H, W, 3]` or per-channel `[3]`) and `std` are the training
    normalisation, applied in `serving_bytes`; `resize` is the shorter side before the centre
    crop (default: the paper's 256 for 224 inputs, i.e. input side * 8 / 7, and no resizing
    beyond the input side for inputs up to 64 px such as CIFAR). `from_logits` (default: unless
    the last layer is a softmax) adds the softmax. `fold_bn` serves `fold_batchnorm(model)`:
    by default wherever a BN follows a convolution (every model of this project), since the
    folded graph has no BN left to take a slow path at any batch size on any CPU; `False`
    serves the model as it is; `True` also refuses a model with nothing to fold.
    `max_pixels` (default `data.images.MAX_PIXELS`) is the largest image `serving_bytes`
    decodes; larger ones are answered `valid` False (a decompression-bomb guard).
    """
    import tensorflow as tf

    require_tensorflow_backend()
    size, k, resize = _checked_arguments(model, class_names, top_k, resize)
    limit = pixel_limit(max_pixels)
    mean = None if mean is None else np.asarray(mean, np.float32)
    std = None if std is None else np.asarray(std, np.float32)
    if from_logits is None:
        from_logits = not _is_softmax(model)
    served = model if fold_bn is False else _folded_or_none(model, required=bool(fold_bn))
    served = served or model
    labels = None if class_names is None else tf.constant([str(c) for c in class_names])

    def outputs(images):
        scores = served(images, training=False)
        probs = tf.nn.softmax(scores) if from_logits else tf.cast(scores, tf.float32)
        top = tf.math.top_k(probs, k=k)
        out = {"probabilities": probs, "top_k_classes": top.indices,
               "top_k_probabilities": top.values}  # fmt: skip
        if labels is not None:
            out["top_k_labels"] = tf.gather(labels, top.indices)
        return out

    def from_images(images):
        return call_batched(outputs, _checked_images(images, size))

    def from_bytes(image_bytes):
        batch, valid, error = map_decoded(
            lambda image: _preprocess(image, size, resize, mean, std), image_bytes,
            tf.TensorSpec([*size, 3], tf.float32), limit)
        out = invalid_to_zero(call_batched(outputs, batch), valid,
                              {"top_k_classes": -1, "top_k_labels": ""})
        out["error"] = error
        return out

    out = write_saved_model(served, path, {
        "serving_default": (from_images, [tf.TensorSpec([None, *size, 3], tf.float32,
                                                    name="images")]),
        "serving_bytes": (from_bytes, [tf.TensorSpec([None], tf.string, name="image_bytes")]),
    }, verbose)
    # What the model knows about itself (checkpoint, preprocessing, spec) and what
    # serving_bytes applies, readable beside the graph by any client.
    write_asset(out, {**describe(model), "serving_bytes": {
        "image_size": list(size), "resize": resize, "mean": _constant(mean), "std": _constant(std),
        "class_names": None if class_names is None else [str(c) for c in class_names]}})
    return out
