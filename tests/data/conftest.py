"""Tiny CIFAR releases written on the fly, in every official format."""

import pickle
import tarfile

import numpy as np
import pytest


def _fake_cifar(n_per_batch=6, num_classes=10, seed=0):
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, size=(6 * n_per_batch, 32, 32, 3), dtype=np.uint8)
    labels = rng.integers(0, num_classes, size=6 * n_per_batch)
    return images, labels


def _planes(images):
    return images.transpose(0, 3, 1, 2).reshape(len(images), -1)


@pytest.fixture
def fake_cifar():
    return _fake_cifar()


@pytest.fixture
def binary_release(tmp_path, fake_cifar):
    """cifar-10-batches-bin with 5 train batches and 1 test batch of 6 images each."""
    images, labels = fake_cifar
    d = tmp_path / "cifar-10-batches-bin"
    d.mkdir()
    chunks = np.split(np.arange(len(images)), 6)
    names = [f"data_batch_{i}.bin" for i in range(1, 6)] + ["test_batch.bin"]
    for name, idx in zip(names, chunks, strict=True):
        rec = np.concatenate([labels[idx, None].astype(np.uint8), _planes(images[idx])], axis=1)
        rec.tofile(d / name)
    (d / "batches.meta.txt").write_text("\n".join(f"c{i}" for i in range(10)) + "\n")
    return tmp_path


@pytest.fixture
def pickle_release(tmp_path, fake_cifar):
    """cifar-10-batches-py with 5 train batches and 1 test batch of 6 images each."""
    images, labels = fake_cifar
    d = tmp_path / "cifar-10-batches-py"
    d.mkdir()
    chunks = np.split(np.arange(len(images)), 6)
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    for name, idx in zip(names, chunks, strict=True):
        batch = {b"data": _planes(images[idx]), b"labels": [int(v) for v in labels[idx]]}
        with open(d / name, "wb") as f:
            pickle.dump(batch, f)
    with open(d / "batches.meta", "wb") as f:
        pickle.dump({b"label_names": [f"p{i}".encode() for i in range(10)]}, f)
    return tmp_path


@pytest.fixture
def pickle_archive(tmp_path, pickle_release):
    path = tmp_path / "cifar-10-python.tar.gz"
    with tarfile.open(path, "w:gz") as tar:
        tar.add(pickle_release / "cifar-10-batches-py", arcname="cifar-10-batches-py")
    return path
