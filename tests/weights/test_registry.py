"""Published-checkpoint registry: metadata, download once + verify + cache + convert once,
refusal of a bad hash, the offline message, and preprocessing that travels with the weights."""

import os

import keras
import numpy as np
import pytest

import keras_resnet_suite as krs
from keras_resnet_suite import weights
from keras_resnet_suite.preprocessing import preprocess_input
from tests.weights.published import publish_local


def _np(x):
    return keras.ops.convert_to_numpy(x)


@pytest.mark.jax
def test_registry_metadata_is_complete_and_consistent():
    archs = set(krs.available_models())
    for (arch, tag), ckpt in weights.CHECKPOINTS.items():
        assert arch in archs and tag == ckpt.tag
        assert ckpt.url.startswith("https://") and ckpt.filename in ckpt.url
        int(ckpt.file_hash, 16)  # hexadecimal
        assert ckpt.hash_algorithm in ("sha256", "md5") and ckpt.dataset in ("imagenet", "cifar10")
        assert 60 < ckpt.top1 < (95 if ckpt.dataset == "cifar10" else 90)
        if ckpt.layout == "torchvision":  # torchvision names files after their sha256 prefix
            assert ckpt.filename.endswith(f"-{ckpt.file_hash}.pth")
            assert ckpt.preprocessing == "torch" and ckpt.build_options["conv_bias"] is False
    for arch in ("resnet18", "resnet34", "resnet50", "resnet101", "resnet152",
                 "resnext50_32x4d", "resnext101_32x8d", "wide_resnet50_2"):
        assert weights.get_checkpoint(arch, "imagenet").tag == "torchvision-v1"
    assert weights.get_checkpoint("resnet50", "torchvision-v2").top1 == pytest.approx(80.858)
    assert weights.get_checkpoint("resnet50", "torchvision-v2").resize == 232
    v2 = weights.get_checkpoint("resnet50v2", "imagenet")
    assert (v2.tag, v2.preprocessing, v2.build_options["downsample"]) == ("keras", "tf", "last")
    assert weights.get_checkpoint("resnet101", "keras").preprocessing == "caffe"
    with pytest.raises(ValueError, match="available: .*torchvision-v2"):
        weights.get_checkpoint("resnet50", "torchvision-v3")
    with pytest.raises(ValueError, match="no such checkpoint for resnet20"):
        krs.build("resnet20", weights="imagenet")


@pytest.fixture
def local_checkpoint(tmp_path, monkeypatch):
    """A resnet18 checkpoint "published" at a file:// URL, with its true sha256."""
    return publish_local(tmp_path, monkeypatch, "resnet18", 69.758)


def test_named_weights_download_once_convert_once_and_load(local_checkpoint):
    ckpt, source, served = local_checkpoint
    x = np.random.default_rng(1).uniform(0, 255, (1, 64, 64, 3)).astype("float32")
    model = krs.ResNet18(weights="local", input_shape=(64, 64, 3))
    np.testing.assert_allclose(_np(model(x)), _np(source(x)), atol=1e-6)
    assert os.path.exists(weights.converted_path(ckpt))  # the conversion is cached as .keras
    # Second use: neither the download nor the original file is needed any more.
    served.unlink()
    os.remove(os.path.join(weights.cache_dir(), "downloads", ckpt.filename))
    backbone = krs.backbones.ResNet18(weights="local", return_levels=("C5",))
    np.testing.assert_allclose(_np(backbone(x)["C5"]),
                               _np(krs.backbones.from_classifier(source)(x)["C5"]), atol=1e-6)
    # The checkpoint's preprocessing travels with the model.
    assert model.preprocessing == backbone.preprocessing == "torch"
    np.testing.assert_allclose(_np(model.preprocess_input(x)),
                               _np(preprocess_input(x, "torch")))
    np.testing.assert_allclose(_np(preprocess_input(x, model)), _np(preprocess_input(x, ckpt)))
    # No top, and options that add no weights (stochastic depth, frozen BN): same features.
    headless = krs.ResNet18(weights="local", include_top=False, pooling="avg",
                            drop_path_rate=0.1, norm="frozen", input_shape=(64, 64, 3))
    pooled = _np(krs.backbones.from_classifier(source)(x)["C5"]).mean(axis=(1, 2))
    np.testing.assert_allclose(_np(headless(x)), pooled, atol=1e-5)
    with pytest.raises(ValueError, match="1000-class classifier; got classes=10"):
        krs.ResNet18(weights="local", classes=10)


def test_hash_mismatch_is_refused_and_names_the_file(local_checkpoint, monkeypatch):
    ckpt, _, _ = local_checkpoint
    bad = weights.Checkpoint(**{**ckpt.__dict__, "file_hash": "0" * 64})
    monkeypatch.setitem(weights.CHECKPOINTS, ("resnet18", "local"), bad)
    path = os.path.join(weights.cache_dir(), "downloads", "resnet18-local.safetensors")
    with pytest.raises(ValueError, match=f"{path}: sha256 [0-9a-f]{{64}} does not match 0000"):
        krs.ResNet18(weights="local")


def test_offline_error_says_which_file_to_place_where(local_checkpoint, monkeypatch, tmp_path):
    ckpt, _, served = local_checkpoint
    served.unlink()  # the "server" is unreachable
    expected = os.path.join(weights.cache_dir(), "downloads", ckpt.filename)
    with pytest.raises(OSError, match=f"could not download {ckpt.url}.*place it at {expected}"):
        krs.ResNet18(weights="local")


@pytest.mark.jax
def test_preprocess_input_modes_by_hand():
    pixel = np.array([[[[10.0, 20.0, 30.0]]]], "float32")  # RGB
    np.testing.assert_allclose(_np(preprocess_input(pixel, "caffe"))[0, 0, 0],
                               [30 - 103.939, 20 - 116.779, 10 - 123.68], rtol=1e-6)  # BGR
    np.testing.assert_allclose(_np(preprocess_input(pixel, "tf"))[0, 0, 0],
                               [10 / 127.5 - 1, 20 / 127.5 - 1, 30 / 127.5 - 1], rtol=1e-6)
    np.testing.assert_allclose(_np(preprocess_input(pixel, "torch"))[0, 0, 0],
                               [(10 / 255 - 0.485) / 0.229, (20 / 255 - 0.456) / 0.224,
                                (30 / 255 - 0.406) / 0.225], rtol=1e-5)
    # keras.applications' own functions agree for its checkpoints.
    img = np.random.default_rng(0).uniform(0, 255, (2, 4, 4, 3)).astype("float32")
    np.testing.assert_allclose(
        _np(preprocess_input(img, weights.get_checkpoint("resnet50", "keras"))),
        keras.applications.resnet.preprocess_input(img.copy()), atol=1e-4)
    np.testing.assert_allclose(
        _np(preprocess_input(img, weights.get_checkpoint("resnet50v2", "keras"))),
        keras.applications.resnet_v2.preprocess_input(img.copy()), atol=1e-5)
    with pytest.raises(ValueError, match="carries no preprocessing"):
        preprocess_input(img, krs.build("resnet18", input_shape=(32, 32, 3),
                                        depths=(1, 1, 1, 1)))
    with pytest.raises(ValueError, match="one of"):
        preprocess_input(img, "bgr")
