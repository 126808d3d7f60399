"""Second-stage box heads (C4 and FPN) and the FPN neck.

C4 (the paper's Appendix A, detectron2 `Res5ROIHeads`): RoIAlign 14x14 on the stride-16 C4
map, the backbone's own `conv5_x` stage run on every RoI, global average pooling, then class
scores and class-specific box deltas. FPN (Lin et al. 2017): P2-P6 from C2-C5, RoIAlign 7x7 on
each RoI's level, two 1024-d fully connected layers.
"""

from __future__ import annotations

from collections.abc import Sequence

import keras
from keras import layers, ops

from detection import roi_align


def _predictors(num_classes: int, dtype):
    """Class logits (K + 1, background last) and class-specific deltas (4K), detectron2 init."""
    cls = layers.Dense(num_classes + 1, name="class_logits", dtype=dtype,
                       kernel_initializer=keras.initializers.RandomNormal(stddev=0.01))
    box = layers.Dense(4 * num_classes, name="box_deltas", dtype=dtype,
                       kernel_initializer=keras.initializers.RandomNormal(stddev=0.001))
    return cls, box


class C4BoxHead(layers.Layer):
    """RoIAlign on C4 + the backbone's `res5` stage per RoI + predictors.

    `res5` is the backbone's `conv5_x` layer object, so its weights are the backbone's
    (ImageNet-pretrained when the backbone is).
    """

    def __init__(self, res5: layers.Layer, num_classes: int, pooled_size: int = 14,
                 stride: int = 16, sampling_ratio: int = 2, **kwargs):
        super().__init__(**kwargs)
        self.res5 = res5
        self.num_classes = num_classes
        self.pooled_size = pooled_size
        self.stride = stride
        self.sampling_ratio = sampling_ratio
        self.pool = layers.GlobalAveragePooling2D(name="res5_pool", dtype=self.dtype_policy)
        self.cls, self.box = _predictors(num_classes, self.dtype_policy)

    def call(self, features, rois, training=False):
        """`features`: the C4 map `[B, H, W, C]`; `rois [B, R, 4]` -> `([B, R, K+1], [B, R, K, 4])`."""
        r = rois.shape[1]
        pooled = roi_align.roi_align(features, rois, self.pooled_size, 1.0 / self.stride,
                                     self.sampling_ratio, aligned=True)
        pooled = ops.reshape(pooled, (-1,) + tuple(pooled.shape[2:]))
        x = self.pool(self.res5(pooled, training=training))
        logits = ops.reshape(self.cls(x), (-1, r, self.num_classes + 1))
        deltas = ops.reshape(self.box(x), (-1, r, self.num_classes, 4))
        return logits, deltas


class FPNBoxHead(layers.Layer):
    """Multi-level RoIAlign 7x7 + `fc_dims` fully connected ReLU layers + predictors."""

    def __init__(self, num_classes: int, strides: Sequence[int] = (4, 8, 16, 32),
                 pooled_size: int = 7, fc_dims: Sequence[int] = (1024, 1024),
                 sampling_ratio: int = 2, **kwargs):
        super().__init__(**kwargs)
        self.num_classes = num_classes
        self.strides = tuple(strides)
        self.pooled_size = pooled_size
        self.sampling_ratio = sampling_ratio
        self.flatten = layers.Flatten(dtype=self.dtype_policy)
        self.fcs = [layers.Dense(d, activation="relu", name=f"fc{i + 1}", dtype=self.dtype_policy)
                    for i, d in enumerate(fc_dims)]
        self.cls, self.box = _predictors(num_classes, self.dtype_policy)

    def call(self, features: Sequence, rois, training=False):
        """`features` P2..P5 in stride order; `rois [B, R, 4]`."""
        r = rois.shape[1]
        pooled = roi_align.multilevel_roi_align(list(features), self.strides, rois,
                                                self.pooled_size, self.sampling_ratio)
        x = self.flatten(ops.reshape(pooled, (-1,) + tuple(pooled.shape[2:])))
        for fc in self.fcs:
            x = fc(x)
        logits = ops.reshape(self.cls(x), (-1, r, self.num_classes + 1))
        deltas = ops.reshape(self.box(x), (-1, r, self.num_classes, 4))
        return logits, deltas


class FPN(layers.Layer):
    """Feature pyramid: lateral 1x1 + top-down nearest upsampling + 3x3 output convs; P6 is
    a stride-2 subsampling of P5 (detectron2 `LastLevelMaxPool`). Inputs C2..C5, outputs
    P2..P6 (strides 4..64), all `channels` wide."""

    def __init__(self, channels: int = 256, num_inputs: int = 4, **kwargs):
        super().__init__(**kwargs)
        self.channels = channels
        self.lateral = [layers.Conv2D(channels, 1, name=f"lateral{i + 2}", dtype=self.dtype_policy)
                        for i in range(num_inputs)]
        self.output_convs = [layers.Conv2D(channels, 3, padding="same", name=f"output{i + 2}",
                                           dtype=self.dtype_policy) for i in range(num_inputs)]
        self.p6 = layers.MaxPooling2D(1, strides=2, name="p6", dtype=self.dtype_policy)
        self.upsample = layers.UpSampling2D(2, interpolation="nearest", dtype=self.dtype_policy)

    def call(self, features: Sequence):
        laterals = [conv(f) for conv, f in zip(self.lateral, features, strict=True)]
        merged = [laterals[-1]]
        for lat in reversed(laterals[:-1]):
            merged.insert(0, lat + self.upsample(merged[0]))
        outs = [conv(m) for conv, m in zip(self.output_convs, merged, strict=True)]
        return outs + [self.p6(outs[-1])]
