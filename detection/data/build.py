"""Build a detection dataset from a config section (the `data.train` / `data.eval` of a YAML)."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path

import tensorflow as tf

from detection.data.coco import coco
from detection.data.shard_reader import shards
from detection.data.synthetic import shapes
from detection.data.tfds import coco_tfds, voc_tfds
from detection.data.voc import voc

LOADERS = {"voc": voc, "coco": coco, "shapes": shapes, "voc_tfds": voc_tfds,
           "coco_tfds": coco_tfds, "shards": shards}  # a config's `loader:` -> its function
WITH_MASKS = ("coco", "shapes", "shards")  # the loaders that can give instance masks (`masks: true`)
_VAR = re.compile(r"\$\{(\w+)\}")


def expand_path(value: str) -> str:
    """Replace `${NAME}` with the environment variable; a missing one is a clear error.

    `${KRS_DATA_DIR}` falls back to `../shared/data` beside the repository, as the tests do.
    """
    def lookup(match: re.Match) -> str:
        name = match.group(1)
        if name in os.environ:
            return os.environ[name]
        if name == "KRS_DATA_DIR":
            return str(Path(__file__).resolve().parents[2].parent / "shared" / "data")
        raise KeyError(f"config path {value!r} needs the environment variable {name}")

    return _VAR.sub(lookup, str(value))


def loader_function(loader: str):
    """The `detection.data` function a config's `loader:` names."""
    if loader not in LOADERS:
        raise ValueError(f"data loader must be one of {', '.join(map(repr, LOADERS))}; "
                         f"got {loader!r}")
    return LOADERS[loader]


def dataset_from_config(
    spec: Mapping, class_names: Sequence[str] | None = None, shuffle: bool = False,
    seed: int | None = None, verbose: bool = True,
) -> tf.data.Dataset:
    """`{"loader": "voc" | "coco" | "shapes" | "voc_tfds" | "coco_tfds", ...its arguments}`
    -> dataset.

    `class_names` (the config's `data.class_names`) applies to VOC-layout sets only;
    `masks: true` (instance masks) to the loaders in `WITH_MASKS`.
    """
    spec = dict(spec)
    load = loader_function(spec.pop("loader", None))
    loader = load.__name__
    if spec.get("masks") and loader not in WITH_MASKS:
        raise ValueError(f"data loader {loader!r} has no instance masks (VOC annotations and the "
                         f"TFDS sets here hold boxes only); masks: true needs loader "
                         f"{' or '.join(map(repr, WITH_MASKS))}")
    if "data_dir" in spec and spec["data_dir"] is not None:
        spec["data_dir"] = expand_path(spec["data_dir"])
    if loader == "voc" and class_names is not None:
        spec.setdefault("class_names", list(class_names))
    if loader == "shapes":  # rendered in memory: shuffled here, counted for the train loop
        ds = load(**spec)
        count = int(spec.get("num_images", 512))
        element_at = ds.element_at  # random access survives the shuffle (detection.data.resume)
        if shuffle:
            ds = ds.shuffle(count, seed=seed)
        ds.num_examples, ds.element_at = count, element_at
        return ds
    if loader in ("voc", "coco", "shards"):
        spec["verbose"] = verbose
    return load(shuffle=shuffle, seed=seed, **spec)
