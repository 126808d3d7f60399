"""CIFAR-10/100 (paper Sec. 4.2) from any of its releases, as seeded tf.data pipelines.

Sources: the official binary release (`cifar-10-batches-bin`, `cifar-100-binary`), the
python-pickle release (`cifar-10-batches-py`, `cifar-100-python`), their `.tar.gz` archives, an
image-folder tree `{train,test}/<class>/*.jpg` (also inside a `.tar.gz`, e.g.
`../shared/data/cifar10-jpeg.tar.gz`), or `"tfds"` for TensorFlow Datasets. Everything is
decoded once into uint8 arrays (cached as `.npz` for folders) and fed from memory.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import pickle
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import tensorflow as tf
from PIL import Image
from tqdm.auto import tqdm

from keras_resnet_suite.data import augment, stream
from keras_resnet_suite.data.folder import (
    cache_dir,
    find_split_dir,
    resolve_folder_root,
    scan_image_folder,
    sniff_image,
)
from keras_resnet_suite.data.images import bmp_problem, pil_rgb
from keras_resnet_suite.data.report import ClassificationData, DataReport
from keras_resnet_suite.data.tfds import load_arrays as tfds_arrays
from keras_resnet_suite.file_errors import read_json, reading

Arrays = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, list[str], DataReport]
NORMALIZATIONS = ("pixel_mean", "channel", "none")
_CIFAR10_NAMES = [
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
]
_RECORD = 32 * 32 * 3


def _planes_to_hwc(flat: np.ndarray) -> np.ndarray:
    # Both official releases store each image as R, G, B planes of 32x32, row-major.
    return flat.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1).copy()


def _check_labels(x, y, num_classes, path, report):
    ok = (y >= 0) & (y < num_classes)
    for i in np.flatnonzero(~ok):
        report.skip(f"{path}[record {i}]", f"label {int(y[i])} outside [0, {num_classes})")
    return x[ok], y[ok]


def read_binary(directory: str | os.PathLike, num_classes: int = 10) -> Arrays:
    """The official binary release: records of label byte(s) + 3072 pixel bytes."""
    d = Path(directory)
    report = DataReport(f"cifar{num_classes} binary {d}")
    if num_classes == 10:
        splits = {"train": [f"data_batch_{i}.bin" for i in range(1, 6)], "test": ["test_batch.bin"]}
        label_bytes, meta = 1, d / "batches.meta.txt"
    else:
        splits, label_bytes = {"train": ["train.bin"], "test": ["test.bin"]}, 2
        meta = d / "fine_label_names.txt"
    rec = label_bytes + _RECORD
    out = {}
    for split, names in splits.items():
        xs, ys = [], []
        for name in names:
            path = d / name
            if not path.is_file():
                raise FileNotFoundError(f"CIFAR binary release incomplete: missing {path}")
            raw = np.fromfile(path, np.uint8)
            if raw.size == 0 or raw.size % rec:
                report.skip(
                    str(path), f"size {raw.size} is not a multiple of the {rec}-byte record"
                )
                continue
            raw = raw.reshape(-1, rec)
            x, y = _planes_to_hwc(raw[:, label_bytes:]), raw[:, label_bytes - 1].astype(np.int64)
            x, y = _check_labels(x, y, num_classes, path, report)
            xs.append(x)
            ys.append(y)
        if not xs:
            raise ValueError(f"no readable CIFAR {split} batches in {d}")
        out[split] = (np.concatenate(xs), np.concatenate(ys))
        report.loaded[split] = len(out[split][1])
    names = _names_from_text(meta, num_classes)
    return (*out["train"], *out["test"], names, report)


def _names_from_text(path: Path | None, num_classes: int) -> list[str]:
    if path is not None and path.is_file():
        with reading(path, "class names file"):
            names = [n.strip() for n in path.read_text().splitlines() if n.strip()]
        if len(names) == num_classes:
            return names
    return _CIFAR10_NAMES if num_classes == 10 else [str(i) for i in range(num_classes)]


def read_pickle(directory: str | os.PathLike, num_classes: int = 10) -> Arrays:
    """The official python release (pickled dicts; only load archives you trust)."""
    d = Path(directory)
    report = DataReport(f"cifar{num_classes} pickle {d}")
    if num_classes == 10:
        splits = {"train": [f"data_batch_{i}" for i in range(1, 6)], "test": ["test_batch"]}
        key, meta, meta_key = b"labels", d / "batches.meta", b"label_names"
    else:
        splits = {"train": ["train"], "test": ["test"]}
        key, meta, meta_key = b"fine_labels", d / "meta", b"fine_label_names"
    out = {}
    for split, names in splits.items():
        xs, ys = [], []
        for name in names:
            path = d / name
            if not path.is_file():
                raise FileNotFoundError(f"CIFAR python release incomplete: missing {path}")
            try:
                with path.open("rb") as f:
                    batch = pickle.load(f, encoding="bytes")
                x = _planes_to_hwc(np.asarray(batch[b"data"], np.uint8))
                y = np.asarray(batch[key], np.int64)
                if len(x) != len(y):
                    raise ValueError(f"{len(x)} images but {len(y)} labels")
            except Exception as e:  # unpickling raises many types for a damaged file
                report.skip(str(path), f"unreadable batch ({type(e).__name__}: {e})")
                continue
            x, y = _check_labels(x, y, num_classes, path, report)
            xs.append(x)
            ys.append(y)
        if not xs:
            raise ValueError(f"no readable CIFAR {split} batches in {d}")
        out[split] = (np.concatenate(xs), np.concatenate(ys))
        report.loaded[split] = len(out[split][1])
    names = None
    if meta.is_file():
        with reading(meta, "CIFAR meta file"), meta.open("rb") as f:
            names = [n.decode() for n in pickle.load(f, encoding="bytes")[meta_key]]
    if not names or len(names) != num_classes:
        names = _names_from_text(None, num_classes)
    return (*out["train"], *out["test"], names, report)


def _decode_32(path: str) -> np.ndarray | str:
    """The image as uint8 [32, 32, 3], or the reason it cannot be used."""
    try:
        data = Path(path).read_bytes()
    except OSError as e:
        return f"unreadable ({e.strerror or e})"
    if sniff_image(data[:16]) is None:
        return "not an image (unknown file signature)"
    if (problem := bmp_problem(data[:66])) is not None:
        return f"unsupported image ({problem})"
    try:
        with Image.open(io.BytesIO(data)) as im:
            if im.size != (32, 32):  # from the header: a large image is never decoded
                return f"expected a 32x32 image, got {im.size[0]}x{im.size[1]}"
            arr = pil_rgb(im)  # the loaders' and serving's decoding rule
    except Exception as e:  # PIL raises many types for bad data
        return f"corrupt image ({type(e).__name__}: {e})"
    return arr


def read_folder(
    path: str | os.PathLike, num_classes: int = 10, cache: str | os.PathLike | None = None
) -> Arrays:
    """An image-folder tree (or archive of one); decoded once with a thread pool and cached."""
    root = resolve_folder_root(path, cache)
    report = DataReport(f"cifar{num_classes} folder {path}")
    train_dir, test_dir = find_split_dir(root, "train"), find_split_dir(root, "test")
    train_files, train_y, names = scan_image_folder(train_dir, report, validate="none")
    test_files, test_y, _ = scan_image_folder(test_dir, report, names, validate="none")
    if len(names) != num_classes:
        raise ValueError(f"{train_dir} has {len(names)} class folders, expected {num_classes}")
    listing = "\n".join(train_files + test_files).encode()
    key = hashlib.sha1(listing + str(os.stat(root).st_mtime_ns).encode()).hexdigest()[:16]
    npz = cache_dir(cache) / f"cifar-folder-{key}.npz"
    if npz.exists():
        with reading(npz, "CIFAR cache (.npz)"), np.load(npz) as z:
            arrays = [z[k] for k in ("xtr", "ytr", "xte", "yte")]
        cached = DataReport.from_dict(read_json(npz.with_suffix(".json"), "CIFAR cache record"))
        for p, r in cached.skipped:
            report.skip(p, r)
        report.loaded = cached.loaded
        return (*arrays, names, report)

    def decode_all(files: list[str], labels: np.ndarray, split: str):
        with ThreadPoolExecutor(8) as pool:
            results = list(
                tqdm(
                    pool.map(_decode_32, files),
                    total=len(files),
                    desc=f"decoding {split}",
                    unit="img",
                    mininterval=1.0,
                )
            )
        keep = []
        for i, (f, r) in enumerate(zip(files, results, strict=True)):
            if isinstance(r, str):
                report.skip(f, r)
            else:
                keep.append(i)
        if not keep:
            raise ValueError(f"no readable 32x32 images in the {split} split of {path}")
        report.loaded[split] = len(keep)
        return np.stack([results[i] for i in keep]), labels[keep]

    xtr, ytr = decode_all(train_files, train_y, "train")
    xte, yte = decode_all(test_files, test_y, "test")
    tmp = npz.with_name(npz.name + f".tmp-{os.getpid()}.npz")
    np.savez(tmp, xtr=xtr, ytr=ytr, xte=xte, yte=yte)
    meta_tmp = tmp.with_suffix(".json")
    meta_tmp.write_text(json.dumps(report.to_dict()))
    os.replace(meta_tmp, npz.with_suffix(".json"))  # the report first: npz marks completion
    os.replace(tmp, npz)
    return xtr, ytr, xte, yte, names, report


def detect_format(path: str | os.PathLike) -> tuple[str, Path]:
    """`("binary" | "pickle" | "folder", directory)` for a CIFAR source directory."""
    root = Path(path)
    for d in [root, *sorted(p for p in root.iterdir() if p.is_dir())]:
        if (d / "data_batch_1.bin").is_file() or (d / "train.bin").is_file():
            return "binary", d
        if (d / "data_batch_1").is_file() or (d / "train").is_file():
            return "pickle", d
    for d in [root, *sorted(p for p in root.iterdir() if p.is_dir())]:
        if (d / "train").is_dir():
            return "folder", d
    raise ValueError(
        f"{root} holds no CIFAR data: expected the binary release (data_batch_1.bin), the python "
        "release (data_batch_1), or an image-folder tree train/<class>/*.jpg"
    )


def load_arrays(
    source: str | os.PathLike, num_classes: int = 10, cache: str | os.PathLike | None = None
) -> Arrays:
    """uint8 arrays `(x_train, y_train, x_test, y_test, class_names, report)` from any source
    (a folder tree may hold any number of classes: CIFAR-style subsets, tests)."""
    if num_classes <= 1:
        raise ValueError(f"num_classes must be at least 2, got {num_classes}")
    if str(source) == "tfds":
        return tfds_arrays(f"cifar{num_classes}", cache)
    root = resolve_folder_root(source, cache)
    kind, d = detect_format(root)
    if kind != "folder" and num_classes not in (10, 100):
        raise ValueError(f"the official CIFAR releases have 10 or 100 classes, not {num_classes}")
    if kind == "binary":
        return read_binary(d, num_classes)
    if kind == "pickle":
        return read_pickle(d, num_classes)
    return read_folder(source if Path(source).is_file() else d, num_classes, cache)


def cifar(
    source: str | os.PathLike,
    *,
    num_classes: int = 10,
    batch_size: int = 128,
    test_batch_size: int | None = None,
    normalization: str = "pixel_mean",
    augment_train: bool = True,
    seed: int = 0,
    start_step: int = 0,
    cache: str | os.PathLike | None = None,
) -> ClassificationData:
    """CIFAR pipelines: paper augmentation (4-px zero pad, random 32 crop, flip; Sec. 4.2) on
    normalised float32 images. `normalization` is "pixel_mean" (subtract the training set's
    per-pixel mean image, the paper), "channel" (per-channel mean/std) or "none" (0..255)."""
    if normalization not in NORMALIZATIONS:
        raise ValueError(f"normalization must be one of {NORMALIZATIONS}, got {normalization!r}")
    xtr, ytr, xte, yte, names, report = load_arrays(source, num_classes, cache)
    mean, std = None, None
    if normalization == "pixel_mean":
        mean = xtr.mean(axis=0, dtype=np.float64).astype(np.float32)
    elif normalization == "channel":
        mean = xtr.mean(axis=(0, 1, 2), dtype=np.float64).astype(np.float32)
        std = xtr.std(axis=(0, 1, 2), dtype=np.float64).astype(np.float32)
    images, labels = tf.constant(xtr), tf.constant(ytr.astype(np.int32))

    def load(i: tf.Tensor, seed_pair: tf.Tensor):
        image = augment.normalize(tf.gather(images, i), mean, std)
        if augment_train:
            image = augment.pad_crop_flip(image, seed_pair)
        return image, tf.gather(labels, i)

    train = stream.train_stream(len(xtr), batch_size, seed, load, start_step)
    test = tf.data.Dataset.from_tensor_slices((xte, yte.astype(np.int32)))
    test = test.map(lambda x, y: (augment.normalize(x, mean, std), y), stream.AUTOTUNE)
    test = test.batch(test_batch_size or batch_size).prefetch(stream.AUTOTUNE)
    return ClassificationData(
        train=train,
        test=test,
        num_classes=num_classes,
        class_names=names,
        num_train=len(xtr),
        num_test=len(xte),
        batch_size=batch_size,
        steps_per_epoch=stream.steps_per_epoch(len(xtr), batch_size),
        mean=mean,
        std=std,
        report=report,
    )
