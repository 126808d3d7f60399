"""EfficientNet / EfficientNetV2 classifiers and C2..C5 backbones from `efficientnet_specs` rows.

A model is stem (3x3/2 conv) -> MBConv / Fused-MBConv blocks `block1a` ... -> 1x1 head conv
-> pooling -> dropout -> classifier, with keras.applications' layer names so its weights map
by name (see `efficientnet_convert`).
"""

from __future__ import annotations

import math
import os
import sys

import keras
from keras import layers

from . import compat
from .composite import HE_FAN_OUT, dtype_scope
from .convert.formats import read_state_dict
from .convert.published import available_weights, get_checkpoint
from .efficientnet_specs import EFFICIENTNET_SPECS, EfficientNetSpec, camel_name, expand_blocks
from .efficientnet_timm import load_timm_efficientnet
from .heads import classifier_top
from .mbconv import BLOCKS
from .metadata import ResNetModel, attach_checkpoint
from .normalization import norm_layer
from .weights import fetch

LEVELS = ("C2", "C3", "C4", "C5")
_SPEC_FIELDS = ("width", "depth", "resolution", "dropout", "rows", "stem_filters",
                "head_filters", "activation")


def get_spec(name_or_spec, overrides: dict | None = None) -> EfficientNetSpec:
    """The spec of a name (efficientnet_b0 ... efficientnetv2_l) with `overrides` applied."""
    if isinstance(name_or_spec, EfficientNetSpec):
        spec = name_or_spec
    else:
        key = str(name_or_spec).lower().replace("-", "_")
        if key not in EFFICIENTNET_SPECS:
            raise ValueError(f"unknown EfficientNet name {name_or_spec!r}; valid names: "
                             f"{', '.join(EFFICIENTNET_SPECS)}")
        spec = EFFICIENTNET_SPECS[key]
    overrides = overrides if overrides is not None else {}
    changes = {k: overrides.pop(k) for k in _SPEC_FIELDS if k in overrides}
    return spec.replace(**changes) if changes else spec


def _block_level(stride: int) -> str:
    return f"C{int(math.log2(stride))}"


def trunk(x, spec: EfficientNetSpec, *, norm: str = "batch", bn_epsilon: float | None = None,
          bn_momentum: float | None = None, drop_path_rate: float = 0.2,
          head: bool = True) -> dict:
    """Stem and blocks (and the 1x1 head conv where `head`); returns {"C1": ..., "C5": ...,
    "head": ...}, each level the output of its last block (timm's `features_only` taps)."""
    if not 0.0 <= drop_path_rate < 1.0:
        raise ValueError(f"drop_path_rate must be in [0, 1), got {drop_path_rate}")
    eps = spec.bn_epsilon if bn_epsilon is None else bn_epsilon
    momentum = spec.bn_momentum if bn_momentum is None else bn_momentum
    x = layers.Conv2D(spec.round_filters(spec.stem_filters), 3, strides=2, padding="same",
                      use_bias=False, kernel_initializer=keras.initializers.get(HE_FAN_OUT),
                      name="stem_conv")(x)
    x = norm_layer(norm, "stem_bn", eps, momentum)(x)
    x = layers.Activation(spec.activation, name="stem_activation")(x)
    features, stride = {"C1": x}, 2
    for row in expand_blocks(spec, drop_path_rate):
        stride *= row.stride
        x = BLOCKS[row.kind](row.filters_out, row.kernel, row.stride,
                             expand_ratio=row.expand_ratio, se_ratio=row.se_ratio,
                             activation=spec.activation, norm=norm, bn_epsilon=eps,
                             bn_momentum=momentum, drop_path_rate=row.drop_rate,
                             name=row.name)(x)
        features[_block_level(stride)] = x
    if head:
        x = layers.Conv2D(spec.round_filters(spec.head_filters), 1, use_bias=False,
                          kernel_initializer=keras.initializers.get(HE_FAN_OUT),
                          name="top_conv")(x)
        x = norm_layer(norm, "top_bn", eps, momentum)(x)
        features["head"] = layers.Activation(spec.activation, name="top_activation")(x)
    return features


def _inputs(spec, input_tensor, input_shape, include_top):
    if input_shape is None and input_tensor is None:
        input_shape = spec.input_shape if include_top else (None, None, 3)
    if input_tensor is not None and keras.backend.is_keras_tensor(input_tensor):
        return input_tensor
    if input_tensor is not None and input_shape is None:
        input_shape = tuple(keras.ops.shape(input_tensor)[1:])
    input_shape = tuple(input_shape)
    if len(input_shape) != 3 or input_shape[-1] is None or input_shape[-1] < 1:
        raise ValueError(f"input_shape must be (height, width, channels), got {input_shape}")
    small = [d for d in input_shape[:2] if d is not None and d < spec.total_stride]
    if small:
        raise ValueError(f"input_shape={input_shape} is too small for {spec.name}: height and "
                         f"width must be >= its total stride {spec.total_stride}")
    if input_tensor is None:
        return keras.Input(shape=input_shape, name="images")
    return keras.Input(tensor=input_tensor, shape=input_shape, name="images")


def build(name_or_spec: str | EfficientNetSpec, *, include_top: bool = True,
          weights: str | None = None, input_tensor=None, input_shape: tuple | None = None,
          pooling: str | None = None, classes: int | None = None,
          classifier_activation: str | None = "softmax",
          preprocessing: tuple | None = None, drop_path_rate: float = 0.2,
          norm: str = "batch", bn_epsilon: float | None = None,
          bn_momentum: float | None = None, name: str | None = None, dtype=None,
          **overrides) -> keras.Model:
    """An EfficientNet classifier (or pooled/unpooled features with `include_top=False`).

    `preprocessing=(scale, offset)` puts `x * scale + offset` (per channel) in front, as
    keras.applications' models carry their own; `weights` is None or a Keras weights file
    (keras.applications models: `convert_keras_applications`). `overrides` change the spec
    (`width=0.5`, `depth=0.5`, `resolution=...`).
    """
    spec = get_spec(name_or_spec, overrides)
    if overrides:
        raise TypeError(f"build() got unexpected keyword argument(s) {sorted(overrides)}")
    classes = spec.classes if classes is None else classes
    if isinstance(classes, bool) or not isinstance(classes, int) or classes < 1:
        raise ValueError(f"classes must be a positive integer, got {classes!r}")
    if pooling not in (None, "avg", "max"):
        raise ValueError(f"pooling must be None, 'avg' or 'max', got {pooling!r}")
    checkpoint = _checkpoint(spec, weights)
    with dtype_scope(dtype):
        inputs = _inputs(spec, input_tensor, input_shape, include_top)
        x = inputs
        if preprocessing is not None:
            scale, offset = preprocessing
            x = layers.Rescaling(scale, offset, name="preprocess")(x)
        x = trunk(x, spec, norm=norm, bn_epsilon=bn_epsilon, bn_momentum=bn_momentum,
                  drop_path_rate=drop_path_rate)["head"]
        x = classifier_top(x, include_top=include_top, classes=classes, dropout=spec.dropout,
                           classifier_activation=classifier_activation, pooling=pooling)
        model = compat.mark_called(ResNetModel(inputs, x, name=name or spec.name))
    model.spec = spec
    _load(model, weights, checkpoint)
    return model


_TORCH_FILES = (".pth", ".pt", ".bin", ".safetensors")


def _checkpoint(spec: EfficientNetSpec, weights):
    """The published checkpoint that `weights` names ("imagenet", "timm"), None for no weights
    or a file; anything else is refused in one line before the model is built."""
    if weights is None or str(weights).endswith(".weights.h5"):
        return None
    if str(weights).endswith(_TORCH_FILES):
        if not os.path.isfile(weights):
            raise FileNotFoundError(f"weights={weights!r}: no such file")
        return None
    if os.sep in str(weights) or os.path.splitext(str(weights))[1]:
        raise ValueError(f"weights={weights!r}: {spec.name} takes None, a checkpoint name "
                         f"({', '.join(available_weights(spec.name)) or 'none'}), timm's "
                         "tf_efficientnet state dict (.pth/.safetensors) or a Keras "
                         "'.weights.h5' file; convert keras.applications models with "
                         "krs.convert_keras_applications(model)")
    return get_checkpoint(spec.name, str(weights))


def _load(model: keras.Model, weights, checkpoint) -> None:
    """Load `weights`: a Keras weights file as is, timm's state dicts (a file or the verified
    download of `checkpoint`) through `load_timm_efficientnet`."""
    if checkpoint is not None:
        load_timm_efficientnet(model, read_state_dict(fetch(checkpoint)))
        attach_checkpoint(model, checkpoint)
    elif weights is not None and str(weights).endswith(_TORCH_FILES):
        load_timm_efficientnet(model, read_state_dict(weights))
    elif weights is not None:
        model.load_weights(weights)


def feature_info(spec: EfficientNetSpec, levels=LEVELS) -> dict:
    """Channels and stride of each level: the last block at strides 4, 8, 16, 32."""
    info, stride = {}, 2
    for row in expand_blocks(spec):
        stride *= row.stride
        level = _block_level(stride)
        if level in levels:
            info[level] = {"channels": row.filters_out, "stride": stride}
    return info


def freeze(model: keras.Model, spec: EfficientNetSpec, freeze_at: int) -> None:
    """`freeze_at=k`: the stem and every block whose output sits at level C1..Ck stop training
    (the ResNet backbones' detectron2 convention; 0 freezes nothing)."""
    if isinstance(freeze_at, bool) or not isinstance(freeze_at, int) or not 0 <= freeze_at <= 5:
        raise ValueError(f"freeze_at must be an integer in [0, 5], got {freeze_at!r}")
    if not freeze_at:
        return
    for layer_name in ("stem_conv", "stem_bn"):
        model.get_layer(layer_name).trainable = False
    stride = 2
    for row in expand_blocks(spec):
        stride *= row.stride
        if int(math.log2(stride)) <= freeze_at:
            model.get_layer(row.name).trainable = False


def build_backbone(name_or_spec: str | EfficientNetSpec, *, weights: str | None = None,
                   input_shape: tuple = (None, None, 3), freeze_at: int = 0,
                   norm: str = "batch", return_levels: tuple[str, ...] = LEVELS,
                   bn_epsilon: float | None = None, bn_momentum: float | None = None,
                   drop_path_rate: float = 0.0, name: str | None = None, dtype=None,
                   load_weights: bool = True, **overrides) -> keras.Model:
    """A C2..C5 feature dict backbone (no head conv) with `feature_info`, frozen BN
    (`norm="frozen"`) and `freeze_at`, as `backbones.build` gives for the ResNets;
    `load_weights=False` reads nothing but keeps a named checkpoint's preprocessing."""
    spec = get_spec(name_or_spec, overrides)
    if overrides:
        raise TypeError(f"build() got unexpected keyword argument(s) {sorted(overrides)}")
    checkpoint = _checkpoint(spec, weights)
    unknown = [lvl for lvl in return_levels if lvl not in LEVELS]
    if unknown or not return_levels:
        raise ValueError(f"return_levels must be a non-empty subset of {LEVELS}, "
                         f"got {tuple(return_levels)}")
    with dtype_scope(dtype):
        inputs = _inputs(spec, None, input_shape, False)
        features = trunk(inputs, spec, norm=norm, bn_epsilon=bn_epsilon,
                         bn_momentum=bn_momentum, drop_path_rate=drop_path_rate, head=False)
        outputs = {level: features[level] for level in return_levels}
        model = compat.mark_called(ResNetModel(inputs, outputs,
                                               name=name or f"{spec.name}_backbone"))
    model.spec = spec
    model.feature_info = feature_info(spec, return_levels)
    freeze(model, spec, freeze_at)
    if load_weights:
        _load(model, weights, checkpoint)
    elif checkpoint is not None:
        attach_checkpoint(model, checkpoint)
    return model


def _make_builder(model_name: str):
    def builder(include_top: bool = True, weights: str | None = None, input_tensor=None,
                input_shape: tuple | None = None, pooling: str | None = None,
                classes: int | None = None, classifier_activation: str | None = "softmax",
                name: str | None = None, dtype=None, **overrides) -> keras.Model:
        return build(model_name, include_top=include_top, weights=weights,
                     input_tensor=input_tensor, input_shape=input_shape, pooling=pooling,
                     classes=classes, classifier_activation=classifier_activation, name=name,
                     dtype=dtype, **overrides)

    spec = EFFICIENTNET_SPECS[model_name]
    builder.__name__ = builder.__qualname__ = camel_name(model_name)
    builder.__doc__ = (f"{model_name}: EfficientNet{'V2' if spec.version == 2 else ''} at "
                       f"{spec.resolution} px (width x{spec.width}, depth x{spec.depth}); "
                       "arguments as keras.applications, plus any `build` option.")
    return builder


BUILDERS = {camel_name(n): _make_builder(n) for n in EFFICIENTNET_SPECS}
_module = sys.modules[__name__]
for _name, _fn in BUILDERS.items():
    setattr(_module, _name, _fn)

__all__ = ["LEVELS", "build", "build_backbone", "feature_info", "freeze", "get_spec", "trunk",
           *BUILDERS]
