"""Learning-rate schedules, one family sharing its warm-up: the paper's step decay by iteration
(with its gated warm-up), detectron2's linearly warmed-up step decay (`WarmupStepLR`, used by
`detection`), and the modern linear-warm-up + cosine one. All are serializable Keras
schedules of the step."""

from __future__ import annotations

import math
from collections.abc import Sequence

import keras
from keras import ops

from keras_resnet_suite import compat


def linear_warmup(step, warmup_steps: int, start_factor: float = 0.0):
    """The warm-up factor of every schedule here: rises linearly from `start_factor` at step 0
    to 1 at `warmup_steps`, 1 afterwards (and always 1 without warm-up steps)."""
    if warmup_steps <= 0:
        return 1.0
    alpha = ops.minimum(ops.cast(step, "float32") / warmup_steps, 1.0)
    return start_factor + (1.0 - start_factor) * alpha


@keras.saving.register_keras_serializable("keras_resnet_suite")
class StepDecay(keras.optimizers.schedules.LearningRateSchedule):
    """`base_lr * factor**k` after the k-th boundary (paper Sec. 4.2: /10 at 32k and 48k).

    `warmup_lr`, when given, is used instead until `warmup_done` is set (by the
    `WarmupUntilError` callback): the paper's 110-layer net trains at 0.01 until the training
    error falls below 80%, then returns to 0.1 (Sec. 4.2). `warmup_steps` instead multiplies
    the rate by `linear_warmup(step, warmup_steps, warmup_factor)` (Goyal et al. 2017).
    """

    def __init__(
        self,
        base_lr: float,
        boundaries: Sequence[int],
        factor: float = 0.1,
        warmup_lr: float | None = None,
        warmup_done: bool = False,
        warmup_steps: int = 0,
        warmup_factor: float = 0.001,
    ):
        if list(boundaries) != sorted(boundaries):
            raise ValueError(f"boundaries must be increasing, got {list(boundaries)}")
        self.base_lr = float(base_lr)
        self.boundaries = [int(b) for b in boundaries]
        self.factor = float(factor)
        self.warmup_lr = None if warmup_lr is None else float(warmup_lr)
        # A Python flag, read when the train function is traced: the callback that flips it
        # retraces, so the switch works under tf.function and jax.jit alike.
        self.warmup_done = bool(warmup_done)
        self.warmup_steps = int(warmup_steps)
        self.warmup_factor = float(warmup_factor)

    def __call__(self, step):
        if self.warmup_lr is not None and not self.warmup_done:
            return ops.convert_to_tensor(self.warmup_lr, "float32")
        step = ops.cast(step, "float32")
        k = sum(ops.cast(step >= b, "float32") for b in self.boundaries) if self.boundaries else 0.0
        lr = self.base_lr * ops.power(self.factor, k)
        return lr * linear_warmup(step, self.warmup_steps, self.warmup_factor)

    def get_state(self) -> dict:
        return {"warmup_done": self.warmup_done}

    def set_state(self, state: dict) -> None:
        self.warmup_done = bool(state.get("warmup_done", self.warmup_done))

    def get_config(self) -> dict:
        return {
            "base_lr": self.base_lr,
            "boundaries": self.boundaries,
            "factor": self.factor,
            "warmup_lr": self.warmup_lr,
            "warmup_done": self.warmup_done,
            "warmup_steps": self.warmup_steps,
            "warmup_factor": self.warmup_factor,
        }


@keras.saving.register_keras_serializable("keras_resnet_suite")
class WarmupStepLR(StepDecay):
    """detectron2's `WarmupMultiStepLR` in its own argument names: `base_lr * gamma**k *
    linear_warmup(step, warmup_steps, warmup_factor)`, `k` counting the passed `steps`."""

    def __init__(self, base_lr: float, steps: Sequence[int] = (), gamma: float = 0.1,
                 warmup_steps: int = 0, warmup_factor: float = 0.001):
        super().__init__(base_lr, steps, gamma, warmup_steps=warmup_steps,
                         warmup_factor=warmup_factor)

    @property
    def steps(self) -> list[int]:
        return self.boundaries

    @property
    def gamma(self) -> float:
        return self.factor

    def get_config(self) -> dict:
        return {"base_lr": self.base_lr, "steps": self.steps, "gamma": self.gamma,
                "warmup_steps": self.warmup_steps, "warmup_factor": self.warmup_factor}


@keras.saving.register_keras_serializable("keras_resnet_suite")
class WarmupCosine(keras.optimizers.schedules.LearningRateSchedule):
    """Linear warm-up from 0 to `peak_lr` over `warmup_steps`, then cosine decay to
    `final_lr` at `total_steps` (Goyal et al. 2017; Loshchilov & Hutter 2017)."""

    def __init__(
        self, peak_lr: float, total_steps: int, warmup_steps: int = 0, final_lr: float = 0.0
    ):
        if total_steps <= 0 or not 0 <= warmup_steps <= total_steps:
            raise ValueError(
                f"need 0 <= warmup_steps ({warmup_steps}) <= total_steps ({total_steps}), total > 0"
            )
        self.peak_lr = float(peak_lr)
        self.total_steps = int(total_steps)
        self.warmup_steps = int(warmup_steps)
        self.final_lr = float(final_lr)

    def __call__(self, step):
        step = ops.cast(step, "float32")
        warm = self.peak_lr * linear_warmup(step + 1.0, self.warmup_steps)
        span = max(self.total_steps - self.warmup_steps, 1)
        t = ops.clip((step - self.warmup_steps) / span, 0.0, 1.0)
        cos = self.final_lr + 0.5 * (self.peak_lr - self.final_lr) * (1.0 + ops.cos(math.pi * t))
        return ops.where(step < self.warmup_steps, warm, cos)

    def get_config(self) -> dict:
        return {
            "peak_lr": self.peak_lr,
            "total_steps": self.total_steps,
            "warmup_steps": self.warmup_steps,
            "final_lr": self.final_lr,
        }


def schedule_of(optimizer) -> object | None:
    """The LearningRateSchedule driving `optimizer` (through wrappers: LossScaleOptimizer,
    LayerLRMultiplier), or None."""
    opt = optimizer
    while hasattr(opt, "inner_optimizer"):
        opt = opt.inner_optimizer
    lr = compat.learning_rate_object(opt)
    return lr if isinstance(lr, keras.optimizers.schedules.LearningRateSchedule) else None
