"""The published CIFAR-10 ResNets (akamaster/pytorch_resnet_cifar10, legacy torch.save files)
in this library: on all 10,000 test images of the shared JPEG copy, ResNet-20 and ResNet-56
give the reference PyTorch model's logits (max abs diff <= 1e-4) and the same top-1 error;
ResNet-20 through `keras-resnet-suite evaluate`, ResNet-56 through the Python API. Plus the
registry entries: `weights="cifar10"` verifies, converts and carries its preprocessing."""

import functools
import os
import re
import shutil

import keras
import numpy as np
import pytest

import keras_resnet_suite as krs
from keras_resnet_suite import cli, weights
from keras_resnet_suite.data import load_cifar_arrays

FOLDER = "cifar-resnet-checkpoints"
FILES = {"resnet20": "resnet20-12fca82f.th", "resnet56": "resnet56-4bfd9763.th"}
REFERENCE_ERROR = {"resnet20": 0.1897, "resnet56": 0.1680}  # the reference on this JPEG copy


@functools.lru_cache(maxsize=1)
def _test_split(archive: str) -> tuple[np.ndarray, np.ndarray]:
    """The 10,000 test images in class order, files sorted by name (the reference's order);
    decoded once into the data cache by the library's CIFAR loader."""
    _, _, images, labels, names, _ = load_cifar_arrays(archive)
    assert names[0] == "airplane" and names[-1] == "truck" and len(images) == 10_000
    return images, labels


def _reference(shared_data, arch: str) -> np.ndarray:
    return np.load(shared_data / FOLDER / f"{arch}_reference_logits_test.npy")


def test_resnet20_through_the_cli_gives_the_reference_logits(shared_data, tmp_path, capsys):
    archive = str(shared_data / "cifar10-jpeg.tar.gz")
    _, labels = _test_split(archive)
    logits_file = tmp_path / "logits.npy"
    assert cli.main(["evaluate", "--model", "resnet20", "--weights",
                     str(shared_data / FOLDER / FILES["resnet20"]), "--data-dir", archive,
                     "--batch-size", "1000", "--save-logits", str(logits_file)]) == 0
    row = re.search(r"center\s+(\d+)\s+([\d.]+)%", capsys.readouterr().out)
    assert row and int(row[1]) == 10_000 and row[2] == "18.97"
    logits, reference = np.load(logits_file), _reference(shared_data, "resnet20")
    assert logits.shape == (10_000, 10)
    assert np.abs(logits - reference).max() <= 1e-4
    assert np.array_equal(logits.argmax(1), reference.argmax(1))
    assert np.mean(logits.argmax(1) != labels) == REFERENCE_ERROR["resnet20"]
    with pytest.raises(SystemExit, match="--run RUN, or --model, --weights, --data-dir"):
        cli.main(["evaluate", "--run", str(tmp_path), "--weights", "x.th"])
    with pytest.raises(SystemExit, match="--weights needs --model and --data-dir"):
        cli.main(["evaluate", "--model", "resnet20", "--weights", "x.th"])
    with pytest.raises(SystemExit, match="the CIFAR models, not resnet50"):
        cli.main(["evaluate", "--model", "resnet50", "--weights", "x.th", "--data-dir", archive])


def test_resnet56_through_the_api_gives_the_reference_logits(shared_data):
    images, labels = _test_split(str(shared_data / "cifar10-jpeg.tar.gz"))
    model = krs.ResNet56(weights=str(shared_data / FOLDER / FILES["resnet56"]),
                         classifier_activation=None)
    # The file is the registered checkpoint (name and hash): it carries its preprocessing.
    assert model.preprocessing == "torch" and model.checkpoint.dataset == "cifar10"
    logits = model.predict(model.preprocess_input(images), batch_size=1000, verbose=0)
    reference = _reference(shared_data, "resnet56")
    assert np.abs(logits - reference).max() <= 1e-4
    assert np.array_equal(logits.argmax(1), reference.argmax(1))
    assert np.mean(logits.argmax(1) != labels) == REFERENCE_ERROR["resnet56"]


def test_registry_lists_all_six_published_cifar_checkpoints():
    published = {"resnet20": ("12fca82f", 8.27), "resnet32": ("d509ac18", 7.37),
                 "resnet44": ("014dd654", 6.90), "resnet56": ("4bfd9763", 6.61),
                 "resnet110": ("1d1ed7c2", 6.32), "resnet1202": ("f3b1deed", 6.18)}
    for arch, (prefix, error) in published.items():
        ckpt = weights.get_checkpoint(arch, "cifar10")
        assert ckpt is weights.get_checkpoint(arch, "akamaster")
        assert ckpt.url == ("https://github.com/akamaster/pytorch_resnet_cifar10/raw/master/"
                            f"pretrained_models/{arch}-{prefix}.th")
        assert ckpt.file_hash.startswith(prefix) and ckpt.hash_algorithm == "sha256"
        assert ckpt.top1 == pytest.approx(100 - error) and ckpt.classes == 10
        assert (ckpt.preprocessing, ckpt.dataset, ckpt.crop) == ("torch", "cifar10", 32)
        assert weights.available_weights(arch) == ["cifar10", "akamaster"]
    assert len(weights.get_checkpoint("resnet56", "cifar10").file_hash) == 64  # checked here
    with pytest.raises(ValueError, match="no such checkpoint for resnet50; available: "
                                         r"\['imagenet'"):
        weights.get_checkpoint("resnet50", "cifar10")


def test_cifar10_weights_by_name_verify_convert_and_carry_preprocessing(
        shared_data, tmp_path, monkeypatch):
    monkeypatch.setenv("KRS_WEIGHTS_DIR", str(tmp_path))
    downloads = tmp_path / "downloads"
    downloads.mkdir()
    source = shared_data / FOLDER / FILES["resnet20"]
    os.symlink(source, downloads / FILES["resnet20"])  # as if downloaded earlier
    model = krs.ResNet20(weights="cifar10")
    assert model.preprocessing == "torch" and os.path.exists(
        weights.converted_path(weights.get_checkpoint("resnet20", "cifar10")))
    direct = krs.build("resnet20", weights=str(source))
    for a, b in zip(model.weights, direct.weights, strict=True):
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(a),
                                      keras.ops.convert_to_numpy(b))
    # A file under a published name but with other contents is refused by its hash.
    shutil.copy(source, downloads / FILES["resnet56"])
    with pytest.raises(ValueError, match=r"resnet56-4bfd9763\.th: sha256 12fca82f[0-9a-f]+ does"
                                         " not match 4bfd9763"):
        krs.ResNet56(weights="cifar10")
    # Offline: the message names the URL and where to put the file.

    def offline(*args, **kwargs):
        raise OSError("network unreachable")

    monkeypatch.setattr(keras.utils, "get_file", offline)
    expected = os.path.join(str(downloads), "resnet32-d509ac18.th")
    with pytest.raises(OSError, match=r"could not download https://github\.com/akamaster/"
                                      r"pytorch_resnet_cifar10/raw/master/pretrained_models/"
                                      rf"resnet32-d509ac18\.th .*place it at {re.escape(expected)}"):
        krs.ResNet32(weights="cifar10")
