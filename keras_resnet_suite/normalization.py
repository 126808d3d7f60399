"""Batch normalisation of the ResNet blocks: Keras' BN computed with TensorFlow's fused kernel,
and a frozen BN for detection fine-tuning (detectron2's `FrozenBatchNorm2d`)."""

from __future__ import annotations

import contextlib
import functools
import threading
from collections.abc import Callable

import keras
from keras import layers

from keras_resnet_suite import compat, runtime
from keras_resnet_suite.composite import PACKAGE

NORMS = ("batch", "frozen")


class _Tracing(threading.local):
    batch_of_one = False  # set while tracing the batch-of-one branch of `batch_of_one_branch`
    portable = False  # set while tracing an export (`portable_batch_branch`)


_tracing = _Tracing()


@keras.saving.register_keras_serializable(PACKAGE)
class BatchNormalization(layers.BatchNormalization):
    """`keras.layers.BatchNormalization` computed with TensorFlow's fused kernel.

    Keras 3 normalises with separate moment, subtract and scale ops (and as many again in the
    backward pass); TensorFlow's `FusedBatchNormV3` does each pass in one kernel, and in
    inference its graph optimiser fuses it into the preceding convolution. Same results and
    the same moving-statistics rule (biased batch variance); every other case (other
    backends, masks, renorm, synchronized BN) runs Keras' own code.

    A single image with oneDNN on an AVX2 CPU is one multiply-add instead
    (`_affine_inference`), also where the batch size is only known at run time
    (`batch_of_one_branch`).
    """

    def call(self, inputs, training=None, mask=None):
        if self._fusable(inputs, mask):
            return self._fused_call(inputs, bool(training and self.trainable))
        return super().call(inputs, training=training, mask=mask)

    def _fusable(self, inputs, mask) -> bool:
        return (keras.backend.backend() == "tensorflow" and mask is None
                and not getattr(self, "renorm", False)  # Keras 3.12 has no renorm
                and not self.synchronized and self.center and self.scale
                and len(inputs.shape) == 4 and self.axis in (-1, 3))

    def _fused_call(self, inputs, training: bool):
        import tensorflow as tf

        # The kernel takes float16 / bfloat16 activations with float32 statistics as they
        # are: casting them to float32 and back cost mixed_bfloat16 training 18 % of its
        # ResNet-50 step on a CPU (1.84 -> 1.56 s at batch 16, paired).
        low = keras.backend.standardize_dtype(inputs.dtype) in ("float16", "bfloat16")
        x = inputs if low else tf.cast(inputs, "float32")
        gamma, beta = tf.cast(self.gamma, "float32"), tf.cast(self.beta, "float32")
        if not training and (_tracing.batch_of_one
                             or (inputs.shape[0] == 1 and _affine_inference())):
            scale = gamma * tf.math.rsqrt(tf.cast(self.moving_variance, "float32")
                                          + self.epsilon)
            shift = beta - tf.cast(self.moving_mean, "float32") * scale
            return tf.cast(tf.cast(x, "float32") * scale + shift, self.compute_dtype)
        # The op clamps epsilon to >= 1.001e-5 (a cuDNN limit): 1e-5 moves results by ~1e-8.
        if not training:
            y, _, _ = tf.compat.v1.nn.fused_batch_norm(
                x, gamma, beta, mean=tf.cast(self.moving_mean, "float32"),
                variance=tf.cast(self.moving_variance, "float32"), epsilon=self.epsilon,
                is_training=False)
            return tf.cast(y, self.compute_dtype)
        y, mean, variance = tf.compat.v1.nn.fused_batch_norm(
            x, gamma, beta, epsilon=self.epsilon, is_training=True)
        # The op returns the unbiased (n / (n - 1)) variance; Keras tracks the biased one.
        n = tf.cast(tf.size(x) // tf.shape(x)[-1], "float32")
        variance = variance * (n - 1.0) / tf.maximum(n, 1.0)
        m = self.momentum
        self.moving_mean.assign(self.moving_mean * m + tf.cast(mean, self.moving_mean.dtype)
                                * (1.0 - m))
        self.moving_variance.assign(self.moving_variance * m
                                    + tf.cast(variance, self.moving_variance.dtype) * (1.0 - m))
        return tf.cast(y, self.compute_dtype)


@functools.cache
def _affine_inference() -> bool:
    """Whether inference BN on a batch of one runs as `x * scale + shift` rather than
    `FusedBatchNormV3`: with oneDNN on a CPU without AVX-512.

    There TensorFlow fuses an inference `FusedBatchNormV3` into the convolution before it as
    four binary post-ops, and for a single image oneDNN picks its GEMM convolution, which runs
    those ~100x slower than the convolution itself: ResNet-50 took 1.33 s per image instead of
    0.11 s. A multiply-add is not fused that way. Everywhere else the fused kernel is faster
    (paired, same process: ResNet-50 at batch 16 0.86x the time of the multiply-add under an
    AVX2 cap, 0.91x with AVX-512; CIFAR ResNet-56 at batch 1000 0.84x), so it stays.
    """
    return runtime.onednn_enabled() and not runtime.onednn_has_avx512()


def batch_of_one_branch(fn: Callable, x, training=None):
    """`fn(x)`, traced twice where the batch size is known only at run time and one image would
    take another BN path (`_affine_inference`): `tf.cond` on the batch size picks the trace.

    A SavedModel signature, `model.predict` and Keras' `model.export` trace with a `None` batch,
    so without this a served single image took the fused path that oneDNN's GEMM convolution
    runs ~100x slower on AVX2 (ResNet-50 under an AVX2 cap: 1.3 s instead of 0.11 s per image).
    The branch wraps whole stages, not single BN layers: inside it the convolution and its BN
    stay adjacent, so TensorFlow still fuses them for larger batches (a branch per BN cost
    batch 16 ~40 %; per stage it costs nothing measurable). Elsewhere (other backends,
    training, a static batch, no oneDNN on AVX2, Keras exporting to another runtime) it is
    `fn(x)`; our SavedModel exports always branch (`portable_batch_branch`).
    """
    if (keras.backend.backend() != "tensorflow" or training or _tracing.batch_of_one
            or x.shape[0] is not None or not (_tracing.portable or _affine_inference())
            or compat.tracing_for_conversion()):
        return fn(x)
    import tensorflow as tf

    def one():
        with _batch_of_one():
            return fn(x)

    return tf.cond(tf.equal(tf.shape(x)[0], 1), one, lambda: fn(x))


def portable_batch_branch():
    """Trace the batch-of-one branch whatever this machine's rule: an exported graph is served
    on CPUs other than the one that wrote it (an AVX-512 build machine, AVX2 servers)."""
    return _tracing_flag("portable")


def _batch_of_one():
    return _tracing_flag("batch_of_one")


@contextlib.contextmanager
def _tracing_flag(name: str):
    setattr(_tracing, name, True)
    try:
        yield
    finally:
        setattr(_tracing, name, False)


@keras.saving.register_keras_serializable(PACKAGE)
class FrozenBatchNormalization(BatchNormalization):
    """Batch norm that always uses its stored statistics and has no trainable weights.

    Detection fine-tuning uses tiny per-GPU batches, whose statistics are useless
    (detectron2's `FrozenBatchNorm2d`). Unlike `trainable=False` on a plain BN, this
    cannot be switched back on by `model.trainable = True`.
    """

    @property
    def trainable(self) -> bool:
        return False

    @trainable.setter
    def trainable(self, value: bool) -> None:
        pass  # frozen by definition

    def call(self, inputs, training=None, mask=None):
        return super().call(inputs, training=False, mask=mask)


def norm_layer(norm: str, name: str, epsilon: float, momentum: float, zero_init: bool = False):
    """A batch-norm layer of the requested kind; `zero_init` starts gamma at 0 (Goyal et al.)."""
    if norm not in NORMS:
        raise ValueError(f"norm must be one of {NORMS}, got {norm!r}")
    cls = FrozenBatchNormalization if norm == "frozen" else BatchNormalization
    return cls(epsilon=epsilon, momentum=momentum, name=name,
               gamma_initializer="zeros" if zero_init else "ones")
