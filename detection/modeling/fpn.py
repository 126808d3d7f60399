"""Feature Pyramid Network (Lin et al. 2017, sec. 3): P2-P6 from the backbone's C2-C5."""

from __future__ import annotations

from collections.abc import Sequence

import keras
from keras import layers


@keras.saving.register_keras_serializable(package="detection")
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

    def build(self, input_shape):
        for lateral, output, shape in zip(self.lateral, self.output_convs, input_shape,
                                          strict=True):
            lateral.build(tuple(shape))
            output.build(tuple(shape[:-1]) + (self.channels,))
        self.built = True

    def call(self, features: Sequence):
        laterals = [conv(f) for conv, f in zip(self.lateral, features, strict=True)]
        merged = [laterals[-1]]
        for lat in reversed(laterals[:-1]):
            merged.insert(0, lat + self.upsample(merged[0]))
        outs = [conv(m) for conv, m in zip(self.output_convs, merged, strict=True)]
        return outs + [self.p6(outs[-1])]

    def compute_output_shape(self, input_shape):
        shapes = [tuple(s[:-1]) + (self.channels,) for s in input_shape]
        last = shapes[-1]
        p6 = (last[0], None if last[1] is None else (last[1] + 1) // 2,
              None if last[2] is None else (last[2] + 1) // 2, self.channels)
        return shapes + [p6]

    def get_config(self) -> dict:
        return {**super().get_config(), "channels": self.channels,
                "num_inputs": len(self.lateral)}
