"""Parameter and multiply-add counting (the paper's "FLOPs" in Table 1 are multiply-adds)."""

from __future__ import annotations

import contextlib
import math

import keras
import numpy as np

from . import compat

_STATISTICS = ("moving_mean", "moving_variance")


def count_params(model: keras.Model, trainable_only: bool = False,
                 include_statistics: bool = False) -> int:
    """Number of parameters as papers and torchvision count them.

    Batch-norm running statistics are buffers, not parameters, so they are left out
    unless `include_statistics` (Keras' own `model.count_params()` counts them).
    """
    weights = model.trainable_weights if trainable_only else model.weights
    return int(sum(math.prod(w.shape) for w in weights
                   if include_statistics or not w.path.endswith(_STATISTICS)))


@contextlib.contextmanager
def _recording(records: list):
    """Temporarily record (layer, input shape, output shape) of every Conv2D and Dense call.

    Works through nested layers (our blocks and stages) and for any Keras model, which a
    walk over `model.layers` cannot.
    """
    def wrap(original):
        def call(self, inputs, *args, **kwargs):
            outputs = original(self, inputs, *args, **kwargs)
            records.append((self, tuple(inputs.shape), tuple(outputs.shape)))
            return outputs
        return call

    recorded = (keras.layers.Conv2D, keras.layers.DepthwiseConv2D, keras.layers.Dense)
    with compat.wrapped_calls(dict.fromkeys(recorded, wrap)):
        yield records


def layer_macs(layer, input_shape: tuple, output_shape: tuple) -> int:
    """Multiply-adds of one call of a Conv2D, DepthwiseConv2D or Dense layer for one image."""
    if isinstance(layer, keras.layers.DepthwiseConv2D):  # one k x k filter per channel
        return int(math.prod(output_shape[1:]) * math.prod(layer.kernel_size))
    if isinstance(layer, keras.layers.Conv2D):
        kh, kw = layer.kernel_size
        per_output = kh * kw * input_shape[-1] // layer.groups
        return int(math.prod(output_shape[1:]) * per_output)
    return int(math.prod(output_shape[1:]) * input_shape[-1])


def count_macs(model: keras.Model, input_shape: tuple | None = None) -> int:
    """Multiply-adds of convolutions and fully connected layers for one image.

    Runs one forward pass of a single zero image of `input_shape` (H, W, C), by default
    the model's own input shape.
    """
    input_shape = tuple(input_shape or model.input_shape[1:])
    if any(d is None for d in input_shape):
        raise ValueError(f"count_macs needs a fully defined input_shape, got {input_shape}")
    with _recording([]) as records:
        model(np.zeros((1, *input_shape), "float32"), training=False)
    return sum(layer_macs(*r) for r in records)
