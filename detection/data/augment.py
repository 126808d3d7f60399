"""Box-aware augmentation with Keras 3 preprocessing layers: flip and colour (instance masks
flip with the image).

Keras' image layers move `bounding_boxes` with the image when given a dict
`{"images", "bounding_boxes": {"boxes", "labels"}}`. The multi-scale resize of the paper
(a random shorter side) is drawn where an image is placed on the detector's fixed canvas
(`detection.data.pipeline.training_batches(..., shorter_sides=...)`), so the canvas fit
cannot undo it; it is not a layer here.
"""

from __future__ import annotations

from collections.abc import Sequence

import keras
import tensorflow as tf

from keras_resnet_suite import compat


def detection_augmentation(
    flip: bool = True, brightness: float = 0.1, contrast: float = 0.1,
    saturation: tuple[float, float] | None = (0.4, 0.6), seed: int | None = None,
) -> list[keras.layers.Layer]:
    """The Keras layers of the standard detection augmentation, each seeded from `seed`."""
    s = (lambda k: None) if seed is None else (lambda k: seed * 7919 + k)
    layers: list[keras.layers.Layer] = []
    if flip:
        layers.append(keras.layers.RandomFlip("horizontal", seed=s(1), bounding_box_format="xyxy"))
    if brightness:
        layers.append(keras.layers.RandomBrightness(
            brightness, value_range=(0, 255), seed=s(3), bounding_box_format="xyxy"))
    if contrast:
        layers.append(keras.layers.RandomContrast(
            contrast, value_range=(0, 255), seed=s(4), bounding_box_format="xyxy"))
    if saturation:
        layers.append(keras.layers.RandomSaturation(
            saturation, value_range=(0, 255), seed=s(5), bounding_box_format="xyxy"))
    return layers


class _ElementSeed(keras.random.SeedGenerator):
    """A seed generator fed by a per-element seed tensor, so random draws are stateless.

    Keras layers draw through a stateful counter (a variable), which parallel tf.data maps
    advance in a racy order. Feeding each element its own seed makes the draws a pure function
    of (seed, element), so the map can run in parallel and stay reproducible. No variable is
    created (tf.data functions cannot create them); each draw folds in a call counter.
    """

    def __init__(self, seed: tf.Tensor) -> None:  # no super().__init__: it creates a variable
        self._seed = tf.cast(seed, tf.int64)
        self._calls = 0

    def next(self, ordered: bool = True) -> tf.Tensor:
        self._calls += 1
        return self._seed + tf.constant([0, 1_000_003], tf.int64) * self._calls


def _call_seeded(layer: keras.layers.Layer, data: dict, seed: tf.Tensor, training: bool) -> dict:
    """`layer(data)` with its random draws taken from `seed` instead of its own counter."""
    return compat.call_with_seed_generator(layer, _ElementSeed(seed), data, training=training)


def augment(
    dataset: tf.data.Dataset, sizes: Sequence[int] | None = None, max_size: int | None = None,
    flip: bool = True, brightness: float = 0.1, contrast: float = 0.1,
    saturation: tuple[float, float] | None = (0.4, 0.6), seed: int | None = None,
    training: bool = True, num_parallel_calls: int | None = tf.data.AUTOTUNE,
) -> tf.data.Dataset:
    """Apply `detection_augmentation` to unbatched elements of the agreed format, in parallel.

    Each element draws from its own seed, taken from `tf.data.Dataset.random(seed)`
    (or, for elements carrying their stream position `"_index"`, from `(seed, position)`)
    re-drawn every epoch: the same `seed` gives the same stream on every run, a new epoch
    gives new augmentations, and the result does not depend on thread timing. Image sizes do
    not change, so other keys (`area`, ...) pass through; instance masks (`"masks"`:
    [M, H, W]) flip with the image (the colour layers leave them alone). With `training=False` nothing
    random is applied. `sizes`/`max_size` (the multi-scale resize that was here) must stay
    None: draw the shorter side with `training_batches(..., shorter_sides=sizes)`.
    """
    if sizes is not None or max_size is not None:
        raise ValueError("augment() no longer resizes: draw the shorter side where the image "
                         "meets the canvas, detection.data.pipeline.training_batches(..., "
                         "shorter_sides=sizes)")
    layers = detection_augmentation(flip, brightness, contrast, saturation, seed) if training \
        else []

    def apply(element: dict, draw: tf.Tensor) -> dict:
        image = element["images"]
        # A batch of one: Keras' single-image box path switches to the global backend midway
        # and fails inside tf.data under KERAS_BACKEND=jax (Keras 3.15); the batched one works.
        boxes = element["bounding_boxes"]
        data = {"images": image[None], "bounding_boxes": {"boxes": boxes["boxes"][None],
                                                          "labels": boxes["labels"][None]}}
        masks = element.get("masks")
        for k, layer in enumerate(layers):
            moves = masks is not None and isinstance(layer, keras.layers.RandomFlip)
            if moves:
                # The masks ride as extra image channels through the flip: the layers' own
                # `segmentation_masks` path fails inside tf.data under KERAS_BACKEND=jax
                # (Keras 3.15), and the colour layers must not touch them.
                as_channels = tf.cast(tf.transpose(masks, [1, 2, 0]), data["images"].dtype)
                data = {**data, "images": tf.concat([data["images"], as_channels[None]], -1)}
            data = _call_seeded(layer, data, tf.stack([draw, tf.constant(k, tf.int64)]), training)
            if moves:
                masks = tf.cast(tf.transpose(data["images"][0, :, :, 3:], [2, 0, 1]), masks.dtype)
                data = {**data, "images": data["images"][..., :3]}
        out = dict(element)
        if masks is not None:
            out["masks"] = masks
        data = {"images": data["images"][0],
                "bounding_boxes": {"boxes": data["bounding_boxes"]["boxes"][0]}}
        # contrast can push values past the range; the detector expects 0..255
        out["images"] = tf.clip_by_value(tf.cast(data["images"], tf.float32), 0.0, 255.0)
        boxes = data["bounding_boxes"]
        labels = tf.cast(element["bounding_boxes"]["labels"], tf.int32)  # layers make it float
        boxes = tf.reshape(tf.cast(boxes["boxes"], tf.float32), [-1, 4])
        out["bounding_boxes"] = {"boxes": boxes, "labels": labels}
        return out

    spec = dataset.element_spec
    if isinstance(spec, dict) and "_index" in spec:  # a positioned stream (detection.data.resume)
        # The draw is a function of the element's position: a stream resumed at any step
        # draws what the uninterrupted one drew there, without drawing the earlier ones.
        return dataset.map(lambda e: apply(e, _position_draw(seed, e["_index"])),
                           num_parallel_calls=num_parallel_calls, deterministic=True)
    draws = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True)
    return tf.data.Dataset.zip(dataset, draws).map(
        apply, num_parallel_calls=num_parallel_calls, deterministic=True)


def _position_draw(seed: int | None, position: tf.Tensor) -> tf.Tensor:
    """The int64 seed of the element at stream `position` (stateless in `seed`, `position`)."""
    key = tf.stack([tf.constant(seed or 0, tf.int64) + 7919, tf.cast(position, tf.int64)])
    return tf.random.stateless_uniform([], seed=key, dtype=tf.int64, minval=None, maxval=None)
