"""Res2Net's hierarchical 3x3 (Gao et al. 2019), the `scale > 1` option of `Bottleneck`."""

from __future__ import annotations

import keras
from keras import layers, ops

from keras_resnet_suite.composite import PACKAGE, Composite, conv, strided_shape
from keras_resnet_suite.normalization import norm_layer


@keras.saving.register_keras_serializable(PACKAGE)
class MultiScaleConv(Composite):
    """Res2Net's hierarchical 3x3 (Gao et al. 2019, section 3.1, Fig. 2), timm's `Bottle2neck`.

    The input's channels are split into `scale` groups of `width`; group i (i < scale-1) goes
    through its own 3x3 + BN + ReLU after adding the previous group's output, and the last
    group passes through unchanged. In the `first` block of a stage (the one that strides or
    changes width) the groups are not chained and the last is average-pooled (3x3, the
    block's stride, zero padding 1 counted in the mean, as PyTorch's AvgPool2d defaults).
    """

    def __init__(self, width: int, scale: int, stride: int = 1, *, groups: int = 1,
                 dilation: int = 1, first: bool = False, norm: str = "batch",
                 bn_epsilon: float = 1e-5, bn_momentum: float = 0.9, **kwargs):
        super().__init__(**kwargs)
        if scale < 2:
            raise ValueError(f"MultiScaleConv needs scale >= 2 (scale 1 is a plain 3x3), "
                             f"got {scale}")
        self.width, self.scale, self.stride, self.groups = width, scale, stride, groups
        self.dilation, self.first, self.norm = dilation, first, norm
        self.bn_epsilon, self.bn_momentum = bn_epsilon, bn_momentum

    def build(self, input_shape):
        if input_shape[-1] != self.width * self.scale:
            raise ValueError(f"{self.name}: expects {self.width} x {self.scale} = "
                             f"{self.width * self.scale} channels, got {input_shape[-1]}")
        split_shape = (*input_shape[:-1], self.width)
        for i in range(1, self.scale):
            chain = conv(self.width, 3, self.stride, name=f"conv{i}", groups=self.groups,
                         dilation=self.dilation)
            chain += [norm_layer(self.norm, f"bn{i}", self.bn_epsilon, self.bn_momentum),
                      layers.ReLU(name=f"relu{i}")]
            self._build_chain(chain, split_shape)
            # One flat list attribute per split, as every block keeps its chains, so
            # `export.fold_batchnorm` finds and folds each conv -> BN pair.
            setattr(self, f"split{i}", chain)
        self.pool = []
        if self.first:
            self.pool = [layers.ZeroPadding2D(1, name="pool_pad"),
                         layers.AveragePooling2D(3, self.stride, name="pool")]
            self._build_chain(self.pool, split_shape)
        self.built = True

    @property
    def splits(self) -> list[list]:
        """The `scale - 1` convolved splits' chains (conv, BN, ReLU), in order."""
        return [getattr(self, f"split{i}") for i in range(1, self.scale)]

    def param_layers(self) -> dict:
        """timm's module names (`convs.i`, `bns.i`) -> this layer's Conv2D / BN sub-layers."""
        out = {}
        for i, chain in enumerate(self.splits):
            for layer in chain:
                if isinstance(layer, layers.Conv2D):
                    out[f"convs.{i}"] = layer
                elif isinstance(layer, layers.BatchNormalization):
                    out[f"bns.{i}"] = layer
        return out

    def call(self, x, training=None):
        parts = ops.split(x, self.scale, axis=-1)
        outputs = []
        y = None
        for i, chain in enumerate(self.splits):
            y = parts[i] if (i == 0 or self.first) else y + parts[i]
            y = self._run(chain, y, training)
            outputs.append(y)
        outputs.append(self._run(self.pool, parts[-1]) if self.first else parts[-1])
        return ops.concatenate(outputs, axis=-1)

    def compute_output_shape(self, input_shape):
        return strided_shape(input_shape, self.stride, self.width * self.scale)

    def get_config(self):
        return {**super().get_config(), "width": self.width, "scale": self.scale,
                "stride": self.stride, "groups": self.groups, "dilation": self.dilation,
                "first": self.first, "norm": self.norm, "bn_epsilon": self.bn_epsilon,
                "bn_momentum": self.bn_momentum}
