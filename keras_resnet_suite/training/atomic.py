"""Atomic file writes for training runs: a temporary name, fsync, rename, fsync of the folder,
so a process killed at any instant leaves the previous file or the new one, never a torn one.

A write that runs out of space raises `DiskFull` naming the file, after removing the partial
temporary file and closing every HDF5 handle left open on it: h5py otherwise retries the
failed flush when the handle is garbage-collected and at exit (tracebacks, then a segfault).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
from pathlib import Path

import h5py
import keras
import numpy as np

from keras_resnet_suite.run_folder import DiskFull, is_disk_full


def fsync_path(path: str | os.PathLike) -> None:
    """Flush a file or directory to disk (directories: so a rename inside it is durable)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def close_h5_handles(path: str | os.PathLike) -> None:
    """Close every HDF5 file handle open on `path` (a writer that raised leaves its own), after
    emptying the file: the close flushes, and on a full disk only a freed one can take it."""
    target = os.path.abspath(path)
    for fid in h5py.h5f.get_obj_ids(types=h5py.h5f.OBJ_FILE):
        try:
            if os.path.abspath(os.fsdecode(fid.name)) != target:
                continue
            with contextlib.suppress(OSError):
                os.truncate(target, 0)
            h5py.File(fid).close()
        except Exception:  # noqa: BLE001 - best effort: the handle may be gone already
            continue


def write_weights(model: keras.Model, path: str | os.PathLike, weights_only: bool = True) -> None:
    """`model.save_weights(path)` (`model.save` unless `weights_only`) that, on any failure,
    closes the handles it left and removes the partial file; no space left -> `DiskFull`."""
    path = Path(path)
    try:
        if weights_only:
            model.save_weights(path)
        else:
            model.save(path)
    except BaseException as err:
        close_h5_handles(path)
        path.unlink(missing_ok=True)
        if is_disk_full(err):
            raise DiskFull(f"no space left on device while writing {path}") from None
        raise


def disk_full_as_one_line(err: OSError, path: str | os.PathLike) -> OSError:
    """`DiskFull` naming `path` for an out-of-space error; other errors unchanged."""
    return DiskFull(f"no space left on device while writing {path}") if is_disk_full(err) \
        else err


def atomic_save(
    model: keras.Model, path: str | os.PathLike, weights_only: bool | None = None
) -> Path:
    """Save `model` to `path` (`.keras` or `.weights.h5`) via a temporary file and a rename."""
    path = Path(path)
    suffix = ".weights.h5" if path.name.endswith(".weights.h5") else path.suffix
    if suffix not in (".keras", ".weights.h5"):
        raise ValueError(f"checkpoint path must end in .keras or .weights.h5, got {path}")
    if weights_only is None:
        weights_only = suffix == ".weights.h5"
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name[: -len(suffix)]}.tmp-{os.getpid()}{suffix}")
    try:
        write_weights(model, tmp, weights_only)
        fsync_path(tmp)
        os.replace(tmp, path)
        fsync_path(path.parent)
    except OSError as err:
        raise disk_full_as_one_line(err, path) from None
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write a small text file atomically (no partial temporary file is left on failure)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        fsync_path(path.parent)
    except OSError as err:
        raise disk_full_as_one_line(err, path) from None
    finally:
        tmp.unlink(missing_ok=True)


def json_safe(value):
    """`value` with every non-finite float (NaN, inf) replaced by None, so `json.dumps` writes
    valid JSON (`null`) instead of the `NaN` literals most JSON readers refuse."""
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    if isinstance(value, float | np.floating):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, np.integer):
        return int(value)
    return value


def atomic_write_json(path: str | os.PathLike, value) -> None:
    """Write `value` as indented, valid JSON (non-finite floats as null), atomically."""
    atomic_write_text(path, json.dumps(json_safe(value), indent=2, allow_nan=False))
