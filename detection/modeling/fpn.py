"""Feature Pyramid Network (Lin et al. 2017, sec. 3): P2-P6 from the backbone's C2-C5."""

from __future__ import annotations

from collections.abc import Sequence

import keras
from keras import layers


@keras.saving.register_keras_serializable(package="detection")
class FPN(layers.Layer):
    """Feature pyramid: lateral 1x1 + top-down nearest upsampling + 3x3 output convs; P6 is
    a stride-2 subsampling of P5 (detectron2 `LastLevelMaxPool`). Inputs C2..C5, outputs
    P2..P6 (strides 4..64), all `channels` wide. `norm="batch"` puts a BatchNormalization
    after every conv (which then has no bias), as torchvision's v2 detector does."""

    def __init__(self, channels: int = 256, num_inputs: int = 4, norm: str | None = None,
                 **kwargs):
        super().__init__(**kwargs)
        if norm not in (None, "batch"):
            raise ValueError(f"FPN norm must be None or 'batch', got {norm!r}")
        self.channels = channels
        self.norm = norm
        bias = norm is None

        def convs(kernel, prefix):
            return [layers.Conv2D(channels, kernel, padding="same", use_bias=bias,
                                  name=f"{prefix}{i + 2}", dtype=self.dtype_policy)
                    for i in range(num_inputs)]

        def norms(prefix):
            if norm is None:
                return []
            return [layers.BatchNormalization(epsilon=1e-5, name=f"{prefix}{i + 2}_bn",
                                              dtype=self.dtype_policy)
                    for i in range(num_inputs)]

        self.lateral, self.output_convs = convs(1, "lateral"), convs(3, "output")
        self.lateral_norms, self.output_norms = norms("lateral"), norms("output")
        self.p6 = layers.MaxPooling2D(1, strides=2, name="p6", dtype=self.dtype_policy)
        self.upsample = layers.UpSampling2D(2, interpolation="nearest", dtype=self.dtype_policy)

    def build(self, input_shape):
        for i, shape in enumerate(input_shape):
            out = tuple(shape[:-1]) + (self.channels,)
            self.lateral[i].build(tuple(shape))
            self.output_convs[i].build(out)
            for norm_layers in (self.lateral_norms, self.output_norms):
                if norm_layers:
                    norm_layers[i].build(out)
        self.built = True

    def _apply(self, convs, norms, xs, training):
        outs = [conv(x) for conv, x in zip(convs, xs, strict=True)]
        if norms:
            outs = [bn(x, training=training) for bn, x in zip(norms, outs, strict=True)]
        return outs

    def call(self, features: Sequence, training=None):
        laterals = self._apply(self.lateral, self.lateral_norms, features, training)
        merged = [laterals[-1]]
        for lat in reversed(laterals[:-1]):
            merged.insert(0, lat + self.upsample(merged[0]))
        outs = self._apply(self.output_convs, self.output_norms, merged, training)
        return outs + [self.p6(outs[-1])]

    def compute_output_shape(self, input_shape):
        shapes = [tuple(s[:-1]) + (self.channels,) for s in input_shape]
        last = shapes[-1]
        p6 = (last[0], None if last[1] is None else (last[1] + 1) // 2,
              None if last[2] is None else (last[2] + 1) // 2, self.channels)
        return shapes + [p6]

    def get_config(self) -> dict:
        return {**super().get_config(), "channels": self.channels,
                "num_inputs": len(self.lateral), "norm": self.norm}
