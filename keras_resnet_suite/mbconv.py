"""MBConv (Sandler et al. 2018; EfficientNet) and Fused-MBConv (EfficientNetV2) blocks.

One class each, variation through arguments, as `BasicBlock` and `Bottleneck`: expansion,
squeeze-and-excitation, stochastic depth, and a residual where the shapes allow it.
Convolutions pad "same" (TensorFlow's rule), as keras.applications and timm's `tf_*` models
do, so their weights give the same numbers.
"""

from __future__ import annotations

import keras
from keras import layers, ops

from keras_resnet_suite.composite import HE_FAN_OUT, PACKAGE, Composite, strided_shape
from keras_resnet_suite.normalization import norm_layer
from keras_resnet_suite.squeeze_excite import SqueezeExcite


def _conv(filters: int, kernel: int, stride: int, name: str) -> layers.Conv2D:
    return layers.Conv2D(filters, kernel, strides=stride, padding="same", use_bias=False,
                         kernel_initializer=keras.initializers.get(HE_FAN_OUT), name=name)


class _Inverted(Composite):
    """What both blocks share: options, SE width, drop-path and the residual rule."""

    def __init__(self, filters: int, kernel_size: int = 3, stride: int = 1, *,
                 expand_ratio: int = 1, se_ratio: float = 0.0, activation: str = "swish",
                 norm: str = "batch", bn_epsilon: float = 1e-3, bn_momentum: float = 0.99,
                 drop_path_rate: float = 0.0, **kwargs):
        super().__init__(**kwargs)
        if not 0.0 <= drop_path_rate < 1.0:
            raise ValueError(f"drop_path_rate must be in [0, 1), got {drop_path_rate}")
        if not 0.0 <= se_ratio <= 1.0:
            raise ValueError(f"se_ratio must be in [0, 1], got {se_ratio}")
        if int(expand_ratio) < 1 or stride not in (1, 2):
            raise ValueError(f"expand_ratio must be >= 1 and stride 1 or 2, got "
                             f"{expand_ratio} and {stride}")
        self.filters, self.kernel_size, self.stride = int(filters), int(kernel_size), stride
        self.expand_ratio, self.se_ratio, self.activation = int(expand_ratio), se_ratio, activation
        self.norm, self.bn_epsilon, self.bn_momentum = norm, bn_epsilon, bn_momentum
        self.drop_path_rate = drop_path_rate
        self.seed_generator = keras.random.SeedGenerator(0)

    def _bn(self, name):
        return norm_layer(self.norm, name, self.bn_epsilon, self.bn_momentum)

    def _se(self, in_channels):
        """SE reduced to `se_ratio` of the block's *input* channels (EfficientNet's rule)."""
        if not self.se_ratio:
            return []
        return [SqueezeExcite(max(1, int(in_channels * self.se_ratio)), self.activation,
                              name="se")]

    def build(self, input_shape):
        in_channels = input_shape[-1]
        self.residual = self.stride == 1 and in_channels == self.filters
        self.chain = self._chain(in_channels)
        self._build_chain(self.chain, input_shape)
        self.built = True

    def call(self, x, training=None):
        y = self._run(self.chain, x, training)
        if not self.residual:
            return y
        if training and self.drop_path_rate:
            # Stochastic depth (Huang et al. 2016): the whole branch dropped per sample.
            keep = 1.0 - self.drop_path_rate
            mask = keras.random.uniform((ops.shape(y)[0], 1, 1, 1), seed=self.seed_generator)
            y = y * ops.cast(mask < keep, y.dtype) / keep
        return y + x

    def compute_output_shape(self, input_shape):
        return strided_shape(input_shape, self.stride, self.filters)

    def get_config(self):
        return {**super().get_config(), "filters": self.filters,
                "kernel_size": self.kernel_size, "stride": self.stride,
                "expand_ratio": self.expand_ratio, "se_ratio": self.se_ratio,
                "activation": self.activation, "norm": self.norm,
                "bn_epsilon": self.bn_epsilon, "bn_momentum": self.bn_momentum,
                "drop_path_rate": self.drop_path_rate}


@keras.saving.register_keras_serializable(PACKAGE)
class MBConv(_Inverted):
    """1x1 expansion (skipped at ratio 1), k x k depthwise (strided), SE, 1x1 linear
    projection (MobileNetV2's inverted residual with EfficientNet's SE and swish)."""

    def _chain(self, in_channels):
        chain = []
        if self.expand_ratio != 1:
            chain += [_conv(in_channels * self.expand_ratio, 1, 1, "expand_conv"),
                      self._bn("expand_bn"), layers.Activation(self.activation,
                                                               name="expand_activation")]
        chain += [layers.DepthwiseConv2D(
                      self.kernel_size, strides=self.stride, padding="same", use_bias=False,
                      depthwise_initializer=keras.initializers.get(HE_FAN_OUT), name="dwconv"),
                  self._bn("bn"), layers.Activation(self.activation, name="activation")]
        chain += self._se(in_channels)
        return chain + [_conv(self.filters, 1, 1, "project_conv"), self._bn("project_bn")]


@keras.saving.register_keras_serializable(PACKAGE)
class FusedMBConv(_Inverted):
    """EfficientNetV2's block: one k x k convolution does the expansion (and the stride), then
    SE and a 1x1 projection; at ratio 1 the k x k convolution is the whole (activated) block."""

    def _chain(self, in_channels):
        act = layers.Activation
        if self.expand_ratio == 1:
            return self._se(in_channels) + [_conv(self.filters, self.kernel_size, self.stride, "project_conv"),
                    self._bn("project_bn"), act(self.activation, name="project_activation")]
        chain = [_conv(in_channels * self.expand_ratio, self.kernel_size, self.stride,
                       "expand_conv"), self._bn("expand_bn"),
                 act(self.activation, name="expand_activation")]
        chain += self._se(in_channels)
        return chain + [_conv(self.filters, 1, 1, "project_conv"), self._bn("project_bn")]


BLOCKS = {"mbconv": MBConv, "fused": FusedMBConv}
