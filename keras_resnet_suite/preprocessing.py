"""How a checkpoint wants its images: each published checkpoint was trained on one of three
input conventions, and feeding it another silently costs accuracy.

`caffe`: RGB -> BGR, minus the ImageNet BGR mean (keras.applications ResNet, the original
Caffe models); `tf`: scaled to [-1, 1] (keras.applications ResNetV2); `torch`: [0, 1], minus
mean, over std per RGB channel (torchvision, timm). Inputs are RGB in [0, 255].
"""

from __future__ import annotations

from keras import ops

MODES = ("caffe", "tf", "torch")
CAFFE_BGR_MEAN = (103.939, 116.779, 123.68)
# Per-channel statistics of ImageNet RGB pixels scaled to [0, 1] (torchvision, timm); times
# 255 for 0-255 pixels. The one copy: data pipelines and detection use these names.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
TORCH_MEAN, TORCH_STD = IMAGENET_MEAN, IMAGENET_STD  # the "torch" mode's statistics


def _mode(mode) -> str:
    """A mode name from a name, a `weights.Checkpoint` or a model loaded with weights."""
    if isinstance(mode, str):
        name = mode
    else:
        name = getattr(mode, "preprocessing", None)
        if name is None:
            raise ValueError(f"{getattr(mode, 'name', mode)!r} carries no preprocessing: it was "
                             "not loaded from a published checkpoint; pass mode= one of "
                             f"{MODES}")
    if name not in MODES:
        raise ValueError(f"preprocessing mode must be one of {MODES}, got {name!r}")
    return name


def preprocess_input(images, mode="torch"):
    """Map RGB images in [0, 255] (channels last) to what the checkpoint was trained on.

    `mode` is "caffe", "tf", "torch", a `weights.Checkpoint`, or a model built with
    `weights=` a checkpoint name (it remembers its checkpoint's convention).
    """
    name = _mode(mode)
    x = ops.cast(ops.convert_to_tensor(images), "float32")
    if name == "caffe":
        return ops.flip(x, axis=-1) - ops.convert_to_tensor(CAFFE_BGR_MEAN, "float32")
    if name == "tf":
        return x / 127.5 - 1.0
    mean = ops.convert_to_tensor(IMAGENET_MEAN, "float32")
    std = ops.convert_to_tensor(IMAGENET_STD, "float32")
    return (x / 255.0 - mean) / std
