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


# Keras' own `model.export(format=...)` into the CPU runtimes users deploy to, each run the way
# its documentation serves one request: ONNX Runtime's CPU provider, OpenVINO's CPU plugin
# with a latency hint and float32 precision (on CPUs with bf16 instructions it would otherwise
# compute in bfloat16, which is another comparison).
RUNTIMES = {"ONNX Runtime": ("onnx", ".onnx", "onnxruntime"),
            "OpenVINO": ("openvino", ".xml", "openvino")}


def runtime_label(model: str, runtime: str) -> str:
    return f"{model}, {runtime}"


def available_runtimes() -> dict[str, str]:
    """Runtime -> why it is missing, for each runtime whose package is not installed."""
    from importlib.util import find_spec

    return {name: f"{package} not installed (pip install '.[export]')"
            for name, (_fmt, _ext, package) in RUNTIMES.items() if find_spec(package) is None}


def export_runtimes(models: dict, workdir: Path, size: int = 224) -> dict[str, str]:
    """`model.export` of each model into each installed runtime's format: label -> file."""
    missing = available_runtimes()
    x = np.zeros((1, size, size, 3), np.float32)
    paths = {}
    for name, model in models.items():
        model.predict(x, verbose=0)  # Keras exports only a model that has been called
        for runtime, (fmt, ext, _package) in RUNTIMES.items():
            if runtime in missing:
                continue
            path = workdir / ("".join(ch if ch.isalnum() else "_" for ch in name) + ext)
            model.export(str(path), format=fmt, verbose=False)
            paths[runtime_label(name, runtime)] = str(path)
    return paths


def runtime_cases(paths: dict[str, str], batch: int, size: int = 224) -> tuple[list[Case], list]:
    """One request of `batch` float images per run against each exported file."""
    x = np.random.default_rng(0).uniform(-1, 1, (batch, size, size, 3)).astype(np.float32)
    cases, keep = [], []
    for label, path in paths.items():
        run, handle = _runtime_call(path, x)
        keep.append(handle)
        cases.append(Case(label, run, items=batch))
    return cases, keep


def _runtime_call(path: str, x: np.ndarray):
    """(one request, the object it needs alive) for an `.onnx` or OpenVINO `.xml` file."""
    if path.endswith(".onnx"):
        import onnxruntime as ort

        options = ort.SessionOptions()  # no spinning threads beside the next contender
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
        feed = {session.get_inputs()[0].name: x}
        return (lambda: session.run(None, feed)), session
    import openvino as ov

    compiled = ov.Core().compile_model(path, "CPU", {
        "PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": "f32"})
    return (lambda: compiled(x)), compiled
