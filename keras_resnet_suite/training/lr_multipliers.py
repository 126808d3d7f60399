"""Per-layer learning-rate multipliers for fine-tuning (PyTorch's optimizer parameter groups).

    opt = LayerLRMultiplier(SGDL2(WarmupCosine(0.01, 1000, 50)), {"*": 0.1, "predictions": 1.0})

Mechanism, and why: a wrapper optimizer (as Keras' `LossScaleOptimizer`) around any Keras
optimizer, which calls the wrapped optimizer's own `update_step` for each variable with that
variable's learning rate, `lr(step) * multiplier`. It scales the *step size*, not the gradient:
for Adam-like optimizers a scaled gradient is normalised away (m / sqrt(v) does not change),
so only a scaled rate gives the pretrained layers a smaller step; for SGD with momentum the two
agree. Weight decay keeps its meaning as in PyTorch's parameter groups, where a group's lr
multiplies its decay too: the paper's coupled L2 (`SGDL2`, a term in the gradient) is scaled
with the rate; decoupled decay (`AdamW`, `weight_decay=` of any Keras optimizer) becomes
`w -= lr * multiplier * wd * w`, applied per variable just before its step (Keras applies all
decays, then all steps: the same numbers, since a step reads only its own variable). A
multiplier of 0 skips the variable altogether: its weights stay bit-identical and its optimizer
slots untouched (unlike `trainable=False`, batch-norm statistics still move: freeze the layer
for that). Optimizer state, schedule and `iterations` are the wrapped optimizer's, so
checkpoints, `.keras` files, `fit_resumable`, MirroredStrategy and the JAX backend see one
optimizer; the multipliers are in `get_config`.

Patterns name layers by their variables' paths (`conv2_x/block1/conv1/kernel`): a glob (`*` and
`?` within one path part, `**` across parts) matching the path or one of its leading parts, so
`conv1` is the stem, `conv*_x` every stage, `conv2_x/block1` one block. When several patterns
match, the LAST one given wins (general first, exceptions after: `{"*": 0.1, "predictions": 1}`);
unmatched variables keep multiplier 1.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping

import keras
from keras import ops

from keras_resnet_suite.schema import LR_MULTIPLIERS


def _glob(pattern: str) -> re.Pattern:
    """A variable-path glob as a regex: `*`/`?` stay inside one `/`-part, `**` crosses them."""
    out = []
    for token in re.split(r"(\*\*|\*|\?)", pattern):
        out.append({"**": ".*", "*": "[^/]*", "?": "[^/]"}.get(token, re.escape(token)))
    return re.compile("".join(out))


def _matches(regex: re.Pattern, path: str) -> bool:
    parts = path.split("/")
    return any(regex.fullmatch("/".join(parts[:i])) for i in range(1, len(parts) + 1))


def multiplier_for(path: str, multipliers: Mapping[str, float]) -> float:
    """The multiplier of the variable at `path`: the last matching pattern's, else 1."""
    factor = 1.0
    for pattern, value in multipliers.items():
        if _matches(_glob(pattern), path):
            factor = float(value)
    return factor


def unmatched_patterns(paths: Iterable[str], multipliers: Mapping[str, float]) -> list[str]:
    """The patterns of `multipliers` that match none of `paths` (a typo scales nothing)."""
    paths = list(paths)
    return [p for p in multipliers if not any(_matches(_glob(p), path) for path in paths)]


def check_multipliers(model: keras.Model, multipliers: Mapping[str, float],
                      where: str = "lr_multipliers") -> dict[str, float]:
    """`multipliers` checked (`where` names them in the error) against every variable of
    `model`, frozen ones included: a pattern matching no layer is refused, naming it."""
    multipliers = LR_MULTIPLIERS.check(dict(multipliers), where)
    bad = unmatched_patterns((v.path for v in model.variables), multipliers)
    if bad:
        tops = ", ".join(layer.name for layer in model.layers if layer.weights)
        raise ValueError(f"{where}: pattern(s) {', '.join(map(repr, bad))} match no layer of "
                         f"{model.name} (its layers with weights: {tops})")
    return multipliers


# The layers of a ResNet trunk (`models.trunk`): the stem and the stages, wherever it sits (a
# classifier, a backbone, a detector's C4 head).
TRUNK_PATTERNS = ("conv1", "conv*_x")


def scale_trunk(model: keras.Model, optimizer: keras.optimizers.Optimizer, multiplier: float,
                where: str = "multiplier") -> keras.optimizers.Optimizer:
    """`optimizer` with the rate (and decay) of `model`'s ResNet trunk layers times
    `multiplier` (`where` names it in the error); unchanged at 1. The detector's
    `train.backbone_lr_mult`."""
    if multiplier == 1.0:
        return optimizer
    paths = [v.path for v in model.variables]
    patterns = [p for p in TRUNK_PATTERNS if not unmatched_patterns(paths, {p: 1.0})]
    if not patterns:
        raise ValueError(f"{where} = {multiplier:g}: {model.name} has no "
                         f"{' / '.join(TRUNK_PATTERNS)} layers to scale")
    return LayerLRMultiplier(optimizer, dict.fromkeys(patterns, multiplier))


@keras.saving.register_keras_serializable("keras_resnet_suite")
class LayerLRMultiplier(keras.optimizers.Optimizer):
    """Wraps `optimizer` so that the variables matching a pattern of `multipliers` train at
    `multiplier` times its learning rate (and decay); see the module docstring."""

    def __init__(self, optimizer: keras.optimizers.Optimizer | str | dict,
                 multipliers: Mapping[str, float], name: str | None = None, **kwargs):
        if kwargs:
            raise ValueError(f"LayerLRMultiplier takes no {', '.join(sorted(kwargs))}: set "
                             "them on the wrapped optimizer")
        super().__init__(learning_rate=0.0, name=name or "layer_lr_multiplier")
        inner = keras.optimizers.get(optimizer)
        if isinstance(inner, LayerLRMultiplier | keras.optimizers.LossScaleOptimizer):
            raise ValueError(f"LayerLRMultiplier wraps a plain optimizer, not a "
                             f"{type(inner).__name__} (Keras adds loss scaling around it)")
        if inner.built:  # its slots are laid out for variables the factors cannot follow
            raise ValueError("LayerLRMultiplier wraps an optimizer before it is built (used)")
        self.inner_optimizer = inner
        self.multipliers = LR_MULTIPLIERS.check(dict(multipliers), "multipliers")
        self._factors: list[float] = []
        # The hooks: instance attributes, so the wrapped optimizer's class (and config) stays
        # its own; its backend's update loop (tf.distribute's per-replica update included)
        # calls `self.update_step`, which now finds the scaling one.
        self._inner_update_step = inner.update_step
        inner.update_step = self._scaled_update_step
        inner._apply_weight_decay = _no_separate_decay

    def build(self, var_list):
        if self.built:
            return
        self._factors = [multiplier_for(v.path, self.multipliers) for v in var_list]
        self.inner_optimizer.build(var_list)
        super().build(var_list)

    def _scaled_update_step(self, gradient, variable, learning_rate):
        inner = self.inner_optimizer
        factor = self._factors[inner._get_variable_index(variable)]
        if factor == 0.0:  # frozen by its multiplier: not even a `w - 0 * step` rounding
            return None
        if factor != 1.0:
            learning_rate = ops.multiply(learning_rate, factor)
        if inner.weight_decay is not None and inner._use_weight_decay(variable):
            lr = ops.cast(learning_rate, variable.dtype)
            wd = ops.cast(inner.weight_decay, variable.dtype)
            inner.assign_sub(variable, variable * wd * lr)  # Keras' own decay, per variable
        return self._inner_update_step(gradient, variable, learning_rate)

    def apply(self, grads, trainable_variables=None):
        if not self.built:
            with keras.name_scope(self.name, caller=self):
                self.build(trainable_variables)
            self.built = True
        return self.inner_optimizer.apply(grads, trainable_variables)

    def multiplier_of(self, variable) -> float:
        """The multiplier a (built-on) variable trains with."""
        return self._factors[self.inner_optimizer._get_variable_index(variable)]

    @property
    def variables(self):
        return self._variables + self.inner_optimizer.variables

    @property
    def iterations(self):
        return self.inner_optimizer.iterations

    @property
    def learning_rate(self):
        return self.inner_optimizer.learning_rate

    @learning_rate.setter
    def learning_rate(self, value):  # ReduceLROnPlateau and friends set the wrapped one's
        self.inner_optimizer.learning_rate = value

    def scale_loss(self, loss):
        return self.inner_optimizer.scale_loss(loss)

    def finalize_variable_values(self, var_list):
        self.inner_optimizer.finalize_variable_values(var_list)

    def get_config(self) -> dict:
        return {"name": self.name, "multipliers": dict(self.multipliers),
                "optimizer": keras.saving.serialize_keras_object(self.inner_optimizer)}

    @classmethod
    def from_config(cls, config, custom_objects=None):
        config = dict(config)
        inner = keras.saving.deserialize_keras_object(config.pop("optimizer"),
                                                       custom_objects=custom_objects)
        return cls(inner, **config)


def _no_separate_decay(variables) -> None:
    """The wrapped optimizer's all-variables decay pass, replaced: each variable's decay is
    applied with its own rate in `_scaled_update_step`."""
    return None
