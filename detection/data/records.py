"""Parsed annotation records -> tf.data: image checks, box cleaning, parallel decoding.

Shared by the VOC and COCO loaders: parsing happens once in Python (cheap, reported),
decoding happens in tf.data in parallel, so a bad file is found before training starts.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
from pathlib import Path

import numpy as np
import tensorflow as tf
from PIL import Image
from tqdm.auto import tqdm

from detection.data.report import DataReport

_GRAYSCALE_MODES = {"1", "L", "LA", "I", "I;16", "F"}


@dataclasses.dataclass
class Record:
    """One image and its objects, boxes already in pixel xyxy and inside the image."""

    image_path: str
    image_id: str
    width: int
    height: int
    boxes: np.ndarray  # float32 [N, 4]
    labels: np.ndarray  # int32 [N]
    difficult: np.ndarray  # bool [N]
    iscrowd: np.ndarray  # bool [N]
    area: np.ndarray  # float32 [N]


def check_image(path: Path, report: DataReport, verify: bool = False) -> tuple[int, int] | None:
    """(width, height) of a readable image file, or None after recording why it is unusable.

    The default check reads the header and, for JPEG, looks for the end-of-image marker, which
    catches truncated downloads cheaply; `verify=True` decodes the whole file (slow, thorough).
    """
    if not path.is_file():
        report.add("missing_image", path.name, f"not found: {path}")
        return None
    try:
        with Image.open(path) as image:
            size, mode, fmt = image.size, image.mode, image.format
            if verify:
                image.load()
    except Exception as error:  # PIL raises many types for bad files; all mean "unusable"
        report.add("corrupt_image", path.name, f"cannot decode: {error}")
        return None
    if fmt not in {"JPEG", "PNG", "BMP", "GIF"}:
        report.add("corrupt_image", path.name, f"unsupported image format {fmt}")
        return None
    if fmt == "JPEG" and not verify and not _has_jpeg_end(path):
        # No end marker near the end: truncated, or a valid file with a long trailer (phone
        # "motion photos"). Only a full decode tells them apart, and only these files pay it.
        try:
            with Image.open(path) as image:
                image.load()
        except Exception as error:
            report.add("corrupt_image", path.name, f"truncated JPEG: {error}")
            return None
    if mode in _GRAYSCALE_MODES:
        report.add("grayscale_image", path.name, f"mode {mode}")
    elif mode == "CMYK":
        report.add("cmyk_image", path.name)
    return size


def _has_jpeg_end(path: Path, tail: int = 4096) -> bool:
    with open(path, "rb") as f:
        f.seek(0, 2)
        f.seek(max(0, f.tell() - tail))
        return b"\xff\xd9" in f.read()


def check_images(
    paths: list[Path], report: DataReport, verify: bool = False, workers: int = 8,
    desc: str = "checking images",
) -> list[tuple[int, int] | None]:
    """`check_image` over many files with a thread pool (I/O bound); results in input order."""
    scratch = [DataReport() for _ in paths]
    with concurrent.futures.ThreadPoolExecutor(workers) as pool:
        jobs = pool.map(lambda a: check_image(a[0], a[1], verify), zip(paths, scratch, strict=True))
        sizes = list(tqdm(jobs, total=len(paths), desc=desc, leave=False))
    for sub in scratch:  # merge in input order so the report is deterministic
        report.issues.extend(sub.issues)
    return sizes


def clean_boxes(
    boxes: np.ndarray, width: int, height: int, report: DataReport, file: str
) -> tuple[np.ndarray, np.ndarray]:
    """Clip xyxy boxes to the image and find degenerate ones; returns (clipped, keep mask)."""
    boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
    clipped = boxes.copy()
    clipped[:, 0::2] = np.clip(boxes[:, 0::2], 0, width)
    clipped[:, 1::2] = np.clip(boxes[:, 1::2], 0, height)
    keep = (clipped[:, 2] > clipped[:, 0]) & (clipped[:, 3] > clipped[:, 1])
    for i in np.flatnonzero(~keep):
        report.add("degenerate_box", file, f"box {boxes[i].tolist()} in a {width}x{height} image")
    moved = np.any(clipped != boxes, axis=1) & keep
    for i in np.flatnonzero(moved):
        report.add("box_clipped", file,
                   f"box {boxes[i].tolist()} -> {clipped[i].tolist()} ({width}x{height} image)")
    return clipped, keep


def records_to_dataset(
    records: list[Record],
    shuffle: bool = False,
    seed: int | None = None,
    num_parallel_calls: int = tf.data.AUTOTUNE,
) -> tf.data.Dataset:
    """Unbatched elements in the agreed format; images decoded in parallel, order deterministic.

    Shuffling permutes the light-weight record indices (whole-set shuffle, re-drawn each epoch,
    reproducible with `seed`) before any image is read.
    """
    counts = np.array([len(r.labels) for r in records], np.int64)
    splits = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)

    def cat(name: str, dtype, shape: tuple[int, ...]) -> tf.Tensor:
        parts = [getattr(r, name) for r in records]
        flat = np.concatenate(parts).astype(dtype) if parts else np.zeros((0, *shape), dtype)
        return tf.constant(flat.reshape((-1, *shape)))

    boxes, labels = cat("boxes", np.float32, (4,)), cat("labels", np.int32, ())
    difficult, iscrowd = cat("difficult", bool, ()), cat("iscrowd", bool, ())
    area = cat("area", np.float32, ())
    splits_t = tf.constant(splits)
    paths = tf.constant([r.image_path for r in records], tf.string)
    ids = tf.constant([r.image_id for r in records], tf.string)

    def load(index: tf.Tensor) -> dict:
        start, stop = splits_t[index], splits_t[index + 1]
        data = tf.io.read_file(paths[index])
        # decode_image handles JPEG (incl. CMYK), PNG, BMP and GIF; channels=3 makes
        # grayscale and CMYK files RGB.
        image = tf.io.decode_image(data, channels=3, expand_animations=False)
        image.set_shape([None, None, 3])
        return {
            "images": tf.cast(image, tf.float32),
            "bounding_boxes": {"boxes": boxes[start:stop], "labels": labels[start:stop]},
            "image_id": ids[index],
            "difficult": difficult[start:stop],
            "iscrowd": iscrowd[start:stop],
            "area": area[start:stop],
        }

    ds = tf.data.Dataset.range(len(records))
    if shuffle:
        ds = ds.shuffle(max(len(records), 1), seed=seed, reshuffle_each_iteration=True)
    ds = ds.map(load, num_parallel_calls=num_parallel_calls, deterministic=True)
    # Last line of defence: a file that passed the up-front check but still fails to decode
    # is dropped (with a logged warning) rather than ending the epoch.
    return ds.ignore_errors(log_warning=True)


def attach(ds: tf.data.Dataset, **attributes) -> tf.data.Dataset:
    """Set metadata (class_names, report, label maps) as attributes of the returned dataset."""
    for name, value in attributes.items():
        object.__setattr__(ds, name, value)
    return ds
