"""Read a shards folder (`detection.data.shards`) as the COCO/VOC loaders' elements, with random
access by index and a per-worker split by file.

Elements are those of `detection.data.records.records_to_dataset`: `images` (float32, upright),
`bounding_boxes` {`boxes`, `labels`}, `image_id`, `difficult`, `iscrowd`, `area` and, for a
folder written with masks and `masks=True`, `masks` (uint8 [M, H, W] decoded from the RLEs).
A record is read at its byte offset (from the manifest's lengths), so a resumed training stream
starts anywhere at once and a worker reads only its own files.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import tensorflow as tf

from detection.data.records import attach
from detection.data.report import DataReport
from detection.data.segmentations import decode_masks
from detection.data.shards import _HEADER, MANIFEST, record_offsets, verify_split
from keras_resnet_suite.data.images import decode_rgb, upright_image

_FEATURES = {
    "image/encoded": tf.io.FixedLenFeature([], tf.string),
    "image/id": tf.io.FixedLenFeature([], tf.string),
    "image/info": tf.io.FixedLenFeature([3], tf.int64),  # height, width, EXIF orientation
    "objects": tf.io.RaggedFeature(tf.float32),  # [N * 8]: x1 y1 x2 y2 label difficult crowd area
    "masks": tf.io.RaggedFeature(tf.string),
}  # one example: each a plain 1-D tensor


def is_shards_folder(path: str | Path) -> bool:
    """Whether `path` is a folder holding a shards `manifest.json`."""
    path = Path(path)
    return path.is_dir() and (path / MANIFEST).is_file()


def read_manifest(folder: str | Path) -> dict:
    """The checked manifest of a shards folder; a missing or malformed one is one line."""
    path = Path(folder) / MANIFEST
    if not path.is_file():
        raise FileNotFoundError(f"{folder} is not a shards folder: no {MANIFEST} (write one with"
                                " python -m detection records)")
    try:
        manifest = json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError) as error:
        raise ValueError(f"{path} is not valid JSON: {error}") from None
    if not isinstance(manifest, dict) or manifest.get("format") != "detection-shards":
        raise ValueError(f"{path} is not a detection shards manifest (no format "
                         "'detection-shards')")
    for key, kind in (("class_names", list), ("splits", dict), ("source_format", str)):
        if not isinstance(manifest.get(key), kind):
            raise ValueError(f"{path}: key {key!r} is missing or not a {kind.__name__}")
    for split, entry in manifest["splits"].items():
        shards = entry.get("shards") if isinstance(entry, dict) else None
        if not isinstance(shards, list) or not all(
                isinstance(s, dict) and {"file", "count", "bytes", "lengths"} <= set(s)
                and len(s["lengths"]) == s["count"] for s in shards):
            raise ValueError(f"{path}: splits.{split}.shards is not a list of shard entries "
                             "(file, count, bytes, lengths)")
    return manifest


def worker_files(num_files: int, num_workers: int = 1, worker: int = 0) -> list[int] | None:
    """The shard files worker `worker` of `num_workers` reads (every `num_workers`-th, from
    its own index), or None when there are fewer files than workers (then split by index)."""
    if num_workers < 1 or not 0 <= worker < num_workers:
        raise ValueError(f"worker must be in [0, num_workers), got worker={worker} of "
                         f"num_workers={num_workers}")
    return None if num_files < num_workers else list(range(worker, num_files, num_workers))


class _Files:
    """The shard files a reader owns, opened once; `read` is one `pread` per record (thread-safe,
    no lock: tf.data calls it from many threads)."""

    def __init__(self, paths: list[Path], owned: list[int] | None = None) -> None:
        self.paths = paths
        self.fds = {i: os.open(paths[i], os.O_RDONLY)
                    for i in (range(len(paths)) if owned is None else owned)}

    def read(self, file: int, offset: int, length: int) -> bytes:
        raw = os.pread(self.fds[file], _HEADER + length, offset)
        stored = int.from_bytes(raw[:8], "little") if len(raw) >= 8 else -1
        if len(raw) != _HEADER + length or stored != length:
            raise ValueError(f"shard {self.paths[file]}: record at byte {offset} is damaged "
                             f"(length {stored}, the manifest says {length})")
        return raw[_HEADER:]

    def __del__(self) -> None:
        for fd in getattr(self, "fds", {}).values():
            os.close(fd)


def _index(manifest: dict, split: str, files: list[int] | None, by_index: tuple[int, int]):
    """(file number, byte offset, length, objects) per record this reader owns."""
    parts = []
    for number, shard in enumerate(manifest["splits"][split]["shards"]):
        if files is not None and number not in files:
            continue
        lengths = np.asarray(shard["lengths"], np.int64)
        objects = np.asarray(shard.get("objects", np.zeros_like(lengths)), np.int64)
        parts.append(np.stack([np.full_like(lengths, number), record_offsets(lengths),
                               lengths, objects], axis=1))
    table = np.concatenate(parts) if parts else np.zeros((0, 4), np.int64)
    if files is None:
        table = table[by_index[1]::by_index[0]]
    return table


def shards(data_dir: str | Path, split: str = "train", shuffle: bool = False,
           seed: int | None = None, masks: bool = False, verbose: bool = True,
           verify: bool = False, num_workers: int = 1, worker: int = 0) -> tf.data.Dataset:
    """A split of a shards folder as tf.data, in the loaders' element format.

    `num_workers`/`worker`: this worker's share, by file (every `num_workers`-th shard file) or,
    with fewer files than workers, by index. `verify=True` hashes every shard first (the
    sizes are always checked). The dataset carries `class_names`, `report`, `num_examples`,
    `element_at` (random access), `for_worker(num_workers, worker)` and, from COCO,
    `category_ids` and the label maps.
    """
    folder = Path(data_dir)
    manifest = read_manifest(folder)
    if split not in manifest["splits"]:
        raise ValueError(f"{folder / MANIFEST} has no split {split!r} (it has "
                         f"{', '.join(map(repr, manifest['splits']))})")
    if masks and not manifest.get("masks"):
        raise ValueError(f"{folder} was written without masks: rewrite it with python -m "
                         "detection records --masks")
    entry = manifest["splits"][split]
    verify_split(folder, split, entry, checksums=verify)
    files = worker_files(len(entry["shards"]), num_workers, worker)
    table = _index(manifest, split, files, (num_workers, worker))
    paths = [folder / s["file"] for s in entry["shards"]]
    ds = _dataset(_Files(paths, files), table[:, :3], shuffle, seed, masks,
                  bool(entry.get("turned", True)))
    report = DataReport(f"{folder} {split}")
    report.num_images = len(table)
    report.num_objects = int(table[:, 3].sum())
    if verbose:
        print(f"{folder} {split}: {len(table)} images from {len(entry['shards'])} shards"
              + (f" (worker {worker} of {num_workers})" if num_workers > 1 else ""))
    names = list(manifest["class_names"])
    extra: dict = {"label_to_name": dict(enumerate(names)),
                   "name_to_label": {n: i for i, n in enumerate(names)}}
    if manifest.get("category_ids"):
        ids = list(manifest["category_ids"])
        extra = {"category_ids": ids, "label_to_category": dict(enumerate(ids)),
                 "category_to_label": {c: i for i, c in enumerate(ids)}}

    def for_worker(count: int, index: int) -> tf.data.Dataset:
        return shards(folder, split, shuffle, seed, masks, False, False, count, index)

    return attach(ds, class_names=names, report=report, num_examples=len(table),
                  for_worker=for_worker, **extra)


def _dataset(files: _Files, table: np.ndarray, shuffle: bool, seed: int | None,
             with_masks: bool, turn: bool) -> tf.data.Dataset:
    table_t = tf.constant(table.reshape(-1, 3), tf.int64)

    def read(row):
        return files.read(int(row[0]), int(row[1]), int(row[2]))

    def masks_of(counts, size) -> np.ndarray:
        h, w = int(size[0]), int(size[1])
        return decode_masks([{"size": [h, w], "counts": c} for c in counts], h, w)

    def load(index: tf.Tensor) -> dict:
        data = tf.numpy_function(read, [table_t[index]], tf.string, stateful=False)
        parsed = tf.io.parse_single_example(tf.reshape(data, []), _FEATURES)
        objects = tf.reshape(parsed["objects"], [-1, 8])
        info = parsed["image/info"]
        image = decode_rgb(parsed["image/encoded"])
        if turn:  # only a split holding EXIF-turned photos pays for the turn
            image = upright_image(image, tf.cast(info[2], tf.int32))
        element = {
            "images": tf.cast(image, tf.float32),
            "bounding_boxes": {"boxes": objects[:, :4],
                               "labels": tf.cast(objects[:, 4], tf.int32)},
            "image_id": parsed["image/id"],
            "difficult": objects[:, 5] > 0,
            "iscrowd": objects[:, 6] > 0,
            "area": objects[:, 7],
        }
        if with_masks:
            decoded = tf.numpy_function(masks_of, [parsed["masks"], info[:2]],
                                        tf.uint8, stateful=False)
            element["masks"] = tf.ensure_shape(decoded, [None, None, None])
        return element

    ds = tf.data.Dataset.range(len(table))
    if shuffle:
        ds = ds.shuffle(max(len(table), 1), seed=seed, reshuffle_each_iteration=True)
    ds = ds.map(load, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    ds = ds.ignore_errors(log_warning=True)  # as the loaders: a bad image is dropped, logged
    ds.element_at = load
    return ds
