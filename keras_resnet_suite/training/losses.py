"""Cross-entropy with label smoothing (Szegedy et al. 2016) for integer or soft labels."""

from __future__ import annotations

import keras
from keras import ops


@keras.saving.register_keras_serializable("keras_resnet_suite")
class SmoothedCrossEntropy(keras.losses.Loss):
    """Cross-entropy against `(1 - eps) * y + eps / K`. `y_true` is either integer class ids
    [B] (or [B, 1]) or a distribution [B, K] (mixup / cutmix). `from_logits` as in Keras."""

    def __init__(
        self,
        label_smoothing: float = 0.1,
        from_logits: bool = False,
        name: str = "smoothed_cross_entropy",
        **kwargs,
    ):
        super().__init__(name=name, **kwargs)
        if not 0.0 <= label_smoothing < 1.0:
            raise ValueError(f"label_smoothing must be in [0, 1), got {label_smoothing}")
        self.label_smoothing = float(label_smoothing)
        self.from_logits = bool(from_logits)

    def call(self, y_true, y_pred):
        y_pred = ops.cast(y_pred, "float32")
        k = ops.shape(y_pred)[-1]
        if len(y_true.shape) == len(y_pred.shape) and y_true.shape[-1] not in (None, 1):
            target = ops.cast(y_true, "float32")
        else:
            ids = ops.cast(ops.reshape(y_true, (-1,)), "int32")
            target = ops.one_hot(ids, k, dtype="float32")
        eps = self.label_smoothing
        target = target * (1.0 - eps) + eps / ops.cast(k, "float32")
        if self.from_logits:
            log_p = ops.log_softmax(y_pred, axis=-1)
        else:
            log_p = ops.log(ops.clip(y_pred, 1e-7, 1.0))
        return -ops.sum(target * log_p, axis=-1)

    def get_config(self) -> dict:
        config = super().get_config()
        config.update({"label_smoothing": self.label_smoothing, "from_logits": self.from_logits})
        return config
