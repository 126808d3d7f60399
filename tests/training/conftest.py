"""Helpers for the training tests: the subprocess worker, loaded as a module too."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import load_script

WORKER = Path(__file__).with_name("worker.py")


@pytest.fixture(scope="session")
def worker():
    return load_script("krs_training_worker", WORKER)


@pytest.fixture
def worker_path():
    return WORKER


@pytest.fixture
def run_worker():
    return _run_worker


def _run_worker(args, env=None, timeout=150):
    """Run worker.py to completion (killed on timeout); returns the CompletedProcess."""
    proc = subprocess.Popen(
        [sys.executable, str(WORKER), *map(str, args)],
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", **(env or {})},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, _ = proc.communicate()
        pytest.fail(f"worker {args} timed out after {timeout}s:\n{out[-3000:]}")
    assert proc.returncode == 0, f"worker {args} failed:\n{out[-3000:]}"
    return out
