"""One built model per (name, options) for the whole session: building the 1202-layer
network dominates the run time, and counting needs no fresh weights."""

import functools

import pytest

import keras_resnet_suite as krs


@functools.cache
def _zoo(name: str, **kwargs):
    return krs.build(name, input_shape=(None, None, 3), **kwargs)


@pytest.fixture(scope="session")
def zoo():
    """`zoo(name, **build_kwargs)`: a cached model with a dynamic input size."""
    return _zoo
