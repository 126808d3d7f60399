"""The converted-weights cache is used only while the hash record beside it vouches for it: a
planted, edited, stale or half-written `converted/*.keras` is never returned for a name."""

from __future__ import annotations

import hashlib
import json
import os
import warnings

import keras
import numpy as np
import pytest

import keras_resnet_suite as krs
from keras_resnet_suite import models, weights
from tests.weights.published import publish_local


@pytest.fixture
def local_cifar(tmp_path, monkeypatch):
    """A resnet20 checkpoint "published" at a file:// URL with its true sha256 (akamaster
    layout, as the registry's `cifar10` weights), and the model it came from."""
    ckpt, source, _ = publish_local(tmp_path, monkeypatch, "resnet20", 91.0, resize=32, crop=32,
                                    classes=10, dataset="cifar10")
    return ckpt, source


def _same(model, source) -> bool:
    x = np.random.default_rng(1).uniform(0, 1, (1, 32, 32, 3)).astype("float32")
    return np.allclose(keras.ops.convert_to_numpy(model(x)),
                       keras.ops.convert_to_numpy(source(x)), atol=1e-5)


def _plant(path: str) -> None:
    """A classifier of the right architecture with other (random) weights."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    krs.build("resnet20", input_shape=(None, None, 3)).save(path)


def test_the_cache_name_and_record_carry_the_source_hash(local_cifar):
    ckpt, source = local_cifar
    assert _same(krs.ResNet20(weights="local"), source)
    path = weights.converted_path(ckpt)
    assert os.path.basename(path) == f"resnet20-local-{ckpt.file_hash[:16]}.keras"
    record = json.loads(open(path + ".json").read())
    assert record["source_hash"] == ckpt.file_hash
    assert record["sha256"] == hashlib.sha256(open(path, "rb").read()).hexdigest()


@pytest.mark.parametrize("case", ["planted_without_record", "edited_after_conversion",
                                  "stale_record", "garbled_record"])
def test_an_unvouched_cache_entry_is_never_used(case, local_cifar):
    ckpt, source = local_cifar
    path = weights.converted_path(ckpt)
    if case == "planted_without_record":
        _plant(path)
    else:
        krs.ResNet20(weights="local")  # converts and records
        if case == "edited_after_conversion":
            _plant(path)  # the record's sha256 no longer fits
        elif case == "stale_record":  # a conversion of another source file
            record = json.loads(open(path + ".json").read())
            record["source_hash"] = "0" * 64
            open(path + ".json", "w").write(json.dumps(record))
            _plant(path)
        else:
            open(path + ".json", "w").write("{not json")
            _plant(path)
    with pytest.warns(UserWarning, match=rf"{path}: not the verified conversion of "
                                         r"resnet20:local .*converting the verified source "
                                         "again"):
        model = krs.ResNet20(weights="local")
    assert _same(model, source)  # the planted weights were not used
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the new entry is vouched for: no warning
        assert _same(models.convert_checkpoint(ckpt), source)
