"""What kind of model a file holds (classifier, backbone, detector), read from what the file keeps
about itself before anything loads it: a `.keras` file's `config.json` (class name and the
`metadata` a `ResNetModel` keeps, see `metadata.py`), a `.weights.h5` file's layer groups, a
SavedModel's `assets.extra/metadata.json`. Every `--model`/`--weights`/`--checkpoint`/
`--model-file` of both command lines checks its file here first, so a classifier given to
`detection predict` is refused in one line naming the file, what it is and what was expected
(loading it would fail deep inside Keras, naming a layer, or predict nothing).
"""

from __future__ import annotations

import json
import os
import zipfile
from pathlib import Path

import h5py

CLASSIFIER, BACKBONE, DETECTOR = "classifier", "backbone", "detector"
_DETECTOR_CLASSES = {"FasterRCNN", "MaskRCNN"}


class WrongModelKind(ValueError):
    """A model file of another kind than the command needs."""


def _keras_kind(path: Path) -> tuple[str | None, str]:
    try:
        with zipfile.ZipFile(path) as archive:
            config = json.loads(archive.read("config.json"))
    except (OSError, KeyError, ValueError, zipfile.BadZipFile):
        return None, ""  # unreadable: the loader names the file and what is wrong
    if not isinstance(config, dict):
        return None, ""
    name = str(config.get("class_name", "?"))
    inner = config.get("config") if isinstance(config.get("config"), dict) else {}
    if name in _DETECTOR_CLASSES:
        return DETECTOR, f"a {name} detector (.keras)"
    metadata = inner.get("metadata") if isinstance(inner.get("metadata"), dict) else {}
    if name == "ResNetModel":
        kind = BACKBONE if "feature_info" in metadata else CLASSIFIER
        spec = metadata.get("spec") if isinstance(metadata.get("spec"), dict) else {}
        model = spec.get("name") or inner.get("name", "")
        return kind, f"a {model} {kind} (.keras)".replace("a  ", "a ")
    return "other", f"a Keras model of class {name} (.keras), not one of this project's"


def _weights_kind(path: Path) -> tuple[str | None, str]:
    try:
        with h5py.File(path, "r") as h5:
            layers = set(h5["layers"].keys()) if "layers" in h5 else set()
            top = set(h5.keys())
    except Exception:  # h5py raises many types for damaged files; the loader names the file
        return None, ""
    if "backbone" in top or {"rpn", "image_transform"} & layers:
        return DETECTOR, "a detector's weights (.weights.h5)"
    if "stem" in layers or any(k.startswith("stage") for k in layers):
        return CLASSIFIER, "a classifier's or backbone's weights (.weights.h5)"
    return None, ""


def _saved_model_kind(path: Path) -> tuple[str | None, str]:
    try:
        meta = json.loads((path / "assets.extra" / "metadata.json").read_text())
    except (OSError, ValueError):
        return None, ""  # no metadata (another exporter): the caller checks the signature
    if isinstance(meta, dict) and "serving_bytes" in meta:
        return CLASSIFIER, "a classifier SavedModel"
    if isinstance(meta, dict) and ("class_names" in meta or "architecture" in meta):
        return DETECTOR, "a detector SavedModel"
    return None, ""


def file_kind(path: str | os.PathLike) -> tuple[str | None, str]:
    """`(kind, description)` of a model file: kind `CLASSIFIER`, `BACKBONE`, `DETECTOR`,
    "other" (another Keras model) or None where the file does not say (unreadable, or a format
    that keeps no kind: the loader judges it)."""
    path = Path(path)
    if path.is_dir():
        return _saved_model_kind(path)
    if path.suffix == ".keras":
        return _keras_kind(path)
    if path.name.endswith(".weights.h5"):
        return _weights_kind(path)
    return None, ""


def require_kind(path: str | os.PathLike, expected: str, option: str,
                 also: frozenset[str] = frozenset()) -> None:
    """Raise `WrongModelKind` naming `option` and `path` when the file holds a model of another
    kind than `expected` (or one of `also`); a file that does not say passes (its loader
    judges it)."""
    kind, what = file_kind(path)
    if kind is None or kind == expected or kind in also:
        return
    raise WrongModelKind(f"{option} {path} is {what}: expected a {expected}")


__all__ = ["BACKBONE", "CLASSIFIER", "DETECTOR", "WrongModelKind", "file_kind", "require_kind"]
