"""timm's TensorFlow-ported EfficientNets (`tf_efficientnet_b0` ... `b7`: "same" padding and
BN epsilon 1e-3, as ours) -> this library's EfficientNet, by state-dict name.

timm numbers blocks `blocks.<stage>.<index>`; ours are `block<stage + 1><letter>`. A block
without expansion (timm's DepthwiseSeparableConv) calls its depthwise BN `bn1` and its
projection `conv_pw`/`bn2`; an expanding one (InvertedResidual) has `conv_pw`/`bn1` (expand),
`conv_dw`/`bn2`, `conv_pwl`/`bn3`.
"""

from __future__ import annotations

from collections.abc import Mapping

import keras
import numpy as np

from .efficientnet_specs import EfficientNetSpec

_BN = ("weight", "bias", "running_mean", "running_var")  # gamma, beta, mean, variance
_EXPANDING = {"expand_conv": "conv_pw", "expand_bn": "bn1", "dwconv": "conv_dw", "bn": "bn2",
              "project_conv": "conv_pwl", "project_bn": "bn3"}
_SEPARABLE = {"dwconv": "conv_dw", "bn": "bn1", "project_conv": "conv_pw", "project_bn": "bn2"}
_TOP = {"stem_conv": "conv_stem", "stem_bn": "bn1", "top_conv": "conv_head", "top_bn": "bn2",
        "predictions": "classifier"}


def _arrays(layer, prefix: str, state: Mapping[str, np.ndarray], used: set) -> list[np.ndarray]:
    """timm's tensors for one of our layers, in Keras' layout (their keys added to `used`)."""
    def get(name):
        key = f"{prefix}.{name}"
        if key not in state:
            raise ValueError(f"timm EfficientNet state dict has no {key!r} (for {layer.path})")
        used.add(key)
        return np.asarray(state[key], "float32")

    if isinstance(layer, keras.layers.BatchNormalization):
        return [get(n) for n in _BN]
    if isinstance(layer, keras.layers.DepthwiseConv2D):  # [C, 1, kh, kw] -> [kh, kw, C, 1]
        return [get("weight").transpose(2, 3, 0, 1)]
    if isinstance(layer, keras.layers.Dense):
        return [get("weight").T, get("bias")]
    weight = get("weight").transpose(2, 3, 1, 0)  # [O, I, kh, kw] -> [kh, kw, I, O]
    return [weight, get("bias")] if layer.use_bias else [weight]


def _targets(model: keras.Model):
    """(our layer, timm prefix) of every layer with weights."""
    for layer in model.layers:
        if not layer.weights or layer.name == "preprocess":
            continue
        if layer.name in _TOP:
            yield layer, _TOP[layer.name]
            continue
        stage, index = int(layer.name[5:-1]) - 1, ord(layer.name[-1]) - ord("a")
        prefix = f"blocks.{stage}.{index}"
        names = _EXPANDING if any(s.name == "expand_conv" for s in layer.chain) else _SEPARABLE
        for sub in layer.chain:
            if sub.name == "se":
                yield sub.reduce, f"{prefix}.se.conv_reduce"
                yield sub.expand, f"{prefix}.se.conv_expand"
            elif sub.weights:
                yield sub, f"{prefix}.{names[sub.name]}"


def load_timm_efficientnet(model: keras.Model, state: Mapping[str, np.ndarray]) -> keras.Model:
    """Copy a timm `tf_efficientnet_b*` state dict (NumPy arrays) into `model`, an EfficientNet
    B0-B7 classifier (`include_top` optional) or backbone of this library; every tensor is used
    once (but a missing head's), or a line names what is missing, left over or misshaped."""
    spec = getattr(model, "spec", None)
    if not isinstance(spec, EfficientNetSpec) or spec.version != 1:
        raise ValueError(f"load_timm_efficientnet takes an EfficientNet B0-B7 of this library, "
                         f"got {model.name!r}")
    used = set()
    for layer, prefix in _targets(model):
        arrays = _arrays(layer, prefix, state, used)
        want = [tuple(w.shape) for w in layer.weights]
        if [a.shape for a in arrays] != want:
            raise ValueError(f"timm tensor(s) {prefix}.*: shapes {[a.shape for a in arrays]} "
                             f"differ from {layer.path}'s {want}")
        layer.set_weights(arrays)
    # A headless classifier or a backbone leaves timm's head (and classifier) unused.
    ours = {layer.name for layer in model.layers}
    absent = tuple(f"{timm}." for name, timm in _TOP.items() if name not in ours)
    left = sorted(k for k in state if k not in used and not k.endswith("num_batches_tracked")
                  and not k.startswith(absent))
    if left:
        raise ValueError(f"timm state dict tensor(s) {left[:4]} have no place in {model.name}")
    return model
