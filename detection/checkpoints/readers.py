"""Detector checkpoint files as name -> numpy array dicts, read without running their code.

detectron2's model zoo ships pickles of `{"model": {name: ndarray}, "__author__": ...,
"matching_heuristics": ...}` (Detectron-converted ones hold `"blobs"`); they are read by an
unpickler that rebuilds numpy arrays and nothing else. torchvision ships `torch.save` files,
read through `torch.load(weights_only=True)` when PyTorch is installed, else through
`keras_resnet_suite.convert`'s torch-free reader. `normalize_torchvision_keys` gives every
torchvision file the names of torchvision 0.29's current `state_dict()`.
"""

from __future__ import annotations

import codecs
import collections
import math
import os
import pickle
import re
import zipfile

import numpy as np

from detection.checkpoints import array_recipes
from keras_resnet_suite.file_errors import check_pickle_lengths, reads

# What pickled numpy arrays need, under numpy 1 ("numpy.core") and numpy 2 ("numpy._core")
# module paths: the array/scalar rebuilders, the types, and `_codecs.encode` (protocol-2
# pickles written by Python 3 store bytes through it). Arrays, dtypes and scalars are made by
# `array_recipes`, which checks every state before numpy sees it (`_reconstruct` is the
# unpickler's own method).
_SAFE_GLOBALS = {
    **{(f"numpy.{core}.multiarray", "_reconstruct"): None for core in ("core", "_core")},
    **{(f"numpy.{core}.multiarray", "scalar"): array_recipes.scalar
       for core in ("core", "_core")},
    **{(f"numpy.{core}.numeric", "_frombuffer"): array_recipes.frombuffer
       for core in ("core", "_core")},
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): array_recipes.DtypeRecipe,
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("_codecs", "encode"): codecs.encode,
}
ALLOWED_GLOBALS = tuple(sorted(f"{module}.{name}" for module, name in _SAFE_GLOBALS))


class UnsafePickleError(pickle.UnpicklingError, ValueError):
    """A checkpoint pickle asks for a global outside `ALLOWED_GLOBALS`."""


class _ArrayType:
    """Stands for `numpy.ndarray` in a pickle. Handed to `_reconstruct` (how numpy pickles an
    array: an empty one, then its bytes) it is the array type; called directly, which would
    make an array of any size over any buffer (stride 0: 1e16 elements from one), it is
    refused."""

    def __init__(self, source: str):
        self.source = source

    def __call__(self, *args, **kwargs):
        raise UnsafePickleError(f"{self.source}: refused: its pickle calls numpy.ndarray("
                                f"{', '.join(map(repr, args))[:200]}) directly; numpy's own "
                                "pickles never do")


class _ArrayUnpickler(pickle.Unpickler):
    """Resolves only `_SAFE_GLOBALS`; any other global is refused before it is called. Arrays
    are made only from the bytes in the file: none may declare more of them than it holds."""

    def __init__(self, file, source: str, max_bytes: int):
        super().__init__(file, encoding="latin1")  # Python 2 pickles (Detectron, early d2)
        self.source, self.max_bytes = source, max_bytes
        self.array_type = _ArrayType(source)

    def _reconstruct(self, subtype, shape, dtype, *args):
        if subtype is not self.array_type:
            raise UnsafePickleError(f"{self.source}: refused: numpy _reconstruct of "
                                    f"{subtype!r}, not numpy.ndarray")
        count = math.prod(int(n) for n in shape)
        if count > self.max_bytes:
            raise ValueError(f"{self.source}: an array of shape {tuple(shape)} declares more "
                             f"elements than the {self.max_bytes:,}-byte file holds")
        return array_recipes.ArrayRecipe(self.max_bytes)  # made from its checked state

    def find_class(self, module: str, name: str):
        if (module, name) == ("numpy", "ndarray"):
            return self.array_type
        if name == "_reconstruct" and module in ("numpy.core.multiarray",
                                                 "numpy._core.multiarray"):
            return self._reconstruct
        if (module, name) in _SAFE_GLOBALS:
            return _SAFE_GLOBALS[(module, name)]
        raise UnsafePickleError(
            f"{self.source}: refused: its pickle asks for the global '{module}.{name}'; only "
            f"numpy arrays and plain containers are read (allowed: {', '.join(ALLOWED_GLOBALS)})")


def _arrays(source: str, tensors: dict, max_bytes: int | None = None) -> dict[str, np.ndarray]:
    """Name -> numeric array (floats as float32); anything else is refused by name, and so is
    an array larger than the file it came from (`max_bytes`), before it is copied."""
    out, bad = {}, []
    for key, value in tensors.items():
        array = np.asarray(value) if isinstance(value, (np.ndarray, np.generic)) else None
        if not isinstance(key, str) or array is None or array.dtype.kind not in "fiub":
            bad.append(f"{key!r} ({type(value).__name__})")
            continue
        if max_bytes is not None and array.nbytes > max_bytes:
            raise ValueError(f"{source}: refused: array {key!r} of shape {array.shape} "
                             f"({array.nbytes:,} bytes) is larger than the {max_bytes:,}-byte "
                             "file (corrupt or crafted)")
        out[key] = array.astype(np.float32) if array.dtype.kind == "f" else array
    if bad:
        raise ValueError(f"{source}: refused: not a plain array dict; non-array entries: "
                         f"{bad[:10]}")
    return out


@reads("checkpoint")
def read_detectron2_pkl(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """The state dict of a detectron2 model-zoo `.pkl` ("model", or Detectron's "blobs"
    without their "_momentum" entries), floats as float32, no code from the file run."""
    path = os.fspath(path)
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        try:
            check_pickle_lengths(f, path)
            data = _ArrayUnpickler(f, path, size).load()
            if isinstance(data, dict):
                data = {k: array_recipes.resolved(v) for k, v in data.items()}
        except UnsafePickleError:
            raise
        except Exception as err:  # corrupt pickles fail in many ways
            message = str(err) if str(err).startswith(path) else f"{type(err).__name__}: {err}"
            raise ValueError(f"{path}: not a readable detectron2 .pkl ({message})") from err
    if isinstance(data, dict) and isinstance(data.get("model"), dict):
        return _arrays(path, data["model"], size)
    if isinstance(data, dict) and isinstance(data.get("blobs"), dict):
        blobs = {k: v for k, v in data["blobs"].items() if not k.endswith("_momentum")}
        return _arrays(path, blobs, size)
    keys = sorted(map(str, data))[:10] if isinstance(data, dict) else type(data).__name__
    raise ValueError(f"{path}: refused: a detectron2 checkpoint holds a 'model' (or Detectron "
                     f"'blobs') dict of arrays; this pickle holds {keys}")


def _torch_load(path: str) -> dict:
    """The file's tensors through PyTorch (`weights_only`: no code run), as numpy arrays."""
    import torch

    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch names no file; its unsafe-global refusal spans lines
        raise ValueError(f"{path}: not a readable torch.save file ({type(err).__name__}: "
                         f"{' '.join(str(err).split())[:500]})") from err
    for key in ("model", "state_dict"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
            break
    if not isinstance(obj, dict):
        raise ValueError(f"{path}: refused: holds a {type(obj).__name__}, not a state dict")
    for key, value in obj.items():
        # torch rebuilds a stride-0 tensor of 1e16 elements over one stored element without
        # complaint; copying it to numpy would not end: refused before any copy.
        if torch.is_tensor(value) and value.numel() > (
                value.untyped_storage().nbytes() // value.element_size() - value.storage_offset()):
            raise ValueError(f"{path}: refused: tensor {key!r} of size {tuple(value.shape)} "
                             f"({value.numel():,} elements) over a storage of "
                             f"{value.untyped_storage().nbytes() // value.element_size():,}: "
                             "more elements than its storage holds (corrupt or crafted file)")
    return {k.removeprefix("module."): v.detach().cpu().float().numpy()
            if torch.is_tensor(v) and v.is_floating_point()
            else v.numpy() if torch.is_tensor(v) else v for k, v in obj.items()}


@reads("checkpoint")
def read_torchvision_pth(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """A `torch.save` state dict (bare, or wrapped in "model"/"state_dict") as arrays: by
    PyTorch when installed, else by `keras_resnet_suite.convert.read_torch` (no PyTorch)."""
    path = os.fspath(path)
    try:
        import torch  # noqa: F401
    except ImportError:
        from keras_resnet_suite.convert import read_torch

        return read_torch(path)
    return _arrays(path, _torch_load(path))


_FPN_OLD = re.compile(r"^(backbone\.fpn\.(?:inner|layer)_blocks\.\d+)\.(weight|bias)$")
_RPN_OLD = re.compile(r"^(rpn\.head\.conv)\.(weight|bias)$")
_MASK_OLD = re.compile(r"^(roi_heads\.mask_head)\.mask_fcn(\d+)\.(weight|bias)$")


def normalize_torchvision_keys(state: dict) -> dict:
    """torchvision detector keys as torchvision 0.29 names them, whatever release wrote them.

    Replicates the renames of `FeaturePyramidNetwork._load_from_state_dict` and
    `RPNHead._load_from_state_dict` (both `_version = 2`): before those modules became
    `Conv2dNormActivation`s, `fpn.{inner,layer}_blocks.N.{weight,bias}` now are
    `...N.0.{weight,bias}`, and `rpn.head.conv.{weight,bias}` now is
    `rpn.head.conv.0.0.{weight,bias}`; and `MaskRCNNHeads._load_from_state_dict`'s:
    `roi_heads.mask_head.mask_fcnN.{weight,bias}` now is `roi_heads.mask_head.{N-1}.0.*`.
    `num_batches_tracked` counters (no weights; torchvision's
    FrozenBatchNorm2d drops them too) and DataParallel's "module." prefix are dropped.
    """
    out = {}
    for key, value in state.items():
        key = key.removeprefix("module.")
        if key.endswith("num_batches_tracked"):
            continue
        key = _FPN_OLD.sub(r"\1.0.\2", key)
        key = _RPN_OLD.sub(r"\1.0.0.\2", key)
        key = _MASK_OLD.sub(lambda m: f"{m[1]}.{int(m[2]) - 1}.0.{m[3]}", key)
        if key in out:
            raise ValueError(f"two entries map to {key!r} (old and new names both present)")
        out[key] = value
    return out


def library_of(state: dict) -> str:
    """"torchvision" or "detectron2", told by the module names of a detector state dict."""
    keys = list(state)
    if any(k.startswith(("backbone.bottom_up.", "proposal_generator.")) for k in keys):
        return "detectron2"
    if any(k.startswith(("backbone.body.", "rpn.head.")) for k in keys):
        return "torchvision"
    raise ValueError(f"not a torchvision or detectron2 Faster R-CNN state dict (first keys: "
                     f"{keys[:5]})")


def _is_torch_save(path: str) -> bool:
    """A `torch.save` file: a zip archive, or a legacy stream whose first pickle is torch's
    10-byte magic number (protocol 2, LONG1); detectron2's pickles open with a dict."""
    with open(path, "rb") as f:
        head = f.read(4)
    return zipfile.is_zipfile(path) or head == b"\x80\x02\x8a\x0a"


@reads("checkpoint")
def read_checkpoint(path: str | os.PathLike) -> tuple[str, dict[str, np.ndarray]]:
    """(library, state dict) of a detector checkpoint file: `.pkl` pickles of arrays, or
    `torch.save` files / `.safetensors`; the library is told by the keys, and torchvision keys
    come normalised (`normalize_torchvision_keys`)."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: no such checkpoint file")
    if path.endswith(".safetensors"):
        from keras_resnet_suite.convert import read_safetensors

        state = read_safetensors(path)
    elif _is_torch_save(path):
        state = read_torchvision_pth(path)
    else:
        state = read_detectron2_pkl(path)
    try:
        library = library_of(state)
    except ValueError as err:
        raise ValueError(f"{path}: {err}") from None
    if library == "torchvision":
        state = normalize_torchvision_keys(state)
    return library, state
