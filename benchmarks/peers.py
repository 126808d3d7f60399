"""The contenders: this library and what a user would pick instead, built the same way.

keras-hub and torchvision are optional peers: measured where installed, listed as not measured
otherwise (this project does not depend on them).
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Callable

import keras

BLOCKS = {50: [3, 4, 6, 3], 101: [3, 4, 23, 3]}
OURS, OURS_V1, KERAS_APPS, KERAS_HUB, TORCHVISION = (
    "ours", "ours (stride_in_1x1)", "keras.applications", "keras-hub", "torchvision")
# bfloat16 compute on CPUs with AVX512_BF16 / AMX (oneDNN's bf16 kernels in both frameworks)
OURS_BF16, TORCHVISION_BF16 = "ours (mixed_bfloat16)", "torchvision (bf16 autocast)"


def installed(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def keras_peers(depth: int, with_v1: bool = False, with_hub: bool = True,
                with_bf16: bool = False, size: int = 224) -> dict[str, Callable[[], keras.Model]]:
    """Builders of 1000-class ImageNet classifiers of `size`x`size` images (224 unless a smoke
    run asks for less) under the current Keras backend.

    `ours` is the library default (ResNet v1.5: stride on the 3x3, 4.1 GMACs for ResNet-50);
    `ours (stride_in_1x1)` has keras.applications' stride placement and FLOPs (3.9 GMACs).
    """
    import keras_resnet_suite as krs

    shape = (size, size, 3)
    peers = {OURS: lambda: krs.build(f"resnet{depth}", input_shape=shape)}
    if with_v1:
        peers[OURS_V1] = lambda: krs.build(f"resnet{depth}", stride_in_1x1=True,
                                           input_shape=shape)
    if with_bf16:
        peers[OURS_BF16] = lambda: _mixed_bfloat16(
            lambda: krs.build(f"resnet{depth}", input_shape=shape))
    peers[KERAS_APPS] = lambda: getattr(keras.applications, f"ResNet{depth}")(
        weights=None, input_shape=shape)
    if with_hub and installed("keras_hub"):
        peers[KERAS_HUB] = lambda: _keras_hub_classifier(depth)
    return peers


def _mixed_bfloat16(build: Callable[[], keras.Model]) -> keras.Model:
    """A model built under Keras' `mixed_bfloat16` policy (bf16 compute, float32 variables and
    softmax), as a user gets it with `keras.mixed_precision.set_global_policy`."""
    previous = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    try:
        return build()
    finally:
        keras.mixed_precision.set_global_policy(previous)


def _keras_hub_classifier(depth: int) -> keras.Model:
    """keras-hub's ResNetBackbone of the same depth with the same pooling + softmax head.

    Its bottleneck strides the 3x3 (v1.5, 4.09 GMACs for ResNet-50): our default's architecture.
    """
    import keras_hub

    backbone = keras_hub.models.ResNetBackbone(
        input_conv_filters=[64], input_conv_kernel_sizes=[7],
        stackwise_num_filters=[64, 128, 256, 512], stackwise_num_blocks=BLOCKS[depth],
        stackwise_num_strides=[1, 2, 2, 2], block_type="bottleneck_block",
        use_pre_activation=False, image_shape=(224, 224, 3))
    x = keras.layers.GlobalAveragePooling2D()(backbone.output)
    out = keras.layers.Dense(1000, activation="softmax")(x)
    return keras.Model(backbone.input, out, name=f"keras_hub_resnet{depth}")


def torchvision_wanted() -> bool:
    """torch and torchvision are installed and not left out (`--no-torchvision`)."""
    return (installed("torch") and installed("torchvision")
            and not os.environ.get("KRS_BENCH_NO_TORCHVISION"))


def jax_device_name(device) -> str:
    """A JAX device as results name it, e.g. "NVIDIA H100 80GB HBM3 (gpu:0)"."""
    return f"{device.device_kind} ({device.platform}:{device.id})"


def torchvision_model(depth: int):
    """torchvision's ResNet-50/101 in channels_last (its fastest CPU layout), or None."""
    if not torchvision_wanted():
        return None
    import torch
    import torchvision

    model = getattr(torchvision.models, f"resnet{depth}")(weights=None)
    return model.to(memory_format=torch.channels_last)
