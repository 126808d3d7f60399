"""Balanced foreground/background sampling of matched anchors or proposals (Faster R-CNN 3.1.3).

Static-shape formulation that works under `jit`: every candidate draws a uniform random key,
and the `k` largest keys among the foreground (resp. background) candidates are kept, which is
a uniform random subset of size `k` without a data-dependent shape.
"""

from __future__ import annotations

import keras
from keras import ops

RPN_BATCH_SIZE, RPN_POSITIVE_FRACTION = 256, 0.5
HEAD_BATCH_SIZE, HEAD_POSITIVE_FRACTION = 512, 0.25


def _select_top(candidates, keys, count, k_max: int):
    """Mask of the `count` (per row, <= k_max) candidates with the largest keys."""
    n = candidates.shape[-1]
    k_max = max(1, min(k_max, n))
    masked = ops.where(candidates, keys, -1.0)
    top_values, _ = ops.top_k(masked, k_max)
    # The count-th largest key is the admission threshold; count == 0 admits nothing.
    kth = ops.take_along_axis(top_values, ops.maximum(count - 1, 0)[:, None], axis=1)
    return ops.logical_and(
        ops.logical_and(candidates, masked >= kth), (count > 0)[:, None]
    )


def subsample_labels(labels, num_samples: int, positive_fraction: float, seed=None):
    """Mask `[B, N]` of at most `num_samples` entries per row, at most
    `positive_fraction` of them foreground (label 1), the rest background (label 0).

    As in detectron2, if there are too few foreground entries the background fills the rest.
    `seed` is an int, a `keras.random.SeedGenerator` or None.
    """
    labels = ops.cast(labels, "int32")
    positive = labels == 1
    negative = labels == 0
    keys = keras.random.uniform(ops.shape(labels), seed=seed)
    max_pos = int(num_samples * positive_fraction)
    num_pos = ops.minimum(ops.sum(ops.cast(positive, "int32"), axis=1), max_pos)
    num_neg = ops.minimum(ops.sum(ops.cast(negative, "int32"), axis=1), num_samples - num_pos)
    take_pos = _select_top(positive, keys, num_pos, max_pos)
    take_neg = _select_top(negative, keys, num_neg, num_samples)
    return ops.logical_or(take_pos, take_neg)


def sampled_indices(mask, num_samples: int):
    """Indices `[B, num_samples]` of the True entries of `mask [B, N]` and their validity.

    Foreground/background order is preserved from the mask's first-to-last order; rows with
    fewer than `num_samples` True entries are padded with valid=False (index of a False entry).
    """
    n = mask.shape[-1]
    k = min(num_samples, n)
    # Prefer earlier positions among the selected entries so the order is deterministic.
    position = ops.cast(ops.arange(n), "float32") / float(n)
    keys = ops.where(mask, 2.0 - position, -position)
    _, indices = ops.top_k(keys, k)
    valid = ops.take_along_axis(mask, indices, axis=1)
    return ops.cast(indices, "int32"), valid
