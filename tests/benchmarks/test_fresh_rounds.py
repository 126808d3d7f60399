"""benchmarks.fresh_rounds: every contender in a fresh process per round, rotating the order;
ratios paired per round, median across rounds, checked against the targets table."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks import fresh_rounds as fr
from benchmarks import settings

REPO = Path(__file__).resolve().parents[2]
INFER, TRAIN = fr.Figure(False, 1), fr.Figure(True, 16)
LINE = [fr.Contender(fr.OURS, settings.OFF), fr.Contender(fr.KERAS_APPS, settings.OFF),
        fr.Contender(fr.TORCHVISION, settings.TORCH)]
# seconds per step by (contender, figure), one list entry per round
STEP = {("ours", INFER): [1.0, 1.0, 2.0], ("keras.applications", INFER): [1.5, 1.1, 2.6],
        ("torchvision", INFER): [1.4, 1.2, 2.8], ("ours", TRAIN): [4.0, 4.0, 4.0],
        ("keras.applications", TRAIN): [6.0, 6.0, 6.0]}


def _fake_rounds():
    calls, log = [], []

    def run(contender, figure):
        if contender.name == fr.TORCHVISION and figure.train:
            raise settings.WorkerError(f"{contender.label}, {figure.name}: exit 1: boom")
        seconds = STEP[(contender.name, figure)][sum(1 for c in calls if c[1] == figure) // 3]
        calls.append((contender.name, figure))
        return {"wall_s": [seconds, seconds * 3, seconds], "cpu_s": [2 * seconds] * 3}

    got = fr.rounds([INFER, TRAIN], {INFER: LINE, TRAIN: LINE}, 3, run, log.append)
    return got, calls, log


def test_rounds_rotate_the_order_and_a_failed_process_ends_only_its_figure():
    got, calls, log = _fake_rounds()
    infer_order = [name for name, figure in calls if figure == INFER]
    assert infer_order == ["ours", "keras.applications", "torchvision",  # ABC
                           "keras.applications", "torchvision", "ours",  # BCA
                           "torchvision", "ours", "keras.applications"]  # CAB
    train_order = [name for name, figure in calls if figure == TRAIN]
    assert train_order == ["ours", "keras.applications", "keras.applications", "ours",
                           "ours", "keras.applications"]  # torchvision failed once, not retried
    assert got["failed"] == ["torchvision, training step, batch 16: exit 1: boom"]
    assert "round 1: torchvision, training step, batch 16: exit 1: boom" in log
    assert len(got["answers"][TRAIN]["torchvision"]) == 0


def test_ratios_are_paired_per_round_then_the_median_and_checked_against_the_targets(tmp_path):
    got, _, _ = _fake_rounds()
    rows = fr.figure_rows(INFER, LINE, got["answers"][INFER])
    ours, apps, torch = rows
    assert ours["median_step_s"] == 1.0 and ours["ours_over_this"] == 1.0
    assert apps["ours_over_this_per_round"] == [1.5, 1.1, 1.3]  # per-step medians per process
    assert apps["ours_over_this"] == 1.3 and apps["ours_over_this_cpu"] == 1.3
    assert torch["ours_over_this_per_round"] == [1.4, 1.2, 1.4] and torch["ours_over_this"] == 1.4
    infer_checks = fr.checks(INFER, rows)
    assert [(c["target"], c["met"]) for c in infer_checks] == [(">= 1.2", True), (">= 1.3", True)]
    train_rows = fr.figure_rows(TRAIN, LINE, got["answers"][TRAIN])
    train_checks = fr.checks(TRAIN, train_rows)
    assert train_checks[0]["value"] == 1.5 and train_checks[0]["target"] == ">= 1.3"
    assert train_checks[1]["value"] is None and not train_checks[1]["met"]  # no figure: not met
    result = {"date": "2026-12-06", "machine": {"cpu": "x", "cores": 2}, "cpu_flags": "avx2",
              "tf_default": "oneDNN off", "command": "c", "rounds": 3, "steps": 3, "warmup": 1,
              "size": 224, "load_start": [1.0], "load_end": [2.0], "caps": {},
              "failed": got["failed"], "rows": rows + train_rows,
              "checks": infer_checks + train_checks}
    text = fr.markdown(result)
    assert ("| inference, batch 1 | keras.applications, oneDNN off | 1.500 | 3.000 | 1.300 | "
            "1.300 | 1.50, 1.10, 1.30 |") in text
    assert ("| ResNet-50 training step, batch 16: ours, oneDNN off / torchvision | - | - | "
            ">= 1.3 | not met / not met |") in text
    assert "load at start [1.0], at end [2.0]" in text


def test_smoke_run_in_fresh_processes(tmp_path):
    # Two contenders (torchvision left out: the [test] extra has no torch), one round of one
    # step at 32x32, under the AVX2 cap: TensorFlow's default there is oneDNN off, and the
    # library's choice for one image is off too.
    env = {**os.environ, "ONEDNN_MAX_CPU_ISA": "AVX2", "PYTHONPATH": str(REPO)}
    proc = subprocess.run([sys.executable, "-m", "benchmarks.fresh_rounds", "--rounds", "1",
                           "--steps", "1", "--warmup", "1", "--size", "32", "--infer-batches",
                           "1", "--train-batch", "0", "--no-torchvision", "--out", str(tmp_path),
                           "--tag", "smoke"], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    (js,) = tmp_path.glob("fresh-rounds-*-smoke.json")
    result = json.loads(js.read_text())
    assert result["caps"] == {"ONEDNN_MAX_CPU_ISA": "AVX2", "ATEN_CPU_CAPABILITY": "avx2",
                              "MKL_ENABLE_INSTRUCTIONS": "AVX2"}
    assert [(r["contender"], r["rounds"], r["onednn"]) for r in result["rows"]] == [
        ("ours, oneDNN off", 1, ["False"]), ("keras.applications, oneDNN off", 1, ["False"])]
    assert all(r["median_step_s"] > 0 for r in result["rows"]) and not result["failed"]
    assert len(result["load_start"]) == 3 and len(result["load_end"]) == 3
    (check,) = result["checks"]
    assert check["target"] == ">= 1.2" and check["value"] > 0
    assert js.with_suffix(".md").read_text().count("| inference, batch 1 |") == 2


def test_bad_command_lines_are_refused_in_one_line(capsys):
    for argv, message in ((["--steps", "0"], "--steps must be at least 1, got 0"),
                          (["--size", "16"], "--size must be at least 32, got 16"),
                          (["--infer-batches", "0"], "--infer-batches must be at least 1 each"),
                          (["--infer-batches", "--train-batch", "0"], "nothing to measure")):
        with pytest.raises(SystemExit) as refused:
            fr.main(argv)
        assert refused.value.code == 2
        assert message in capsys.readouterr().err
