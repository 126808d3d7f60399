"""Distribution helpers: strategy by name, global/per-replica batch checks, linear LR scaling,
logical CPU devices for tests, and `keras.distribution.DataParallel` under JAX."""

from __future__ import annotations

import json
import os

import keras

from keras_resnet_suite import compat

STRATEGIES = ("none", "mirrored", "multiworker")


def scale_learning_rate(base_lr: float, global_batch_size: int, base_batch_size: int) -> float:
    """Linear scaling rule (Goyal et al. 2017): lr = base_lr * global_batch / base_batch."""
    if global_batch_size <= 0 or base_batch_size <= 0:
        raise ValueError(
            f"batch sizes must be positive, got {global_batch_size}, {base_batch_size}"
        )
    return base_lr * global_batch_size / base_batch_size


def per_replica_batch(global_batch_size: int, num_replicas: int) -> int:
    """The per-replica batch; a global batch the replicas cannot share equally is an error
    (silent rounding would change the recipe's effective batch and learning rate)."""
    if num_replicas <= 0:
        raise ValueError(f"num_replicas must be positive, got {num_replicas}")
    if global_batch_size % num_replicas:
        lo = global_batch_size - global_batch_size % num_replicas
        raise ValueError(
            f"global batch size {global_batch_size} is not divisible by the {num_replicas} "
            f"replicas; use a multiple of {num_replicas}, e.g. {lo or num_replicas} or "
            f"{lo + num_replicas}"
        )
    return global_batch_size // num_replicas


def set_logical_cpus(n: int) -> None:
    """Split the host CPU into `n` logical devices (for MirroredStrategy tests); must run
    before TensorFlow initialises its devices."""
    import tensorflow as tf

    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * n)


def get_strategy(name: str | None = "none"):
    """`tf.distribute` strategy for `name`: "none" (default strategy), "mirrored" (all local
    GPUs, else all logical CPUs) or "multiworker" (cluster from `TF_CONFIG`)."""
    import tensorflow as tf

    name = (name or "none").lower()
    if name == "none":
        return tf.distribute.get_strategy()
    if name == "mirrored":
        gpus = tf.config.list_logical_devices("GPU")
        devices = [d.name for d in gpus] or [d.name for d in tf.config.list_logical_devices("CPU")]
        return tf.distribute.MirroredStrategy(devices)
    if name == "multiworker":
        if "TF_CONFIG" not in os.environ:
            raise ValueError(
                "strategy 'multiworker' needs the TF_CONFIG environment variable "
                "(cluster spec and this worker's task)"
            )
        json.loads(os.environ["TF_CONFIG"])  # a malformed TF_CONFIG fails here, clearly
        return tf.distribute.MultiWorkerMirroredStrategy()
    raise ValueError(f"unknown strategy {name!r}; valid: {', '.join(STRATEGIES)}")


def is_chief() -> bool:
    """Whether this process writes checkpoints: worker 0 / the chief in `TF_CONFIG`, or alone."""
    cfg = json.loads(os.environ.get("TF_CONFIG", "{}") or "{}")
    task = cfg.get("task", {})
    if not task:
        return True
    return task.get("type") == "chief" or (
        task.get("type") == "worker"
        and int(task.get("index", 0)) == 0
        and "chief" not in cfg.get("cluster", {})
    )


def data_parallel(devices: list | None = None):
    """JAX backend: shard every batch over `devices` (default: all) with
    `keras.distribution.DataParallel` and make it the global distribution."""
    if keras.backend.backend() != "jax":
        raise RuntimeError(
            "keras.distribution.DataParallel needs KERAS_BACKEND=jax "
            f"(running {keras.backend.backend()}); "
            "under TensorFlow use get_strategy('mirrored')"
        )
    devices = devices or keras.distribution.list_devices()
    dist = keras.distribution.DataParallel(devices=devices)
    keras.distribution.set_distribution(dist)
    return dist


def enable_multiworker_fit(model) -> None:
    """Let `model.fit` run under `MultiWorkerMirroredStrategy` with Keras 3.

    Keras 3's TF trainer builds the model from a first batch that it averages across workers
    with an eager `strategy.reduce` on the whole (x, y) structure, which the collective
    implementation rejects (keras-team/keras#20585). Only shapes matter there, so this
    instance-level override builds from this worker's first local replica batch instead.
    Its per-step log reduction also averages scalar logs along an axis 0 they do not have;
    they are averaged across workers without an axis instead. Both reach into the private
    trainer, so they live in `keras_resnet_suite.compat`. A no-op for models not created
    under a multi-worker strategy.
    """
    compat.fit_under_multiworker(model)
