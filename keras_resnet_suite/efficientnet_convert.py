"""keras.applications EfficientNet / EfficientNetV2 -> this library's EfficientNet, same logits.

The architecture is recognised from the source's layers (block names and widths), its input
preprocessing (Rescaling / Normalization in front of `stem_conv`) becomes one per-channel
`x * scale + offset` layer, and every weight is copied by keras.applications' layer names.
"""

from __future__ import annotations

import keras
import numpy as np

from .efficientnet import build
from .efficientnet_specs import EFFICIENTNET_SPECS, EfficientNetSpec, expand_blocks
from .squeeze_excite import SqueezeExcite

_PREPROCESSING = (keras.layers.Rescaling, keras.layers.Normalization)
_PASS_THROUGH = (keras.layers.InputLayer, keras.layers.ZeroPadding2D)


def is_keras_efficientnet(source) -> bool:
    """Whether `source` is a keras.applications EfficientNet or EfficientNetV2 model."""
    if not isinstance(source, keras.Model):
        return False
    names = {layer.name for layer in source.layers}
    return {"stem_conv", "block1a_project_conv"} <= names


def _signature(layer_widths: dict, spec: EfficientNetSpec) -> bool:
    blocks = expand_blocks(spec)
    expected = {f"{b.name}_project_conv": b.filters_out for b in blocks}
    expected["stem_conv"] = spec.round_filters(spec.stem_filters)
    expected["top_conv"] = spec.round_filters(spec.head_filters)
    found = {k: v for k, v in layer_widths.items()
             if k.endswith("_project_conv") or k in ("stem_conv", "top_conv")}
    return found == expected


def keras_spec(source: keras.Model) -> EfficientNetSpec:
    """The named spec whose blocks and widths equal the source's; a ValueError otherwise."""
    widths = {layer.name: layer.filters for layer in source.layers
              if isinstance(layer, keras.layers.Conv2D)}
    # V1's first block is a depthwise MBConv; V2's is a Fused-MBConv (no depthwise conv).
    version = 1 if any(la.name == "block1a_dwconv" for la in source.layers) else 2
    for spec in EFFICIENTNET_SPECS.values():
        if spec.version == version and _signature(widths, spec):
            return spec
    raise ValueError(f"keras.applications model {source.name!r}: its blocks and widths match "
                     f"no EfficientNet row ({', '.join(EFFICIENTNET_SPECS)})")


def keras_preprocessing(source: keras.Model) -> tuple[list, list] | None:
    """The (scale, offset) per channel of the layers in front of `stem_conv` (None: none)."""
    chain = []
    for layer in source.layers:
        if layer.name == "stem_conv":
            break
        if isinstance(layer, _PREPROCESSING):
            chain.append(layer)
        elif not isinstance(layer, _PASS_THROUGH):
            raise ValueError(f"keras.applications model {source.name!r}: layer {layer.name!r} "
                             f"({type(layer).__name__}) before stem_conv is not preprocessing")
    if not chain:
        return None
    channels = source.input_shape[-1]
    probe = np.stack([np.zeros(channels), np.ones(channels)]).reshape(2, 1, 1, channels)
    y = probe  # each layer casts to its own compute dtype (float64 under a float64 policy)
    for layer in chain:
        y = keras.ops.convert_to_numpy(layer(y))
    offset, scale = y[0, 0, 0], y[1, 0, 0] - y[0, 0, 0]
    return [float(v) for v in scale], [float(v) for v in offset]


def _pairs(model: keras.Model, source_layers: dict):
    """(our layer, keras.applications layer name) for every layer with weights."""
    for layer in model.layers:
        if not layer.weights or layer.name == "preprocess":
            continue
        chain = getattr(layer, "chain", None)
        if chain is None:
            yield layer, layer.name
            continue
        for sub in chain:
            if isinstance(sub, SqueezeExcite):
                yield sub.reduce, f"{layer.name}_se_reduce"
                yield sub.expand, f"{layer.name}_se_expand"
            elif sub.weights:
                name = f"{layer.name}_{sub.name}"
                if name not in source_layers and f"{name}2" in source_layers:
                    name += "2"  # EfficientNetV2 names its depthwise conv `dwconv2`
                yield sub, name


def load_keras_applications(model: keras.Model, source: keras.Model) -> keras.Model:
    """Copy every weight of a keras.applications EfficientNet into `model` by layer name."""
    source_layers = {layer.name: layer for layer in source.layers if layer.weights}
    used = set()
    for target, name in _pairs(model, source_layers):
        if name not in source_layers:
            raise ValueError(f"keras.applications model {source.name!r} has no layer {name!r} "
                             f"for {model.name}'s weights")
        values = source_layers[name].get_weights()
        shapes = [tuple(w.shape) for w in target.weights]
        if [tuple(v.shape) for v in values] != shapes:
            raise ValueError(f"keras.applications layer {name!r}: weight shapes "
                             f"{[v.shape for v in values]} differ from ours {shapes}")
        target.set_weights(values)
        used.add(name)
    left = sorted(n for n, layer in source_layers.items()
                  if n not in used and not isinstance(layer, _PREPROCESSING))
    if left:
        raise ValueError(f"keras.applications model {source.name!r}: layer(s) {left[:5]} "
                         f"have weights this architecture does not take")
    return model


def convert_keras_applications(source: keras.Model, **build_kwargs) -> keras.Model:
    """This library's EfficientNet with a keras.applications model's weights and input
    preprocessing: the same input gives the same outputs."""
    spec = keras_spec(source)
    names = {layer.name for layer in source.layers}
    kwargs = {"include_top": "predictions" in names, "input_shape": source.input_shape[1:],
              "preprocessing": keras_preprocessing(source)}
    if kwargs["include_top"]:
        head = source.get_layer("predictions")
        kwargs["classes"] = head.units
        kwargs["classifier_activation"] = keras.activations.serialize(head.activation)
    return load_keras_applications(build(spec, **{**kwargs, **build_kwargs}), source)
