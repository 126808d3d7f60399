"""`torch.save` files read without PyTorch: tensors (as numpy arrays) and plain containers.

Two layouts exist. The zip archive (PyTorch >= 1.6) holds `<name>/data.pkl`, the object
pickle, and one raw little-endian file per storage, `<name>/data/<key>`. The legacy stream
(what older versions wrote, and `_use_new_zipfile_serialization=False`) is five things in a
row: a pickled magic number, the protocol version, a pickled dict of system info (byte
order), the object pickle, the pickled list of storage keys, and then each storage as an
int64 element count followed by its raw bytes.

In both, a tensor is pickled as a call of `torch._utils._rebuild_tensor_v2(storage, offset,
size, stride, ...)` whose storage is a persistent id `("storage", torch.FloatStorage, key,
location, numel, ...)`. The unpickler here resolves only those few globals, to inert
stand-ins, and refuses every other one before anything is called: a file cannot run code.
"""

from __future__ import annotations

import collections
import io
import math
import os
import pickle
import struct
import zipfile
from typing import Any

import numpy as np

from ..file_errors import check_pickle_lengths, reads

MAGIC_NUMBER = 0x1950A86A20F9469CFC6C
PROTOCOL_VERSION = 1001

# torch.<Name>Storage -> numpy dtype of one element ("bf16": 16-bit words widened to float32)
STORAGE_DTYPES = {
    "DoubleStorage": "f8", "FloatStorage": "f4", "HalfStorage": "f2", "BFloat16Storage": "bf16",
    "LongStorage": "i8", "IntStorage": "i4", "ShortStorage": "i2", "CharStorage": "i1",
    "ByteStorage": "u1", "BoolStorage": "b1",
}
_REBUILDERS = ("_rebuild_tensor", "_rebuild_tensor_v2", "_rebuild_parameter")
ALLOWED_GLOBALS = (["collections.OrderedDict"] + [f"torch._utils.{n}" for n in _REBUILDERS]
                   + [f"torch.{n}" for n in STORAGE_DTYPES])


class UnsafeCheckpointError(pickle.UnpicklingError, ValueError):
    """A checkpoint's pickle asks for a global outside `ALLOWED_GLOBALS`."""


class _StorageType:
    """Stands in for `torch.FloatStorage` etc.: only its element type matters."""

    def __init__(self, name: str):
        self.name, self.kind = name, STORAGE_DTYPES[name]

    @property
    def itemsize(self) -> int:
        return 2 if self.kind == "bf16" else np.dtype(self.kind).itemsize

    def array(self, raw: bytes | memoryview, byteorder: str) -> np.ndarray:
        """The storage's elements, in native byte order (bfloat16 widened to float32)."""
        order = "<" if byteorder == "little" else ">"
        if self.kind == "bf16":
            words = np.frombuffer(raw, dtype=order + "u2").astype(np.uint32) << 16
            return words.view(np.float32)
        dtype = np.dtype(self.kind).newbyteorder(order)
        return np.frombuffer(raw, dtype=dtype).astype(dtype.newbyteorder("="))


class _Storage:
    """A storage named in the pickle; its elements arrive once the file's data is read."""

    def __init__(self, storage_type: _StorageType, key: str, numel: int):
        self.type, self.key, self.numel = storage_type, key, numel
        self.base: _Storage | None = None  # legacy views: a slice of another storage
        self.view_offset = 0
        self.data: np.ndarray | None = None

    def elements(self) -> np.ndarray:
        if self.base is not None:
            return self.base.elements()[self.view_offset:self.view_offset + self.numel]
        if self.data is None:
            raise ValueError(f"storage {self.key!r} has no data in the file")
        return self.data


class _Tensor:
    """A tensor named in the pickle, made into an array once its storage is read."""

    def __init__(self, storage, offset, size, stride):
        if not isinstance(storage, _Storage):
            raise ValueError(f"a tensor's storage is a {type(storage).__name__}, not a storage")
        self.storage, self.offset = storage, int(offset)
        self.size, self.stride = tuple(int(s) for s in size), tuple(int(s) for s in stride)

    def array(self) -> np.ndarray:
        data = self.storage.elements()
        if len(self.size) != len(self.stride) or self.offset < 0 or \
                any(n < 0 for n in self.size) or any(s < 0 for s in self.stride):
            raise ValueError(f"tensor of size {self.size}, stride {self.stride}, offset "
                             f"{self.offset}: not a valid layout")
        if 0 in self.size:
            return np.zeros(self.size, data.dtype)
        last = self.offset + sum((n - 1) * s for n, s in zip(self.size, self.stride, strict=True))
        if last >= len(data):
            raise ValueError(f"tensor of size {self.size}, stride {self.stride}, offset "
                             f"{self.offset} reaches element {last} of a {len(data)}-element "
                             "storage (truncated or corrupt file)")
        # Whatever the strides (0 repeats one element), a tensor never holds more elements than
        # its storage has from its offset on: checked before numpy allocates anything.
        count = math.prod(self.size)
        if count > len(data) - self.offset:
            raise ValueError(f"tensor of size {self.size} ({count:,} elements), stride "
                             f"{self.stride}, offset {self.offset} over a {len(data):,}-element "
                             "storage: more elements than its storage holds (corrupt or crafted "
                             "file)")
        view = np.lib.stride_tricks.as_strided(
            data[self.offset:], self.size, [s * data.itemsize for s in self.stride],
            writeable=False)
        return view.copy()


def _rebuild_tensor(storage, offset, size, stride, *_):
    return _Tensor(storage, offset, size, stride)


def _rebuild_parameter(data, *_):  # an nn.Parameter is its tensor here
    return data


_STAND_INS = {"collections.OrderedDict": collections.OrderedDict,
              "torch._utils._rebuild_tensor": _rebuild_tensor,
              "torch._utils._rebuild_tensor_v2": _rebuild_tensor,
              "torch._utils._rebuild_parameter": _rebuild_parameter}


class _Unpickler(pickle.Unpickler):
    """Resolves `ALLOWED_GLOBALS` to inert stand-ins and storages to `_Storage` records."""

    def __init__(self, file, source: str, storages: dict[str, _Storage]):
        super().__init__(file)
        self.source, self.storages = source, storages

    def find_class(self, module: str, name: str):
        full = f"{module}.{name}"
        if full in _STAND_INS:
            return _STAND_INS[full]
        if module == "torch" and name in STORAGE_DTYPES:
            return _StorageType(name)
        raise UnsafeCheckpointError(
            f"{self.source}: refused: not a plain tensor checkpoint: its pickle asks for the "
            f"global {full!r}; only tensors and plain containers are read (allowed globals: "
            f"{', '.join(ALLOWED_GLOBALS)})")

    def persistent_load(self, pid):
        if not (isinstance(pid, tuple) and len(pid) >= 5 and pid[0] == "storage"
                and isinstance(pid[1], _StorageType)):
            raise ValueError(f"{self.source}: unknown persistent id {pid!r} (not a storage)")
        storage_type, key, numel = pid[1], str(pid[2]), int(pid[4])
        if numel < 0:
            raise ValueError(f"{self.source}: storage {key!r} declares {numel} elements")
        storage = self.storages.get(key)
        if storage is None:
            storage = self.storages[key] = _Storage(storage_type, key, numel)
        view = pid[5] if len(pid) > 5 else None
        if view is None:
            return storage
        # Legacy files of PyTorch < 0.4 may name a view (view key, offset, size) of a storage.
        view_key, offset, size = view
        if int(offset) < 0 or int(size) < 0 or int(offset) + int(size) > numel:
            raise ValueError(f"{self.source}: storage view {view_key!r} (offset {offset}, size "
                             f"{size}) lies outside its {numel}-element storage {key!r}")
        if view_key not in self.storages:
            sliced = self.storages[view_key] = _Storage(storage_type, view_key, int(size))
            sliced.base, sliced.view_offset = storage, int(offset)
        return self.storages[view_key]


def _materialise(obj: Any) -> Any:
    """`obj` with every `_Tensor` replaced by its array (containers rebuilt alike)."""
    if isinstance(obj, _Tensor):
        return obj.array()
    if isinstance(obj, dict):
        return type(obj)((k, _materialise(v)) for k, v in obj.items())
    if isinstance(obj, list):
        return [_materialise(v) for v in obj]
    if isinstance(obj, tuple):
        return tuple(_materialise(v) for v in obj)
    if isinstance(obj, _Storage):
        raise ValueError("a bare storage (not a tensor) is no supported checkpoint content")
    return obj


def _load_zip(path: str, archive: zipfile.ZipFile) -> Any:
    pickles = [n for n in archive.namelist() if n.endswith("data.pkl") and n.count("/") == 1]
    if len(pickles) != 1:
        raise ValueError(f"{path}: a zip file but not a torch.save archive (expected one "
                         f"<name>/data.pkl, found {pickles or 'none'})")
    prefix = pickles[0][:-len("data.pkl")]
    byteorder = "little"
    if prefix + "byteorder" in archive.namelist():
        byteorder = archive.read(prefix + "byteorder").decode().strip()
    storages: dict[str, _Storage] = {}
    data = io.BytesIO(archive.read(pickles[0]))
    check_pickle_lengths(data, path)
    obj = _Unpickler(data, path, storages).load()
    for key, storage in storages.items():
        if storage.base is not None:
            continue
        name = f"{prefix}data/{key}"
        try:
            raw = archive.read(name)
        except KeyError:
            raise ValueError(f"{path}: storage {key!r} is named in data.pkl but {name} is "
                             "missing (truncated file?)") from None
        nbytes = storage.numel * storage.type.itemsize
        if len(raw) < nbytes:
            raise ValueError(f"{path}: {name} holds {len(raw)} bytes, {nbytes} expected")
        storage.data = storage.type.array(memoryview(raw)[:nbytes], byteorder)
    return obj


def _load_legacy(path: str, raw: bytes) -> Any:
    f = io.BytesIO(raw)
    storages: dict[str, _Storage] = {}

    def load():
        check_pickle_lengths(f, path)
        return _Unpickler(f, path, storages).load()

    try:
        magic = load()
    except UnsafeCheckpointError:  # a payload in the first pickle: refused as such
        raise
    except Exception as err:  # not a pickle at all: many error types
        raise ValueError(f"{path}: not a torch.save file (neither a zip archive nor a "
                         f"pickle stream: {err})") from err
    if magic != MAGIC_NUMBER:
        raise ValueError(f"{path}: a pickle but not a torch.save file (no magic number; "
                         "only load pickles you trust with plain pickle)")
    version = load()
    if version != PROTOCOL_VERSION:
        raise ValueError(f"{path}: torch.save protocol version {version!r}, expected "
                         f"{PROTOCOL_VERSION}")
    info = load()
    byteorder = "little" if not isinstance(info, dict) or info.get("little_endian", True) \
        else "big"
    obj = load()
    keys = load()
    if not isinstance(keys, list):
        raise ValueError(f"{path}: corrupt legacy file (storage key list is a "
                         f"{type(keys).__name__})")
    order = "<" if byteorder == "little" else ">"
    for key in keys:
        storage = storages.get(str(key))
        if storage is None:
            raise ValueError(f"{path}: storage {key!r} is listed but no tensor uses it")
        header = f.read(8)
        if len(header) < 8:
            raise ValueError(f"{path}: truncated: storage {key!r} is missing")
        (count,) = struct.unpack(order + "q", header)
        nbytes = count * storage.type.itemsize
        chunk = f.read(nbytes)
        if count < storage.numel or len(chunk) < nbytes:
            raise ValueError(f"{path}: truncated or corrupt storage {key!r} ({len(chunk)} "
                             f"bytes for {storage.numel} elements)")
        storage.data = storage.type.array(chunk, byteorder)
    return obj


@reads("torch.save file")
def load_torch_file(path: str | os.PathLike) -> Any:
    """The object a `torch.save` file holds (zip or legacy layout), tensors as numpy arrays.

    Only tensors and plain containers (dict, OrderedDict, list, tuple, numbers, strings)
    are rebuilt; any other pickled global raises `UnsafeCheckpointError` naming it.
    """
    path = os.fspath(path)
    with open(path, "rb") as f:
        raw = f.read()
    try:
        if zipfile.is_zipfile(io.BytesIO(raw)):
            with zipfile.ZipFile(io.BytesIO(raw)) as archive:
                obj = _load_zip(path, archive)
        else:
            obj = _load_legacy(path, raw)
        return _materialise(obj)
    except UnsafeCheckpointError:
        raise
    except ValueError as err:
        message = str(err)
        raise ValueError(message if message.startswith(path) else f"{path}: {message}") from err
    except (pickle.UnpicklingError, EOFError, TypeError, AttributeError, IndexError,
            KeyError, struct.error, zipfile.BadZipFile) as err:
        raise ValueError(f"{path}: corrupt torch.save file ({type(err).__name__}: {err})") \
            from err
