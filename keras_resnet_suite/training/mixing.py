"""Mixup (Zhang et al. 2018) and CutMix (Yun et al. 2019) on batched tf.data pipelines.

Both turn integer labels into soft [B, K] targets; each batch draws its randomness from
`(seed, batch index)`, so mixing is as reproducible as the rest of the stream.
"""

from __future__ import annotations

import tensorflow as tf


def _beta(seed: tf.Tensor, alpha: float) -> tf.Tensor:
    # Beta(a, a) as G1 / (G1 + G2) with stateless gamma draws.
    g = tf.random.stateless_gamma([2], seed, alpha=alpha)
    return g[0] / (g[0] + g[1])


def mixup(images, targets, seed, alpha: float = 0.2):
    """Blend each example with the batch reversed: lam * x + (1 - lam) * x[::-1]."""
    lam = _beta(seed, alpha)
    return (
        lam * images + (1.0 - lam) * tf.reverse(images, [0]),
        lam * targets + (1.0 - lam) * tf.reverse(targets, [0]),
    )


def cutmix(images, targets, seed, alpha: float = 1.0):
    """Paste a random box of the reversed batch; targets mix by the pasted area."""
    s_lam, s_box = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
    lam = _beta(s_lam, alpha)
    h, w = tf.shape(images)[1], tf.shape(images)[2]
    hf, wf = tf.cast(h, tf.float32), tf.cast(w, tf.float32)
    ratio = tf.sqrt(1.0 - lam)
    cy, cx = tf.unstack(tf.random.stateless_uniform([2], s_box) * [hf, wf])
    y0 = tf.cast(tf.clip_by_value(cy - ratio * hf / 2, 0, hf), tf.int32)
    y1 = tf.cast(tf.clip_by_value(cy + ratio * hf / 2, 0, hf), tf.int32)
    x0 = tf.cast(tf.clip_by_value(cx - ratio * wf / 2, 0, wf), tf.int32)
    x1 = tf.cast(tf.clip_by_value(cx + ratio * wf / 2, 0, wf), tf.int32)
    rows = tf.logical_and(tf.range(h) >= y0, tf.range(h) < y1)
    cols = tf.logical_and(tf.range(w) >= x0, tf.range(w) < x1)
    box = tf.logical_and(rows[:, None], cols[None, :])[None, :, :, None]
    mixed = tf.where(box, tf.reverse(images, [0]), images)
    kept = 1.0 - tf.cast((y1 - y0) * (x1 - x0), tf.float32) / (hf * wf)
    return mixed, kept * targets + (1.0 - kept) * tf.reverse(targets, [0])


def mix_batches(
    dataset: tf.data.Dataset,
    num_classes: int,
    mixup_alpha: float = 0.0,
    cutmix_alpha: float = 0.0,
    seed: int = 0,
    start_step: int = 0,
) -> tf.data.Dataset:
    """One-hot the labels of a batched `(images, labels)` dataset and apply mixup and/or cutmix
    (one of the two per batch, with equal odds, when both alphas are > 0). `start_step` is the
    global step of the first batch, so a resumed stream mixes as the uninterrupted one."""
    seed64 = tf.constant(seed, tf.int64)

    def fn(step, batch):
        images, labels = batch
        images = tf.cast(images, tf.float32)
        targets = tf.one_hot(tf.cast(tf.reshape(labels, [-1]), tf.int32), num_classes)
        s_pick, s_mix = tf.unstack(
            tf.random.experimental.stateless_split(tf.stack([seed64, step]), 2)
        )
        if mixup_alpha > 0 and cutmix_alpha > 0:
            use_mixup = tf.random.stateless_uniform([], s_pick) < 0.5
            return tf.cond(
                use_mixup,
                lambda: mixup(images, targets, s_mix, mixup_alpha),
                lambda: cutmix(images, targets, s_mix, cutmix_alpha),
            )
        if mixup_alpha > 0:
            return mixup(images, targets, s_mix, mixup_alpha)
        if cutmix_alpha > 0:
            return cutmix(images, targets, s_mix, cutmix_alpha)
        return images, targets

    return dataset.enumerate(start=start_step).map(fn, num_parallel_calls=tf.data.AUTOTUNE)
