"""What a classifier or backbone knows about itself, kept in its serialized config.

`ResNetModel` is the functional model every builder returns: the same layers and names as a
plain `keras.Model(inputs, outputs)`, plus a `metadata` entry in `get_config()` that holds its
`spec`, `feature_info`, `checkpoint` and `preprocessing`. `.keras` save/load (and anything else
that rebuilds a model from its config) therefore gives back a model that still knows how it
must be fed (torchvision's lesson: weights carry their metadata; keras-hub's: how a model is
fed is saved with it). `preprocess_input` is rebuilt from the stored mode on reload.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os

import keras

from . import compat
from .convert.published import Checkpoint
from .preprocessing import preprocess_input
from .specs import ResNetSpec

FILENAME = "metadata.json"  # beside an exported SavedModel, in assets.extra/


def jsonable(value):
    """Dataclasses and mappings as plain dicts, tuples as lists: what JSON (and a Keras
    config) keeps."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        value = dataclasses.asdict(value)
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    return value


def _tupled(value):
    """The inverse for frozen dataclass fields: lists back to (nested) tuples."""
    if isinstance(value, dict):
        return {k: _tupled(v) for k, v in value.items()}
    if isinstance(value, list):
        return tuple(_tupled(v) for v in value)
    return value


def _dataclass(cls, fields, key: str, owner: str):
    """`cls(**fields)` from a stored dict; one line naming the entry when it does not fit."""
    if not isinstance(fields, dict):
        raise ValueError(f"{owner}: metadata {key!r} must be a dict, got {type(fields).__name__}")
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(fields) - known - {"name", "filename"})
    if unknown:
        raise ValueError(f"{owner}: metadata {key!r} has unknown field(s) {unknown}")
    try:
        return cls(**{k: _tupled(v) for k, v in fields.items() if k in known})
    except (TypeError, ValueError) as err:
        raise ValueError(f"{owner}: metadata {key!r} is not a valid {cls.__name__}: {err}") from err


def describe(model: keras.Model) -> dict:
    """The JSON-safe metadata of `model`: its `spec`, `feature_info`, `checkpoint` (every
    field, plus its `name` and `filename`) and `preprocessing`, each only where it has one."""
    out = {}
    spec = getattr(model, "spec", None)
    if isinstance(spec, ResNetSpec):
        out["spec"] = jsonable(dataclasses.asdict(spec))
    info = getattr(model, "feature_info", None)
    if info is not None:
        out["feature_info"] = jsonable(dict(info))
    checkpoint = getattr(model, "checkpoint", None)
    if isinstance(checkpoint, Checkpoint):
        out["checkpoint"] = {**jsonable(dataclasses.asdict(checkpoint)),
                             "name": checkpoint.name, "filename": checkpoint.filename}
    mode = getattr(model, "preprocessing", None)
    if mode is not None:
        out["preprocessing"] = mode
    return out


def attach_checkpoint(model: keras.Model, checkpoint: Checkpoint) -> None:
    """Let `model` remember `checkpoint` and apply its preprocessing (`model.preprocess_input`)."""
    model.checkpoint = checkpoint
    attach_preprocessing(model, checkpoint.preprocessing)


def attach_preprocessing(model: keras.Model, mode: str) -> None:
    """`model.preprocessing = mode` and the matching `model.preprocess_input(images)`."""
    model.preprocessing = mode
    model.preprocess_input = functools.partial(preprocess_input, mode=mode)


def restore(model: keras.Model, metadata: dict) -> keras.Model:
    """Set on `model` what `describe` stored; a malformed entry is one line naming it."""
    owner = f"model {model.name!r}"
    if not isinstance(metadata, dict):
        raise ValueError(f"{owner}: metadata must be a dict, got {type(metadata).__name__}")
    unknown = sorted(set(metadata) - {"spec", "feature_info", "checkpoint", "preprocessing"})
    if unknown:
        raise ValueError(f"{owner}: unknown metadata key(s) {unknown}")
    if "spec" in metadata:
        model.spec = _dataclass(ResNetSpec, metadata["spec"], "spec", owner)
    if "feature_info" in metadata:
        if not isinstance(metadata["feature_info"], dict):
            raise ValueError(f"{owner}: metadata 'feature_info' must be a dict")
        model.feature_info = {level: dict(v) for level, v in metadata["feature_info"].items()}
    if "checkpoint" in metadata:
        model.checkpoint = _dataclass(Checkpoint, metadata["checkpoint"], "checkpoint", owner)
    if "preprocessing" in metadata:
        attach_preprocessing(model, metadata["preprocessing"])
    return model


def copy_metadata(target: keras.Model, source: keras.Model) -> keras.Model:
    """Give `target` the checkpoint and preprocessing `source` carries (spec and
    feature_info are the caller's: a backbone's levels differ from its classifier's)."""
    for attr in ("checkpoint", "preprocessing", "preprocess_input"):
        if hasattr(source, attr):
            setattr(target, attr, getattr(source, attr))
    return target


def write_asset(saved_model_dir: str | os.PathLike, metadata: dict) -> str:
    """Write `metadata` as `assets.extra/metadata.json` of an exported SavedModel (TF Serving
    copies `assets.extra` along; any client reads it without TensorFlow or this project)."""
    folder = os.path.join(os.fspath(saved_model_dir), "assets.extra")
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, FILENAME)
    with open(path, "w", encoding="utf-8") as f:
        json.dump(jsonable(metadata), f, indent=1, sort_keys=True)
    return path


@keras.saving.register_keras_serializable(package="keras_resnet_suite")
class ResNetModel(keras.Model):
    """A functional classifier or backbone (`ResNetModel(inputs, outputs, name=...)`) whose
    config also holds its metadata (see `describe`), so it survives `.keras` save/load."""

    def __init__(self, *args, metadata: dict | None = None, **kwargs):
        # The (*args, **kwargs) signature is what Keras needs to serialize and revive a
        # Model subclass as a Functional graph (see Keras' Model.from_config).
        super().__init__(*args, **kwargs)
        if metadata:
            restore(self, metadata)

    def get_config(self) -> dict:
        return {**super().get_config(), "metadata": describe(self)}

    @classmethod
    def from_config(cls, config: dict, custom_objects=None) -> ResNetModel:
        config = dict(config)
        metadata = config.pop("metadata", None)
        model = super().from_config(config, custom_objects=custom_objects)
        if metadata:
            restore(model, metadata)
        return compat.mark_called(model)


__all__ = ["FILENAME", "ResNetModel", "attach_checkpoint", "attach_preprocessing",
           "copy_metadata", "describe", "jsonable", "restore", "write_asset"]
