"""A quiet console: both CLIs print their own lines only (TensorFlow's C++ logging hidden,
`--verbose` brings it back), and their --help texts are complete."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from keras_resnet_suite import console

REPO = Path(__file__).resolve().parents[2]
TF_LINE = re.compile(r"^[IWEF]0000 |oneDNN|cuInit|absl::InitializeLog|cpu_feature_guard|"
                     r"rebuild TensorFlow", re.MULTILINE)


def _cli(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO), "TF_CPP_MIN_LOG_LEVEL": "2"}  # as CI sets
    env.pop(console.LOGS_ENV, None)
    return subprocess.run([sys.executable, *args], env=env, cwd=REPO, capture_output=True,
                          text=True, timeout=300)


@pytest.mark.parametrize("args, message", [
    (["-m", "detection", "predict", "missing.jpg", "--model", "nothing"],
     "error: --model nothing does not exist"),
    (["-m", "keras_resnet_suite", "evaluate", "--run", "nothing"],
     "error: nothing is not a run directory"),
])
def test_a_command_prints_no_tensorflow_lines(args, message):
    """Both commands import TensorFlow (its module-level log lines) and then fail on bad
    input: stderr holds exactly our one line."""
    proc = _cli(*args)
    assert proc.returncode != 0
    assert not TF_LINE.search(proc.stdout + proc.stderr), proc.stderr[-2000:]
    assert proc.stderr.strip().splitlines() == [proc.stderr.strip()]
    assert proc.stderr.startswith(message), proc.stderr


def test_verbose_brings_tensorflows_lines_back():
    proc = _cli("-m", "detection", "--verbose", "predict", "missing.jpg", "--model", "nothing")
    assert proc.returncode == 2 and "error: --model nothing does not exist" in proc.stderr
    assert TF_LINE.search(proc.stderr), proc.stderr  # absl's pre-InitializeLog notice at least


@pytest.mark.parametrize("line, tensorflow", [
    (b"WARNING: All log messages before absl::InitializeLog() is called are written to STDERR",
     True),
    (b"I0000 00:00:1796680709.883692    7871 port.cc:153] oneDNN custom operations are on.",
     True),
    (b"E0000 00:00:1796681110.996662   14804 cuda_platform.cc:52] failed call to cuInit: x",
     True),
    (b"W1207 22:01:02.123456 140 onednn_util.cc:12] oneDNN supports DT_INT64 only on "
     b"platforms with AVX-512", True),
    (b"To enable the following instructions: AVX2 FMA, in other operations, rebuild", True),
    (b"error: --model nothing does not exist", False),
    (b"I0000 is not a log line without its place", False),
    (b"Epoch 1/4", False),
    (b'  File "detection/cli.py", line 3, in main', False),
])
def test_the_filter_drops_tensorflow_log_lines_only(line, tensorflow):
    assert console.dropped(line) is tensorflow


def test_the_user_can_ask_for_the_logs(monkeypatch):
    monkeypatch.delenv(console.LOGS_ENV, raising=False)
    monkeypatch.setenv("TF_CPP_MIN_LOG_LEVEL", "2")
    assert not console.wants_tf_logs(["train", "--verbose", "1"])  # Keras' verbosity
    assert console.wants_tf_logs(["--verbose", "train"])
    monkeypatch.setenv(console.LOGS_ENV, "1")
    assert console.wants_tf_logs(["train"])
    monkeypatch.delenv(console.LOGS_ENV)
    monkeypatch.setenv("TF_CPP_MIN_LOG_LEVEL", "0")
    assert console.wants_tf_logs([])


@pytest.mark.parametrize("module", ["detection.cli", "keras_resnet_suite.cli"])
def test_help_texts_are_complete(module, capsys):
    """Every command listed, examples given, every paragraph ending in a full sentence (the
    old text stopped at "... export and")."""
    import importlib

    cli = importlib.import_module(module)
    with pytest.raises(SystemExit):
        cli.main(["--help"])
    text = capsys.readouterr().out
    commands = cli.COMMANDS
    for name in commands:
        assert re.search(rf"^\s+{re.escape(name)}\s", text, re.MULTILINE), name
        assert re.search(rf"^  \S.* {re.escape(name)} ", text, re.MULTILINE), f"no {name} example"
    description = text.split("\n\n")[1:3]
    assert all(p.rstrip().endswith(".") for p in description), description
    assert "examples:" in text and "--verbose" in text
