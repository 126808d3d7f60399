"""Box-aware augmentation with Keras 3 preprocessing layers: flip, multi-scale, colour.

Keras' image layers move `bounding_boxes` with the image when given a dict
`{"images", "bounding_boxes": {"boxes", "labels"}}`. The multi-scale resize of the paper
(shorter side 600, or a random choice such as 640-800 with the longer side capped) is not
among them, so `RandomShorterSide` adds it in the same protocol.
"""

from __future__ import annotations

from collections.abc import Sequence

import keras
import tensorflow as tf
from keras.src.layers.preprocessing.image_preprocessing.base_image_preprocessing_layer import (
    BaseImagePreprocessingLayer,
)


@keras.saving.register_keras_serializable(package="detection")
class RandomShorterSide(BaseImagePreprocessingLayer):
    """Resize so the shorter side is a random entry of `sizes`, the longer one at most `max_size`.

    Faster R-CNN's scale augmentation (paper Appendix A: shorter side 600; detectron2's
    multi-scale 640-800). In inference (`training=False`) the shorter side is `test_size`.
    Boxes (xyxy pixels) are scaled with the image; aspect ratio is kept.
    """

    _USE_BASE_FACTOR = False

    def __init__(
        self, sizes: Sequence[int] = (600,), max_size: int | None = 1000,
        test_size: int | None = None, interpolation: str = "bilinear",
        bounding_box_format: str = "xyxy", seed: int | None = None, **kwargs,
    ) -> None:
        super().__init__(bounding_box_format=bounding_box_format, **kwargs)
        sizes = [int(s) for s in ([sizes] if isinstance(sizes, int) else sizes)]
        if not sizes or min(sizes) <= 0:
            raise ValueError(f"sizes must be positive shorter-side lengths, got {sizes}")
        if bounding_box_format != "xyxy":
            raise ValueError(f"RandomShorterSide scales pixel 'xyxy' boxes; got "
                             f"bounding_box_format={bounding_box_format!r}")
        self.sizes, self.max_size = sizes, max_size
        self.test_size = int(test_size) if test_size else max(sizes)
        self.interpolation, self.seed = interpolation, seed
        self.generator = keras.random.SeedGenerator(seed)

    def get_random_transformation(self, data, training=True, seed=None):
        images = data["images"] if isinstance(data, dict) else data
        shape = self.backend.core.shape(images)
        height, width = (shape[0], shape[1]) if len(shape) == 3 else (shape[1], shape[2])
        if training:
            seed = seed if seed is not None else self._get_seed_generator(self.backend._backend)
            pick = self.backend.random.uniform((), 0, len(self.sizes), seed=seed)
            choices = self.backend.convert_to_tensor(self.sizes, "float32")
            short = self.backend.numpy.take(choices, self.backend.cast(pick, "int32"))
        else:
            short = self.backend.convert_to_tensor(float(self.test_size), "float32")
        height = self.backend.cast(height, "float32")
        width = self.backend.cast(width, "float32")
        scale = short / self.backend.numpy.minimum(height, width)
        if self.max_size:
            scale = self.backend.numpy.minimum(
                scale, self.max_size / self.backend.numpy.maximum(height, width))
        new_h = self.backend.cast(self.backend.numpy.round(height * scale), "int32")
        new_w = self.backend.cast(self.backend.numpy.round(width * scale), "int32")
        return {"size": (new_h, new_w),
                "scale_x": self.backend.cast(new_w, "float32") / width,
                "scale_y": self.backend.cast(new_h, "float32") / height}

    def transform_images(self, images, transformation, training=True):
        images = self.backend.cast(images, self.compute_dtype)
        resized = self.backend.image.resize(images, transformation["size"],
                                            interpolation=self.interpolation)
        return self.backend.cast(resized, self.compute_dtype)

    def transform_labels(self, labels, transformation, training=True):
        return labels

    def transform_bounding_boxes(self, bounding_boxes, transformation, training=True):
        sx, sy = transformation["scale_x"], transformation["scale_y"]
        factors = self.backend.numpy.stack([sx, sy, sx, sy])
        boxes = self.backend.cast(bounding_boxes["boxes"], "float32")
        return {**bounding_boxes, "boxes": boxes * factors}

    def transform_segmentation_masks(self, segmentation_masks, transformation, training=True):
        return self.backend.image.resize(segmentation_masks, transformation["size"],
                                          interpolation="nearest")

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update({"sizes": self.sizes, "max_size": self.max_size,
                       "test_size": self.test_size, "interpolation": self.interpolation,
                       "seed": self.seed})
        return config


def detection_augmentation(
    sizes: Sequence[int] | None = (600,), max_size: int | None = 1000, flip: bool = True,
    brightness: float = 0.1, contrast: float = 0.1,
    saturation: tuple[float, float] | None = (0.4, 0.6), seed: int | None = None,
) -> list[keras.layers.Layer]:
    """The Keras layers of the standard detection augmentation, each seeded from `seed`."""
    s = (lambda k: None) if seed is None else (lambda k: seed * 7919 + k)
    layers: list[keras.layers.Layer] = []
    if flip:
        layers.append(keras.layers.RandomFlip("horizontal", seed=s(1), bounding_box_format="xyxy"))
    if sizes:
        layers.append(RandomShorterSide(sizes, max_size, seed=s(2)))
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
    generator = _ElementSeed(seed)
    # `_get_seed_generator` is how Keras data layers fetch their randomness; overriding it on
    # the instance while the tf.data function is traced routes every draw to `generator`.
    object.__setattr__(layer, "_get_seed_generator", lambda *args, **kwargs: generator)
    try:
        return layer(data, training=training)
    finally:
        object.__delattr__(layer, "_get_seed_generator")


def augment(
    dataset: tf.data.Dataset, sizes: Sequence[int] | None = (600,), max_size: int | None = 1000,
    flip: bool = True, brightness: float = 0.1, contrast: float = 0.1,
    saturation: tuple[float, float] | None = (0.4, 0.6), seed: int | None = None,
    training: bool = True, num_parallel_calls: int | None = tf.data.AUTOTUNE,
) -> tf.data.Dataset:
    """Apply `detection_augmentation` to unbatched elements of the agreed format, in parallel.

    Each element draws from its own seed, taken from `tf.data.Dataset.random(seed)`
    re-drawn every epoch: the same `seed` gives the same stream on every run, a new epoch
    gives new augmentations, and the result does not depend on thread timing. `area` is
    scaled with the image; other keys pass through. With `training=False` only the resize
    to `test_size` (default `max(sizes)`) is applied, for evaluation.
    """
    layers = detection_augmentation(sizes, max_size, flip, brightness, contrast, saturation,
                                    seed)
    if not training:
        layers = [layer for layer in layers if isinstance(layer, RandomShorterSide)]

    def apply(element: dict, draw: tf.Tensor) -> dict:
        image = element["images"]
        # A batch of one: Keras' single-image box path switches to the global backend midway
        # and fails inside tf.data under KERAS_BACKEND=jax (Keras 3.15); the batched one works.
        boxes = element["bounding_boxes"]
        data = {"images": image[None], "bounding_boxes": {"boxes": boxes["boxes"][None],
                                                          "labels": boxes["labels"][None]}}
        for k, layer in enumerate(layers):
            data = _call_seeded(layer, data, tf.stack([draw, tf.constant(k, tf.int64)]), training)
        data = {"images": data["images"][0],
                "bounding_boxes": {"boxes": data["bounding_boxes"]["boxes"][0]}}
        out = dict(element)
        # contrast can push values past the range; the detector expects 0..255
        out["images"] = tf.clip_by_value(tf.cast(data["images"], tf.float32), 0.0, 255.0)
        boxes = data["bounding_boxes"]
        labels = tf.cast(element["bounding_boxes"]["labels"], tf.int32)  # layers make it float
        boxes = tf.reshape(tf.cast(boxes["boxes"], tf.float32), [-1, 4])
        out["bounding_boxes"] = {"boxes": boxes, "labels": labels}
        if "area" in element:
            before = tf.cast(tf.shape(image)[0] * tf.shape(image)[1], tf.float32)
            after = tf.cast(tf.shape(out["images"])[0] * tf.shape(out["images"])[1], tf.float32)
            out["area"] = element["area"] * after / before
        return out

    draws = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True)
    return tf.data.Dataset.zip(dataset, draws).map(
        apply, num_parallel_calls=num_parallel_calls, deterministic=True)
