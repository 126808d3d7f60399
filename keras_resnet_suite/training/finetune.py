"""A pretrained classifier with a new head, for the `fine-tune` recipe (transfer learning)."""

from __future__ import annotations

import keras

from keras_resnet_suite.models import build
from keras_resnet_suite.schema import POSITIVE_INT
from keras_resnet_suite.specs import get_spec

# what a pretrained model knows about itself (weights.attach_preprocessing): kept on the new one
_CARRIED = ("spec", "checkpoint", "preprocessing", "preprocess_input")


def finetune_model(name: str, weights: str | None, classes: int, *,
                   classifier_activation: str | None = "softmax", **build_kwargs) -> keras.Model:
    """`name` with `weights` (a checkpoint name or file), its classifier replaced by a new
    `classes`-way `predictions` layer (so the pretrained one's class count does not matter).

    The layer names stay the model's own (`conv1`, `conv2_x`, ..., `predictions`), which is what
    `Recipe.freeze_at` and `lr_multipliers` patterns refer to.
    """
    classes = POSITIVE_INT.check(classes, "classes")
    # include_top=False would leave the sides open; the classifier's own input size instead
    build_kwargs.setdefault("input_shape", get_spec(name).input_shape)
    base = build(name, weights=weights, include_top=False, pooling="avg", **build_kwargs)
    # Under mixed precision the classifier stays float32, as `build` keeps it.
    mixed = keras.config.dtype_policy().compute_dtype in ("float16", "bfloat16")
    outputs = keras.layers.Dense(classes, activation=classifier_activation, name="predictions",
                                 dtype="float32" if mixed else None)(base.output)
    model = keras.Model(base.input, outputs, name=base.name)
    for attr in _CARRIED:
        if hasattr(base, attr):
            setattr(model, attr, getattr(base, attr))
    return model
