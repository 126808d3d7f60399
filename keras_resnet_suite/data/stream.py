"""The training stream: an endless, seeded sequence of batches indexed by global step.

Epoch `e` visits a permutation drawn from `(seed, e)`; image `g` of the stream (global index)
is augmented with seed `(seed, g)`. So the batch at step `s` is a pure function of `(seed, s)`:
runs are reproducible under parallel decode, and a run resumed at step `s` (see
`training.fit_resumable`) sees exactly the batches an uninterrupted run would have seen.
"""

from __future__ import annotations

from collections.abc import Callable

import tensorflow as tf

AUTOTUNE = tf.data.AUTOTUNE


def steps_per_epoch(num_examples: int, batch_size: int) -> int:
    """Whole batches per epoch (the remainder of each permutation is dropped)."""
    if batch_size <= 0:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    if num_examples < batch_size:
        raise ValueError(f"batch_size {batch_size} exceeds the {num_examples} training examples")
    return num_examples // batch_size


def index_stream(
    num_examples: int, batch_size: int, seed: int, start_step: int = 0
) -> tf.data.Dataset:
    """Unbatched `(global_index, example_index)` pairs starting at step `start_step`."""
    spe = steps_per_epoch(num_examples, batch_size)
    per_epoch = spe * batch_size
    first_epoch, skip = divmod(int(start_step), spe)

    def epoch(e: tf.Tensor) -> tf.data.Dataset:
        perm = tf.random.experimental.stateless_shuffle(
            tf.range(num_examples, dtype=tf.int64), seed=tf.stack([tf.constant(seed, tf.int64), e])
        )
        return tf.data.Dataset.from_tensor_slices(perm[:per_epoch])

    ds = tf.data.Dataset.range(first_epoch, 2**62).flat_map(epoch).skip(skip * batch_size)
    return ds.enumerate(start=int(start_step) * batch_size)


def train_stream(
    num_examples: int,
    batch_size: int,
    seed: int,
    load: Callable[[tf.Tensor, tf.Tensor], tuple[tf.Tensor, tf.Tensor]],
    start_step: int = 0,
) -> tf.data.Dataset:
    """Batched endless stream; `load(example_index, seed_pair)` returns `(image, label)`."""
    seed64 = tf.constant(seed, tf.int64)

    def fn(g: tf.Tensor, i: tf.Tensor):
        return load(i, tf.stack([seed64, g]))

    ds = index_stream(num_examples, batch_size, seed, start_step)
    ds = ds.map(fn, num_parallel_calls=AUTOTUNE, deterministic=True)
    return ds.batch(batch_size, drop_remainder=True).prefetch(AUTOTUNE)
