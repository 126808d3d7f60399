"""Exported SavedModel serving: ours with and without BN folding vs keras.applications.

Every model goes through the same exporter (`keras_resnet_suite.export.export_saved_model`) and
is served from `tf.saved_model.load`, as TF Serving would, with no project code on the path.
"""

from __future__ import annotations

import importlib
import inspect
import tempfile
from pathlib import Path

import numpy as np

from benchmarks.timing import Case


def exporter():
    """`export_saved_model` when the export module exists, else None (reported as skipped)."""
    try:
        module = importlib.import_module("keras_resnet_suite.export")
    except ImportError:
        return None
    return getattr(module, "export_saved_model", None)


def export_all(models: dict, fold_variants: dict, workdir: Path) -> dict[str, Path]:
    """Export each `(name, model, fold)`; `fold_variants` maps name -> (model key, fold flag)."""
    export = exporter()
    params = inspect.signature(export).parameters
    fold_arg = next((a for a in ("fold_bn", "fold_batch_norm") if a in params), None)
    paths = {}
    for name, (key, fold) in fold_variants.items():
        if fold and fold_arg is None:
            raise TypeError("export_saved_model takes no BN-folding argument")
        path = workdir / "".join(ch if ch.isalnum() else "_" for ch in name)
        export(models[key], str(path), **({fold_arg: fold} if fold_arg else {}))
        paths[name] = path
    return paths


def _serving_fn(path: Path):
    """`serving_default`, or the first signature taking float images if that one takes bytes."""
    import tensorflow as tf

    loaded = tf.saved_model.load(str(path))
    names = ["serving_default"] + sorted(k for k in loaded.signatures if k != "serving_default")
    for key in names:
        if key not in loaded.signatures:
            continue
        fn = loaded.signatures[key]
        specs = fn.structured_input_signature[1]
        if len(specs) == 1:
            (arg, spec), = specs.items()
            if spec.dtype.is_floating:
                return loaded, fn, arg, key
    raise ValueError(f"{path}: no serving signature takes a single float image tensor "
                     f"(signatures: {sorted(loaded.signatures)})")


def serving_cases(paths: dict[str, Path], batch: int, size: int = 224) -> tuple[list[Case], list]:
    """One request of `batch` float images per run against each `serving_default`."""
    import tensorflow as tf

    x = tf.constant(np.random.default_rng(0).uniform(-1, 1, (batch, size, size, 3)), tf.float32)
    cases, keep = [], []
    for name, path in paths.items():
        loaded, fn, arg, _key = _serving_fn(path)
        keep.append(loaded)  # the signature dies with its object
        cases.append(Case(name, (lambda fn=fn, arg=arg: fn(**{arg: x})), items=batch))
    return cases, keep


def temp_dir() -> tempfile.TemporaryDirectory:
    return tempfile.TemporaryDirectory(prefix="krs-bench-")
