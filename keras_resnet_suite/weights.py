"""Published checkpoints and converters from keras.applications, torchvision, timm, and the
CIFAR-10 ResNets of akamaster/pytorch_resnet_cifar10.

Each `Checkpoint` (the table is in `convert/published.py`) carries what it needs to be used
correctly: where it lives and its hash, the architecture options its numbers depend on, its
input preprocessing and its published top-1. `weights=` in `build` / `backbones.build` takes
a checkpoint name, downloads once, verifies, converts once (cached as a `.keras` model) and
loads.
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings

import keras
import numpy as np

from . import convert, model_kind
from .convert.published import (  # noqa: F401  (re-exported: the registry's public names)
    ALIASES,
    ARCH_OPTIONS,
    CHECKPOINTS,
    DEFAULT_OPTIONS,
    KERAS_V1,
    KERAS_V2,
    Checkpoint,
    available_weights,
    get_checkpoint,
    register,
)
from .metadata import attach_checkpoint
from .specs import ResNetSpec


def cache_dir() -> str:
    """Where downloads and converted models live: `$KRS_WEIGHTS_DIR` or
    ~/.keras/keras_resnet_suite."""
    return os.environ.get("KRS_WEIGHTS_DIR") or os.path.join(
        os.path.expanduser("~"), ".keras", "keras_resnet_suite")


def _digest(path: str, algorithm: str) -> str:
    h = hashlib.new(algorithm)
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def verify(path: str, checkpoint: Checkpoint) -> None:
    """Refuse a file whose digest does not match the checkpoint's published hash."""
    digest = _digest(path, checkpoint.hash_algorithm)
    if not digest.startswith(checkpoint.file_hash.lower()):
        raise ValueError(f"{path}: {checkpoint.hash_algorithm} {digest} does not match "
                         f"{checkpoint.file_hash} published for {checkpoint.name}; the file is "
                         "corrupt or not this checkpoint: delete it and retry")


def fetch(checkpoint: Checkpoint) -> str:
    """The checkpoint's file, downloaded once into `cache_dir()/downloads` and verified."""
    folder = os.path.join(cache_dir(), "downloads")
    path = os.path.join(folder, checkpoint.filename)
    if not os.path.exists(path):
        os.makedirs(folder, exist_ok=True)
        try:
            keras.utils.get_file(checkpoint.filename, checkpoint.url, cache_dir=cache_dir(),
                                 cache_subdir="downloads")
        except Exception as err:  # urllib/HTTP/socket errors differ by platform
            raise OSError(f"could not download {checkpoint.url} ({err}). Offline? Download it "
                          f"elsewhere and place it at {path} (or set $KRS_WEIGHTS_DIR)") from err
    verify(path, checkpoint)
    return path


# --- converters ---------------------------------------------------------------------------

def load_torchvision(model: keras.Model, state_dict) -> keras.Model:
    """Load a torchvision/timm ResNet state dict (dict of arrays or tensors, or a `.pth` /
    `.safetensors` path) into `model`; any missing, unexpected or mis-shaped key is an error."""
    if isinstance(state_dict, (str, os.PathLike)):
        source, state = os.fspath(state_dict), convert.read_state_dict(state_dict)
    else:
        source = "state dict"
        state = {k: np.asarray(v.detach().cpu().numpy() if hasattr(v, "detach") else v)
                 for k, v in state_dict.items()}
    params, origin, unexpected = convert.canonical_from_torch(state)
    layout = convert.torch_layout(model)
    convert.assign(model, params, origin, unexpected, source=source,
                   namer=lambda canon: convert.torch_name(canon, **layout))
    return model


def load_keras_applications(model: keras.Model, source) -> keras.Model:
    """Load a keras.applications ResNet/ResNetV2 (a model, or its weights `.h5` file)."""
    if isinstance(source, keras.Model):
        name = f"keras.applications model {source.name!r}"
        layers = {layer.name: [keras.ops.convert_to_numpy(w) for w in layer.weights]
                  for layer in source.layers if layer.weights}
    else:
        name, layers = os.fspath(source), convert.read_keras_h5(source)
    params, origin, unexpected = convert.canonical_from_keras(layers)
    convert.assign(model, params, origin, unexpected, source=name, namer=convert.keras_name)
    return model


def to_torchvision(model: keras.Model) -> dict[str, np.ndarray]:
    """The model's weights as a torchvision-layout state dict of numpy arrays (for
    `torch.nn.Module.load_state_dict` after `torch.from_numpy`, or `write_safetensors`)."""
    return convert.torch_state_from_model(model)


def keras_arch(source) -> tuple[str, dict]:
    """(architecture name, options) of a keras.applications model or `.h5`, by its layers."""
    if isinstance(source, keras.Model):
        names = [layer.name for layer in source.layers]
    else:
        names = list(convert.read_keras_h5(source))
    depths = []
    for k in range(2, 6):
        blocks = {n.split("_")[1] for n in names if n.startswith(f"conv{k}_block")}
        depths.append(len(blocks))
    v2 = any("preact" in n for n in names)
    by_depths = {(3, 4, 6, 3): "resnet50", (3, 4, 23, 3): "resnet101",
                 (3, 8, 36, 3): "resnet152"}
    if tuple(depths) not in by_depths:
        raise ValueError(f"{getattr(source, 'name', source)}: not a keras.applications ResNet "
                         f"(blocks per stage {tuple(depths)})")
    return by_depths[tuple(depths)] + ("v2" if v2 else ""), KERAS_V2 if v2 else KERAS_V1


# --- weights= in build() ------------------------------------------------------------------

def _file_layout(path: str) -> str:
    if path.endswith(convert.TORCH_SUFFIXES):
        return "torchvision"
    if path.endswith(".h5") and not path.endswith(".weights.h5") and \
            convert.is_legacy_keras_h5(path):
        return "keras"
    return "native"


def resolve_for_build(spec: ResNetSpec, weights, options: dict) -> tuple[Checkpoint | None, dict]:
    """(checkpoint or None, architecture options) for `build(spec, weights=..., **options)`.

    Options left as None take the checkpoint's (or the file layout's) values; an explicit
    value that contradicts the checkpoint is refused, since the numbers would be wrong.
    """
    checkpoint, required = None, {}
    if isinstance(weights, Checkpoint):
        checkpoint = weights
    elif weights is not None and not isinstance(weights, (str, os.PathLike)):
        raise ValueError(f"weights must be None, a checkpoint name or a file path, "
                         f"got {type(weights).__name__}")
    elif weights is not None and os.path.exists(weights):
        # a detector's .keras or .weights.h5 would fail deep inside Keras, naming a layer
        model_kind.require_kind(weights, model_kind.CLASSIFIER, "weights",
                                also=frozenset({model_kind.BACKBONE}))
        layout = _file_layout(os.fspath(weights))
        if layout == "keras":
            required = keras_arch(os.fspath(weights))[1]
    elif weights is not None:
        looks_like_file = os.sep in str(weights) or os.path.splitext(str(weights))[1] != ""
        if any(a == spec.name for a, _ in CHECKPOINTS) and not looks_like_file:
            checkpoint = get_checkpoint(spec.name, str(weights))
        else:
            names = available_weights(spec.name)
            raise ValueError(f"weights={weights!r}: no such file and no such checkpoint for "
                             f"{spec.name} (checkpoints: {names or 'none'})")
    if checkpoint is not None:
        if checkpoint.arch != spec.name:
            raise ValueError(f"weights={checkpoint.name} is for {checkpoint.arch}, not "
                             f"{spec.name}")
        required = checkpoint.build_options
    for key, value in options.items():
        if key in required and value is not None and value != required[key]:
            raise ValueError(f"{key}={value!r} contradicts weights={weights!r}, which needs "
                             f"{key}={required[key]!r}")
    resolved = {k: (v if v is not None else required.get(k, DEFAULT_OPTIONS[k]))
                for k, v in options.items()}
    return checkpoint, resolved


def load_file(model: keras.Model, path) -> None:
    """Load a weights file into `model` by its layout: a torchvision/timm state dict (with the
    published checkpoint's preprocessing when the file is one), a keras.applications `.h5`, or
    a Keras weights file. Checkpoint names load through `models.load_checkpoint`."""
    layout = _file_layout(os.fspath(path))
    if layout == "torchvision":
        load_torchvision(model, path)
        published = _published_file(model.spec.name, os.fspath(path))
        if published is not None:
            attach_preprocessing(model, published)
    elif layout == "keras":
        load_keras_applications(model, path)
    else:
        convert.load_weights_file(model, path)


def _published_file(arch: str, path: str) -> Checkpoint | None:
    """The registered checkpoint of `arch` that the file at `path` is (same name and hash),
    so a downloaded copy passed as a path still carries its preprocessing."""
    for (a, _), checkpoint in CHECKPOINTS.items():
        if a == arch and checkpoint.filename == os.path.basename(path):
            digest = _digest(path, checkpoint.hash_algorithm)
            return checkpoint if digest.startswith(checkpoint.file_hash.lower()) else None
    return None


def converted_path(checkpoint: Checkpoint) -> str:
    """Where the converted classifier of `checkpoint` is cached as a `.keras` model: named by
    the published hash of its verified source, with a `.json` sidecar holding that hash and the
    converted file's own sha256 (checked at every use, see `cached_conversion`)."""
    return os.path.join(cache_dir(), "converted", f"{checkpoint.arch}-{checkpoint.tag}-"
                                                  f"{checkpoint.file_hash.lower()[:16]}.keras")


def cached_conversion(checkpoint: Checkpoint) -> keras.Model | None:
    """The cached conversion of `checkpoint` if its sidecar vouches for it: same source hash,
    and the `.keras` file's sha256 as written after converting; None (convert again, with a
    warning when a file was there) for a planted, stale, edited or half-written entry."""
    path = converted_path(checkpoint)
    if not os.path.exists(path):
        return None
    try:
        with open(path + ".json", encoding="utf-8") as f:
            record = json.load(f)
        trusted = (isinstance(record, dict)
                   and record.get("source_hash") == checkpoint.file_hash.lower()
                   and record.get("sha256") == _digest(path, "sha256"))
    except (OSError, ValueError, RecursionError, MemoryError):  # any unreadable record
        trusted = False
    if not trusted:
        warnings.warn(f"{path}: not the verified conversion of {checkpoint.name} (no matching "
                      "hash record beside it): ignored, converting the verified source again",
                      stacklevel=3)
        return None
    return convert.load_model_file(path, compile=False)


def convert_into(model: keras.Model, checkpoint: Checkpoint) -> keras.Model:
    """Load the verified download of `checkpoint` into `model`, a full classifier built with
    its `build_options`, and cache the result (read back by `cached_conversion`)."""
    path = converted_path(checkpoint)
    source = fetch(checkpoint)
    if checkpoint.layout == "keras":
        load_keras_applications(model, source)
    else:
        load_torchvision(model, source)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = path[:-len(".keras")] + ".partial.keras"
    model.save(tmp)
    record = {"checkpoint": checkpoint.name, "source": checkpoint.filename,
              "source_hash": checkpoint.file_hash.lower(), "sha256": _digest(tmp, "sha256")}
    with open(path + ".json.partial", "w", encoding="utf-8") as f:
        json.dump(record, f, indent=1)
    os.replace(tmp, path)  # atomic: an interrupted save never leaves a broken cache entry
    os.replace(path + ".json.partial", path + ".json")  # last: the entry counts from here
    return model


def _is_state(variable) -> bool:
    """Random-number generator states (stochastic depth) are no weights to transfer."""
    return "seed_generator" in variable.path or "drop_path_seed" in variable.path


def copy_by_name(target: keras.Model, source: keras.Model) -> None:
    """Copy every weight of `target` from the variable with the same path in `source`
    (layer names are shared by classifiers and backbones, so either way works)."""
    available = {v.path: v for v in source.weights if not _is_state(v)}
    wanted = [v for v in target.weights if not _is_state(v)]
    missing = [v.path for v in wanted if v.path not in available]
    shapes = [f"{v.path}: {tuple(available[v.path].shape)} vs {tuple(v.shape)}"
              for v in wanted if v.path in available and
              tuple(available[v.path].shape) != tuple(v.shape)]
    if missing or shapes:
        raise ValueError(f"cannot copy {source.name!r} into {target.name!r}: missing "
                         f"{missing[:10]}, wrong shape (source vs target) {shapes[:10]}")
    for v in wanted:
        v.assign(available[v.path])


def attach_preprocessing(model: keras.Model, checkpoint: Checkpoint) -> None:
    """Let the model remember its checkpoint and apply its preprocessing (kept in its config:
    see `metadata.ResNetModel`)."""
    attach_checkpoint(model, checkpoint)


__all__ = ["CHECKPOINTS", "Checkpoint", "available_weights", "cache_dir", "cached_conversion",
           "convert_into", "fetch", "get_checkpoint", "keras_arch", "load_file",
           "load_keras_applications", "load_torchvision", "register", "to_torchvision", "verify"]
