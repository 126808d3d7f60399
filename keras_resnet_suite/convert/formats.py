"""Checkpoint files as plain name -> numpy array dicts: safetensors, PyTorch `.pth`, Keras h5.

Nothing here executes code from a file: safetensors is parsed by hand (header JSON + raw
buffers), `torch.save` files by `torch_file`'s restricted unpickler (no PyTorch needed), h5
through h5py.
"""

from __future__ import annotations

import json
import math
import os
import struct
import zipfile

import h5py
import keras
import numpy as np

from ..file_errors import reads
from .torch_file import load_torch_file

TORCH_SUFFIXES = (".pth", ".th", ".pt", ".bin", ".safetensors")

_ST_DTYPES = {"F64": np.float64, "F32": np.float32, "F16": np.float16, "I64": np.int64,
              "I32": np.int32, "I16": np.int16, "I8": np.int8, "U8": np.uint8, "BOOL": np.bool_}
_ST_NAMES = {np.dtype(v): k for k, v in _ST_DTYPES.items()}


@reads("checkpoint")
def read_safetensors(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Tensors of a `.safetensors` file (bfloat16 widened to float32)."""
    path = os.fspath(path)
    with open(path, "rb") as f:
        raw = f.read()
    if len(raw) < 8:
        raise ValueError(f"{path}: not a safetensors file (shorter than its 8-byte header size)")
    (size,) = struct.unpack("<Q", raw[:8])
    try:
        header = json.loads(raw[8:8 + size])
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(f"{path}: not a safetensors file (bad JSON header: {err})") from err
    if not isinstance(header, dict):
        raise ValueError(f"{path}: not a safetensors file (header is not a JSON object)")
    data = memoryview(raw)[8 + size:]
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        begin, end, shape = _safetensors_entry(path, name, info)
        if end > len(data) or begin > end:
            raise ValueError(f"{path}: tensor {name!r} lies outside the file (truncated?)")
        itemsize = 2 if info["dtype"] == "BF16" else np.dtype(
            _ST_DTYPES.get(info["dtype"], np.uint8)).itemsize
        if math.prod(shape) * itemsize != end - begin:
            raise ValueError(f"{path}: tensor {name!r} of shape {list(shape)} ({info['dtype']}) "
                             f"needs {math.prod(shape) * itemsize} bytes, its data has "
                             f"{end - begin}")
        if info["dtype"] == "BF16":
            bits = np.frombuffer(data[begin:end], dtype="<u2").astype(np.uint32) << 16
            array = bits.view(np.float32)
        elif info["dtype"] in _ST_DTYPES:
            array = np.frombuffer(data[begin:end], dtype=np.dtype(_ST_DTYPES[info["dtype"]])
                                  .newbyteorder("<"))
        else:
            raise ValueError(f"{path}: tensor {name!r} has unsupported dtype {info['dtype']}")
        out[name] = array.reshape(shape).copy()
    return out


def _safetensors_entry(path: str, name: str, info) -> tuple[int, int, tuple[int, ...]]:
    """(begin, end, shape) of one header entry, after checking their types."""
    def ints(value, n=None) -> bool:
        return isinstance(value, list) and (n is None or len(value) == n) and all(
            isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in value)

    if not isinstance(info, dict) or not ints(info.get("data_offsets"), 2) or not ints(
            info.get("shape")) or not isinstance(info.get("dtype"), str):
        raise ValueError(f"{path}: tensor {name!r}: header entry needs 'dtype' (a string), "
                         f"'shape' (whole numbers >= 0) and 'data_offsets' (two), got {info!r}"[:300])
    begin, end = info["data_offsets"]
    return begin, end, tuple(info["shape"])


def _one_line(err: BaseException) -> str:
    return " ".join(str(err).split()) or type(err).__name__


@reads("weights file", arg=1)
def load_weights_file(model, path: str | os.PathLike) -> None:
    """`model.load_weights(path)` whose every failure is a ValueError naming the file (h5py's
    "Unable to synchronously open file" names none; Keras' mismatch messages span lines)."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: no such weights file")
    try:
        if path.endswith(".weights.h5"):
            _check_array_count(model, path)
        model.load_weights(path)
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise ValueError(f"{path}: cannot load these weights into {model.name!r} "
                         f"({type(err).__name__}: {_one_line(err)})") from err


def _check_array_count(model, path: str) -> None:
    """Keras loads a `.weights.h5` of a larger model of the same family (ResNet-32's into a
    ResNet-20) without a word, leaving the extra arrays unused: refuse a file with more arrays
    than the model has variables."""
    names: list[str] = []
    with h5py.File(path, "r") as f:
        # a compiled model's file also holds its optimizer's slots, which are no layer weights
        for key in (k for k in f if k != "optimizer" and isinstance(f[k], h5py.Group)):
            f[key].visititems(lambda name, obj: names.append(name)
                              if isinstance(obj, h5py.Dataset) else None)
    have = max(len(model.weights), len(model.variables))
    if len(names) > have:
        raise ValueError(f"the file holds {len(names)} arrays, the model has {have} variables: "
                         "weights of another architecture")


@reads("model file")
def load_model_file(path: str | os.PathLike, **kwargs):
    """`keras.saving.load_model(path, **kwargs)` whose failures name the file and the cause (a
    truncated `.keras` zip otherwise reads as "File not found")."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: no such model file")
    if path.endswith(".keras") and not zipfile.is_zipfile(path):
        raise ValueError(f"{path}: not a .keras model file (not a zip archive: truncated or "
                         "another format)")
    try:
        return keras.saving.load_model(path, **kwargs)
    except (OSError, ValueError, KeyError, TypeError, zipfile.BadZipFile) as err:
        raise ValueError(f"{path}: cannot load this model file ({type(err).__name__}: "
                         f"{_one_line(err)})") from err


def write_safetensors(tensors: dict[str, np.ndarray], path: str | os.PathLike) -> None:
    """Write name -> array as `.safetensors` (what `safetensors.numpy.save_file` writes)."""
    header, chunks, offset = {}, [], 0
    for name, array in tensors.items():
        array = np.ascontiguousarray(array)
        if array.dtype not in _ST_NAMES:
            raise ValueError(f"{name!r}: dtype {array.dtype} cannot be written to safetensors")
        blob = array.astype(array.dtype.newbyteorder("<")).tobytes()
        header[name] = {"dtype": _ST_NAMES[array.dtype], "shape": list(array.shape),
                        "data_offsets": [offset, offset + len(blob)]}
        chunks.append(blob)
        offset += len(blob)
    head = json.dumps(header, separators=(",", ":")).encode()
    head += b" " * (-len(head) % 8)  # the format aligns the data to 8 bytes
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(head)) + head + b"".join(chunks))


@reads("checkpoint")
def read_torch(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """A PyTorch state dict from a `torch.save` file (`.pth`/`.th`/`.pt`/`.bin`), as arrays.

    Read by `torch_file.load_torch_file`, which needs no PyTorch and runs no code from the
    file. Training checkpoints that wrap it ({"state_dict": ...} or {"model": ...}) are
    unwrapped and DataParallel's "module." prefix dropped; anything else than tensors is
    refused. Floating-point tensors come back as float32.
    """
    path = os.fspath(path)
    obj = load_torch_file(path)
    for key in ("state_dict", "model", "module"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
            break
    if not isinstance(obj, dict):
        raise ValueError(f"{path}: refused: holds a {type(obj).__name__}, not a state dict "
                         "(name -> tensor)")
    bad = sorted(str(k) for k, v in obj.items()
                 if not isinstance(k, str) or not isinstance(v, np.ndarray))
    if bad:
        raise ValueError(f"{path}: refused: not a plain tensor dict; non-tensor entries: "
                         f"{bad[:10]}")
    out = {}
    for key, array in obj.items():
        key = key[len("module."):] if key.startswith("module.") else key
        out[key] = array.astype(np.float32) if array.dtype.kind == "f" else array
    return out


@reads("checkpoint")
def read_state_dict(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """A torchvision/timm state dict from `.safetensors` or `.pth`/`.th`/`.pt`/`.bin`."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: no such checkpoint file")
    if path.endswith(".safetensors"):
        return read_safetensors(path)
    return read_torch(path)


def is_legacy_keras_h5(path: str | os.PathLike) -> bool:
    """True for a Keras 2 style weights `.h5` (what keras.applications publishes)."""
    try:
        with h5py.File(path, "r") as f:
            group = f["model_weights"] if "model_weights" in f else f
            return "layer_names" in group.attrs
    except OSError:
        return False


@reads("checkpoint")
def read_keras_h5(path: str | os.PathLike) -> dict[str, list[np.ndarray]]:
    """Layer name -> weights (in the layer's own order) of a Keras 2 style `.h5` file."""
    path = os.fspath(path)
    out = {}
    try:
        with h5py.File(path, "r") as f:
            group = f["model_weights"] if "model_weights" in f else f
            if "layer_names" not in group.attrs:
                raise ValueError(f"{path}: not a Keras weights .h5 file (no 'layer_names')")
            for layer in group.attrs["layer_names"]:
                layer = layer.decode() if isinstance(layer, bytes) else str(layer)
                g = group[layer]
                names = [n.decode() if isinstance(n, bytes) else str(n)
                         for n in g.attrs.get("weight_names", [])]
                if names:
                    out[layer] = [np.asarray(g[n]) for n in names]
    except (OSError, KeyError, RuntimeError) as err:  # h5py: KeyError for a damaged node
        raise ValueError(f"{path}: cannot read as HDF5: {type(err).__name__}: {err}") from err
    return out
