"""An endless training stream that starts at any step in constant time, shardable per worker.

The stream is a pure function of the element's position `p` (`step * global_batch + k`):
position `p` is image `order(epoch = p // N)[p % N]` of an `N`-image split, where `order(e)`
is a stateless permutation seeded by `(seed, e)`. Resuming at step `S` therefore computes its
epoch and offset and starts there: nothing before it is read, decoded, augmented or put on
the canvas (a `Dataset.skip` of batches would replay all of that). Every element carries its
position as `"_index"`, from which `augment` and the canvas fit draw their randomness, so the
resumed batch equals the uninterrupted run's batch at that step.

Sharding (`num_shards` workers) keeps positions `p` with `p % num_shards == shard`, before any
decoding: each worker decodes only its share, the shards together are the whole stream with
no repeats, and worker `w`'s k-th batch of `B / num_shards` images plus the other workers'
k-th batches is exactly the one-worker global batch k of `B` images.

A loader gives random access through `element_at(index)` (a traceable function of an int64
scalar tensor), attached to its dataset; see `records_to_dataset` and `shapes`.
"""

from __future__ import annotations

import tensorflow as tf

from detection.data.pipeline import checked_training_batches


def indexable(dataset) -> bool:
    """Whether `dataset` gives random access by image index (`element_at`, `num_examples`)."""
    return callable(getattr(dataset, "element_at", None)) and \
        int(getattr(dataset, "num_examples", 0) or 0) > 0


def epoch_order(count: int, seed: int, epoch) -> tf.Tensor:
    """The seeded permutation of `range(count)` for `epoch` (stateless: the same on every run
    and in every worker, computable for any epoch without drawing the earlier ones)."""
    keys = tf.random.stateless_uniform(
        [count], seed=tf.stack([tf.cast(seed, tf.int64), tf.cast(epoch, tf.int64)]),
        dtype=tf.int64, minval=None, maxval=None)
    return tf.argsort(keys, stable=True)


def shard_positions(first: int, num_shards: int = 1, shard: int = 0) -> tuple[int, int]:
    """`(start, stride)` of the positions `>= first` that worker `shard` of `num_shards`
    owns (`p % num_shards == shard`): the shards are disjoint and together cover every
    position."""
    if num_shards < 1 or not 0 <= shard < num_shards:
        raise ValueError(f"shard must be in [0, num_shards), got shard={shard} of "
                         f"num_shards={num_shards}")
    start = first + (shard - first) % num_shards
    return start, num_shards


def stream_indices(count: int, first: int, seed: int, shuffle: bool = True,
                   num_shards: int = 1, shard: int = 0) -> tf.data.Dataset:
    """Endless `(position, image index)` pairs from position `first`, this shard's only.

    Constant time in `first`: the start epoch and offset are computed, not iterated to.
    """
    if count < 1:
        raise ValueError(f"stream_indices: the split has no images (count={count})")
    start, stride = shard_positions(int(first), num_shards, shard)
    seed = int(seed or 0)
    first_epoch = start // count

    def epoch(e):
        order = tf.cast(epoch_order(count, seed, e), tf.int64) if shuffle else \
            tf.range(count, dtype=tf.int64)
        p0 = tf.maximum(e * count, start)
        p0 = p0 + (start - p0) % stride  # the shard's first position in this epoch
        offsets = tf.range(p0 - e * count, count, stride, dtype=tf.int64)
        return tf.data.Dataset.from_tensor_slices((e * count + offsets,
                                                   tf.gather(order, offsets)))

    return tf.data.Dataset.range(first_epoch, 2**62).flat_map(epoch)


def resumable_elements(dataset, first: int, seed: int, shuffle: bool = True,
                       num_shards: int = 1, shard: int = 0) -> tf.data.Dataset:
    """The endless, decoded stream of indexable `dataset` from position `first` (this shard's
    share), each element with its position as `"_index"`. An image that fails to decode is
    dropped with a logged warning, as in the loaders."""
    if not indexable(dataset):
        raise ValueError("resumable_elements: the dataset has no element_at/num_examples "
                         "(only the voc, coco and shapes loaders give random access)")
    element_at = dataset.element_at
    pairs = stream_indices(int(dataset.num_examples), first, seed, shuffle, num_shards, shard)
    return pairs.map(lambda p, i: {**element_at(i), "_index": p},
                     num_parallel_calls=tf.data.AUTOTUNE,
                     deterministic=True).ignore_errors(log_warning=True)


def per_worker(strategy, make_positioned, global_batch: int, num_classes: int):
    """`make_train(start)` for `strategy`: under `MultiWorkerMirroredStrategy` a
    `distribute_datasets_from_function` input whose pipeline `w` of `W` decodes only the
    positions `p % W == w` (`worker_input`); otherwise `make_positioned` itself (one pipeline,
    split into replica batches by the strategy)."""
    if strategy is None or not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        return make_positioned
    return lambda start: strategy.distribute_datasets_from_function(
        worker_input(make_positioned, start, global_batch, num_classes))


def worker_input(make_positioned, start: int, global_batch: int, num_classes: int | None = None):
    """The `dataset_fn(input_context)` of worker-sharded input: this pipeline's positions from
    step `start`, batched per replica, so one step's replica batches over all workers are
    exactly the one-worker global batch of that step. With `num_classes`, every batch is
    checked in the pipeline as the detector's `fit` checks a plain dataset."""
    def dataset_fn(context: tf.distribute.InputContext) -> tf.data.Dataset:
        batches = make_positioned(start, (context.num_input_pipelines,
                                          context.input_pipeline_id),
                                  context.get_per_replica_batch_size(global_batch))
        if num_classes is None:
            return batches
        return checked_training_batches(batches, num_classes)

    return dataset_fn
