"""The GPU mode of the benchmarks (issue 5) in its `--allow-cpu` smoke form, and its refusals.

TF pass only (not marked `jax`): the smoke run goes through `python -m benchmarks` in a
KERAS_BACKEND=jax subprocess, as on a GPU machine, and must not import TensorFlow there.
"""

import json
import os
import subprocess
import sys
from importlib.util import find_spec
from pathlib import Path

import pytest

from benchmarks import gpu, report
from benchmarks.run import main
from benchmarks.sections import CPU_SECTIONS

REPO = Path(__file__).resolve().parents[2]

SMOKE = """
import sys
from benchmarks.run import main
rc = main(sys.argv[1:])
assert "tensorflow" not in sys.modules, "the GPU mode imported TensorFlow"
raise SystemExit(rc)
"""


def test_peak_table_and_mfu_formula():
    assert gpu.peak_bf16_tflops("NVIDIA H100 80GB HBM3") == 989.0  # SXM
    assert gpu.peak_bf16_tflops("NVIDIA H100 PCIe") == 756.0
    assert gpu.peak_bf16_tflops("NVIDIA H100 NVL") == 835.0
    assert gpu.peak_bf16_tflops("NVIDIA H200") == 989.0
    assert gpu.peak_bf16_tflops("NVIDIA A100-SXM4-80GB (gpu:0)") == 312.0
    assert gpu.peak_bf16_tflops("NVIDIA L4") == 121.0
    assert gpu.peak_bf16_tflops("NVIDIA L40S") == 362.0
    assert gpu.peak_bf16_tflops("cpu (cpu:0)") is None
    # 3000 images/s of 4.09 GMACs on 989 TFLOP/s: 3 x 2 x 4.09e9 x 3000 / 989e12
    assert gpu.mfu(3000, 4.09e9, 989e12) == pytest.approx(0.07444, rel=1e-3)


def test_gpu_mode_is_opt_in_and_refused_outside_jax(capsys, monkeypatch):
    monkeypatch.setenv("XLA_PYTHON_CLIENT_PREALLOCATE", "false")  # main() sets it otherwise
    assert "gpu" not in CPU_SECTIONS
    with pytest.raises(SystemExit):  # --only gpu needs --gpu
        main(["--only", "gpu"])
    assert "opt-in: add --gpu" in capsys.readouterr().err
    import keras

    if keras.backend.backend() != "jax":
        assert main(["--only", "gpu", "--gpu", "--allow-cpu"]) == 2
        err = capsys.readouterr().err
        assert "KERAS_BACKEND=jax" in err and gpu.GPU_COMMAND in err


@pytest.mark.skipif(find_spec("jax") is None, reason="jax not installed")
def test_refusal_without_gpu_names_the_command():
    if gpu.jax_accelerator() is not None:
        pytest.skip("this machine has a GPU")
    reason = gpu.refusal("jax", allow_cpu=False)
    assert "no GPU here" in reason and gpu.GPU_COMMAND in reason and "--allow-cpu" in reason
    assert gpu.refusal("jax", allow_cpu=True) is None


def test_accelerators_without_tensorflow(monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorflow", None)  # `import tensorflow` now fails
    names = report._accelerators("jax" if find_spec("jax") else "numpy")
    assert isinstance(names, list)
    assert report.machine_slug({"host": "box", "cores": 16,
                                "accelerators": ["NVIDIA H100 80GB HBM3 (gpu:0)"]}) == "box-gpu16"


@pytest.mark.skipif(find_spec("jax") is None, reason="jax not installed")
def test_gpu_smoke_run_writes_rows_and_mfu(tmp_path):
    env = {**os.environ, "KERAS_BACKEND": "jax", "PYTHONPATH": str(REPO)}
    proc = subprocess.run(
        [sys.executable, "-c", SMOKE, "--only", "gpu", "--gpu", "--allow-cpu",
         "--peak-tflops", "2", "--out", str(tmp_path)],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (js,) = tmp_path.glob("*-gpu.json")
    result = json.loads(js.read_text())
    assert result["machine"]["backend"] == "jax"
    rows = {r["contender"]: r for r in result["rows"]}
    assert gpu.OURS in rows
    if find_spec("torch") and find_spec("torchvision"):
        assert gpu.TORCHVISION in rows and rows[gpu.OURS]["baseline"] == gpu.TORCHVISION
    else:
        assert any("torchvision" in s for s in result["skipped"])
    for r in rows.values():
        assert r["section"] == "gpu train step" and r["batch"] == 2 and r["input"] == "32x32"
        assert r["dtype"] == "mixed bfloat16" and r["runs"] == 1
        assert r["peak_bf16_tflops"] == 2.0 and r["peak_source"] == "--peak-tflops"
        expected = r["throughput"] * 3 * 2 * r["macs_per_image"] / 2e12
        assert r["mfu"] == pytest.approx(expected, rel=5e-3, abs=1e-5)
    assert rows[gpu.OURS]["macs_per_image"] > 50e6  # ResNet-50 at 32x32: 0.085 GMACs
    md = js.with_suffix(".md").read_text()
    assert "## GPU: model-FLOPs utilisation" in md and "--allow-cpu smoke run" in md
