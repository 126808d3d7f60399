"""numpy arrays rebuilt from a pickle's recipe without handing numpy a state it did not write.

numpy pickles an array as `_reconstruct(ndarray, (0,), b"b")` followed by `__setstate__((1,
shape, dtype, is_fortran, raw_bytes))`, and a dtype as `dtype("f4", False, True)` followed by
`__setstate__((3, "<", None, None, None, -1, -1, flags))`. numpy trusts both states: a crafted
dtype `flags` word (one saying the items hold references) makes it look for an object clearing
loop that a float32 has none of, and the interpreter then fails in its deallocator (found by
fuzzing). So the unpickler hands out these recipes instead, each checking its state, and the
arrays are made with `np.frombuffer` from plain, checked values.
"""

from __future__ import annotations

import math
import pickle

import numpy as np

_KINDS = "biufc"  # bool, integers, floats, complex: what a checkpoint's tensors are


class RecipeError(ValueError):
    """A pickled array or dtype whose state numpy's own pickles never write."""


class DtypeRecipe:
    """Stands for `numpy.dtype(name, align, copy)`; `__setstate__` takes only the byte order."""

    def __init__(self, name=None, align=False, copy=True):
        if not isinstance(name, str):
            raise RecipeError(f"a dtype named by {type(name).__name__}, not a type string")
        try:
            self.dtype = np.dtype(name)
        except TypeError as err:
            raise RecipeError(f"unknown dtype {name[:40]!r}") from err
        if self.dtype.kind not in _KINDS or self.dtype.fields or self.dtype.subdtype:
            raise RecipeError(f"dtype {name[:40]!r} is not a plain number type")

    def __setstate__(self, state) -> None:
        order = state[1] if isinstance(state, tuple) and len(state) > 1 else None
        if order not in ("<", ">", "|", "="):
            raise RecipeError(f"dtype state with byte order {order!r}")
        if order in "<>" and self.dtype.itemsize > 1:
            self.dtype = self.dtype.newbyteorder(order)


def plain_dtype(value) -> np.dtype:
    """The checked dtype a recipe stands for (or a dtype numpy made itself)."""
    if isinstance(value, DtypeRecipe):
        return value.dtype
    raise RecipeError(f"an array whose dtype is a {type(value).__name__}")


def _raw_bytes(raw) -> bytes:
    if isinstance(raw, str):  # Python 2 pickles read with encoding="latin1"
        return raw.encode("latin1")
    if isinstance(raw, (bytes, bytearray, memoryview, pickle.PickleBuffer)):
        return bytes(memoryview(raw))
    raise RecipeError(f"array data of type {type(raw).__name__}, not bytes")


class ArrayRecipe:
    """Stands for the empty array `_reconstruct` makes; `__setstate__` makes the real one."""

    def __init__(self, max_bytes: int):
        self.max_bytes, self.array = max_bytes, None

    def __setstate__(self, state) -> None:
        if not isinstance(state, tuple) or len(state) not in (4, 5):
            raise RecipeError("an array state that is not numpy's (version, shape, dtype, "
                              "fortran, data)")
        shape, dtype, fortran, raw = state[-4:]
        if not (isinstance(shape, tuple)
                and all(isinstance(n, int) and 0 <= n <= self.max_bytes for n in shape)):
            raise RecipeError(f"an array shape {str(shape)[:80]} that is not a tuple of sizes")
        dtype, raw = plain_dtype(dtype), _raw_bytes(raw)
        expected = math.prod(shape) * dtype.itemsize
        if len(raw) != expected:
            raise RecipeError(f"an array of shape {shape} and dtype {dtype} needs {expected:,} "
                              f"bytes; its data holds {len(raw):,}")
        order = "F" if fortran else "C"
        self.array = np.frombuffer(raw, dtype).reshape(shape, order=order).copy()


def scalar(dtype, raw) -> np.generic:
    """`numpy.core.multiarray.scalar(dtype, bytes)`, checked: one item of a plain dtype."""
    dtype, raw = plain_dtype(dtype), _raw_bytes(raw)
    if len(raw) != dtype.itemsize:
        raise RecipeError(f"a {dtype} scalar of {len(raw)} bytes")
    return np.frombuffer(raw, dtype)[0]


def frombuffer(buffer, dtype, shape, order) -> np.ndarray:
    """`numpy.core.numeric._frombuffer` (protocol-5 pickles), checked like `ArrayRecipe`."""
    recipe = ArrayRecipe(max_bytes=len(_raw_bytes(buffer)) + 1)
    recipe.__setstate__((shape, dtype, order == "F", buffer))
    return recipe.array


def resolved(value):
    """`value` with every finished `ArrayRecipe` replaced by its array (one level of a dict,
    as checkpoints hold them); an unfinished one is refused."""
    if isinstance(value, ArrayRecipe):
        if value.array is None:
            raise RecipeError("an array pickled without its data")
        return value.array
    if isinstance(value, dict):
        return {k: resolved(v) if isinstance(v, ArrayRecipe) else v for k, v in value.items()}
    return value
