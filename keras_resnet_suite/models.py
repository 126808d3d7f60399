"""`build(name_or_spec, ...)` and the keras.applications-style builders (ResNet50, ...).

A model is stem -> stages conv2_x ... conv5_x -> pooling -> classifier, so that
`model.summary()` reads like the paper's Table 1.
"""

from __future__ import annotations

import sys

import keras
from keras import layers

from . import compat, efficientnet, efficientnet_convert
from . import weights as weights_lib
from .composite import dtype_scope
from .convert import read_keras_h5
from .convert.published import Checkpoint
from .efficientnet_specs import is_efficientnet
from .heads import classifier_top
from .layers import DOWNSAMPLE, SHORTCUTS, Stage, Stem, norm_layer
from .metadata import ResNetModel
from .schema import FRACTION, POSITIVE, Number, validate
from .specs import ResNetSpec, available_models, camel_name, get_spec

__all__ = ["available_models", "build", "convert_checkpoint", "convert_keras_applications",
           "convert_torchvision", "load_checkpoint", "trunk"]

_SPEC_FIELDS = ("depths", "widths", "stem_width", "groups", "width_per_group", "block",
                "preact", "residual", "stem", "avg_down", "scale", "se_ratio", "stem_pool")


def _resolve_spec(name_or_spec, overrides: dict) -> ResNetSpec:
    spec = name_or_spec if isinstance(name_or_spec, ResNetSpec) else get_spec(name_or_spec)
    changes = {k: overrides.pop(k) for k in _SPEC_FIELDS if k in overrides}
    for key in ("depths", "widths"):
        if key in changes:
            changes[key] = tuple(changes[key])
    spec = spec.replace(**changes) if changes else spec
    if len(spec.depths) != len(spec.widths):
        raise ValueError(f"depths {spec.depths} and widths {spec.widths} differ in length")
    return spec


def _check_input_shape(spec: ResNetSpec, input_shape, weights) -> tuple:
    input_shape = tuple(input_shape)
    if len(input_shape) != 3:
        raise ValueError(f"input_shape must be (height, width, channels), got {input_shape}")
    h, w, c = input_shape
    if c is None or c < 1:
        raise ValueError(f"input_shape has an invalid channel count: {input_shape}")
    if weights is not None and c != 3:
        raise ValueError(f"input_shape={input_shape}: pretrained weights need 3 input channels, "
                         f"got {c}")
    too_small = [d for d in (h, w) if d is not None and d < spec.total_stride]
    if too_small:
        raise ValueError(f"input_shape={input_shape} is too small for {spec.name}: its total "
                         f"stride is {spec.total_stride}, so height and width must be >= "
                         f"{spec.total_stride}")
    return input_shape


# The numeric options of every classifier and backbone (`build`, `backbones.build`, the
# CamelCase builders): refused by name before any layer is made.
TRUNK_RULES = {"drop_path_rate": Number(float, low=0, high=1, open_high=True),
               "bn_epsilon": POSITIVE, "bn_momentum": FRACTION}


def trunk(x, spec: ResNetSpec, *, shortcut: str | None = None, stride_in_1x1: bool = False,
          zero_init_residual: bool = False, drop_path_rate: float = 0.0, norm: str = "batch",
          bn_epsilon: float = 1e-5, bn_momentum: float = 0.9, conv_bias: bool = False,
          dilations: tuple[int, ...] | None = None, downsample: str = "first") -> dict:
    """Apply the stem and stages of `spec` to `x`; returns {"C1": stem, "C2": ..., "C5": ...}.

    Shared by classifiers and detection backbones, so both have the same layer names and
    weights transfer by name. `dilations` (one per stage) trades strides for atrous rates.
    `downsample="last"` is keras.applications ResNetV2's layout: conv2_x..conv4_x stride
    their last block, conv5_x not at all, and strided identities sub-sample.
    """
    validate({"drop_path_rate": drop_path_rate, "bn_epsilon": bn_epsilon,
              "bn_momentum": bn_momentum}, TRUNK_RULES, "")
    shortcut = spec.shortcut if shortcut is None else shortcut
    if shortcut not in SHORTCUTS:
        raise ValueError(f"shortcut must be one of {SHORTCUTS} (paper section 3.3), "
                         f"got {shortcut!r}")
    if downsample not in DOWNSAMPLE:
        raise ValueError(f"downsample must be one of {DOWNSAMPLE}, got {downsample!r}")
    if downsample == "last" and dilations and any(d > 1 for d in dilations):
        raise ValueError("downsample='last' cannot be combined with dilation (output_stride)")
    norm_kw = {"norm": norm, "bn_epsilon": bn_epsilon, "bn_momentum": bn_momentum}
    block_kw = {"shortcut": shortcut, "residual": spec.residual, "preact": spec.preact,
                "zero_init_residual": zero_init_residual, "conv_bias": conv_bias, **norm_kw}
    if downsample == "last":
        block_kw["subsample_shortcut"] = True
    if spec.avg_down:
        block_kw["avg_down"] = True
    if spec.se_ratio:
        block_kw["se_ratio"] = spec.se_ratio
    if spec.block == "bottleneck":
        block_kw.update(groups=spec.groups, width_per_group=spec.width_per_group,
                        stride_in_1x1=stride_in_1x1)
        if spec.scale > 1:
            block_kw["scale"] = spec.scale
    elif spec.scale > 1:
        raise ValueError(f"scale={spec.scale} (Res2Net) needs block='bottleneck', "
                         f"got {spec.block!r}")
    # Stochastic depth grows linearly with block index (Huang et al. 2016, section 3).
    total = sum(spec.depths)
    rates = [drop_path_rate * i / max(total - 1, 1) for i in range(total)]
    dilations = dilations or (1,) * len(spec.depths)

    stem_kw = {"pool": spec.stem_pool} if spec.stem_pool != "max" else {}
    x = Stem(spec.stem_width, spec.stem, preact=spec.preact, conv_bias=conv_bias,
             name="conv1", **norm_kw, **stem_kw)(x)
    features = {"C1": x}
    start = 0
    last = len(spec.depths) - 1
    for i, (depth, width) in enumerate(zip(spec.depths, spec.widths, strict=True)):
        if downsample == "first":
            stride, stage_kw = (1 if i == 0 else 2), {}
        else:
            stride, stage_kw = (1 if i == last else 2), {"downsample": "last"}
        x = Stage(spec.block, width, depth, stride=stride, dilation=dilations[i],
                  drop_path_rates=tuple(rates[start:start + depth]), block_kwargs=block_kw,
                  name=f"conv{i + 2}_x", **stage_kw)(x)
        start += depth
        features[f"C{i + 2}"] = x
    if spec.preact:
        # The pre-activation design ends with one more BN-ReLU (He et al. 2016, Fig. 4e).
        x = norm_layer(norm, "post_bn", bn_epsilon, bn_momentum)(x)
        x = layers.ReLU(name="post_relu")(x)
        features[f"C{len(spec.depths) + 1}"] = x
    return features


def build(name_or_spec: str | ResNetSpec, *, include_top: bool = True, weights: str | None = None,
          input_tensor=None, input_shape: tuple | None = None, pooling: str | None = None,
          classes: int | None = None, classifier_activation: str | None = "softmax",
          shortcut: str | None = None, stride_in_1x1: bool | None = None,
          zero_init_residual: bool = False, drop_path_rate: float = 0.0, norm: str = "batch",
          bn_epsilon: float | None = None, bn_momentum: float = 0.9,
          conv_bias: bool | None = None, downsample: str | None = None,
          name: str | None = None, dtype=None, **overrides) -> keras.Model:
    """Build a named ResNet (see `available_models()`) or a `ResNetSpec` as a functional model.

    `overrides` change the spec (`depths=(1, 1, 1, 1)`, `widths=(16, 32, 64, 128)`, ...).
    `weights` is None, a checkpoint name (`"imagenet"`, `"torchvision-v2"`, `"keras"`: see
    `weights.available_weights`), a torchvision/timm `.pth`/`.safetensors` file, or a
    Keras weights file. Unset architecture options (stride_in_1x1, bn_epsilon, conv_bias,
    downsample) default to v1.5 / 1e-5 / False / "first", or to what the checkpoint needs.
    `dtype` is a Keras dtype policy ("bfloat16", "mixed_float16", ...; None: the global one)
    that every layer takes; under a 16-bit policy the classifier stays float32.
    """
    if is_efficientnet(name_or_spec):
        return efficientnet.build(
            name_or_spec, include_top=include_top, weights=weights, input_tensor=input_tensor,
            input_shape=input_shape, pooling=pooling, classes=classes,
            classifier_activation=classifier_activation, norm=norm, bn_epsilon=bn_epsilon,
            name=name, dtype=dtype, **({"drop_path_rate": drop_path_rate} if drop_path_rate
                                       else {}), **overrides)
    spec = _resolve_spec(name_or_spec, overrides)
    if overrides:
        raise TypeError(f"build() got unexpected keyword argument(s) {sorted(overrides)}")
    checkpoint, arch_options = weights_lib.resolve_for_build(
        spec, weights, {"stride_in_1x1": stride_in_1x1, "bn_epsilon": bn_epsilon,
                        "conv_bias": conv_bias, "downsample": downsample})
    classes = spec.classes if classes is None else classes
    if checkpoint is not None and include_top and classes != checkpoint.classes:
        raise ValueError(f"weights={weights!r} has a {checkpoint.classes}-class classifier; "
                         f"got classes={classes} (use include_top=False for a new head)")
    if not isinstance(classes, int) or classes < 1:
        raise ValueError(f"classes must be a positive integer, got {classes!r}")
    if pooling not in (None, "avg", "max"):
        raise ValueError(f"pooling must be None, 'avg' or 'max', got {pooling!r}")
    if input_shape is None and input_tensor is None:
        input_shape = spec.input_shape if include_top else (None, None, 3)
    if input_tensor is not None and input_shape is None:
        input_shape = tuple(keras.ops.shape(input_tensor)[1:])
    input_shape = _check_input_shape(spec, input_shape, weights)

    with dtype_scope(dtype):
        model = _functional(spec, input_tensor, input_shape, include_top, pooling, classes,
                            classifier_activation, name,
                            {"shortcut": shortcut, "zero_init_residual": zero_init_residual,
                             "drop_path_rate": drop_path_rate, "norm": norm,
                             "bn_momentum": bn_momentum, **arch_options})
    model.spec = spec
    load_for_build(model, weights, checkpoint)
    return model


def _functional(spec: ResNetSpec, input_tensor, input_shape: tuple, include_top: bool,
                pooling: str | None, classes: int, classifier_activation: str | None,
                name: str | None, trunk_options: dict) -> keras.Model:
    """The classifier or feature model of `build`, in the current dtype policy."""
    if input_tensor is None:
        inputs = keras.Input(shape=input_shape, name="images")
    elif keras.backend.is_keras_tensor(input_tensor):
        inputs = input_tensor
    else:
        inputs = keras.Input(tensor=input_tensor, shape=input_shape, name="images")

    x = trunk(inputs, spec, **trunk_options)
    x = x[f"C{len(spec.depths) + 1}"]
    x = classifier_top(x, include_top=include_top, classes=classes, pooling=pooling,
                       classifier_activation=classifier_activation)

    return compat.mark_called(ResNetModel(inputs, x, name=name or spec.name))


# --- weights: factories that build a classifier and load into it (weights.py loads into a
# model it is given; these sit above both) --------------------------------------------------

def load_for_build(model: keras.Model, weights, checkpoint: Checkpoint | None) -> None:
    """Load what `weights.resolve_for_build` resolved into a freshly built classifier or
    backbone: a checkpoint through its cached conversion, a file by its layout."""
    if checkpoint is not None:
        load_checkpoint(model, checkpoint)
    elif weights is not None:
        weights_lib.load_file(model, weights)


def convert_checkpoint(checkpoint: Checkpoint) -> keras.Model:
    """The checkpoint as this library's full classifier: converted once from the verified
    download, then cached (the cache entry is used only while its hash record matches)."""
    cached = weights_lib.cached_conversion(checkpoint)
    if cached is not None:
        return cached
    model = build(checkpoint.arch, input_shape=(None, None, 3), classes=checkpoint.classes,
                  **checkpoint.build_options)
    return weights_lib.convert_into(model, checkpoint)


def load_checkpoint(model: keras.Model, checkpoint: Checkpoint | str) -> keras.Model:
    """Load a published checkpoint into a classifier or backbone of this library."""
    if isinstance(checkpoint, str):
        checkpoint = weights_lib.get_checkpoint(model.spec.name, checkpoint)
    weights_lib.copy_by_name(model, convert_checkpoint(checkpoint))
    weights_lib.attach_preprocessing(model, checkpoint)
    return model


def convert_keras_applications(source, **build_kwargs) -> keras.Model:
    """This library's classifier with the weights of a keras.applications ResNet (model or
    `.h5`) or EfficientNet/EfficientNetV2 model; it gives the same logits. Save it with
    `model.save("x.keras")`."""
    if efficientnet_convert.is_keras_efficientnet(source):
        return efficientnet_convert.convert_keras_applications(source, **build_kwargs)
    arch, options = weights_lib.keras_arch(source)
    has_top = "predictions" in (
        [layer.name for layer in source.layers] if isinstance(source, keras.Model)
        else read_keras_h5(source))
    kwargs = {"include_top": has_top, "input_shape": (None, None, 3), **options, **build_kwargs}
    return weights_lib.load_keras_applications(build(arch, **kwargs), source)


def convert_torchvision(arch: str, state_dict, **build_kwargs) -> keras.Model:
    """This library's `arch` classifier with a torchvision/timm state dict loaded."""
    kwargs = {"input_shape": (None, None, 3), **build_kwargs}
    return weights_lib.load_torchvision(build(arch, **kwargs), state_dict)


def _make_builder(model_name: str):
    def builder(include_top: bool = True, weights: str | None = None, input_tensor=None,
                input_shape: tuple | None = None, pooling: str | None = None,
                classes: int | None = None, classifier_activation: str | None = "softmax",
                shortcut: str | None = None, name: str | None = None, dtype=None,
                **overrides) -> keras.Model:
        return build(model_name, include_top=include_top, weights=weights,
                     input_tensor=input_tensor, input_shape=input_shape, pooling=pooling,
                     classes=classes, classifier_activation=classifier_activation,
                     shortcut=shortcut, name=name, dtype=dtype, **overrides)

    spec = get_spec(model_name)
    builder.__name__ = builder.__qualname__ = camel_name(model_name)
    builder.__doc__ = (f"{spec.name}: {spec.num_layers}-layer {'plain' if not spec.residual else ''}"
                       f"{'pre-activation ' if spec.preact else ''}{spec.block}-block network "
                       f"for {spec.dataset}; arguments as keras.applications, plus `shortcut` "
                       f"and any `build` option.")
    return builder


def _efficientnet_builder(model_name: str):
    return efficientnet.BUILDERS[camel_name(model_name)]


BUILDERS = {camel_name(n): (_efficientnet_builder(n) if is_efficientnet(n) else _make_builder(n))
            for n in available_models()}
_module = sys.modules[__name__]
for _name, _fn in BUILDERS.items():
    setattr(_module, _name, _fn)
__all__ += list(BUILDERS)
