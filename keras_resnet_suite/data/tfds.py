"""TensorFlow Datasets sources (`cifar10`, `cifar100`, `imagenet2012`), imported lazily.

TFDS is optional: without the package, or offline without a prepared copy in `data_dir`, the
loaders fail with a message saying what to install or where to put the files.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from keras_resnet_suite.data.report import DataReport


def import_tfds(
    instead: str = "pass a directory / .tar.gz of the data instead of 'tfds'",
) -> Any:
    """The `tensorflow_datasets` module, or an ImportError saying how to install it and what
    works `instead` without it."""
    try:
        import tensorflow_datasets as tfds
    except ImportError as e:
        raise ImportError("TFDS sources need the tensorflow-datasets package: pip install "
                          f"tensorflow-datasets (or {instead})") from e
    return tfds


class DatasetUnavailable(OSError):
    """A TFDS set neither prepared nor downloadable: missing input data, so the command lines
    answer it as bad input (`error: <message>`, exit code 2)."""


def _data_dir(data_dir: str | os.PathLike | None) -> str | None:
    return str(data_dir) if data_dir else os.environ.get("TFDS_DATA_DIR")


def builder(
    name: str, data_dir: str | os.PathLike | None = None, download: bool = True,
    instead: str = "pass the path of an image-folder tree or archive",
) -> Any:
    """A prepared TFDS builder for `name`, downloading it if needed and allowed; unavailable
    data is one DatasetUnavailable line: the set, where it was looked for, what works `instead`."""
    tfds = import_tfds(instead)
    data_dir = _data_dir(data_dir)
    try:
        b = tfds.builder(name, data_dir=data_dir)
        if not download and not b.is_prepared():
            raise FileNotFoundError(f"{name} is not prepared in {b.data_dir}")
        if download:
            b.download_and_prepare()
    except Exception as e:  # network, manual-download and checksum errors all end here
        where = data_dir or "~/tensorflow_datasets"
        raise DatasetUnavailable(
            f"TFDS dataset {name!r} is unavailable ({type(e).__name__}: {e}). It must be "
            f"downloaded once with network access, or prepared by hand in {where} "
            f"(imagenet2012 always needs the manual tar files); alternatively {instead}."
        ) from e
    return b


def load_arrays(name: str, data_dir: str | os.PathLike | None = None, download: bool = True):
    """uint8 arrays of a small image set: `(x_train, y_train, x_test, y_test, names, report)`."""
    tfds = import_tfds()
    b = builder(name, data_dir, download)
    out, report = {}, DataReport(f"tfds {name}")
    for split in ("train", "test"):
        ds = b.as_dataset(split=split)
        # One batch of the split's own length: `batch_size=-1` sizes it from the split
        # metadata, which a code-only builder (tfds.testing.mock_data) lacks and aborts on.
        count = int(ds.cardinality())
        count = count if count >= 0 else b.info.splits[split].num_examples
        data = tfds.as_numpy(ds.batch(max(count, 1)).get_single_element())
        out[split] = (np.asarray(data["image"], np.uint8), np.asarray(data["label"], np.int64))
        report.loaded[split] = len(out[split][1])
    names = list(b.info.features["label"].names)
    return (*out["train"], *out["test"], names, report)


def load_split(name: str, split: str, data_dir: str | os.PathLike | None = None):
    """`(tf.data.Dataset of (encoded image bytes, label), num_examples, class_names)` for large
    sets decoded in the pipeline (ImageNet)."""
    tfds = import_tfds()
    b = builder(name, data_dir, download=True)
    ds = b.as_dataset(
        split=split, shuffle_files=False, decoders={"image": tfds.decode.SkipDecoding()}
    )
    ds = ds.map(lambda ex: (ex["image"], ex["label"]))
    return ds, b.info.splits[split].num_examples, list(b.info.features["label"].names)
