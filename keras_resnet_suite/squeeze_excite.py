"""Squeeze-and-excitation (Hu et al. 2018): channel gates from the global average, shared by
EfficientNet's MBConv blocks (swish inside) and ResNet-RS's bottlenecks (ReLU inside)."""

from __future__ import annotations

import keras
from keras import layers, ops

from keras_resnet_suite.composite import PACKAGE, Composite


@keras.saving.register_keras_serializable(PACKAGE)
class SqueezeExcite(Composite):
    """`x * sigmoid(expand(act(reduce(mean(x)))))` with 1x1 convolutions (biases included).

    `squeeze_channels` is the reduced width: EfficientNet takes a quarter of the block's input
    channels, ResNet-RS a quarter of the block's output channels; each caller rounds its own.
    """

    def __init__(self, squeeze_channels: int, activation: str = "relu", **kwargs):
        super().__init__(**kwargs)
        if int(squeeze_channels) < 1:
            raise ValueError(f"squeeze_channels must be >= 1, got {squeeze_channels}")
        self.squeeze_channels, self.activation = int(squeeze_channels), activation

    def build(self, input_shape):
        channels = input_shape[-1]
        self.reduce = layers.Conv2D(self.squeeze_channels, 1, name="reduce")
        self.act = layers.Activation(self.activation, name="act")
        self.expand = layers.Conv2D(channels, 1, name="expand")
        pooled = (input_shape[0], 1, 1, channels)
        self._build_chain([self.reduce, self.act, self.expand], pooled)
        self.built = True

    def call(self, x):
        s = ops.mean(x, axis=(1, 2), keepdims=True)
        s = self.expand(self.act(self.reduce(s)))
        return x * ops.sigmoid(s)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "squeeze_channels": self.squeeze_channels,
                "activation": self.activation}
