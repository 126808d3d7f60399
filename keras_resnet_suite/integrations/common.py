"""What the keras-hub and keras-cv adapters share: building our backbone from JSON-ready
options, naming its level layers, and the config that rebuilds it without reading weights."""

from __future__ import annotations

import keras

from .. import backbones

# Options that would make the rebuilt backbone differ from the saved one, or that the adapter
# sets itself, so they cannot be passed through `options`.
_RESERVED = ("weights", "input_shape", "load_weights", "name", "dtype")


def build_trunk(architecture: str, weights: str | None, options: dict | None,
                image_shape: tuple, load_weights: bool,
                dtype=None) -> tuple[keras.Model, dict]:
    """Our backbone (dict outputs C2..C5) and the JSON-ready options it was built from.

    The adapters keep `architecture`, `weights` and these options in their config, so a `.keras`
    file rebuilds the same network (with `load_weights=False`: the file holds the weights).
    """
    if not isinstance(architecture, str):
        raise TypeError(f"architecture must be a backbone name such as 'resnet50' (a string, so "
                        f"it can be saved in the model's config), got {type(architecture).__name__}")
    options = dict(options or {})
    reserved = sorted(k for k in options if k in _RESERVED)
    if reserved:
        raise ValueError(f"options must not set {reserved}: pass weights= and image_shape= to "
                         f"the adapter itself")
    # Tuples become lists in a JSON config; store them as lists so get_config round-trips.
    options = {k: list(v) if isinstance(v, tuple) else v for k, v in options.items()}
    trunk = backbones.build(architecture, weights=weights, input_shape=tuple(image_shape),
                            load_weights=load_weights, dtype=dtype, **options)
    return trunk, options


def level_layer_names(trunk: keras.Model) -> dict[str, str]:
    """{"C2": "conv2_x", ...}: the layer whose output is each level of `trunk`."""
    by_output = {id(layer.output): layer.name for layer in trunk.layers[1:]}
    return {level: by_output[id(tensor)] for level, tensor in trunk.output.items()}


# What a backbone knows about itself (architecture, levels, and with published weights how its
# images must be fed), handed on to the adapter that wraps it.
_METADATA = ("spec", "feature_info", "checkpoint", "preprocessing", "preprocess_input")


def copy_metadata(trunk: keras.Model, adapter: keras.Model) -> None:
    """Give `adapter` the trunk's spec, feature_info and, with published weights, its
    checkpoint and `preprocess_input` (so a detector's images can be fed as the weights expect)."""
    for attr in _METADATA:
        if hasattr(trunk, attr):
            setattr(adapter, attr, getattr(trunk, attr))


def adapter_config(architecture: str, weights: str | None, options: dict,
                   image_shape: tuple) -> dict:
    """The part of an adapter's config that rebuilds its backbone without reading weights."""
    return {"architecture": architecture, "weights": weights, "options": options,
            "image_shape": list(image_shape), "load_weights": False}


def host_batches(dataset, labels_key: str, preprocess=None):
    """`detection.data` batches -> `(images, {"boxes", labels_key})` for a host's `fit`.

    `dataset` holds batched `{"images", "bounding_boxes": {"boxes", "labels"}}` with a fixed
    number of boxes per image (what `detection.data.pipeline.training_batches` gives: xyxy
    pixels of the canvas, labels -1 on padding rows). Images become float32 through
    `preprocess` (e.g. the encoder's `preprocess_input`), or scaled to [0, 1] when None;
    padding rows get boxes of -1 as well; labels become float32 (what keras-cv expects).
    """
    import tensorflow as tf

    spec = dataset.element_spec
    if not isinstance(spec, dict) or "bounding_boxes" not in spec or "images" not in spec:
        raise ValueError("expected batches of {'images', 'bounding_boxes': {'boxes', 'labels'}} "
                         "(detection.data.pipeline.training_batches), got "
                         f"{sorted(spec) if isinstance(spec, dict) else type(spec).__name__}")
    if spec["images"].shape.rank != 4 or spec["bounding_boxes"]["boxes"].shape.rank != 3:
        raise ValueError("expected batched, fixed-size boxes ([batch, boxes, 4]): pass the "
                         "dataset through detection.data.pipeline.training_batches first")

    def convert(element):
        images = tf.cast(element["images"], tf.float32)
        images = preprocess(images) if preprocess is not None else images / 255.0
        labels = tf.cast(element["bounding_boxes"]["labels"], tf.float32)
        boxes = tf.cast(element["bounding_boxes"]["boxes"], tf.float32)
        boxes = tf.where(labels[..., None] < 0, -tf.ones_like(boxes), boxes)
        return images, {"boxes": boxes, labels_key: labels}

    return dataset.map(convert, num_parallel_calls=tf.data.AUTOTUNE)
