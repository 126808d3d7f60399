"""The mask branch of Mask R-CNN (He et al. 2017, sec. 3 and Fig. 4): a small fully
convolutional network on each RoI's features that predicts one binary mask per class.

The RoI features come from the box head's stage (`ROIHeads.mask_features`): FPN pools 14x14
from the RoI's pyramid level, C4 pools 14x14 on C4 and runs the box head's own `res5` (shared,
as detectron2's `Res5ROIHeads`), giving 7x7. The head then is: `conv_dims` 3x3 conv + ReLU
layers (FPN: 4 x 256; C4: none), a 2x2 stride-2 transposed conv + ReLU, and a 1x1 conv to one
logit map per class: FPN 28x28, C4 14x14 masks (detectron2's R50-C4). `norm="batch"` puts a
BatchNorm between each 3x3 conv (then bias-free) and its ReLU, as torchvision's v2 head
(`MaskRCNNHeads(..., norm_layer=BatchNorm2d)`).
"""

from __future__ import annotations

from collections.abc import Sequence

import keras
from keras import layers, ops

# He (fan-out) normal, as detectron2's `c2_msra_fill` and torchvision's kaiming_normal_.
_HE_FAN_OUT = {"class_name": "VarianceScaling",
               "config": {"scale": 2.0, "mode": "fan_out", "distribution": "untruncated_normal"}}
FPN_CONV_DIMS = (256, 256, 256, 256)


@keras.saving.register_keras_serializable(package="detection")
class MaskHead(layers.Layer):
    """`head(roi_features [N, h, w, C])` -> mask logits `[N, 2h, 2w, num_classes]`.

    Args:
        num_classes: object classes (no background mask).
        conv_dims: widths of the 3x3 conv + ReLU layers before upsampling (FPN: 4 x 256).
        deconv_dim: width of the 2x2 stride-2 transposed conv.
        norm: None, or "batch" for conv -> BatchNorm -> ReLU (torchvision v2).
    """

    def __init__(self, num_classes: int, conv_dims: Sequence[int] = FPN_CONV_DIMS,
                 deconv_dim: int = 256, norm: str | None = None, **kwargs):
        super().__init__(**kwargs)
        self.num_classes = int(num_classes)
        if self.num_classes < 1:
            raise ValueError(f"MaskHead: num_classes must be >= 1, got {num_classes!r}")
        self.conv_dims = tuple(int(d) for d in conv_dims)
        self.deconv_dim = int(deconv_dim)
        if norm not in (None, "batch"):
            raise ValueError(f"MaskHead: norm must be None or 'batch', got {norm!r}")
        self.norm = norm
        self.convs = [layers.Conv2D(d, 3, padding="same", activation=None if norm else "relu",
                                    use_bias=not norm, kernel_initializer=_HE_FAN_OUT,
                                    name=f"mask_fcn{i + 1}", dtype=self.dtype_policy)
                      for i, d in enumerate(self.conv_dims)]
        self.norms = [layers.BatchNormalization(epsilon=1e-5, name=f"mask_fcn{i + 1}_bn",
                                                dtype=self.dtype_policy)
                      for i in range(len(self.conv_dims) if norm else 0)]
        self.deconv = layers.Conv2DTranspose(self.deconv_dim, 2, strides=2, activation="relu",
                                             kernel_initializer=_HE_FAN_OUT, name="deconv",
                                             dtype=self.dtype_policy)
        self.predictor = layers.Conv2D(
            self.num_classes, 1, name="mask_logits", dtype=self.dtype_policy,
            kernel_initializer=keras.initializers.RandomNormal(stddev=0.001))

    def build(self, input_shape):
        if self.built:
            return
        shape = (None,) + tuple(input_shape[1:])
        for i, conv in enumerate(self.convs):
            conv.build(shape)
            shape = conv.compute_output_shape(shape)
            if self.norms:
                self.norms[i].build(shape)
        self.deconv.build(shape)
        shape = self.deconv.compute_output_shape(shape)
        self.predictor.build(shape)
        self.built = True

    def call(self, x, training=False):
        for i, conv in enumerate(self.convs):
            x = conv(x)
            if self.norms:
                x = ops.relu(self.norms[i](x, training=training))
        return self.predictor(self.deconv(x))

    def compute_output_shape(self, input_shape):
        n, h, w = input_shape[0], input_shape[1], input_shape[2]
        return (n, None if h is None else 2 * h, None if w is None else 2 * w, self.num_classes)

    def get_config(self) -> dict:
        return {**super().get_config(), "num_classes": self.num_classes,
                "conv_dims": self.conv_dims, "deconv_dim": self.deconv_dim, "norm": self.norm}


def mask_head_for(head: str, num_classes: int, dims: int = 256,
                  norm: str | None = None) -> MaskHead:
    """The mask head of a `"fpn"` (4 convs) or `"c4"` (deconv only) detector."""
    conv_dims = (dims,) * 4 if head == "fpn" else ()
    return MaskHead(num_classes, conv_dims, dims, norm, name="mask_head")


def class_masks(logits, classes):
    """Each RoI's map of its class: `logits [B, R, S, S, K]`, `classes [B, R]` (negative:
    padding, any map) -> `[B, R, S, S]`."""
    k = int(logits.shape[-1])
    picked = ops.one_hot(ops.clip(ops.cast(classes, "int32"), 0, k - 1), k)
    return ops.sum(ops.cast(logits, "float32") * picked[:, :, None, None, :], axis=-1)
