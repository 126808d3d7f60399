"""SIGKILL a real training process mid-epoch, restart the same command, and check it ends at
the intended step with the weights of an uninterrupted run and no corrupt checkpoint."""

import argparse
import json
import os
import signal
import subprocess
import sys
import threading

import h5py
import numpy as np

from keras_resnet_suite.training import BackupAndRestore


def test_sigkill_mid_epoch_then_resume(tmp_path, worker, worker_path, run_worker):
    out = tmp_path / "run"
    cmd = [
        sys.executable,
        str(worker_path),
        "resume",
        str(out),
        "--epochs",
        "3",
        "--save-freq",
        "2",
        "--pause-at",
        "9",
    ]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    proc = subprocess.Popen(
        cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    killed_after = None
    watchdog = threading.Timer(150, proc.kill)  # a hung worker must not hang the test
    watchdog.start()
    try:
        for line in proc.stdout:  # 6 steps per epoch: step 9 is the middle of epoch 2
            if line.startswith("STEP ") and int(line.split()[1]) >= 9:
                killed_after = int(line.split()[1])
                os.kill(proc.pid, signal.SIGKILL)
                break
    finally:
        watchdog.cancel()
        proc.kill()
        proc.wait(timeout=30)
    assert killed_after == 9 and proc.returncode == -signal.SIGKILL
    assert not (out / "final.json").exists()

    backup = BackupAndRestore(out / "backup")
    steps = [s for s, _ in backup.checkpoints()]
    assert steps == [8, 6]
    for _, path in backup.checkpoints():  # every complete checkpoint opens and is whole
        with h5py.File(path / "state.weights.h5", "r") as f:
            assert len(f.keys()) > 0
        assert json.loads((path / "meta.json").read_text())["step"] in steps

    log = run_worker(["resume", out, "--epochs", 3, "--save-freq", 2])
    assert "resuming from step 8 of 18" in log
    assert json.loads((out / "final.json").read_text())["step"] == 18

    # the same run, never interrupted, in this process
    ref = tmp_path / "ref"
    ref.mkdir()
    worker.resume(argparse.Namespace(out=ref, epochs=3, save_freq=2, sleep=0.0, pause_at=-1))
    with np.load(out / "final.npz") as a, np.load(ref / "final.npz") as b:
        assert a.files == b.files
        for k in a.files:
            np.testing.assert_allclose(a[k], b[k], atol=1e-5)
