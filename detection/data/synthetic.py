"""The synthetic shapes set as a detection dataset (and as a VOC tree on disk).

Images come from `keras_resnet_suite.data.shapes` (the project's one generator); this module
only wraps them in the detection data convention. Splits use disjoint image indices, so the
held-out images are never seen in training.
"""

from __future__ import annotations

from pathlib import Path
from xml.sax.saxutils import escape

import numpy as np
import tensorflow as tf
from PIL import Image

from keras_resnet_suite.data import shapes as generator

CLASS_NAMES = generator.CLASS_NAMES
# First image index of each split; far apart so the splits never overlap.
SPLIT_START = {"train": 0, "val": 1_000_000, "test": 2_000_000}


def samples(num_images: int, split: str = "train", image_size: int | tuple[int, int] = 128,
            seed: int = 0, progress: bool = False, **kwargs) -> list[dict]:
    """Rendered images of a split: `[{"image", "boxes", "labels"}]` (see the generator)."""
    if split not in SPLIT_START:
        raise ValueError(f"shapes: split must be one of {sorted(SPLIT_START)}, got {split!r}")
    if num_images < 1:
        raise ValueError(f"shapes: num_images must be >= 1, got {num_images}")
    return generator.generate(num_images, start=SPLIT_START[split], image_size=image_size,
                              seed=seed, progress=progress, **kwargs)


def shapes(num_images: int = 512, split: str = "train", image_size: int | tuple[int, int] = 128,
           seed: int = 0, progress: bool = False, masks: bool = False,
           **kwargs) -> tf.data.Dataset:
    """Unbatched `tf.data.Dataset` of `{"images": uint8 [H, W, 3], "bounding_boxes":
    {"boxes": float32 [N, 4] xyxy pixels, "labels": int32 [N]}}`; labels index `CLASS_NAMES`.
    `masks=True` adds exact instance masks, `"masks"`: uint8 0/1 [N, H, W] (each shape's own
    pixels: a mask's bounding box is its box).

    Deterministic: the same arguments always give the same images. Extra keyword arguments
    (`min_objects`, `max_objects`, `size_range`, ...) go to the generator.
    """
    return from_samples(samples(num_images, split, image_size, seed, progress, masks=masks,
                                **kwargs))


def from_samples(items: list[dict]) -> tf.data.Dataset:
    """`shapes`' dataset over already rendered samples (all of one image size); with masks
    when the samples were rendered with them."""
    if not items:
        raise ValueError("from_samples: no samples")
    h, w = items[0]["image"].shape[:2]
    with_masks = all("masks" in s for s in items)

    def gen():
        for s in items:
            element = {"images": s["image"],
                       "bounding_boxes": {"boxes": s["boxes"], "labels": s["labels"]}}
            if with_masks:
                element["masks"] = s["masks"]
            yield element

    spec = {"images": tf.TensorSpec((h, w, 3), tf.uint8),
            "bounding_boxes": {"boxes": tf.TensorSpec((None, 4), tf.float32),
                               "labels": tf.TensorSpec((None,), tf.int32)}}
    if with_masks:
        spec["masks"] = tf.TensorSpec((None, h, w), tf.uint8)
    ds = tf.data.Dataset.from_generator(gen, output_signature=spec)
    # A known length gives Keras progress bars a total and epochs a clean end.
    ds = ds.apply(tf.data.experimental.assert_cardinality(len(items)))
    ds.element_at = _element_at(items, spec)  # random access (detection.data.resume)
    ds.num_examples = len(items)
    return ds


def _element_at(items: list[dict], spec: dict):
    """`element_at(index)`: the rendered sample `index` as a dataset element (traceable)."""
    keys = ["images", "boxes", "labels"] + (["masks"] if "masks" in spec else [])
    dtypes = [tf.uint8, tf.float32, tf.int32, tf.uint8][:len(keys)]

    def arrays(index):
        s = items[int(index)]
        out = [np.asarray(s["image"], np.uint8), np.asarray(s["boxes"], np.float32),
               np.asarray(s["labels"], np.int32)]
        return out + ([np.asarray(s["masks"], np.uint8)] if len(keys) == 4 else [])

    def element_at(index):
        values = tf.numpy_function(arrays, [index], dtypes, stateful=False)
        values = [tf.ensure_shape(v, spec[k].shape if k in spec else
                                  spec["bounding_boxes"][k].shape)
                  for k, v in zip(keys, values, strict=True)]
        element = {"images": values[0],
                   "bounding_boxes": {"boxes": values[1], "labels": values[2]}}
        if len(keys) == 4:
            element["masks"] = values[3]
        return element

    return element_at


def write_voc(directory: str | Path, num_images: int = 64, split: str = "train",
              image_size: int | tuple[int, int] = 128, seed: int = 0, **kwargs) -> Path:
    """Write a split as a PASCAL VOC tree (`JPEGImages`, `Annotations`, `ImageSets/Main`).

    Boxes are written 1-based inclusive as the VOC devkit expects (`xmin + 1 .. xmax`).
    Returns the `VOC` root directory.
    """
    root = Path(directory)
    for sub in ("JPEGImages", "Annotations", "ImageSets/Main"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    ids = []
    for i, s in enumerate(samples(num_images, split, image_size, seed, **kwargs)):
        image_id = f"{split}_{i:06d}"
        ids.append(image_id)
        Image.fromarray(s["image"]).save(root / "JPEGImages" / f"{image_id}.jpg", quality=95)
        h, w = s["image"].shape[:2]
        objects = "".join(
            f"<object><name>{escape(CLASS_NAMES[int(lb)])}</name><difficult>0</difficult>"
            f"<bndbox><xmin>{int(b[0]) + 1}</xmin><ymin>{int(b[1]) + 1}</ymin>"
            f"<xmax>{int(b[2])}</xmax><ymax>{int(b[3])}</ymax></bndbox></object>"
            for b, lb in zip(s["boxes"], s["labels"], strict=True))
        xml = (f"<annotation><filename>{image_id}.jpg</filename><size><width>{w}</width>"
               f"<height>{h}</height><depth>3</depth></size>{objects}</annotation>")
        (root / "Annotations" / f"{image_id}.xml").write_text(xml)
    (root / "ImageSets" / "Main" / f"{split}.txt").write_text("\n".join(ids) + "\n")
    return root


def ground_truths(items: list[dict]) -> list[dict]:
    """Evaluation-list ground truth (`detection.evaluation` format) of rendered samples, with
    their binary `"masks"` [M, H, W] when they were rendered with masks."""
    return [{"boxes": np.asarray(s["boxes"], np.float32).reshape(-1, 4),
             "labels": np.asarray(s["labels"], np.int64),
             **({"masks": s["masks"]} if "masks" in s else {})} for s in items]
