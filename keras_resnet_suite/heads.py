"""The classifier top every model family of the library ends in (keras.applications' options):
pooled features, optional dropout, and a `classes`-way Dense that stays float32 under 16-bit
policies for a stable softmax and loss."""

from __future__ import annotations

import keras
from keras import layers


def classifier_top(x, *, include_top: bool, classes: int, classifier_activation,
                   pooling: str | None, dropout: float = 0.0):
    """`x` (the last feature map) through the top: with `include_top` average pooling, dropout
    when `dropout > 0` and the classifier; else `pooling` None (the map), "avg" or "max"."""
    if include_top:
        x = layers.GlobalAveragePooling2D(name="avg_pool")(x)
        if dropout > 0:
            x = layers.Dropout(dropout, name="top_dropout")(x)
        mixed = keras.config.dtype_policy().compute_dtype in ("float16", "bfloat16")
        return layers.Dense(classes, activation=classifier_activation, name="predictions",
                            dtype="float32" if mixed else None)(x)
    if pooling == "avg":
        return layers.GlobalAveragePooling2D(name="avg_pool")(x)
    if pooling == "max":
        return layers.GlobalMaxPooling2D(name="max_pool")(x)
    return x
