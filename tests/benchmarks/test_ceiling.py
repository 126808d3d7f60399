"""The CPU-ceiling section of the benchmarks: GEMM rates, training steps' model FLOP/s against
them, the bfloat16 contenders' checks, and when bf16 is timed at all."""

import pytest

from benchmarks import ceiling, peers, report
from benchmarks.timing import Case


def test_flop_conventions():
    assert ceiling.gemm_flops(2048) == 2 * 2048 ** 3
    # ResNet-50 (4.09 GMACs) at batch 16: 6 x 4.09e9 x 16 = 392.6 GFLOP per step
    assert ceiling.step_flops(4.09e9, 16) == pytest.approx(392.64e9)
    assert ceiling.inference_flops(4.09e9, 16) == pytest.approx(130.88e9)


def test_tensorflow_gemm_cases_compute_the_product():
    import numpy as np

    cases = ceiling.tensorflow_cases([ceiling.TF_GEMM, ceiling.TF_GEMM_BF16], n=64)
    assert [c.name for c in cases] == [ceiling.TF_GEMM, ceiling.TF_GEMM_BF16]
    full, half = (c.run() for c in cases)
    assert full.shape == (64, 64) and full.dtype == np.float32
    # bf16 keeps 8 bits of mantissa: the products agree to ~1 % of their scale
    np.testing.assert_allclose(np.asarray(half, "float32"), full, atol=0.05 * np.abs(full).max())


def test_native_bf16_follows_the_cpu_flags_and_the_onednn_cap(monkeypatch):
    with open("/proc/cpuinfo") as f:
        flags = f.read()
    monkeypatch.delenv("ONEDNN_MAX_CPU_ISA", raising=False)
    assert ceiling.native_bf16() == ("avx512_bf16" in flags or "amx_tile" in flags)
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX2")  # an AVX2-only CPU, emulated
    assert not ceiling.native_bf16()


def _row(section, contender, peer, seconds, dtype="float32", **extra):
    case = Case(contender, lambda: None, items=extra.pop("items", 16), times=[seconds] * 3,
                cpu_times=[2 * seconds] * 3)
    row = report.rows_from_cases(section, [case], None, model="resnet50", batch=16,
                                 input_size="224x224", dtype=dtype, **extra)[0]
    row["peer"] = peer
    return row


def test_ceiling_annotates_training_rows_by_precision(monkeypatch):
    from benchmarks.sections import classification
    from benchmarks.suite import MODES, Suite

    suite = Suite(MODES["quick"], verbose=False)
    suite.gemm = {"float32": 200e9, "bfloat16": 400e9}  # as if measured
    rows = [_row("train step", "ours, oneDNN on", peers.OURS, 2.0),
            _row("train step", "ours (mixed_bfloat16), oneDNN on", peers.OURS_BF16, 1.0,
                 dtype="mixed bfloat16"),
            _row("train step", "keras.applications, oneDNN on", peers.KERAS_APPS, 2.0)]
    classification.ceiling(suite, rows, 50, [])
    ours, bf16, apps = rows
    # 6 x 4.089 GMACs x 16 images / 2 s = 196 GFLOP/s: 98 % of the float32 GEMM rate
    assert ours["model_gflops_s"] == pytest.approx(196.3, abs=0.2)
    assert ours["of_gemm_rate"] == pytest.approx(0.981, abs=2e-3)
    assert bf16["of_gemm_rate"] == pytest.approx(0.981, abs=2e-3)  # against the bf16 rate
    assert apps["model_gflops_s"] < ours["model_gflops_s"]  # stride in the 1x1: fewer MACs
    gemm = [_row("CPU ceiling", "TensorFlow matmul, oneDNN on", ceiling.TF_GEMM, 0.1,
                 items=17.18, unit="GFLOP/s")]
    text = "\n".join(report.ceiling_table(gemm + rows))
    assert "## Against the CPU's ceiling" in text
    assert "| TensorFlow matmul, oneDNN on | float32 | 171.8 |" in text
    assert "| train step, resnet50 | ours, oneDNN on | 16 | float32 | 2.000 | 196.3 | 98 % |" in text
    infer = _row("inference", "ours, oneDNN on", peers.OURS, 1.0)
    classification.ceiling(suite, [infer], 50, [])
    assert infer["model_gflops_s"] == pytest.approx(130.9, abs=0.2)  # 2 x 4.089 G x 16 / 1 s


def test_bf16_checks_pair_same_precision_and_the_users_float32():
    from benchmarks.sections import classification
    from benchmarks.suite import MODES, Suite

    suite = Suite(MODES["quick"], verbose=False)
    users = "keras.applications, oneDNN on"
    cases = [Case(name, lambda: None, items=16, times=[t] * 3, cpu_times=[2 * t] * 3)
             for name, t in (("ours, oneDNN on", 3.0), ("ours (mixed_bfloat16), oneDNN on", 1.5),
                             (peers.TORCHVISION_BF16, 1.8), (users, 3.6))]
    rows = report.rows_from_cases("train step", cases, users, model="resnet50", batch=16,
                                  input_size="224x224", dtype="float32")
    classification.bf16_checks(suite, "fig", rows, users)
    same, versus_users, own = suite.checks
    assert same["value"] == pytest.approx(1.2) and not same["passed"]
    assert versus_users["value"] == pytest.approx(2.4) and versus_users["passed"]
    assert own["value"] == pytest.approx(2.0) and not own["must_show"]
    suite.checks.clear()
    classification.bf16_checks(suite, "fig", rows[:1], users)
    assert suite.checks == []  # no bf16 row: no check
