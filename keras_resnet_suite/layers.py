"""Building blocks of every ResNet: stem, shortcut (options A/B/C), basic and bottleneck
blocks (post- and pre-activation, grouped, plain), stages, and a frozen batch norm.

One `BasicBlock` and one `Bottleneck` cover the whole family; the variants are
arguments (timm's lesson). All layers are serializable and registered, so models save
and load as `.keras` files without Lambda layers.
"""

from __future__ import annotations

import keras
from keras import layers, ops

from keras_resnet_suite.composite import (  # noqa: F401  (part of this module's API)
    HE_FAN_OUT,
    PACKAGE,
    Composite,
    conv,
    strided_shape,
)
from keras_resnet_suite.multiscale import MultiScaleConv
from keras_resnet_suite.normalization import (  # noqa: F401  (part of this module's API)
    NORMS,
    BatchNormalization,
    FrozenBatchNormalization,
    batch_of_one_branch,
    norm_layer,
)
from keras_resnet_suite.squeeze_excite import SqueezeExcite

SHORTCUTS = ("A", "B", "C")
DOWNSAMPLE = ("first", "last")
STEM_POOLS = ("max", "conv")


@keras.saving.register_keras_serializable(PACKAGE)
class Shortcut(Composite):
    """The identity path of a residual block (paper section 3.3).

    Option A: identity; where the shape changes, strided sub-sampling plus zero-padded
    channels (no parameters). Option B: a 1x1 projection + BN only where the shape
    changes. Option C: a projection on every block. `normalize=False` drops the BN (the
    pre-activation blocks project an already normalised input). `project_stride=False`
    projects under option B only where the channels change and sub-samples a strided
    identity (keras.applications ResNetV2's 1x1 stride-s max-pool). `avg_down=True` is
    ResNet-D's strided projection: a 2x2 average pool with that stride (partial windows at odd
    sizes average only real pixels, as PyTorch's ceil_mode without padding counts), then a
    1x1/1 convolution, so no input pixel is skipped. A dilated stage (stride 1) does not pool.
    """

    def __init__(self, filters: int, stride: int = 1, option: str = "B", *,
                 normalize: bool = True, norm: str = "batch", bn_epsilon: float = 1e-5,
                 bn_momentum: float = 0.9, use_bias: bool = False, project_stride: bool = True,
                 avg_down: bool = False, **kwargs):
        super().__init__(**kwargs)
        if option not in SHORTCUTS:
            raise ValueError(f"shortcut must be one of {SHORTCUTS}, got {option!r}")
        self.filters, self.stride, self.option = filters, stride, option
        self.normalize, self.norm, self.use_bias = normalize, norm, use_bias
        self.bn_epsilon, self.bn_momentum = bn_epsilon, bn_momentum
        self.project_stride, self.avg_down = project_stride, avg_down
        self.chain: list = []

    def build(self, input_shape):
        in_channels = input_shape[-1]
        self.changes_shape = (self.stride > 1 and self.project_stride) or \
            in_channels != self.filters
        self.project = self.option == "C" or (self.option == "B" and self.changes_shape)
        if self.project:
            pool = self.avg_down and self.stride > 1
            self.chain = [layers.AveragePooling2D(self.stride, self.stride, padding="same",
                                                  name="pool")] if pool else []
            self.chain.append(layers.Conv2D(
                self.filters, 1, strides=1 if pool else self.stride, use_bias=self.use_bias,
                kernel_initializer=keras.initializers.get(HE_FAN_OUT), name="conv"))
            if self.normalize:
                self.chain.append(norm_layer(self.norm, "bn", self.bn_epsilon, self.bn_momentum))
            self._build_chain(self.chain, input_shape)
        self.pad_channels = self.filters - in_channels
        if self.option == "A" and self.pad_channels < 0:
            raise ValueError("shortcut option A cannot reduce channels: "
                             f"{in_channels} -> {self.filters}")
        self.built = True

    def call(self, x, training=None):
        if self.project:
            return self._run(self.chain, x, training)
        if self.stride > 1:
            x = x[:, :: self.stride, :: self.stride, :]
        if self.pad_channels > 0:
            before = self.pad_channels // 2
            x = ops.pad(x, [[0, 0], [0, 0], [0, 0], [before, self.pad_channels - before]])
        return x

    def compute_output_shape(self, input_shape):
        return strided_shape(input_shape, self.stride, self.filters)

    def get_config(self):
        return {**super().get_config(), "filters": self.filters, "stride": self.stride,
                "option": self.option, "normalize": self.normalize, "norm": self.norm,
                "bn_epsilon": self.bn_epsilon, "bn_momentum": self.bn_momentum,
                "use_bias": self.use_bias, "project_stride": self.project_stride,
                "avg_down": self.avg_down}


class _Block(Composite):
    """What basic and bottleneck blocks share: options, shortcut, add, drop-path."""

    expansion = 1

    def __init__(self, filters: int, stride: int = 1, *, shortcut: str = "B",
                 residual: bool = True, preact: bool = False, dilation: int = 1,
                 norm: str = "batch", bn_epsilon: float = 1e-5, bn_momentum: float = 0.9,
                 zero_init_residual: bool = False, drop_path_rate: float = 0.0,
                 conv_bias: bool = False, subsample_shortcut: bool = False,
                 avg_down: bool = False, se_ratio: float = 0.0, **kwargs):
        super().__init__(**kwargs)
        if not 0.0 <= drop_path_rate < 1.0:
            raise ValueError(f"drop_path_rate must be in [0, 1), got {drop_path_rate}")
        if not 0.0 <= se_ratio <= 1.0:
            raise ValueError(f"se_ratio must be in [0, 1], got {se_ratio}")
        self.filters, self.stride, self.shortcut_option = filters, stride, shortcut
        self.residual, self.preact, self.dilation = residual, preact, dilation
        self.norm, self.bn_epsilon, self.bn_momentum = norm, bn_epsilon, bn_momentum
        self.zero_init_residual, self.drop_path_rate = zero_init_residual, drop_path_rate
        self.conv_bias, self.subsample_shortcut = conv_bias, subsample_shortcut
        self.avg_down, self.se_ratio = avg_down, float(se_ratio)
        self.out_channels = filters * self.expansion
        if drop_path_rate:
            self.seed_generator = keras.random.SeedGenerator(name="drop_path_seed")

    def _bn(self, name, zero_init=False):
        return norm_layer(self.norm, name, self.bn_epsilon, self.bn_momentum, zero_init)

    def build(self, input_shape):
        if self.preact:
            self.pre = [self._bn("preact_bn"), layers.ReLU(name="preact_relu")]
            self._build_chain(self.pre, input_shape)
        self.branch = self._branch_layers(input_shape[-1])
        if self.se_ratio:
            # ResNet-RS / SE-ResNet: gates on the block's output channels before the add, the
            # reduced width rounded to a multiple of 8 as timm's `make_divisible` rounds it.
            self.branch.append(SqueezeExcite(se_channels(self.out_channels, self.se_ratio),
                                             name="se"))
        out_shape = self._build_chain(self.branch, input_shape)
        if self.residual:
            self.shortcut = Shortcut(
                self.out_channels, self.stride, self.shortcut_option, normalize=not self.preact,
                norm=self.norm, bn_epsilon=self.bn_epsilon, bn_momentum=self.bn_momentum,
                use_bias=self.conv_bias and self.preact,
                project_stride=not self.subsample_shortcut, avg_down=self.avg_down,
                name="shortcut")
            self._build_chain([self.shortcut], input_shape)
        if not self.preact:
            self.out_relu = layers.ReLU(name="out_relu")
            self._build_chain([self.out_relu], out_shape)
        self.built = True

    def _drop_path(self, x, training):
        """Stochastic depth (Huang et al. 2016): drop the whole branch per sample."""
        if not (training and self.drop_path_rate):
            return x
        keep = 1.0 - self.drop_path_rate
        mask = keras.random.uniform((ops.shape(x)[0], 1, 1, 1), seed=self.seed_generator)
        return x * ops.cast(mask < keep, x.dtype) / keep

    def call(self, x, training=None):
        if self.preact:
            # "Identity Mappings": a projection shortcut shares the block's pre-activation.
            pre = self._run(self.pre, x, training)
            identity = pre if self.residual and self.shortcut.project else x
            y = self._run(self.branch, pre, training)
        else:
            identity, y = x, self._run(self.branch, x, training)
        if self.residual:
            y = self._drop_path(y, training) + self.shortcut(identity, training=training)
        return y if self.preact else self.out_relu(y)

    def compute_output_shape(self, input_shape):
        return strided_shape(input_shape, self.stride, self.out_channels)

    def get_config(self):
        return {**super().get_config(), "filters": self.filters, "stride": self.stride,
                "shortcut": self.shortcut_option, "residual": self.residual,
                "preact": self.preact, "dilation": self.dilation, "norm": self.norm,
                "bn_epsilon": self.bn_epsilon, "bn_momentum": self.bn_momentum,
                "zero_init_residual": self.zero_init_residual,
                "drop_path_rate": self.drop_path_rate, "conv_bias": self.conv_bias,
                "subsample_shortcut": self.subsample_shortcut, "avg_down": self.avg_down,
                **({"se_ratio": self.se_ratio} if self.se_ratio else {})}


def se_channels(channels: int, ratio: float, divisor: int = 8) -> int:
    """`channels * ratio` to the nearest multiple of `divisor` (timm's make_divisible)."""
    return max(divisor, int(channels * ratio + divisor / 2) // divisor * divisor)


@keras.saving.register_keras_serializable(PACKAGE)
class BasicBlock(_Block):
    """Two 3x3 convolutions (paper Fig. 2 left); `preact=True` gives He et al. 2016's unit."""

    def _branch_layers(self, in_channels):
        f, d = self.filters, self.dilation
        chain = conv(f, 3, self.stride, name="conv1", dilation=d)
        chain += [self._bn("bn1"), layers.ReLU(name="relu1")]
        chain += conv(f, 3, name="conv2", dilation=d)
        if not self.preact:
            chain.append(self._bn("bn2", zero_init=self.zero_init_residual))
        return chain


@keras.saving.register_keras_serializable(PACKAGE)
class Bottleneck(_Block):
    """1x1 reduce, 3x3 (grouped for ResNeXt), 1x1 expand x4 (paper Fig. 5 right).

    `stride_in_1x1=False` strides the 3x3 (ResNet v1.5, torchvision's default);
    `True` strides the first 1x1 as the paper and keras.applications do.
    """

    expansion = 4

    def __init__(self, filters: int, stride: int = 1, *, groups: int = 1,
                 width_per_group: int = 64, stride_in_1x1: bool = False, scale: int = 1,
                 **kwargs):
        if not isinstance(scale, int) or scale < 1:
            raise ValueError(f"scale must be a positive integer, got {scale!r}")
        self.groups, self.width_per_group = groups, width_per_group
        self.stride_in_1x1, self.scale = stride_in_1x1, scale
        super().__init__(filters, stride, **kwargs)

    @property
    def inner_width(self) -> int:
        return int(self.filters * self.width_per_group / 64) * self.groups

    def _branch_layers(self, in_channels):
        w, d = self.inner_width, self.dilation
        s1, s3 = (self.stride, 1) if self.stride_in_1x1 else (1, self.stride)
        if self.scale > 1:
            chain = conv(w * self.scale, 1, s1, name="conv1")
            chain += [self._bn("bn1"), layers.ReLU(name="relu1")]
            # timm's `is_first`: the block that strides or changes the channel count.
            first = self.stride > 1 or in_channels != self.out_channels
            chain.append(MultiScaleConv(
                w, self.scale, s3, groups=self.groups, dilation=d, first=first, norm=self.norm,
                bn_epsilon=self.bn_epsilon, bn_momentum=self.bn_momentum, name="conv2"))
        else:
            chain = conv(w, 1, s1, name="conv1") + [self._bn("bn1"), layers.ReLU(name="relu1")]
            chain += conv(w, 3, s3, name="conv2", groups=self.groups, dilation=d)
            chain += [self._bn("bn2"), layers.ReLU(name="relu2")]
        chain += conv(self.out_channels, 1, name="conv3", use_bias=self.conv_bias and self.preact)
        if not self.preact:
            chain.append(self._bn("bn3", zero_init=self.zero_init_residual))
        return chain

    def get_config(self):
        config = {**super().get_config(), "groups": self.groups,
                  "width_per_group": self.width_per_group, "stride_in_1x1": self.stride_in_1x1}
        if self.scale > 1:  # Res2Net only: earlier configs stay as they were
            config["scale"] = self.scale
        return config


BLOCKS = {"basic": BasicBlock, "bottleneck": Bottleneck}


@keras.saving.register_keras_serializable(PACKAGE)
class Stem(Composite):
    """conv1 of Table 1 (7x7/2 conv, BN, ReLU, 3x3/2 max-pool) or the CIFAR 3x3/1 conv.

    `kind="deep"` replaces the 7x7 by three 3x3 convolutions of `filters // 2`, `filters // 2`
    and `filters` channels, the first with stride 2 (ResNet-C/D, He et al. 2019), each followed
    by BN and ReLU, then the same max-pool.

    `pool="conv"` replaces the max-pool by a 3x3/2 convolution + BN + ReLU (ResNet-RS, Bello
    et al. 2021; timm's `replace_stem_pool`).

    Pre-activation networks leave the stem's output un-normalised: the first block's
    pre-activation does it (He et al. 2016, section 4.1).
    """

    def __init__(self, filters: int = 64, kind: str = "imagenet", *, preact: bool = False,
                 norm: str = "batch", bn_epsilon: float = 1e-5, bn_momentum: float = 0.9,
                 conv_bias: bool = False, pool: str = "max", **kwargs):
        super().__init__(**kwargs)
        if kind not in ("imagenet", "deep", "cifar"):
            raise ValueError(f"stem kind must be 'imagenet', 'deep' or 'cifar', got {kind!r}")
        if pool not in STEM_POOLS:
            raise ValueError(f"stem pool must be one of {STEM_POOLS}, got {pool!r}")
        self.pool = pool
        self.filters, self.kind, self.preact, self.norm = filters, kind, preact, norm
        self.bn_epsilon, self.bn_momentum, self.conv_bias = bn_epsilon, bn_momentum, conv_bias

    def build(self, input_shape):
        big = self.kind != "cifar"
        chain = []
        if self.kind == "deep":
            half = self.filters // 2
            for i, stride in ((1, 2), (2, 1)):
                chain += conv(half, 3, stride, name=f"conv{i}", use_bias=self.conv_bias)
                chain += [norm_layer(self.norm, f"bn{i}", self.bn_epsilon, self.bn_momentum),
                          layers.ReLU(name=f"relu{i}")]
        first = 7 if self.kind == "imagenet" else 3
        chain += conv(self.filters, first, 2 if self.kind == "imagenet" else 1, name="conv",
                      use_bias=self.conv_bias)
        if not self.preact:
            chain += [norm_layer(self.norm, "bn", self.bn_epsilon, self.bn_momentum),
                      layers.ReLU(name="relu")]
        if big and self.pool == "conv":
            chain += conv(self.filters, 3, 2, name="pool_conv")
            chain += [norm_layer(self.norm, "pool_bn", self.bn_epsilon, self.bn_momentum),
                      layers.ReLU(name="pool_relu")]
        elif big:
            # Zero padding equals PyTorch's -inf padding after a ReLU, and keras.applications'.
            chain += [layers.ZeroPadding2D(1, name="pool_pad"),
                      layers.MaxPooling2D(3, strides=2, name="pool")]
        self.chain = chain
        self._build_chain(chain, input_shape)
        self.built = True

    def call(self, x, training=None):
        return batch_of_one_branch(lambda t: self._run(self.chain, t, training), x, training)

    def compute_output_shape(self, input_shape):
        return strided_shape(input_shape, 1 if self.kind == "cifar" else 4, self.filters)

    def get_config(self):
        return {**super().get_config(), "filters": self.filters, "kind": self.kind,
                "preact": self.preact, "norm": self.norm, "bn_epsilon": self.bn_epsilon,
                "bn_momentum": self.bn_momentum, "conv_bias": self.conv_bias,
                **({"pool": self.pool} if self.pool != "max" else {})}


@keras.saving.register_keras_serializable(PACKAGE)
class Stage(Composite):
    """One row of Table 1 (conv2_x ... conv5_x): `depth` blocks, the first one strided.

    `dilation > 1` replaces the stride by atrous convolution (DeepLab, detectron2 DC5);
    `drop_path_rates` gives each block its stochastic-depth rate; `downsample="last"`
    strides the last block instead of the first (keras.applications ResNetV2).
    """

    def __init__(self, block: str, filters: int, depth: int, stride: int = 1, *,
                 dilation: int = 1, drop_path_rates: tuple[float, ...] | None = None,
                 block_kwargs: dict | None = None, downsample: str = "first", **kwargs):
        super().__init__(**kwargs)
        if block not in BLOCKS:
            raise ValueError(f"block must be one of {sorted(BLOCKS)}, got {block!r}")
        if depth < 1:
            raise ValueError(f"stage depth must be >= 1, got {depth}")
        if downsample not in DOWNSAMPLE:
            raise ValueError(f"downsample must be one of {DOWNSAMPLE}, got {downsample!r}")
        self.block, self.filters, self.depth, self.stride = block, filters, depth, stride
        self.dilation, self.downsample = dilation, downsample
        self.drop_path_rates = tuple(drop_path_rates or (0.0,) * depth)
        self.block_kwargs = dict(block_kwargs or {})
        cls = BLOCKS[block]
        strided = 0 if downsample == "first" else depth - 1
        self.blocks = [
            cls(filters, stride if (i == strided and dilation == 1) else 1, dilation=dilation,
                drop_path_rate=self.drop_path_rates[i], name=f"block{i + 1}", **self.block_kwargs)
            for i in range(depth)
        ]

    def build(self, input_shape):
        self._build_chain(self.blocks, input_shape)
        self.built = True

    def call(self, x, training=None):
        return batch_of_one_branch(lambda t: self._run(self.blocks, t, training), x, training)

    def compute_output_shape(self, input_shape):
        return _chain_shape(self.blocks, input_shape)

    def get_config(self):
        return {**super().get_config(), "block": self.block, "filters": self.filters,
                "depth": self.depth, "stride": self.stride, "dilation": self.dilation,
                "drop_path_rates": list(self.drop_path_rates), "block_kwargs": self.block_kwargs,
                "downsample": self.downsample}


def _chain_shape(chain, shape):
    for layer in chain:
        shape = layer.compute_output_shape(shape)
    return shape
