"""Multi-scale feature extractors for detection: {"C2": ..., "C5": ...} at strides 4-32.

A backbone is the classifier's trunk (same layer names, so weights move between them by
name) with detection's options: frozen BN, frozen early stages (detectron2's
`freeze_at`), and a smaller output stride by dilation (DeepLab; detectron2 "DC5").
"""

from __future__ import annotations

import os
import sys

import keras

from . import compat, efficientnet
from . import weights as weights_lib
from .composite import dtype_scope
from .convert.published import DEFAULT_OPTIONS, KERAS_V1
from .efficientnet_specs import is_efficientnet
from .metadata import ResNetModel, copy_metadata, describe, write_asset
from .models import _check_input_shape, _resolve_spec, load_for_build, trunk
from .specs import ResNetSpec, available_models, camel_name, get_spec

LEVELS = ("C2", "C3", "C4", "C5")

# The conventions of the checkpoint tables (convert/published.py): keras.applications' ResNet
# v1 (BN epsilon 1.001e-5, biased convolutions, stride in the 1x1) and torchvision's (v1.5).
_PRESET_OPTIONS = ("bn_epsilon", "conv_bias", "stride_in_1x1")
PRESETS = {
    "default": {},
    "keras": {k: KERAS_V1[k] for k in _PRESET_OPTIONS},
    "torchvision": {k: DEFAULT_OPTIONS[k] for k in _PRESET_OPTIONS},
}


def _stage_rates(num_stages: int, natural: int, output_stride: int) -> list[int]:
    """Per-stage dilation: stages whose stride would pass `output_stride` keep stride 1
    and dilate by the factor lost (conv5_x rate 2 at 16; conv4_x 2, conv5_x 4 at 8)."""
    if output_stride not in (8, 16, 32) or output_stride > natural:
        raise ValueError(f"output_stride must be 8, 16 or 32 and at most {natural}, "
                         f"got {output_stride}")
    rates, stride = [], natural // 2 ** (num_stages - 1)
    for i in range(num_stages):
        step = 1 if i == 0 else 2
        if stride * step > output_stride:
            rates.append(rates[-1] * 2 if rates and rates[-1] > 1 else 2)
        else:
            stride *= step
            rates.append(1)
    return rates


def feature_info(model_or_spec, levels=LEVELS, output_stride: int = 32) -> dict:
    """Channels and stride of each level, e.g. {"C4": {"channels": 1024, "stride": 16}}."""
    spec = model_or_spec if isinstance(model_or_spec, ResNetSpec) else model_or_spec.spec
    expansion = 4 if spec.block == "bottleneck" else 1
    info = {}
    stride = spec.total_stride // 2 ** (len(spec.depths) - 1)
    for i, width in enumerate(spec.widths):
        stride = stride if i == 0 else min(stride * 2, output_stride)
        level = f"C{i + 2}"
        if level in levels:
            info[level] = {"channels": width * expansion, "stride": stride}
    return info


def freeze_stages(model: keras.Model, freeze_at: int, num_stages: int) -> None:
    """Stem and stages conv2_x ... conv{freeze_at}_x stop training (detectron2 convention)."""
    if not 0 <= freeze_at <= num_stages + 1:
        raise ValueError(f"freeze_at must be in [0, {num_stages + 1}], got {freeze_at}")
    names = ["conv1"] + [f"conv{i}_x" for i in range(2, freeze_at + 1)] if freeze_at else []
    for layer_name in names:
        model.get_layer(layer_name).trainable = False


def _check_layout(downsample: str) -> None:
    if downsample == "last":
        raise ValueError("downsample='last' (keras.applications ResNetV2 layout) strides the end "
                         "of conv2_x..conv4_x, so C2..C5 would sit at strides 8, 16, 32, 32, not "
                         "4..32: a detection backbone needs downsample='first'")


def build(name_or_spec: str | ResNetSpec, *, weights: str | None = None,
          input_shape: tuple = (None, None, 3), freeze_at: int = 0, norm: str = "batch",
          output_stride: int = 32, return_levels: tuple[str, ...] = LEVELS,
          preset: str = "default", stride_in_1x1: bool | None = None,
          bn_epsilon: float | None = None, bn_momentum: float = 0.9,
          conv_bias: bool | None = None, shortcut: str | None = None,
          name: str | None = None, load_weights: bool = True, dtype=None,
          **overrides) -> keras.Model:
    """A backbone whose output is a dict of the requested levels (C2..C5).

    `norm="frozen"` uses FrozenBatchNormalization (statistics never update);
    `freeze_at=k` makes the stem and the first k-1 stages non-trainable;
    `output_stride=16|8` dilates the last stages instead of striding them;
    `preset="keras"` matches keras.applications' ResNet v1 so its weights load exactly;
    `weights` takes what `models.build` takes (a checkpoint name such as "imagenet" or
    "torchvision-v2", a torchvision/timm/keras.applications file, or a Keras weights file);
    `load_weights=False` builds the architecture `weights` implies (and remembers its input
    convention) without reading or downloading them: for loading trained weights over it.
    `dtype` is a Keras dtype policy ("bfloat16", "mixed_float16", ...) every layer takes.
    """
    if is_efficientnet(name_or_spec):
        if output_stride != 32 or preset != "default":
            raise ValueError(f"{name_or_spec}: EfficientNet backbones take output_stride=32 and "
                             f"preset='default', got {output_stride} and {preset!r}")
        return efficientnet.build_backbone(
            name_or_spec, weights=weights, input_shape=input_shape, freeze_at=freeze_at,
            norm=norm, return_levels=return_levels, bn_epsilon=bn_epsilon, name=name,
            dtype=dtype, load_weights=load_weights, **overrides)
    spec = _resolve_spec(name_or_spec, overrides)
    if overrides:
        raise TypeError(f"build() got unexpected keyword argument(s) {sorted(overrides)}")
    if preset not in PRESETS:
        raise ValueError(f"preset must be one of {sorted(PRESETS)}, got {preset!r}")
    options = {"stride_in_1x1": None, "bn_epsilon": None, "conv_bias": None,
               "downsample": None, **PRESETS[preset]}
    for key, value in (("bn_epsilon", bn_epsilon), ("conv_bias", conv_bias),
                       ("stride_in_1x1", stride_in_1x1)):
        if value is not None:
            options[key] = value
    valid = [f"C{i + 2}" for i in range(len(spec.depths))]
    unknown = [lvl for lvl in return_levels if lvl not in valid]
    if unknown or not return_levels:
        raise ValueError(f"return_levels must be a non-empty subset of {valid}, "
                         f"got {tuple(return_levels)}")
    checkpoint, options = weights_lib.resolve_for_build(spec, weights, options)
    _check_layout(options["downsample"])
    input_shape = _check_input_shape(spec, input_shape, weights)

    with dtype_scope(dtype):
        inputs = keras.Input(shape=input_shape, name="images")
        features = trunk(inputs, spec, shortcut=shortcut, norm=norm, bn_momentum=bn_momentum,
                         dilations=tuple(_stage_rates(len(spec.depths), spec.total_stride,
                                                      output_stride)), **options)
        outputs = {level: features[level] for level in return_levels}
        model = compat.mark_called(ResNetModel(inputs, outputs,
                                               name=name or f"{spec.name}_backbone"))
    model.spec = spec
    model.feature_info = feature_info(spec, return_levels, output_stride)
    freeze_stages(model, freeze_at, len(spec.depths))
    if load_weights:
        load_for_build(model, weights, checkpoint)
    elif checkpoint is not None:
        weights_lib.attach_preprocessing(model, checkpoint)
    return model


def from_classifier(model: keras.Model, return_levels: tuple[str, ...] = LEVELS) -> keras.Model:
    """A backbone that shares its weights with a classifier built by this library."""
    spec = getattr(model, "spec", None)
    if spec is None:
        raise ValueError(f"{model.name!r} was not built by keras_resnet_suite (no .spec)")
    _check_layout(getattr(model.get_layer("conv2_x"), "downsample", "first"))
    last = f"C{len(spec.depths) + 1}"
    outputs = {}
    for level in return_levels:
        layer_name = "post_relu" if spec.preact and level == last else f"conv{level[1:]}_x"
        try:
            outputs[level] = model.get_layer(layer_name).output
        except ValueError as err:
            raise ValueError(f"{model.name!r} has no level {level} ({layer_name})") from err
    backbone = compat.mark_called(ResNetModel(model.input, outputs, name=f"{model.name}_backbone"))
    backbone.spec = spec
    backbone.feature_info = feature_info(spec, return_levels)
    return copy_metadata(backbone, model)


def export_saved_model(backbone: keras.Model, path: str) -> str:
    """Write `backbone` as a TF SavedModel whose `serving_default` maps float32 `images`
    [batch, height, width, 3] to named outputs C2..C5 (any image size). TensorFlow only."""
    import tensorflow as tf

    levels = list(backbone.output.keys()) if isinstance(backbone.output, dict) else None
    if not levels:
        raise ValueError(f"{backbone.name!r} is not a backbone (its output is not a dict of "
                         "levels)")
    archive = keras.export.ExportArchive()
    archive.track(backbone)

    def serve(images):
        out = backbone(images, training=False)
        return {level: out[level] for level in levels}

    archive.add_endpoint("serving_default", serve, input_signature=[
        tf.TensorSpec([None, None, None, 3], tf.float32, name="images")])
    archive.write_out(os.fspath(path), verbose=False)
    write_asset(path, describe(backbone))
    return os.fspath(path)


def _make_builder(model_name: str):
    def builder(weights: str | None = None, input_shape: tuple = (None, None, 3),
                freeze_at: int = 0, norm: str = "batch", output_stride: int = 32,
                **kwargs) -> keras.Model:
        return build(model_name, weights=weights, input_shape=input_shape, freeze_at=freeze_at,
                     norm=norm, output_stride=output_stride, **kwargs)

    builder.__name__ = builder.__qualname__ = camel_name(model_name)
    builder.__doc__ = f"{model_name} backbone: dict of C2..C5 feature maps (see `build`)."
    return builder


BUILDERS = {camel_name(n): _make_builder(n) for n in available_models()
            if get_spec(n).dataset == "imagenet"}
_module = sys.modules[__name__]
for _name, _fn in BUILDERS.items():
    setattr(_module, _name, _fn)
__all__ = ["build", "freeze_stages", "from_classifier", "feature_info", "export_saved_model", "LEVELS", "PRESETS",
           *BUILDERS]
