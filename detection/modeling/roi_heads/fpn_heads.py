"""The FPN second stage (Lin et al. 2017, sec. 4.2): each RoI pooled 7x7 from its pyramid
level (eq. 1), two 1024-d fully connected ReLU layers, then the predictors. Optional 3x3
conv + BN + ReLU layers before the first FC give torchvision's v2 head (4 convs, 1 FC)."""

from __future__ import annotations

from collections.abc import Sequence

import keras
from keras import layers, ops

from detection.modeling.ops import roi_align
from detection.modeling.roi_heads.base import ROIHeads


@keras.saving.register_keras_serializable(package="detection")
class FPNROIHeads(ROIHeads):
    """Multi-level RoIAlign on P2..P5 (`strides`) + `conv_dims` 3x3 conv/BN/ReLU layers +
    `fc_dims` dense layers + predictors. `aligned`, `sampling_ratio` (0: adaptive) and
    `level_rule` set the pooling (see `detection.modeling.ops.roi_align`)."""

    head_type = "fpn"

    def __init__(self, num_classes: int, strides: Sequence[int] = (4, 8, 16, 32),
                 pooled_size: int = 7, fc_dims: Sequence[int] = (1024, 1024),
                 sampling_ratio: int = 2, aligned: bool = True, level_rule: str = "detectron2",
                 conv_dims: Sequence[int] = (), **kwargs):
        super().__init__(num_classes, **kwargs)
        if level_rule not in roi_align.LEVEL_RULES:
            raise ValueError(f"level_rule must be one of {roi_align.LEVEL_RULES}, "
                             f"got {level_rule!r}")
        self.strides = tuple(int(s) for s in strides)
        self.pooled_size = int(pooled_size)
        self.fc_dims = tuple(int(d) for d in fc_dims)
        self.sampling_ratio = int(sampling_ratio)
        self.aligned = bool(aligned)
        self.level_rule = level_rule
        self.conv_dims = tuple(int(d) for d in conv_dims)
        self.convs = [layers.Conv2D(d, 3, padding="same", use_bias=False, name=f"conv{i + 1}",
                                    dtype=self.dtype_policy)
                      for i, d in enumerate(self.conv_dims)]
        self.conv_bns = [layers.BatchNormalization(epsilon=1e-5, name=f"conv{i + 1}_bn",
                                                   dtype=self.dtype_policy)
                         for i in range(len(self.conv_dims))]
        self.flatten = layers.Flatten(dtype=self.dtype_policy)
        self.fcs = [layers.Dense(d, activation="relu", name=f"fc{i + 1}", dtype=self.dtype_policy)
                    for i, d in enumerate(self.fc_dims)]

    def build(self, input_shape):
        if self.built:
            return
        channels = input_shape[0][-1]
        for conv, bn in zip(self.convs, self.conv_bns, strict=True):
            conv.build((None, self.pooled_size, self.pooled_size, channels))
            channels = conv.filters
            bn.build((None, self.pooled_size, self.pooled_size, channels))
        width = self.pooled_size * self.pooled_size * channels
        for fc in self.fcs:
            fc.build((1, width))
            width = fc.units
        self.cls.build((1, width))
        self.box.build((1, width))
        self.built = True

    def box_outputs(self, features, rois, training=False):
        r = rois.shape[1]
        levels = list(features)[: len(self.strides)]
        pooled = roi_align.multilevel_roi_align(levels, self.strides, rois, self.pooled_size,
                                                self.sampling_ratio, self.aligned,
                                                self.level_rule)
        x = ops.reshape(pooled, (-1,) + tuple(pooled.shape[2:]))
        for conv, bn in zip(self.convs, self.conv_bns, strict=True):
            x = ops.relu(bn(conv(x), training=training))
        x = self.flatten(x)
        for fc in self.fcs:
            x = fc(x)
        return self._outputs(x, r)

    def mask_features(self, features, rois, training=False, pooled_size: int = 14):
        """Each RoI pooled `pooled_size` square from its level (Mask R-CNN's FPN mask branch:
        the box head's pooler at 14x14)."""
        levels = list(features)[: len(self.strides)]
        pooled = roi_align.multilevel_roi_align(levels, self.strides, rois, pooled_size,
                                                self.sampling_ratio, self.aligned,
                                                self.level_rule)
        return ops.reshape(pooled, (-1,) + tuple(pooled.shape[2:]))

    def mask_feature_shape(self, input_shape, pooled_size: int = 14) -> tuple:
        """Shape of `mask_features` for maps of `input_shape` (one RoI)."""
        return (1, pooled_size, pooled_size, input_shape[0][-1])

    def get_config(self) -> dict:
        return {**super().get_config(), "strides": self.strides,
                "pooled_size": self.pooled_size, "fc_dims": self.fc_dims,
                "sampling_ratio": self.sampling_ratio, "aligned": self.aligned,
                "level_rule": self.level_rule, "conv_dims": self.conv_dims}
