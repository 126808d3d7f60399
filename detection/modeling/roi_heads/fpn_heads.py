"""The FPN second stage (Lin et al. 2017, sec. 4.2): each RoI pooled 7x7 from its pyramid
level (eq. 1), two 1024-d fully connected ReLU layers, then the predictors."""

from __future__ import annotations

from collections.abc import Sequence

import keras
from keras import layers, ops

from detection.modeling.ops import roi_align
from detection.modeling.roi_heads.base import ROIHeads


@keras.saving.register_keras_serializable(package="detection")
class FPNROIHeads(ROIHeads):
    """Multi-level RoIAlign on P2..P5 (`strides`) + `fc_dims` dense layers + predictors."""

    def __init__(self, num_classes: int, image_size, strides: Sequence[int] = (4, 8, 16, 32),
                 pooled_size: int = 7, fc_dims: Sequence[int] = (1024, 1024),
                 sampling_ratio: int = 2, **kwargs):
        super().__init__(num_classes, image_size, **kwargs)
        self.strides = tuple(int(s) for s in strides)
        self.pooled_size = int(pooled_size)
        self.fc_dims = tuple(int(d) for d in fc_dims)
        self.sampling_ratio = int(sampling_ratio)
        self.flatten = layers.Flatten(dtype=self.dtype_policy)
        self.fcs = [layers.Dense(d, activation="relu", name=f"fc{i + 1}", dtype=self.dtype_policy)
                    for i, d in enumerate(self.fc_dims)]

    def build(self, input_shape):
        if self.built:
            return
        width = self.pooled_size * self.pooled_size * input_shape[0][-1]
        for fc in self.fcs:
            fc.build((1, width))
            width = fc.units
        self.cls.build((1, width))
        self.box.build((1, width))
        self.built = True

    def predict(self, features, rois, training=False):
        r = rois.shape[1]
        levels = list(features)[: len(self.strides)]
        pooled = roi_align.multilevel_roi_align(levels, self.strides, rois, self.pooled_size,
                                                self.sampling_ratio)
        x = self.flatten(ops.reshape(pooled, (-1,) + tuple(pooled.shape[2:])))
        for fc in self.fcs:
            x = fc(x)
        return self._outputs(x, r)

    def get_config(self) -> dict:
        return {**super().get_config(), "strides": self.strides,
                "pooled_size": self.pooled_size, "fc_dims": self.fc_dims,
                "sampling_ratio": self.sampling_ratio}
