"""The paper's C4 second stage (Appendix A; detectron2 `Res5ROIHeads`): RoIAlign 14x14 on the
stride-16 C4 map, the backbone's `conv5_x` stage run on every RoI, global average pooling,
then class scores and class-specific box deltas."""

from __future__ import annotations

import keras
from keras import layers, ops

from detection.modeling.ops import roi_align
from detection.modeling.roi_heads.base import ROIHeads


@keras.saving.register_keras_serializable(package="detection")
class C4ROIHeads(ROIHeads):
    """`res5` is the backbone's `conv5_x` layer, moved here: its weights are the backbone's
    (ImageNet-pretrained when the backbone is), and the trunk stops at C4."""

    head_type = "c4"

    def __init__(self, res5: layers.Layer, num_classes: int, pooled_size: int = 14,
                 stride: int = 16, sampling_ratio: int = 2, aligned: bool = True, **kwargs):
        super().__init__(num_classes, **kwargs)
        if isinstance(res5, dict):
            res5 = keras.saving.deserialize_keras_object(res5)
        self.res5 = res5
        self.pooled_size = int(pooled_size)
        self.stride = int(stride)
        self.sampling_ratio = int(sampling_ratio)
        self.aligned = bool(aligned)
        self.pool = layers.GlobalAveragePooling2D(name="res5_pool", dtype=self.dtype_policy)

    def build(self, input_shape):
        if self.built:
            return
        channels = input_shape[0][-1]
        pooled = (1, self.pooled_size, self.pooled_size, channels)
        if not self.res5.built:
            self.res5.build(pooled)
        out = self.res5.compute_output_shape(pooled)
        self.pool.build(out)
        self.cls.build((1, out[-1]))
        self.box.build((1, out[-1]))
        self.built = True

    def box_outputs(self, features, rois, training=False):
        return self._outputs(self.pool(self.mask_features(features, rois, training)),
                             rois.shape[1])

    def mask_features(self, features, rois, training=False):
        """`res5` of the RoIs pooled on C4: the box head's features, which detectron2's C4
        mask head shares (one res5, its weights trained by both heads)."""
        pooled = roi_align.roi_align(features[0], rois, self.pooled_size, 1.0 / self.stride,
                                     self.sampling_ratio, aligned=self.aligned)
        pooled = ops.reshape(pooled, (-1,) + tuple(pooled.shape[2:]))
        return self.res5(pooled, training=training)

    def mask_feature_shape(self, input_shape) -> tuple:
        """Shape of `mask_features` for maps of `input_shape` (one RoI)."""
        return tuple(self.res5.compute_output_shape(
            (1, self.pooled_size, self.pooled_size, input_shape[0][-1])))

    def get_config(self) -> dict:
        return {**super().get_config(), "res5": keras.saving.serialize_keras_object(self.res5),
                "pooled_size": self.pooled_size, "stride": self.stride,
                "sampling_ratio": self.sampling_ratio, "aligned": self.aligned}
