"""What every block of this library is made of: PyTorch-padded convolutions and `Composite`,
a layer of named sub-layers built eagerly (so weights load before any call)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import keras
from keras import layers

PACKAGE = "keras_resnet_suite"  # the Keras registry prefix of every serializable layer here

# He et al. 2015 initialisation, fan-out as torchvision does for ReLU networks.
HE_FAN_OUT = {"class_name": "VarianceScaling",
              "config": {"scale": 2.0, "mode": "fan_out", "distribution": "untruncated_normal"}}


def conv(filters: int, kernel: int, stride: int = 1, *, name: str, groups: int = 1,
         dilation: int = 1, use_bias: bool = False) -> list[layers.Layer]:
    """A convolution padded as PyTorch pads (explicit zeros, then 'valid') when strided.

    TensorFlow's 'same' pads asymmetrically for even inputs, which breaks parity with
    converted torchvision/timm weights; a stride-1 'same' conv is already symmetric.
    """
    pad = dilation * (kernel - 1) // 2
    out = []
    if stride > 1 and pad:
        out.append(layers.ZeroPadding2D(pad, name=f"{name}_pad"))
    out.append(layers.Conv2D(
        filters, kernel, strides=stride, padding="valid" if stride > 1 else "same",
        dilation_rate=dilation, groups=groups, use_bias=use_bias,
        kernel_initializer=keras.initializers.get(HE_FAN_OUT), name=name))
    return out


def strided_shape(input_shape, stride: int, channels: int) -> tuple:
    """NHWC shape after a PyTorch-padded stride: spatial sizes ceil(size / stride)."""
    n, h, w, _ = input_shape
    return (n, None if h is None else -(-h // stride), None if w is None else -(-w // stride),
            channels)


class Composite(layers.Layer):
    """A layer made of named sub-layers, built eagerly so weights load before any call."""

    def _build_chain(self, chain, shape):
        for layer in chain:
            # Sub-layers compute as their parent does (a bfloat16 or mixed policy given to a
            # builder, or read back from a `.keras` config), not in the global policy. Layers
            # without weights (ReLU, padding) count as built from the start.
            if (not layer.built or not layer.weights) and layer.dtype_policy is not self.dtype_policy:
                layer.dtype_policy = self.dtype_policy
            if not layer.built:
                layer.build(shape)
            shape = layer.compute_output_shape(shape)
        if not self.trainable:
            # Deserialised frozen (`trainable=False` in the config): the flag was set before
            # these sub-layers existed, so hand it down now (as the `trainable` setter does).
            for layer in chain:
                layer.trainable = False
        return shape

    def compute_output_spec(self, x, *args, **kwargs):
        # A functional model's `compute_output_spec(numpy_images)` hands the array itself to
        # its first layer; Keras derives no shape from a non-tensor, so describe it here.
        if not (keras.ops.is_tensor(x) or isinstance(x, keras.KerasTensor)) and hasattr(x, "shape"):
            x = keras.KerasTensor(tuple(x.shape), dtype=str(getattr(x, "dtype", "float32")))
        return super().compute_output_spec(x, *args, **kwargs)

    @staticmethod
    def _run(chain, x, training=None):
        for layer in chain:
            x = layer(x, training=training) if takes_training(layer) else layer(x)
        return x


@contextlib.contextmanager
def dtype_scope(dtype) -> Iterator[None]:
    """Layers created inside take `dtype` (a policy, its name such as "mixed_float16", or its
    config; None: the global policy), as a Keras layer's `dtype` argument does."""
    if dtype is None:
        yield
        return
    before = keras.config.dtype_policy()
    keras.config.set_dtype_policy(keras.dtype_policies.get(dtype))
    try:
        yield
    finally:
        keras.config.set_dtype_policy(before)


def takes_training(layer) -> bool:
    return isinstance(layer, (layers.BatchNormalization, layers.Dropout, Composite))
