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
