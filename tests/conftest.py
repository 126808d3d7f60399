"""Shared test fixtures: where the real data lives, and a quiet, seeded Keras."""

import importlib.util
import os
import subprocess
import sys
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
