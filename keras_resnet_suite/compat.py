"""The one place this project touches private Keras and TensorFlow APIs.

Each wrapper below says why no public API does the job. Private names may change in any
release, so the installed versions are checked against those the wrappers were read against:
a Keras other than 3.x is refused at import; a version outside the checked range warns once,
naming the API, the first time that API is used. No other module of `keras_resnet_suite` or
`detection` reaches into `keras.src`, underscore attributes of Keras objects, `tf.raw_ops`,
or patches Keras classes (`tests/test_code_shape.py` checks this).
"""

from __future__ import annotations

import contextlib
import functools
import importlib.metadata
import re
import sys
import types
import warnings
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import keras

# Inclusive (major, minor) ranges: the pyproject floor up to the newest release checked.
KERAS_CHECKED = ((3, 8), (3, 15))
TENSORFLOW_CHECKED = ((2, 16), (2, 21))


def _version(text: str) -> tuple[int, int]:
    major, minor = (re.match(r"(\d+)\.(\d+)", text) or re.match(r"(\d+)()", text)).groups()
    return int(major), int(minor or 0)


if _version(keras.__version__)[0] != 3:
    raise ImportError(f"keras_resnet_suite needs Keras 3, found {keras.__version__}")


@functools.cache
def _check(api: str, tensorflow: bool = False) -> None:
    """Warn (once per `api`) when the installed version is outside the checked range."""
    if tensorflow:
        name, checked = "tensorflow", TENSORFLOW_CHECKED
        try:
            installed = importlib.metadata.version("tensorflow")
        except importlib.metadata.PackageNotFoundError:
            installed = __import__("tensorflow").__version__
    else:
        name, checked, installed = "keras", KERAS_CHECKED, keras.__version__
    if not checked[0] <= _version(installed) <= checked[1]:
        lo, hi = (".".join(map(str, v)) for v in checked)
        warnings.warn(f"{api} uses a private {name} API checked on {name} {lo} to {hi}; "
                      f"{name} {installed} may have changed it (keras_resnet_suite/compat.py)",
                      RuntimeWarning, stacklevel=3)


def flatten_layers(layer: keras.layers.Layer) -> list[keras.layers.Layer]:
    """Every layer nested in `layer` (not itself), depth first, also those held in plain
    attributes and lists. `layer.layers` lists only a Functional model's direct layers."""
    _check("flatten_layers")
    return list(layer._flatten_layers(include_self=False, recursive=True))


def inputs_as_given(layer: keras.layers.Layer) -> None:
    """Let `layer` take its call arguments as given: no cast to its compute dtype (boxes and
    image sizes stay float32 under a mixed-precision policy) and arrays allowed positionally."""
    _check("inputs_as_given")
    layer._convert_input_args = False
    layer._allow_non_tensor_positional_args = True


@contextlib.contextmanager
def unlocked_tracking(layer: keras.layers.Layer) -> Iterator[None]:
    """Allow assigning new sublayers to a built `layer` (Keras locks tracking once built)."""
    _check("unlocked_tracking")
    tracker = getattr(layer, "_tracker", None)
    if tracker is not None:
        tracker.unlock()
    try:
        yield
    finally:
        if tracker is not None:
            tracker.lock()


@contextlib.contextmanager
def wrapped_calls(wrappers: Mapping[type, Callable[[Callable], Callable]]) -> Iterator[None]:
    """Within the block, `cls.call` is `wrap(original call)` for every `cls: wrap` given, for
    all instances (class-wide), restored on exit. Keras has no public hook that sees each
    layer's input and output inside nested layers and blocks, which `analysis` records."""
    originals = {cls: (cls.__dict__.get("call"), cls.call) for cls in wrappers}
    try:
        for cls, wrap in wrappers.items():
            cls.call = wrap(originals[cls][1])
        yield
    finally:
        for cls, (own, _) in originals.items():
            if own is None:
                del cls.call  # it was inherited: inherit it again
            else:
                cls.call = own


def call_with_seed_generator(layer: keras.layers.Layer, generator: Any, *args, **kwargs):
    """`layer(*args, **kwargs)` with a Keras preprocessing layer's random draws taken from
    `generator`. Such layers fetch randomness through `_get_seed_generator`, with no public
    argument for a per-call seed; overriding it on the instance for one call is the only way
    to make parallel tf.data maps draw statelessly."""
    _check("call_with_seed_generator")
    object.__setattr__(layer, "_get_seed_generator", lambda *a, **k: generator)
    try:
        return layer(*args, **kwargs)
    finally:
        object.__delattr__(layer, "_get_seed_generator")


def learning_rate_object(optimizer: Any) -> Any:
    """The learning rate as the optimizer holds it (a schedule, a variable or a float);
    `optimizer.learning_rate` evaluates a schedule instead of returning it."""
    _check("learning_rate_object")
    return getattr(optimizer, "_learning_rate", None)


def mark_called(model: keras.Model) -> keras.Model:
    """Mark a Functional `model` as called, so `model.export(path, format="onnx")` works on a
    freshly built or loaded model. Its inputs define the export signature already (Keras'
    SavedModel, OpenVINO and LiteRT exporters take it from there), but Keras' ONNX exporter
    also requires the private `_called` flag that only a first call sets."""
    _check("mark_called")
    if isinstance(model, keras.Model) and getattr(model, "inputs", None):
        model._called = True
    return model


def non_max_suppression_padded(boxes, scores, max_output_size: int, iou_threshold: float,
                               score_threshold):
    """TensorFlow's greedy NMS kernel on one image, padded to `max_output_size`:
    `(indices, count)`. `tf.image.non_max_suppression_padded` runs another (tiled) algorithm,
    so the kernel itself is only reachable through `tf.raw_ops`."""
    import tensorflow as tf

    _check("non_max_suppression_padded", tensorflow=True)
    return tf.raw_ops.NonMaxSuppressionV4(
        boxes=boxes, scores=scores, max_output_size=max_output_size, iou_threshold=iou_threshold,
        score_threshold=score_threshold, pad_to_max_output_size=True)


def fit_under_multiworker(model: keras.Model) -> None:
    """Work around two faults of Keras 3's TensorFlow trainer under
    `MultiWorkerMirroredStrategy` (keras-team/keras#20585), both inside the private trainer:
    it builds the model from a first batch averaged across workers with an eager
    `strategy.reduce` that the collectives reject (here: build from this worker's first local
    replica batch), and averages scalar logs along an axis 0 they do not have (here: average
    across workers without an axis). A no-op unless `model` was made under that strategy."""
    import tensorflow as tf

    _check("fit_under_multiworker")
    strategy = getattr(model, "_distribute_strategy", None)
    if not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        return
    _patch_log_reduction()

    def _maybe_symbolic_build(self, iterator=None, data_batch=None):
        if iterator is not None:
            for _, _, it in iterator:
                batch = next(it)
                data_batch = tf.nest.map_structure(
                    lambda v: (
                        self.distribute_strategy.experimental_local_results(v)[0]
                        if isinstance(v, tf.distribute.DistributedValues)
                        else v
                    ),
                    batch,
                )
                break
        with self.distribute_strategy.scope():
            self._symbolic_build(data_batch=data_batch)

    model._maybe_symbolic_build = types.MethodType(_maybe_symbolic_build, model)


def _patch_log_reduction() -> None:
    import tensorflow as tf
    from keras.src.backend.tensorflow import trainer as tf_trainer

    original = tf_trainer.reduce_per_replica
    if getattr(original, "_krs_patched", False):
        return

    def reduce_per_replica(values, strategy, reduction="auto"):
        if reduction in ("auto", "mean") and isinstance(
            strategy, tf.distribute.MultiWorkerMirroredStrategy
        ):
            return tf.nest.map_structure(lambda v: strategy.reduce("MEAN", v, axis=None), values)
        return original(values, strategy, reduction)

    reduce_per_replica._krs_patched = True
    tf_trainer.reduce_per_replica = reduce_per_replica


# Keras' `model.export(format=...)` converters into other runtimes, by module.
_CONVERTERS = ("keras.src.export.onnx", "keras.src.export.openvino", "keras.src.export.litert")


def tracing_for_conversion() -> bool:
    """Whether Keras' `model.export` into ONNX, OpenVINO or LiteRT is tracing the model right
    now (a look up the Python stack for its converter modules).

    Their graphs run on no TensorFlow kernel, so a branch for TensorFlow's kernels only gets
    in the way (tf2onnx cannot convert a convolution inside a `tf.cond` branch). Keras passes
    no flag down to the layers, hence the stack.
    """
    _check("tracing_for_conversion")
    frame = sys._getframe(1)
    while frame is not None:
        if frame.f_globals.get("__name__", "").startswith(_CONVERTERS):
            return True
        frame = frame.f_back
    return False
