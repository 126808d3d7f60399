"""ImageNet-style classification (paper Sec. 3.4): image folders or TFDS `imagenet2012`.

Training: shorter side uniform in [256, 480], random 224 crop, flip, optional AlexNet colour
augmentation, per-pixel mean subtraction. Testing: a 224 centre crop of the 256-resized image,
the 10-crop test, or fully-convolutional multi-scale testing over shorter sides
{224, 256, 384, 480, 640} (scores averaged, the paper's best results).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import tensorflow as tf

from keras_resnet_suite.data import augment, stream, tfds
from keras_resnet_suite.data.folder import (
    cache_dir,
    find_split_dir,
    resolve_folder_root,
    scan_image_folder,
)
from keras_resnet_suite.data.images import decode_rgb
from keras_resnet_suite.data.report import ClassificationData, DataReport
from keras_resnet_suite.file_errors import reading
from keras_resnet_suite.preprocessing import IMAGENET_MEAN, IMAGENET_STD

MULTISCALE_SIZES = (224, 256, 384, 480, 640)
# Per-channel statistics of ImageNet RGB pixels on the 0..255 scale these pipelines feed.
CHANNEL_MEAN = (np.asarray(IMAGENET_MEAN) * 255).astype(np.float32)
CHANNEL_STD = (np.asarray(IMAGENET_STD) * 255).astype(np.float32)
EVAL_MODES = ("center", "ten_crop", "images")


def eval_view(image: tf.Tensor, mode: str, size: int = 224, resize: int = 256) -> tf.Tensor:
    """A decoded image as the network sees it at test time: a centre crop [size, size, 3], the
    10 crops [10, size, size, 3] of the `resize`-shorter-side image, or ("images") unchanged."""
    if mode == "images":
        return tf.cast(image, tf.float32)
    resized = augment.resize_shorter_side(image, resize)
    if mode == "center":
        return augment.center_crop(resized, size)
    if mode == "ten_crop":
        return augment.ten_crop(resized, size)
    raise ValueError(f"eval mode must be one of {EVAL_MODES}, got {mode!r}")


def pixel_mean(
    files: Sequence[str], size: int = 224, resize: int = 256, samples: int = 1000, seed: int = 0
) -> np.ndarray:
    """Per-pixel mean image [size, size, 3] over a seeded sample of training images (centre
    crops of the `resize`-shorter-side image); the paper subtracts it from every input."""
    rng = np.random.default_rng(seed)
    pick = rng.choice(len(files), size=min(samples, len(files)), replace=False)
    ds = tf.data.Dataset.from_tensor_slices([files[i] for i in sorted(pick)])
    def view(file):
        return eval_view(decode_rgb(tf.io.read_file(file)), "center", size, resize)

    ds = ds.map(view, stream.AUTOTUNE).ignore_errors().batch(64)
    total, count = np.zeros((size, size, 3), np.float64), 0
    for batch in ds:
        total += batch.numpy().sum(axis=0)
        count += batch.shape[0]
    if count == 0:
        raise ValueError("no decodable image to compute the per-pixel mean from")
    return (total / count).astype(np.float32)


def _folder_splits(root: Path, validate: str, report: DataReport):
    train_dir = find_split_dir(root, "train")
    try:
        eval_dir = find_split_dir(root, "val")
    except FileNotFoundError:
        eval_dir = find_split_dir(root, "test")
    train = scan_image_folder(train_dir, report, validate=validate)
    names = train[2]
    evals = scan_image_folder(eval_dir, report, names, validate=validate)
    return train, evals


def _cached_pixel_mean(files: Sequence[str], image_size: int, eval_resize: int,
                       samples: int, seed: int, cache) -> np.ndarray:
    """`pixel_mean` of the training files, computed once per file list and cached as .npy."""
    key = hashlib.sha1("\n".join(files).encode()).hexdigest()[:16]
    path = cache_dir(cache) / f"imagenet-mean-{key}-{image_size}-{samples}.npy"
    if path.exists():
        with reading(path, "cached pixel mean (.npy)"):
            return np.load(path)
    mean = pixel_mean(files, image_size, eval_resize, samples, seed)
    tmp = path.with_name(path.name + f".tmp-{os.getpid()}.npy")
    np.save(tmp, mean)
    os.replace(tmp, path)
    return mean


def _folder_train(files: Sequence[str], labels: np.ndarray, train_view, batch_size: int,
                  seed: int, start_step: int) -> tf.data.Dataset:
    """The endless training stream of image files, each element's augmentation seeded by
    (seed, global index), resumable at `start_step`."""
    files_t, labels_t = tf.constant(files), tf.constant(labels.astype(np.int32))
    seed64 = tf.constant(seed, tf.int64)

    def load(i: tf.Tensor, seed_pair: tf.Tensor):
        image = decode_rgb(tf.io.read_file(tf.gather(files_t, i)))
        return train_view(image, seed_pair), tf.gather(labels_t, i)

    # ignore_errors is a last guard for files that passed a header-only check
    train = stream.index_stream(len(files), batch_size, seed, start_step)
    train = train.map(lambda g, i: load(i, tf.stack([seed64, g])), stream.AUTOTUNE)
    return train.ignore_errors(log_warning=True)


def _tfds_train(train_raw: tf.data.Dataset, train_view, batch_size: int, seed: int,
                start_step: int) -> tf.data.Dataset:
    """The endless training stream of TFDS examples (encoded image, label), resumable."""
    # TFDS reads sequentially: a seeded shuffle buffer stands in for the permutation.
    seed64 = tf.constant(seed, tf.int64)
    train = train_raw.shuffle(10_000, seed=seed).repeat().enumerate()
    train = train.skip(int(start_step) * batch_size)
    return train.map(
        lambda g, ex: (train_view(decode_rgb(ex[0]), tf.stack([seed64, g])), ex[1]),
        stream.AUTOTUNE,
    ).ignore_errors(log_warning=True)


def imagenet(
    source: str | os.PathLike,
    *,
    batch_size: int = 256,
    test_batch_size: int | None = None,
    image_size: int = 224,
    scale_range: tuple[int, int] = (256, 480),
    eval_resize: int = 256,
    color_augment: bool = False,
    normalization: str = "pixel_mean",
    eval_mode: str = "center",
    seed: int = 0,
    start_step: int = 0,
    validate: str = "header",
    mean_samples: int = 1000,
    cache: str | os.PathLike | None = None,
) -> ClassificationData:
    """ImageNet pipelines from an image-folder tree (`train/` and `val/` or `test/` of
    `<class>/<images>`, or an archive of one) or `"tfds"` (`imagenet2012`).

    `normalization` is "pixel_mean" (paper; estimated from `mean_samples` training images and
    cached) or "channel" (ImageNet per-channel mean/std). `eval_mode` picks the test view
    (see `eval_view`); "images" yields whole images one by one for `predict_multiscale`.
    """
    if normalization not in ("pixel_mean", "channel"):
        raise ValueError(f"normalization must be 'pixel_mean' or 'channel', got {normalization!r}")
    if eval_mode not in EVAL_MODES:
        raise ValueError(f"eval_mode must be one of {EVAL_MODES}, got {eval_mode!r}")
    if str(source) == "tfds":
        if normalization == "pixel_mean":
            raise ValueError("a per-pixel mean needs image files; with 'tfds' use 'channel'")
        train_raw, num_train, names = tfds.load_split("imagenet2012", "train", cache)
        test_raw, num_test, _ = tfds.load_split("imagenet2012", "validation", cache)
        report = DataReport("tfds imagenet2012", {"train": num_train, "validation": num_test})
        files = None
    else:
        root = resolve_folder_root(source, cache)
        report = DataReport(f"imagenet folder {source}")
        (files, labels, names), (test_files, test_labels, _) = _folder_splits(
            root, validate, report
        )
        num_train, num_test = len(files), len(test_files)
    mean, std = (CHANNEL_MEAN, CHANNEL_STD) if normalization == "channel" else (
        _cached_pixel_mean(files, image_size, eval_resize, mean_samples, seed, cache), None)

    def train_view(image: tf.Tensor, seed_pair: tf.Tensor) -> tf.Tensor:
        s_geo, s_col = augment.split_seed(seed_pair, 2)
        image = augment.scale_crop_flip(image, s_geo, scale_range, image_size)
        if color_augment:
            image = augment.pca_lighting(image, s_col)
        return augment.normalize(image, mean, std)

    if files is not None:
        train = _folder_train(files, labels, train_view, batch_size, seed, start_step)
        test_raw = tf.data.Dataset.from_tensor_slices((test_files, test_labels.astype(np.int32)))
        test_raw = test_raw.map(lambda f, y: (tf.io.read_file(f), y))
    else:
        train = _tfds_train(train_raw, train_view, batch_size, seed, start_step)
    train = train.batch(batch_size, drop_remainder=True).prefetch(stream.AUTOTUNE)

    def test_map(contents, y):
        view = eval_view(decode_rgb(contents), eval_mode, image_size, eval_resize)
        return augment.normalize(view, mean, std), y

    test = test_raw.map(test_map, stream.AUTOTUNE).ignore_errors(log_warning=True)
    test = test.batch(1 if eval_mode == "images" else test_batch_size or batch_size)
    return ClassificationData(
        train=train, test=test.prefetch(stream.AUTOTUNE), num_classes=len(names),
        class_names=names, num_train=num_train, num_test=num_test, batch_size=batch_size,
        steps_per_epoch=stream.steps_per_epoch(num_train, batch_size), mean=mean, std=std,
        report=report,
    )


def predict_ten_crop(model, crops: np.ndarray | tf.Tensor) -> np.ndarray:
    """Class scores of a [B, 10, H, W, 3] batch of crops, averaged over the 10 crops."""
    crops = tf.convert_to_tensor(crops)
    b = tf.shape(crops)[0]
    flat = tf.reshape(crops, tf.concat([[-1], tf.shape(crops)[2:]], 0))
    scores = np.asarray(model(flat, training=False))
    return scores.reshape(int(b), 10, -1).mean(axis=1)


def predict_multiscale(
    model,
    image: np.ndarray | tf.Tensor,
    mean: np.ndarray | None = None,
    std: np.ndarray | None = None,
    sizes: Iterable[int] = MULTISCALE_SIZES,
    flip: bool = True,
) -> np.ndarray:
    """Fully-convolutional multi-scale testing (paper Sec. 3.4): the whole image resized to each
    shorter side in `sizes` (and mirrored), scores averaged. `image` is one uint8 [H, W, 3]
    image; the model must accept any spatial size (built with `input_shape=(None, None, 3)`)."""
    image = tf.convert_to_tensor(image)
    if image.shape.rank == 4:
        image = image[0]
    scores = []
    for s in sizes:
        x = augment.normalize(augment.resize_shorter_side(image, s), mean, std)[None]
        views = tf.concat([x, tf.reverse(x, axis=[2])], 0) if flip else x
        scores.append(np.asarray(model(views, training=False)).mean(axis=0))
    return np.mean(scores, axis=0)


def topk_error(scores: np.ndarray, labels: np.ndarray, k: int = 1) -> float:
    """Fraction of rows whose label is not among the `k` highest scores (paper's top-k error)."""
    top = np.argsort(-np.asarray(scores), axis=-1)[:, :k]
    return float(1.0 - np.mean(np.any(top == np.asarray(labels)[:, None], axis=1)))
