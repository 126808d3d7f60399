"""Build a detection dataset from a config section (the `data.train` / `data.eval` of a YAML)."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path

import tensorflow as tf

_VAR = re.compile(r"\$\{(\w+)\}")
REPO_CONFIGS = Path(__file__).resolve().parents[1] / "configs"  # the shipped YAML files


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


def dataset_from_config(
    spec: Mapping, class_names: Sequence[str] | None = None, shuffle: bool = False,
    seed: int | None = None, verbose: bool = True,
) -> tf.data.Dataset:
    """`{"loader": "voc" | "coco" | "voc_tfds" | "coco_tfds", ...loader arguments}` -> dataset.

    `class_names` (the config's `data.class_names`) applies to VOC-layout sets only.
    """
    import detection.data as data

    spec = dict(spec)
    loader = spec.pop("loader", None)
    if "data_dir" in spec and spec["data_dir"] is not None:
        spec["data_dir"] = expand_path(spec["data_dir"])
    if loader == "voc":
        if class_names is not None:
            spec.setdefault("class_names", list(class_names))
        return data.voc(shuffle=shuffle, seed=seed, verbose=verbose, **spec)
    if loader == "coco":
        return data.coco(shuffle=shuffle, seed=seed, verbose=verbose, **spec)
    if loader in {"voc_tfds", "coco_tfds"}:
        return getattr(data, loader)(shuffle=shuffle, seed=seed, **spec)
    raise ValueError(f"data loader must be one of 'voc', 'coco', 'voc_tfds', 'coco_tfds'; "
                     f"got {loader!r} in {dict(spec, loader=loader)}")
