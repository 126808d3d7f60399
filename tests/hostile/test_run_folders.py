"""Hostile run folders: two runs on one --out, a stale lock, a full disk during a checkpoint,
SIGTERM during training, a finished run re-run shorter, and starts that fail before their first
step. Each case asserts the one line said, the exit status and what is on disk afterwards."""

import errno
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import h5py
import keras
import numpy as np
import pytest
import tensorflow as tf
from train_helpers import tiny_config, write_config

from keras_resnet_suite.run_folder import (
    LOCK_NAME,
    DiskFull,
    RunFolder,
    RunFolderBusy,
    Terminated,
    stop_on_sigterm,
)

pytestmark = pytest.mark.skipif(keras.backend.backend() != "tensorflow",
                                reason="the training loops are TF-only")

REPO = Path(__file__).resolve().parents[2]


def _model(width=64):
    """A 10 -> `width` -> 3 net under SGD with momentum (a checkpoint of ~8 * 13 * `width`
    bytes)."""
    keras.utils.set_random_seed(0)
    inputs = keras.Input((10,))
    model = keras.Model(inputs, keras.layers.Dense(3)(keras.layers.Dense(width)(inputs)))
    model.compile(keras.optimizers.SGD(0.01, momentum=0.9),
                  keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    return model


def _batches(start: int):
    rng = np.random.default_rng(0)
    x, y = rng.random((96, 10), dtype=np.float32), rng.integers(0, 3, 96).astype(np.int32)
    return tf.data.Dataset.from_tensor_slices((x, y)).batch(4).repeat().skip(start)


def _fit(model, backup, callbacks=(), epochs=2, spe=6, **kw):
    from keras_resnet_suite.training import fit_resumable

    return fit_resumable(model, _batches, steps_per_epoch=spe, epochs=epochs, backup_dir=backup,
                         save_freq=2, verbose=0, callbacks=list(callbacks), **kw)


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


# ------------------------------------------------------------------ the lock
def test_a_second_run_is_refused_naming_the_holder_and_the_lock_is_released(tmp_path):
    out = tmp_path / "run"
    with RunFolder(out, out / "checkpoints"):
        holder = json.loads((out / LOCK_NAME).read_text())
        assert holder["pid"] == os.getpid() and holder["host"] == socket.gethostname()
        with pytest.raises(RunFolderBusy) as err, RunFolder(out, out / "checkpoints"):
            pass
        assert str(err.value) == (
            f"{out} is in use by another run (pid {os.getpid()} on host "
            f"{socket.gethostname()} since {holder['since']}, lock file {out / LOCK_NAME}); "
            "wait for it to end or choose another --out")
        (out / "history.csv").write_text("epoch\n")  # the run's own file
    assert sorted(os.listdir(out)) == ["history.csv"]  # lock gone, the run's files stay


@pytest.mark.parametrize("ending", [ValueError("bad data"), KeyboardInterrupt(), SystemExit(2)])
def test_a_run_ending_before_its_first_checkpoint_leaves_nothing(tmp_path, ending):
    out = tmp_path / "run"
    with pytest.raises(type(ending)), RunFolder(out, out / "checkpoints"):
        (out / "config.yaml").write_text("name: x\n")
        (out / "checkpoints" / ".step-00000001.tmp-1").mkdir(parents=True)
        raise ending
    assert not out.exists()  # created by the run, emptied, removed


def test_a_failed_start_keeps_what_was_there_and_a_divergence_record(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    with pytest.raises(ValueError), RunFolder(out, out / "checkpoints", keep=["metrics.json"]):
        for name in ("config.yaml", "metrics.json", "history.csv"):
            (out / name).write_text("x")
        raise ValueError("diverged")
    assert sorted(os.listdir(out)) == ["metrics.json", "notes.txt"]
    # once a checkpoint exists the run has started: a later failure removes nothing
    with pytest.raises(ValueError), RunFolder(out, out / "checkpoints"):
        (out / "checkpoints" / "step-00000002").mkdir(parents=True)
        (out / "checkpoints" / "step-00000002" / "meta.json").write_text("{}")
        (out / "config.yaml").write_text("x")
        raise ValueError("later")
    assert sorted(os.listdir(out)) == ["checkpoints", "config.yaml", "metrics.json", "notes.txt"]


def test_a_stale_lock_is_taken_over_with_a_note_and_another_hosts_is_not(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    dead = {"pid": _dead_pid(), "host": socket.gethostname(), "since": "2026-01-01 00:00:00 UTC"}
    (out / LOCK_NAME).write_text(json.dumps(dead))
    notes = []
    with RunFolder(out, out / "checkpoints", note=notes.append):
        assert json.loads((out / LOCK_NAME).read_text())["pid"] == os.getpid()
    assert notes == [f"note: {out} was locked by pid {dead['pid']} on host "
                     f"{socket.gethostname()} since 2026-01-01 00:00:00 UTC, which is no longer "
                     "running; taking the lock over"]
    other = {**dead, "pid": 1, "host": "elsewhere"}
    (out / LOCK_NAME).write_text(json.dumps(other))
    with pytest.raises(RunFolderBusy, match=f"pid 1 on host elsewhere since .*; wait for it to "
                                            f"end or choose another --out; if that run is gone, "
                                            f"delete {out / LOCK_NAME}"):
        with RunFolder(out, out / "checkpoints"):
            pass
    assert json.loads((out / LOCK_NAME).read_text()) == other  # not touched


# ------------------------------------------------------------------ a full disk
def test_a_full_disk_during_a_checkpoint_closes_the_file_and_removes_it(tmp_path, monkeypatch):
    from keras_resnet_suite.training import BackupAndRestore

    model = _model()
    backup = BackupAndRestore(tmp_path / "bk")
    backup.set_model(model)
    assert backup.save().name == "step-00000000"
    model.optimizer.iterations.assign(2)
    opened = []

    def full(path, *args, **kwargs):  # as h5py on a full disk: a handle left open, errno 28
        opened.append(h5py.File(path, "w"))
        opened[-1].create_dataset("x", data=np.zeros(1000))
        raise OSError(errno.ENOSPC, "Can't synchronously write data (errno = 28)")

    monkeypatch.setattr(model, "save_weights", full)
    with pytest.raises(DiskFull) as err:
        backup.save()
    assert str(err.value) == ("no space left on device while writing "
                              f"{tmp_path / 'bk' / 'step-00000002'}")
    assert not opened[0].id.valid  # closed: nothing retries the flush at exit
    assert sorted(p.name for p in (tmp_path / "bk").iterdir()) == ["step-00000000"]


@pytest.mark.parametrize("writer", ["text", "weights"])
def test_a_full_disk_in_an_atomic_write_is_one_error_naming_the_file(tmp_path, monkeypatch,
                                                                     writer):
    from keras_resnet_suite.training import atomic

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(atomic.os, "fsync", full)
    path = tmp_path / ("metrics.json" if writer == "text" else "final.weights.h5")
    with pytest.raises(DiskFull, match=f"^no space left on device while writing {path}$"):
        if writer == "text":
            atomic.atomic_write_text(path, "{}")
        else:
            atomic.atomic_save(_model(), path)
    assert os.listdir(tmp_path) == []  # no partial temporary file


DISK_FULL = textwrap.dedent("""
    import sys
    from pathlib import Path
    sys.path.insert(0, sys.argv[2])
    from test_run_folders import _fit, _model
    from keras_resnet_suite.errors import run_command
    from keras_resnet_suite.run_folder import RunFolder
    out = Path(sys.argv[1]) / "run"

    def main():
        with RunFolder(out, out / "bk"):
            _fit(_model(2000), out / "bk", epochs=4)  # ~210 KB a checkpoint

    code = run_command(main)
    print("LEFT", sorted(str(p.relative_to(out)) for p in out.rglob("*")), flush=True)
    sys.exit(code)
""")


def test_a_real_full_disk_stops_with_one_line_and_no_crash(tmp_path):
    """A 560 KB tmpfs (in a private mount namespace) fills up at the third checkpoint."""
    if shutil.which("unshare") is None:
        pytest.skip("no unshare to mount a small tmpfs")
    script, disk = tmp_path / "full.py", tmp_path / "disk"
    script.write_text(DISK_FULL)
    disk.mkdir()
    user = [] if os.geteuid() == 0 else ["--map-root-user"]
    if subprocess.run(["unshare", "--mount", *user, "true"], capture_output=True).returncode:
        pytest.skip("no private mount namespace here (unshare refused)")
    shell = (f"mount -t tmpfs -o size=560k tmpfs {disk} || exit 77; exec {sys.executable} "
             f"{script} {disk} {Path(__file__).parent}")
    env = {**os.environ, "PYTHONPATH": str(REPO), "TF_CPP_MIN_LOG_LEVEL": "3"}
    proc = subprocess.run(["unshare", "--mount", *user, "sh", "-c", shell], capture_output=True,
                          text=True, env=env, timeout=300)
    if proc.returncode == 77:
        pytest.skip(f"cannot mount a tmpfs here: {proc.stderr.strip()[-200:]}")
    assert proc.returncode == 1, proc.stderr[-3000:]  # not 139 (segfault)
    assert "Traceback" not in proc.stderr and "Exception ignored" not in proc.stderr
    line = proc.stderr.strip().splitlines()[-1]
    run = disk / "run"
    assert line.startswith(f"error: no space left on device while writing {run}/bk/step-000000")
    assert line.endswith(": free some space, then the same command resumes from step 4")
    left = eval(proc.stdout.split("LEFT ", 1)[1])  # noqa: S307 - our own script's list
    assert left == ["bk", "bk/step-00000002", "bk/step-00000002/meta.json",
                    "bk/step-00000002/state.weights.h5", "bk/step-00000004",
                    "bk/step-00000004/meta.json", "bk/step-00000004/state.weights.h5"]


# ------------------------------------------------------------------ SIGTERM
class _SigtermAt(keras.callbacks.Callback):
    def __init__(self, step):
        super().__init__()
        self.step = step

    def on_train_batch_end(self, batch, logs=None):
        if int(self.model.optimizer.iterations) == self.step:
            os.kill(os.getpid(), signal.SIGTERM)


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    """The weights of the 12-step run trained without a stop."""
    whole = _model()
    _fit(whole, tmp_path_factory.mktemp("whole") / "bk")
    return whole.get_weights()


@pytest.mark.parametrize("at, stops", [(3, 4), (5, 6)], ids=["mid_epoch", "epoch_end"])
def test_sigterm_saves_the_next_step_and_a_resume_is_the_same_run(tmp_path, at, stops,
                                                                  uninterrupted):
    model, rows = _model(), tmp_path / "rows.csv"
    with pytest.raises(Terminated) as err, stop_on_sigterm():
        _fit(model, tmp_path / "bk", [keras.callbacks.CSVLogger(str(rows)), _SigtermAt(at)])
    assert err.value.step == stops  # the step running when the signal came, saved
    assert (tmp_path / "bk" / f"step-{stops:08d}" / "meta.json").is_file()
    assert not list((tmp_path / "bk").glob(".step-*"))
    # whole epochs only: none stopped mid-epoch, the first when stopped at its end
    assert len(rows.read_text().splitlines()) == (0 if stops < 6 else 2)
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # the handler is given back
    resumed = _model()
    _fit(resumed, tmp_path / "bk")
    for a, b in zip(uninterrupted, resumed.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)  # nothing lost, nothing redone differently


SIGTERM = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    import keras
    sys.path.insert(0, sys.argv[2])
    from test_run_folders import _fit, _model
    from keras_resnet_suite.errors import run_command
    from keras_resnet_suite.run_folder import RunFolder, stop_on_sigterm
    out = Path(sys.argv[1])

    class Slow(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            print("step", int(self.model.optimizer.iterations), flush=True)
            time.sleep(0.05)

    def main():
        with stop_on_sigterm(), RunFolder(out, out / "bk"):
            _fit(_model(), out / "bk", [Slow()], epochs=20)

    sys.exit(run_command(main))
""")


def test_a_real_sigterm_exits_143_saying_where_the_run_resumes(tmp_path):
    script, out = tmp_path / "term.py", tmp_path / "run"
    script.write_text(SIGTERM)
    env = {**os.environ, "PYTHONPATH": str(REPO), "TF_CPP_MIN_LOG_LEVEL": "3"}
    proc = subprocess.Popen([sys.executable, str(script), str(out), str(Path(__file__).parent)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    for line in proc.stdout:
        if line.strip() == "step 9":
            proc.send_signal(signal.SIGTERM)
            break
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 143, err[-3000:]
    step = int(err.split("stopped by SIGTERM at step ")[1].split(";")[0])
    assert 9 <= step < 20
    assert err.strip().splitlines()[-1] == (
        f"stopped: stopped by SIGTERM at step {step}; the last complete checkpoint is step "
        f"{step} ({out / 'bk' / f'step-{step:08d}'}): the same command resumes from step {step}")
    assert sorted(os.listdir(out)) == ["bk"]  # no lock, no temporary folder
    assert [p.name for p in (out / "bk").iterdir() if p.name.startswith(".")] == []


# ------------------------------------------------------------------ fewer steps, failed starts
def test_a_finished_run_is_not_shortened_and_nothing_is_written(tmp_path):
    model = _model()
    _fit(model, tmp_path / "bk")
    started = []
    with pytest.raises(ValueError) as err:
        _fit(_model(), tmp_path / "bk", epochs=1, on_start=started.append)
    assert str(err.value) == (f"{tmp_path / 'bk'} holds a run trained for 12 steps, more than "
                              "the 6 asked for; a finished run is not shortened: ask for at "
                              "least 12 steps (the same run, or longer) or choose another "
                              "folder")
    assert started == []  # the caller's record is not rewritten


def _train(args, capsys):
    from detection import cli

    code = cli.main(["train", *map(str, args)])
    captured = capsys.readouterr()
    return code, captured.out, captured.err.strip().splitlines()[-1] if captured.err else ""


def test_detection_train_refuses_a_busy_folder_in_one_line(tmp_path, capsys):
    config = write_config(tmp_path, tiny_config(tmp_path))
    run = tmp_path / "run"
    with RunFolder(run, run / "checkpoints"):
        code, out, err = _train(["--config", config, "--out", run], capsys)
    assert code == 2 and err.startswith(f"error: {run} is in use by another run (pid "
                                        f"{os.getpid()} on host {socket.gethostname()} since ")
    assert not run.exists() and "Epoch" not in out


def test_a_detection_start_failing_before_its_first_step_leaves_no_record(tmp_path, capsys):
    """A config.yaml an older version left beside no checkpoint refuses nothing, and a start
    that fails (one batch larger than the data) writes none."""
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_text(yaml_of(tiny_config(tmp_path, learning_rate=0.5)))
    config = write_config(tmp_path, tiny_config(tmp_path, batch_size=16))
    code, out, err = _train(["--config", config, "--out", run], capsys)
    assert code == 2 and err == "error: data.train has 8 usable images, fewer than one batch " \
                                "of 16"
    assert sorted(os.listdir(run)) == ["config.yaml"]  # the old one, untouched; nothing added
    assert "learning_rate: 0.5" in (run / "config.yaml").read_text()


def yaml_of(raw: dict) -> str:
    import yaml

    return yaml.safe_dump(raw)
