"""The CPU fast path (keras_resnet_suite.runtime): our commands' entry points turn TensorFlow's
oneDNN kernels on before TensorFlow loads, an explicit TF_ENABLE_ONEDNN_OPTS is respected,
library imports change nothing (no environment variable, no TensorFlow), and
`onednn_enabled()` reports what TensorFlow actually does."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from keras_resnet_suite import runtime

REPO = Path(__file__).resolve().parents[1]

# A fresh interpreter that pretends to be started as `argv` (sys.orig_argv is what the entry
# points read), runs what they run first, then reports the variable and TensorFlow's answer.
PROBE = """
import os, sys
sys.orig_argv[:] = {argv!r}
from keras_resnet_suite import runtime
runtime.default_for_our_commands()
print(os.environ.get("TF_ENABLE_ONEDNN_OPTS"), runtime.onednn_enabled())
"""


def _run(code: str, value: str | None = None) -> str:
    env = {k: v for k, v in os.environ.items() if k != runtime.ONEDNN_ENV}
    env.update({"PYTHONPATH": str(REPO), "TF_CPP_MIN_LOG_LEVEL": "3"})
    if value is not None:
        env[runtime.ONEDNN_ENV] = value
    proc = subprocess.run([sys.executable, "-c", code], env=env, cwd=REPO,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout


def _probe(argv: list[str], value: str | None) -> tuple[str, bool]:
    setting, enabled = _run(PROBE.format(argv=argv), value).split()[-2:]
    return setting, enabled == "True"


@pytest.mark.parametrize("argv, ours", [
    (["python", "-m", "keras_resnet_suite", "models"], True),
    (["python", "-m", "detection", "train", "--config", "c.yaml"], True),
    (["python", "-mbenchmarks", "--quick"], True),
    (["python", "-X", "dev", "-W", "ignore", "-m", "keras_resnet_suite", "benchmark"], True),
    (["python", "-Bm", "detection"], True),
    (["/venv/bin/python", "/venv/bin/keras-resnet-suite", "demo"], True),
    (["python", str(REPO / "examples" / "cifar10_degradation.py"), "--budget"], True),
    (["python", "-m", "pytest", "tests"], False),
    (["python", "train.py", "-m", "detection"], False),
    (["python", "-c", "import keras_resnet_suite"], False),
    (["python"], False),
])
def test_our_commands_are_recognised(argv, ours):
    assert runtime.started_by_our_command(argv) is ours


def test_command_turns_onednn_on_and_tensorflow_agrees():
    assert _probe(["python", "-m", "detection", "demo"], None) == ("1", True)


def test_explicit_zero_is_respected():
    assert _probe(["python", "/venv/bin/keras-resnet-suite", "demo"], "0") == ("0", False)


def test_library_import_leaves_the_choice_to_the_user():
    setting, _ = _probe(["python", "my_script.py"], None)  # TF's own default for this CPU
    assert setting == "None"


def test_importing_the_packages_sets_nothing_and_loads_no_tensorflow():
    # Even inside one of our commands: only the entry points choose, before TensorFlow loads.
    code = ("import os, sys\nsys.orig_argv[:] = ['python', '-m', 'detection', 'train']\n"
            "before = dict(os.environ)\nimport keras_resnet_suite as krs, detection\n"
            "names = krs.available_models(), dir(krs), dir(detection)\n"
            "print(dict(os.environ) == before, 'tensorflow' in sys.modules, "
            "'keras' in sys.modules, 'ResNet50' in names[1], 'FasterRCNN' in names[2])")
    assert _run(code).split() == ["True", "False", "False", "True", "True"]


@pytest.mark.parametrize("entry, argv", [
    ("import detection.__main__", ["python", "-m", "detection", "train"]),
    ("from keras_resnet_suite import cli\ntry:\n    cli.main(['--help'])\n"
     "except SystemExit:\n    pass", ["python", "/venv/bin/keras-resnet-suite", "--help"]),
])
def test_entry_points_choose_before_tensorflow_loads(entry, argv):
    code = (f"import os, sys\nsys.orig_argv[:] = {argv!r}\n{entry}\n"
            "print(os.environ.get('TF_ENABLE_ONEDNN_OPTS'), 'tensorflow' in sys.modules)")
    assert _run(code).split()[-2:] == ["1", "False"]


def test_enable_fast_cpu_before_and_after_tensorflow(monkeypatch):
    monkeypatch.delenv(runtime.ONEDNN_ENV, raising=False)
    monkeypatch.setattr(runtime, "onednn_enabled", lambda: False)
    monkeypatch.delitem(sys.modules, "tensorflow", raising=False)  # as if not imported yet
    assert runtime.enable_fast_cpu() is True and os.environ[runtime.ONEDNN_ENV] == "1"
    monkeypatch.setenv(runtime.ONEDNN_ENV, "0")
    assert runtime.enable_fast_cpu() is False and os.environ[runtime.ONEDNN_ENV] == "0"
    monkeypatch.delenv(runtime.ONEDNN_ENV)
    monkeypatch.setitem(sys.modules, "tensorflow", object())  # too late to choose
    with pytest.warns(RuntimeWarning, match="already imported"):
        assert runtime.enable_fast_cpu() is False
    assert runtime.ONEDNN_ENV not in os.environ


@pytest.mark.parametrize("argv, one", [
    (["python", "-m", "detection", "predict", "a.jpg"], True),
    (["python", "-B", "-m", "detection", "predict"], True),
    (["python", "-mdetection", "predict", "a.jpg"], True),
    (["python", "-m", "detection", "evaluate", "--config", "c.yaml"], False),
    (["python", "-m", "detection", "train", "predict"], False),
    (["python", "predict.py", "predict"], False),
    (["python", "-c", "pass"], False),
])
def test_one_image_commands_are_recognised(argv, one):
    assert runtime.one_image_command(argv) is one


@pytest.mark.parametrize("cap, batch, pays", [
    ("AVX2", 1, False), ("AVX2", 16, True), ("AVX2", None, True),
    ("AVX512_CORE", 1, True), ("AVX512_CORE_AMX", 1, True),
])
def test_onednn_pays_off_except_one_image_without_avx512(monkeypatch, cap, batch, pays):
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", cap)
    flags = runtime.onednn_may_use(("avx512f",), ("AVX512",), unknown=True)
    # On a CPU without AVX-512 the cap cannot add it: then one image never pays off.
    assert runtime.onednn_pays_off(batch) is (pays and (flags or batch != 1))


def test_one_image_command_gets_the_faster_setting_for_this_cpu():
    # `detection predict` under an AVX2 cap: oneDNN off (Eigen wins one image); training stays on.
    assert _probe_with_cap(["python", "-m", "detection", "predict", "x.jpg"]) == "0"
    assert _probe_with_cap(["python", "-m", "detection", "train"]) == "1"


def _probe_with_cap(argv: list[str]) -> str:
    env = {k: v for k, v in os.environ.items() if k != runtime.ONEDNN_ENV}
    env.update({"PYTHONPATH": str(REPO), "ONEDNN_MAX_CPU_ISA": "AVX2"})
    code = (f"import os, sys\nsys.orig_argv[:] = {argv!r}\n"
            "from keras_resnet_suite import runtime\nruntime.default_for_our_commands()\n"
            "print(os.environ.get('TF_ENABLE_ONEDNN_OPTS'))")
    proc = subprocess.run([sys.executable, "-c", code], env=env, cwd=REPO, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout.split()[-1]


def test_a_plain_import_registers_the_layers_that_load_model_needs(tmp_path):
    # `import keras` then the packages (isort's order) is enough to read this project's .keras
    # files in a fresh process: no attribute touched, no model built first.
    import keras_resnet_suite as krs
    from tests.detection.detector_helpers import tiny_detector

    krs.build("resnet20").save(tmp_path / "classifier.keras")
    tiny_detector().save(tmp_path / "detector.keras")
    code = ("import keras\nimport keras_resnet_suite, detection\n"
            f"for name in ('classifier', 'detector'):\n"
            f"    m = keras.saving.load_model({str(tmp_path)!r} + f'/{{name}}.keras')\n"
            "    print(type(m).__name__)")
    assert _run(code).split()[-2:] == ["ResNetModel", "FasterRCNN"]
