"""Parsed annotation records -> tf.data: image checks, box cleaning, parallel decoding.

Shared by the VOC and COCO loaders: parsing happens once in Python (cheap, reported),
decoding happens in tf.data in parallel, so a bad file is found before training starts.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
from pathlib import Path
from typing import NamedTuple

import numpy as np
import tensorflow as tf
from PIL import Image
from tqdm.auto import tqdm

from detection.data.report import DataReport
from detection.data.segmentations import decode_masks
from keras_resnet_suite.data.images import bmp_problem, decode_rgb, too_large, upright_image

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
    orientation: int = 1  # EXIF orientation of the file, applied when it is decoded
    # compressed RLEs [N] in the upright frame (detection.data.segmentations), or None: no masks asked
    masks: list | None = None


class ImageInfo(NamedTuple):
    """What the up-front check learns of an image file: stored size and EXIF orientation."""

    width: int
    height: int
    orientation: int = 1

    @property
    def upright_size(self) -> tuple[int, int]:
        """(width, height) once the EXIF orientation is applied (as viewers show the photo)."""
        return (self.height, self.width) if self.orientation in (5, 6, 7, 8) else (
            self.width, self.height)


def check_image(path: Path, report: DataReport, verify: bool = False) -> tuple[int, int] | None:
    """(width, height) of a readable image file, or None after recording why it is unusable.

    The default check reads the header and, for JPEG, looks for the end-of-image marker, which
    catches truncated downloads cheaply; `verify=True` decodes the whole file (slow, thorough).
    """
    info = inspect_image(path, report, verify)
    return None if info is None else (info.width, info.height)


def inspect_image(path: Path, report: DataReport, verify: bool = False,
                  max_pixels: int | None = None) -> ImageInfo | None:
    """`check_image` plus the EXIF orientation tag (1 when absent or invalid). An image over
    the pixel limit (`keras_resnet_suite.data.images.max_pixels`) is refused from its header
    (`image_too_large`) before anything decodes it."""
    if not path.is_file():
        report.add("missing_image", path.name, f"not found: {path}")
        return None
    try:
        with Image.open(path) as image:
            size, mode, fmt = image.size, image.mode, image.format
            reason = too_large(*size, max_pixels)
            if reason is not None:
                report.add("image_too_large", path.name, reason)
                return None
            orientation = _orientation(image)
            if verify:
                image.load()
    except Exception as error:  # PIL raises many types for bad files; all mean "unusable"
        report.add("corrupt_image", path.name, f"cannot decode: {error}")
        return None
    if fmt not in {"JPEG", "PNG", "BMP", "GIF"}:
        report.add("corrupt_image", path.name, f"unsupported image format {fmt}")
        return None
    if fmt == "BMP" and (problem := bmp_problem(path.read_bytes()[:66])) is not None:
        report.add("corrupt_image", path.name, f"unsupported image format: {problem}")
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
    return ImageInfo(int(size[0]), int(size[1]), orientation)


def _orientation(image: Image.Image) -> int:
    try:
        value = int(image.getexif().get(0x0112, 1))  # 0x0112: the EXIF Orientation tag
    except Exception:  # a damaged EXIF block is no reason to lose the photo
        return 1
    return value if 1 <= value <= 8 else 1


def upright_boxes(boxes: np.ndarray, orientation: int, width: int, height: int) -> np.ndarray:
    """xyxy boxes drawn on the stored pixels of a `width` x `height` file, moved to the frame of
    the photo with EXIF `orientation` applied (the frame `records_to_dataset` decodes into)."""
    x1, y1, x2, y2 = np.asarray(boxes, np.float32).reshape(-1, 4).T
    w, h = float(width), float(height)
    out = {
        1: (x1, y1, x2, y2),
        2: (w - x2, y1, w - x1, y2),  # mirrored left-right
        3: (w - x2, h - y2, w - x1, h - y1),  # turned 180 degrees
        4: (x1, h - y2, x2, h - y1),  # mirrored top-bottom
        5: (y1, x1, y2, x2),  # transposed
        6: (h - y2, x1, h - y1, x2),  # turned 90 degrees clockwise
        7: (h - y2, w - x2, h - y1, w - x1),  # transverse
        8: (y1, w - x2, y2, w - x1),  # turned 90 degrees counter-clockwise
    }[int(orientation)]
    return np.stack(out, axis=1).astype(np.float32)


def drawn_on_stored(info: ImageInfo, declared: tuple[int, int] | None) -> bool:
    """Whether annotations declaring the size `declared` were drawn on the file's stored pixels
    of an EXIF-turned photo (so `orient` turns them with the image), not on the upright photo."""
    stored = (info.width, info.height)
    return info.orientation != 1 and declared == stored and stored != info.upright_size


def orient(
    info: ImageInfo, declared: tuple[int, int] | None, boxes: np.ndarray, report: DataReport,
    file: str,
) -> tuple[tuple[int, int], np.ndarray]:
    """(upright size, boxes in the upright frame) of an image whose annotation declares
    `declared` = (width, height), or None.

    The image is always used upright (EXIF orientation applied, as every viewer and browser
    shows it). The boxes' frame is read from the declared size: a tool that drew on the
    upright photo writes the upright size, one that drew on the stored pixels the stored size;
    those boxes are turned with the image. When both frames have the same size (a 180-degree
    turn or a mirror) or no size is declared, the upright frame is assumed, and the report says
    so. A declared size matching neither frame is a `size_mismatch`.
    """
    stored, upright = (info.width, info.height), info.upright_size
    if declared is not None and declared not in (stored, upright):
        report.add("size_mismatch", file, f"annotated {declared[0]}x{declared[1]}, file "
                                          f"{upright[0]}x{upright[1]}")
    if info.orientation == 1:
        return upright, boxes
    if drawn_on_stored(info, declared):
        report.add("exif_rotated", file, f"orientation {info.orientation}; annotated size "
                   f"{stored[0]}x{stored[1]} is the stored frame: boxes turned with the image")
        return upright, upright_boxes(boxes, info.orientation, *stored)
    if declared is None:
        frame = "not written, upright frame assumed"
    elif declared == upright and stored != upright:
        frame = "the upright frame"
    else:
        frame = "ambiguous (same size either way), upright frame assumed"
    report.add("exif_rotated", file, f"orientation {info.orientation}; annotated size is {frame}:"
                                     " boxes kept")
    return upright, boxes


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
    infos = inspect_images(paths, report, verify, workers, desc)
    return [None if i is None else (i.width, i.height) for i in infos]


def inspect_images(
    paths: list[Path], report: DataReport, verify: bool = False, workers: int = 8,
    desc: str = "checking images",
) -> list[ImageInfo | None]:
    """`inspect_image` over many files with a thread pool; results in input order."""
    scratch = [DataReport() for _ in paths]
    with concurrent.futures.ThreadPoolExecutor(workers) as pool:
        jobs = pool.map(lambda a: inspect_image(a[0], a[1], verify),
                        zip(paths, scratch, strict=True))
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
    masks: bool = False,
) -> tf.data.Dataset:
    """Unbatched elements in the agreed format; images decoded in parallel, order deterministic.
    With `masks=True` (every record carries RLEs) elements add `"masks"`: uint8 [M, H, W],
    one per box, in the boxes' order.

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
    orientations = [int(r.orientation) for r in records]
    turn = any(o != 1 for o in orientations)
    orientations_t = tf.constant(orientations or [1], tf.int32)
    with_masks = masks
    if masks:
        lacking = [r.image_id for r in records if r.masks is None or len(r.masks) != len(r.labels)]
        if lacking:
            raise ValueError(f"records_to_dataset(masks=True): image {lacking[0]!r} has no mask "
                             "per box")
        # Decoded per element from the compact RLEs: a [M, H, W] array per image in memory
        # for the whole set would not fit a real data set.
        rles = [r.masks for r in records]
        sizes = [(r.height, r.width) for r in records]

        def masks_of(index) -> np.ndarray:
            i = int(index)
            return decode_masks(rles[i], *sizes[i])

    def load(index: tf.Tensor) -> dict:
        start, stop = splits_t[index], splits_t[index + 1]
        data = tf.io.read_file(paths[index])
        image = decode_rgb(data)  # JPEG (CMYK too), PNG, BMP, GIF; grayscale made RGB
        if turn:
            image = upright_image(image, orientations_t[index])
        element = {
            "images": tf.cast(image, tf.float32),
            "bounding_boxes": {"boxes": boxes[start:stop], "labels": labels[start:stop]},
            "image_id": ids[index],
            "difficult": difficult[start:stop],
            "iscrowd": iscrowd[start:stop],
            "area": area[start:stop],
        }
        if with_masks:
            masks = tf.numpy_function(masks_of, [index], tf.uint8, stateful=False)
            element["masks"] = tf.ensure_shape(masks, [None, None, None])
        return element

    ds = tf.data.Dataset.range(len(records))
    if shuffle:
        ds = ds.shuffle(max(len(records), 1), seed=seed, reshuffle_each_iteration=True)
    ds = ds.map(load, num_parallel_calls=num_parallel_calls, deterministic=True)
    # Last line of defence: a file that passed the up-front check but still fails to decode
    # is dropped (with a logged warning) rather than ending the epoch.
    ds = ds.ignore_errors(log_warning=True)
    ds.element_at = load  # random access by index: a resumed stream starts anywhere at once
    return ds


def attach(ds: tf.data.Dataset, **attributes) -> tf.data.Dataset:
    """Set metadata (class_names, report, label maps) as attributes of the returned dataset."""
    for name, value in attributes.items():
        object.__setattr__(ds, name, value)
    return ds
