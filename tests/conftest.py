"""Shared test fixtures: where the real data lives, a quiet, seeded Keras, and tiny CIFAR
releases written on the fly in every official format."""

import importlib.util
import io
import os
import pickle
import subprocess
import sys
import tarfile
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

REPO = Path(__file__).resolve().parents[1]


def shared_data_dir() -> Path | None:
    """`$KRS_DATA_DIR`, else `../shared/data` beside the repository; None when absent."""
    env = os.environ.get("KRS_DATA_DIR")
    path = Path(env) if env else REPO.parent / "shared" / "data"
    return path if path.is_dir() else None


def png_bytes(image: np.ndarray) -> bytes:
    """`image` (uint8 [H, W, 3]) encoded as PNG, what an upload to a bytes signature holds."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    return buffer.getvalue()


def load_script(name: str, path: Path) -> ModuleType:
    """A script that is not in a package (a reference generator beside its stored outputs,
    a worker) as a module."""
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def stored_or_live(library: str = "torchvision") -> list:
    """Parameters of a reference fixture: the stored reference in every pass, and the live
    one (recomputed by the reference library) in the TensorFlow pass where it is installed."""
    return ["stored", pytest.param("live", marks=[
        pytest.mark.tf_only,  # the JAX pass has the stored reference; starting torch is slow
        pytest.mark.skipif(importlib.util.find_spec(library) is None,
                           reason=f"{library} not installed: the stored reference is checked")])]


def reference_npz(kind: str, stored: Path, script: Path, tmp_path_factory):
    """The arrays of a reference: `stored` (kind "stored"), or written afresh by its generator
    `script` in a subprocess (torch and TensorFlow crash in one process)."""
    if kind == "stored":
        return np.load(stored)
    out = tmp_path_factory.mktemp(stored.stem) / stored.name
    proc = subprocess.run([sys.executable, str(script), str(out)], capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return np.load(out)


@pytest.fixture
def shared_data() -> Path:
    """The real data sets (see ../shared/data/README.md); skips the test when absent."""
    path = shared_data_dir()
    if path is None:
        pytest.skip("real data not found: set KRS_DATA_DIR or place it at ../shared/data")
    return path


@pytest.fixture(autouse=True)
def _seed():
    import keras

    keras.utils.set_random_seed(0)
    yield
    # Without the full `gc.collect()` Keras adds by default: with the session's cached models
    # alive it took 1-2 s per test, 390 s of a 24-minute run; Python's own collector still
    # reclaims the cycles of the models a test built.
    keras.backend.clear_session(free_memory=False)



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
