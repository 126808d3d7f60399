"""Training recipes: the paper's CIFAR and ImageNet schedules (Sec. 4.2, 3.4) and a modern one.

    recipe = get_recipe("paper-cifar", global_batch_size=128, steps_per_epoch=390, depth=110)
    recipe.apply_precision()           # before building the model
    model = krs.build("resnet110")
    recipe.compile(model)
    model.fit(recipe.prepare(data.train), epochs=recipe.epochs, callbacks=recipe.callbacks(), ...)

Fine-tuning a pretrained model (transfer learning) with a new head:

    recipe = get_recipe("fine-tune", global_batch_size=64, steps_per_epoch=80, total_steps=160,
                        freeze_at=2, lr_multipliers={"*": 0.1, "predictions": 1.0})
    model = training.finetune_model("resnet56", weights="resnet56-4bfd9763.th", classes=5)
    recipe.compile(model)              # freezes conv1..conv{freeze_at}_x, scales the rest's LR

The learning rate scales linearly with the global batch; iteration milestones are kept at the
same number of examples seen (the paper's 32k iterations at batch 128 become 16k at 256).
"""

from __future__ import annotations

import dataclasses
import math
import re

import keras

from keras_resnet_suite.backbones import freeze_stages
from keras_resnet_suite.schema import (
    LEARNING_RATE,
    NON_NEGATIVE_INT,
    POSITIVE_INT,
    Choice,
    Flag,
    ListOf,
    Multipliers,
    Number,
    check_fields,
    key,
)
from keras_resnet_suite.training.callbacks import NaNGuard, WarmupUntilError
from keras_resnet_suite.training.distribute import enable_multiworker_fit, scale_learning_rate
from keras_resnet_suite.training.losses import SmoothedCrossEntropy
from keras_resnet_suite.training.lr_multipliers import LayerLRMultiplier, check_multipliers
from keras_resnet_suite.training.mixing import mix_batches
from keras_resnet_suite.training.optimizers import SGDL2
from keras_resnet_suite.training.schedules import StepDecay, WarmupCosine

RECIPES = ("paper-cifar", "paper-imagenet", "modern", "fine-tune")
# fine-tune: every pretrained layer at 0.1x the new head's rate (last pattern wins)
FINETUNE_MULTIPLIERS = {"*": 0.1, "predictions": 1.0}
PRECISIONS = (None, "float32", "mixed_float16", "mixed_bfloat16")
_UNIT_OPEN = Number(float, low=0, high=1, open_high=True)  # momentum, label smoothing: [0, 1)


@dataclasses.dataclass
class Recipe:
    """Everything a run needs besides model and data; build with `get_recipe`."""

    name: str = key(Choice(RECIPES))
    global_batch_size: int = key(POSITIVE_INT)
    base_batch_size: int = key(POSITIVE_INT)
    base_lr: float = key(LEARNING_RATE)
    total_steps: int = key(POSITIVE_INT)
    steps_per_epoch: int | None = key(Number(int, low=1, optional=True))
    lr_policy: str = key(Choice(("steps", "plateau", "cosine")))
    boundaries: list[int] = key(ListOf(NON_NEGATIVE_INT))
    warmup_steps: int = key(NON_NEGATIVE_INT, 0)
    warmup_lr: float | None = key(Number(float, low=0, open_low=True, optional=True), None)
    momentum: float = key(_UNIT_OPEN, 0.9)
    nesterov: bool = key(Flag(), False)
    l2: float = key(Number(float, low=0), 1e-4)
    decay_norm_and_bias: bool = key(Flag(), True)
    label_smoothing: float = key(_UNIT_OPEN, 0.0)
    mixup_alpha: float = key(Number(float, low=0), 0.0)
    cutmix_alpha: float = key(Number(float, low=0), 0.0)
    ema_momentum: float | None = key(Number(float, low=0, high=1, open_high=True,
                                            optional=True), None)
    mixed_precision: str | None = key(Choice(PRECISIONS[1:], optional=True), None)
    jit_compile: bool | str = key(Choice((True, False, "auto")), "auto")
    seed: int = key(NON_NEGATIVE_INT, 0)
    # layer patterns -> LR multipliers (`LayerLRMultiplier`); None: one rate for all
    lr_multipliers: dict[str, float] | None = key(Multipliers(optional=True), None)
    # stem and stages conv2_x..conv{freeze_at}_x frozen by `compile` (0: none)
    freeze_at: int = key(NON_NEGATIVE_INT, 0)

    def __post_init__(self):
        # A negative, NaN or infinite learning rate (or a momentum of 1.5) trains without a
        # word and diverges; refuse it here, naming the field.
        check_fields(self, "recipe")

    @property
    def lr(self) -> float:
        """Peak learning rate after linear scaling to the global batch."""
        return scale_learning_rate(self.base_lr, self.global_batch_size, self.base_batch_size)

    @property
    def epochs(self) -> int | None:
        """Epochs covering `total_steps` (rounded up), when the epoch length is known."""
        return math.ceil(self.total_steps / self.steps_per_epoch) if self.steps_per_epoch else None

    @property
    def soft_labels(self) -> bool:
        return self.mixup_alpha > 0 or self.cutmix_alpha > 0

    def schedule(self) -> keras.optimizers.schedules.LearningRateSchedule | float:
        if self.lr_policy == "cosine":
            return WarmupCosine(self.lr, self.total_steps, self.warmup_steps)
        if self.lr_policy == "plateau":
            return self.lr  # a plain value, lowered by ReduceLROnPlateau
        warm = (
            None
            if self.warmup_lr is None
            else scale_learning_rate(self.warmup_lr, self.global_batch_size, self.base_batch_size)
        )
        return StepDecay(self.lr, self.boundaries, 0.1, warm)

    def optimizer(self) -> keras.optimizers.Optimizer:
        """SGD with coupled L2 decay (paper) and optional EMA of the weights, its rate (and L2)
        scaled per layer when the recipe has `lr_multipliers`."""
        ema = {"use_ema": True, "ema_momentum": self.ema_momentum} if self.ema_momentum else {}
        sgd = SGDL2(
            learning_rate=self.schedule(),
            momentum=self.momentum,
            nesterov=self.nesterov,
            l2=self.l2,
            decay_norm_and_bias=self.decay_norm_and_bias,
            **ema,
        )
        return LayerLRMultiplier(sgd, self.lr_multipliers) if self.lr_multipliers else sgd

    def loss(self) -> keras.losses.Loss:
        return SmoothedCrossEntropy(self.label_smoothing)

    def apply_precision(self) -> None:
        """Set the global dtype policy; call before building the model."""
        keras.mixed_precision.set_global_policy(self.mixed_precision or "float32")

    def compile(self, model: keras.Model, metrics: list | None = None) -> keras.Model:
        """Compile `model` with this recipe's optimizer, loss and accuracy metrics; first freeze
        its stem and stages up to `freeze_at`, and refuse `lr_multipliers` patterns that match
        no layer of it (a typo would silently train at the full rate)."""
        if self.freeze_at:
            self._freeze(model)
        if self.lr_multipliers:
            check_multipliers(model, self.lr_multipliers, "recipe.lr_multipliers")
        if metrics is None:
            acc = (
                keras.metrics.CategoricalAccuracy
                if self.soft_labels
                else keras.metrics.SparseCategoricalAccuracy
            )
            top5 = (
                keras.metrics.TopKCategoricalAccuracy
                if self.soft_labels
                else keras.metrics.SparseTopKCategoricalAccuracy
            )
            metrics = [acc(name="accuracy"), top5(5, name="top5")]
        model.compile(
            optimizer=self.optimizer(),
            loss=self.loss(),
            metrics=metrics,
            jit_compile=self.jit_compile,
        )
        if keras.backend.backend() == "tensorflow":
            enable_multiworker_fit(model)
        return model

    def _freeze(self, model: keras.Model) -> None:
        stages = sum(1 for layer in model.layers if re.fullmatch(r"conv\d+_x", layer.name))
        if not stages or "conv1" not in {layer.name for layer in model.layers}:
            raise ValueError(f"recipe.freeze_at = {self.freeze_at}: {model.name} has no conv1 "
                             "stem and conv{k}_x stages to freeze")
        if self.freeze_at > stages + 1:
            raise ValueError(f"recipe.freeze_at must be in [0, {stages + 1}] for {model.name} "
                             f"(stem + {stages} stages), got {self.freeze_at}")
        freeze_stages(model, self.freeze_at, stages)

    def callbacks(self) -> list[keras.callbacks.Callback]:
        """Callbacks the recipe itself needs (NaN stop, warm-up gate, plateau decay)."""
        cbs: list[keras.callbacks.Callback] = [NaNGuard()]
        if self.warmup_lr is not None and self.lr_policy == "steps":
            cbs.append(WarmupUntilError(threshold=0.8))
        if self.lr_policy == "plateau":
            cbs.append(
                keras.callbacks.ReduceLROnPlateau(
                    "val_loss", factor=0.1, patience=5, min_lr=self.lr * 1e-3
                )
            )
        return cbs

    def prepare(self, dataset, num_classes: int, start_step: int = 0):
        """Apply batch-level mixup/cutmix (soft labels) when the recipe asks for it."""
        if not self.soft_labels:
            return dataset
        return mix_batches(
            dataset, num_classes, self.mixup_alpha, self.cutmix_alpha, self.seed, start_step
        )


def get_recipe(
    name: str,
    *,
    global_batch_size: int | None = None,
    steps_per_epoch: int | None = None,
    total_steps: int | None = None,
    depth: int | None = None,
    mixed_precision: str | None = None,
    jit_compile: bool | str = "auto",
    **overrides,
) -> Recipe:
    """The named recipe scaled to `global_batch_size`.

    - `paper-cifar`: SGD 0.1 (batch 128), momentum 0.9, L2 1e-4, /10 at 32k and 48k
      iterations, stop at 64k; for `depth >= 110` LR 0.01 until training error < 80% (Sec. 4.2).
    - `paper-imagenet`: batch 256, LR 0.1, /10 at 150k/300k/450k iterations (30/60/90
      epochs) of 600k, or on a validation plateau (`lr_policy="plateau"`), Sec. 3.4.
    - `modern`: Nesterov SGD 0.1 per 256, 5-epoch linear warm-up + cosine, label smoothing
      0.1, no L2 on BN and biases; `mixup_alpha`, `cutmix_alpha`, `ema_momentum` optional.
    - `fine-tune`: a pretrained model with a new head (`finetune_model`): SGD 0.05 per 256 for
      the head, every pretrained layer at 0.1x (`lr_multipliers`, L2 scaled alike), warm-up +
      cosine over 10 epochs, label smoothing 0.1, no L2 on BN and biases; `freeze_at=k` freezes
      the stem and stages up to conv{k}_x (BN statistics included).

    A shorter `total_steps` (e.g. a CPU budget) keeps the milestones at the same fractions.
    """
    if name not in RECIPES:
        raise ValueError(f"unknown recipe {name!r}; valid recipes: {', '.join(RECIPES)}")
    if mixed_precision not in PRECISIONS:
        raise ValueError(f"mixed_precision must be one of {PRECISIONS}, got {mixed_precision!r}")
    if name == "paper-cifar":
        base_batch, base_total, fractions = 128, 64_000, (0.5, 0.75)
        kw = dict(base_lr=0.1, lr_policy="steps")
        if depth is not None and depth >= 110:
            kw["warmup_lr"] = 0.01
    elif name == "paper-imagenet":
        base_batch, base_total, fractions = 256, 600_000, (0.25, 0.5, 0.75)
        kw = dict(base_lr=0.1, lr_policy="steps")
    elif name == "fine-tune":
        base_batch, base_total, fractions = 256, None, ()
        kw = dict(base_lr=0.05, lr_policy="cosine", decay_norm_and_bias=False,
                  label_smoothing=0.1, lr_multipliers=dict(FINETUNE_MULTIPLIERS))
    else:
        base_batch, base_total, fractions = 256, None, ()
        kw = dict(
            base_lr=0.1,
            lr_policy="cosine",
            nesterov=True,
            decay_norm_and_bias=False,
            label_smoothing=0.1,
        )
    batch = int(global_batch_size or base_batch)
    if batch <= 0:
        raise ValueError(f"global_batch_size must be positive, got {batch}")
    if total_steps is None:
        if base_total is None:
            epochs = 10 if name == "fine-tune" else 90
            if not steps_per_epoch:
                raise ValueError(f"recipe {name!r} needs total_steps or steps_per_epoch "
                                 f"({epochs} epochs)")
            total_steps = epochs * steps_per_epoch
        else:
            total_steps = max(1, round(base_total * base_batch / batch))
    kw.update(overrides)
    if kw.get("lr_policy") == "cosine" and "warmup_steps" not in overrides:
        kw["warmup_steps"] = (
            min(5 * steps_per_epoch, total_steps // 10) if steps_per_epoch else total_steps // 18
        )
    return Recipe(
        name=name,
        global_batch_size=batch,
        base_batch_size=base_batch,
        total_steps=int(total_steps),
        steps_per_epoch=steps_per_epoch,
        boundaries=[round(f * total_steps) for f in fractions],
        mixed_precision=mixed_precision,
        jit_compile=jit_compile,
        **kw,
    )
