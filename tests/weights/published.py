"""A checkpoint "published" at a file:// URL with its true sha256, for registry and cache tests
(no network): the model it came from, the served file and its registry entry."""

from __future__ import annotations

import hashlib

import numpy as np

import keras_resnet_suite as krs
from keras_resnet_suite import convert, weights


def publish_local(tmp_path, monkeypatch, name: str, top1: float, **meta):
    """Register `(name, "local")` for a freshly built `name` with random BN statistics served
    from `tmp_path/server`, the weights cache in `tmp_path/cache`; `(ckpt, source, served)`."""
    monkeypatch.setenv("KRS_WEIGHTS_DIR", str(tmp_path / "cache"))
    source = krs.build(name, input_shape=(None, None, 3))
    for v in source.non_trainable_weights:
        v.assign(np.random.default_rng(0).uniform(0.5, 1.5, v.shape).astype("float32"))
    served = tmp_path / "server" / f"{name}-local.safetensors"
    served.parent.mkdir()
    convert.write_safetensors(weights.to_torchvision(source), served)
    digest = hashlib.sha256(served.read_bytes()).hexdigest()
    ckpt = weights.Checkpoint(name, "local", served.as_uri(), digest, "sha256", "torchvision",
                              "torch", top1, **meta)
    monkeypatch.setitem(weights.CHECKPOINTS, (name, "local"), ckpt)
    return ckpt, source, served
