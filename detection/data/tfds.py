"""TFDS `voc/2007`, `voc/2012` and `coco/2017` mapped to the same elements as the file loaders.

TFDS stores boxes normalised as (ymin, xmin, ymax, xmax); the detector and the evaluation
use pixel xyxy. tensorflow-datasets is imported only when a TFDS loader is called.
"""

from __future__ import annotations

import tensorflow as tf

from detection.data.records import attach
from detection.data.voc import VOC_CLASSES
from keras_resnet_suite.data.tfds import builder, import_tfds

# COCO 2017 category ids of the 80 detection classes, in id order: TFDS label k is id [k].
COCO_CATEGORY_IDS = (
    1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 27,
    28, 31, 32, 33, 34, 35, 36, 37, 38, 39, 40, 41, 42, 43, 44, 46, 47, 48, 49, 50, 51, 52, 53,
    54, 55, 56, 57, 58, 59, 60, 61, 62, 63, 64, 65, 67, 70, 72, 73, 74, 75, 76, 77, 78, 79, 80,
    81, 82, 84, 85, 86, 87, 88, 89, 90,
)


def _pixel_xyxy(normalised_yxyx: tf.Tensor, image: tf.Tensor) -> tf.Tensor:
    shape = tf.cast(tf.shape(image), tf.float32)
    height, width = shape[0], shape[1]
    ymin, xmin, ymax, xmax = tf.unstack(tf.reshape(normalised_yxyx, [-1, 4]), axis=1)
    return tf.stack([xmin * width, ymin * height, xmax * width, ymax * height], axis=1)


def _image(element: dict) -> tf.Tensor:
    image = element["image"]
    if image.shape.rank == 3 and image.shape[-1] == 1:  # some TFDS builds keep grayscale
        image = tf.image.grayscale_to_rgb(image)
    return tf.cast(image, tf.float32)


def from_tfds_voc(element: dict) -> dict:
    """A TFDS VOC element -> {"images", "bounding_boxes", "image_id", "difficult", ...}."""
    objects = element["objects"]
    image = _image(element)
    boxes = _pixel_xyxy(objects["bbox"], image)
    n = tf.shape(boxes)[0]
    difficult = tf.cast(objects.get("is_difficult", tf.zeros([n], tf.bool)), tf.bool)
    image_id = tf.strings.regex_replace(element["image/filename"], r"\.[^.]*$", "")
    return {
        "images": image,
        "bounding_boxes": {"boxes": boxes, "labels": tf.cast(objects["label"], tf.int32)},
        "image_id": image_id,
        "difficult": difficult,
        "iscrowd": tf.zeros([n], tf.bool),
        "area": (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]),
    }


def from_tfds_coco(element: dict) -> dict:
    """A TFDS COCO element -> the agreed format; `area` is COCO's own annotation area."""
    objects = element["objects"]
    image = _image(element)
    boxes = _pixel_xyxy(objects["bbox"], image)
    n = tf.shape(boxes)[0]
    area = tf.cast(objects["area"], tf.float32) if "area" in objects else (
        (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]))
    return {
        "images": image,
        "bounding_boxes": {"boxes": boxes, "labels": tf.cast(objects["label"], tf.int32)},
        "image_id": tf.strings.as_string(element["image/id"]),
        "difficult": tf.zeros([n], tf.bool),
        "iscrowd": tf.cast(objects.get("is_crowd", tf.zeros([n], tf.bool)), tf.bool),
        "area": area,
    }


def _drop(element: dict, mask: tf.Tensor) -> dict:
    """Keep only the objects where `mask` is true (per-object arrays stay aligned)."""
    keep = tf.logical_not(mask)
    out = dict(element)
    out["bounding_boxes"] = {k: tf.boolean_mask(v, keep)
                             for k, v in element["bounding_boxes"].items()}
    for key in ("difficult", "iscrowd", "area"):
        out[key] = tf.boolean_mask(element[key], keep)
    return out


def _load(name: str, split: str, data_dir, shuffle: bool, seed, download: bool):
    """`(dataset of TFDS elements, num_examples, info)` of a prepared (or, if allowed, downloaded)
    split; unavailable data is one line saying what to do (`keras_resnet_suite.data.tfds`)."""
    b = builder(name, data_dir, download,
                instead="use the file loaders detection.data.voc / detection.data.coco "
                        "(loader: voc / coco) on a VOCdevkit or COCO folder")
    read_config = import_tfds().ReadConfig(shuffle_seed=seed) if seed is not None else None
    ds = b.as_dataset(split=split, shuffle_files=shuffle, read_config=read_config)
    # The dataset's own length counts what a sub-split (`train[:100]`) really yields; the
    # split metadata is the fallback when the length is unknown.
    count = int(ds.cardinality())
    return ds, count if count >= 0 else b.info.splits[split].num_examples, b.info


def voc_tfds(
    split: str = "train", year: int = 2007, data_dir: str | None = None, shuffle: bool = False,
    seed: int | None = None, download: bool = True, skip_difficult: bool = False,
) -> tf.data.Dataset:
    """TFDS `voc/<year>` (2007 or 2012) in the agreed element format; labels as VOC_CLASSES."""
    ds, count, info = _load(f"voc/{year}", split, data_dir, shuffle, seed, download)
    ds = ds.map(from_tfds_voc, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    if skip_difficult:
        ds = ds.map(lambda e: _drop(e, e["difficult"]), num_parallel_calls=tf.data.AUTOTUNE)
    names = list(VOC_CLASSES)
    return attach(ds, class_names=names, num_examples=count,
                  label_to_name=dict(enumerate(names)),
                  name_to_label={n: i for i, n in enumerate(names)})


def coco_tfds(
    split: str = "train", year: int = 2017, data_dir: str | None = None, shuffle: bool = False,
    seed: int | None = None, download: bool = True, skip_crowd: bool = False,
) -> tf.data.Dataset:
    """TFDS `coco/<year>` in the agreed element format, with COCO category ids alongside."""
    ds, count, info = _load(f"coco/{year}", split, data_dir, shuffle, seed, download)
    ds = ds.map(from_tfds_coco, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    if skip_crowd:
        ds = ds.map(lambda e: _drop(e, e["iscrowd"]), num_parallel_calls=tf.data.AUTOTUNE)
    names = list(info.features["objects"]["label"].names)
    ids = list(COCO_CATEGORY_IDS)
    return attach(ds, class_names=names, num_examples=count,
                  category_ids=ids, label_to_category=dict(enumerate(ids)),
                  category_to_label={c: i for i, c in enumerate(ids)})
