"""Helpers for the detection tests: compile a function the way the active backend does."""

import keras
import pytest


def compile_fn(fn):
    """`fn` under `jax.jit` or `tf.function` (whichever backend is active), else as is."""
    backend = keras.backend.backend()
    if backend == "jax":
        import jax

        return jax.jit(fn)
    if backend == "tensorflow":
        import tensorflow as tf

        return tf.function(fn, jit_compile=False)
    return fn


@pytest.fixture
def jit():
    return compile_fn

