"""SGD with the paper's weight decay (an L2 term in the gradient, before momentum), optionally
sparing batch-norm parameters and biases (modern recipes)."""

from __future__ import annotations

import keras
from keras import ops


@keras.saving.register_keras_serializable("keras_resnet_suite")
class SGDL2(keras.optimizers.SGD):
    """`keras.optimizers.SGD` plus coupled L2 decay: g <- g + l2 * w, as Caffe/Torch and the
    paper (weight decay 1e-4, Sec. 3.4) apply it. Keras's own `weight_decay` is decoupled
    (w <- w - lr * wd * w, outside momentum), which is a different, weaker regulariser.

    `decay_norm_and_bias=False` exempts every 1-D variable (BN gamma/beta, biases).
    """

    def __init__(
        self,
        learning_rate=0.1,
        momentum=0.9,
        nesterov=False,
        l2: float = 1e-4,
        decay_norm_and_bias: bool = True,
        **kwargs,
    ):
        super().__init__(
            learning_rate=learning_rate, momentum=momentum, nesterov=nesterov, **kwargs
        )
        if l2 < 0:
            raise ValueError(f"l2 must be >= 0, got {l2}")
        self.l2 = float(l2)
        self.decay_norm_and_bias = bool(decay_norm_and_bias)

    def decays(self, variable) -> bool:
        """Whether `variable` receives the L2 term."""
        return self.l2 > 0 and (self.decay_norm_and_bias or len(variable.shape) > 1)

    def update_step(self, gradient, variable, learning_rate):
        if self.decays(variable):
            gradient = ops.add(
                ops.cast(gradient, variable.dtype),
                ops.multiply(ops.cast(self.l2, variable.dtype), variable),
            )
        super().update_step(gradient, variable, learning_rate)

    def get_config(self) -> dict:
        config = super().get_config()
        config.update({"l2": self.l2, "decay_norm_and_bias": self.decay_norm_and_bias})
        return config
