"""The benchmark bookkeeping: alternation order, paired ratios, the table writer, runtimes."""

import json

import numpy as np
import pytest

from benchmarks import report
from benchmarks.timing import Case, alternate, paired_ratio, peak_rss_mb, reset_peak_rss


def test_alternate_rotates_order_and_counts_runs():
    calls = []
    cases = [Case(n, (lambda n=n: calls.append(n)), items=2) for n in "abc"]
    alternate(cases, warmup=1, repeats=3)
    assert calls[:3] == ["a", "b", "c"]  # warm-up, once each
    assert calls[3:] == ["a", "b", "c", "b", "c", "a", "c", "a", "b"]  # rotated rounds
    assert all(len(c.times) == 3 and len(c.cpu_times) == 3 for c in cases)


def test_paired_ratio_is_throughput_ratio_per_round():
    fast = Case("fast", lambda: None, items=32, times=[1.0, 2.0, 4.0])
    slow = Case("slow", lambda: None, items=32, times=[2.0, 3.0, 4.0])
    assert paired_ratio(fast, slow) == pytest.approx(1.5)  # rounds: 2.0, 1.5, 1.0
    pipe = Case("pipe", lambda: None, items=1280, times=[2.0])  # 640 images/s
    step = Case("step", lambda: None, items=128, times=[1.0])  # 128 images/s
    assert paired_ratio(pipe, step) == pytest.approx(5.0)


def test_rows_markdown_and_file_names(tmp_path):
    a = Case("ours", lambda: None, items=4, times=[0.5, 0.4, 0.6], cpu_times=[1.0, 1.0, 1.0],
             peak_rss_mb=900.0)
    b = Case("keras.applications", lambda: None, items=4, times=[1.0, 0.8, 1.2],
             cpu_times=[1.1, 1.2, 1.3])
    rows = report.rows_from_cases("inference", [a, b], "keras.applications", model="resnet50",
                                  batch=4, input_size="224x224", dtype="float32")
    assert rows[0]["median_s"] == 0.5 and rows[0]["throughput"] == 8.0
    assert rows[0]["ratio"] == 2.0 and rows[1]["ratio"] == 1.0
    assert rows[0]["cpu_ratio"] == 1.2 and rows[0]["median_cpu_s"] == 1.0
    machine = {"host": "box.local", "cpu": "x", "cores": 2, "accelerators": [],
               "backend": "tensorflow", "tensorflow": "2", "keras": "3", "python": "3.11"}
    result = {"date": "2026-11-22", "mode": "default", "machine": machine, "warmup": 1,
              "repeats": 3, "load_start": [1.0], "load_end": [2.0], "wall_s": 10.0,
              "rows": rows, "checks": [{"check": "c", "value": 2.0, "cpu_value": 0.9,
                                        "target": ">= 1.0", "passed": True,
                                        "cpu_passed": False}],
              "skipped": ["torchvision: absent"]}
    js, md = report.write(result, tmp_path)
    assert js.name == "box-local-cpu2-2026-11-22.json" and md.stem == js.stem
    assert json.loads(js.read_text())["rows"][0]["contender"] == "ours"
    text = md.read_text()
    assert "| inference | ours | resnet50 | 4 | 224x224 | float32 | 0.500 | 8.000 images/s | " \
           "2.000 (keras.applications) | 1.200 | 900.0 |" in text
    assert "| c | 2.000 | 0.900 | >= 1.0 | yes / NO |" in text and "- torchvision: absent" in text


def test_peak_rss_is_resettable():
    reset_peak_rss()
    before = peak_rss_mb()
    block = bytearray(64 * 1024 * 1024)
    block[::4096] = b"x" * len(block[::4096])  # touch every page so it is resident
    assert peak_rss_mb() >= before + 50
    del block


def test_same_architecture_checks_pair_two_contenders_of_one_figure(tmp_path):
    from benchmarks.sections.classification import same_architecture_checks
    from benchmarks.suite import MODES, Suite
    from benchmarks.targets import Target

    cases = [Case("ours", lambda: None, items=32, times=[1.0, 1.0, 1.0], cpu_times=[2.0] * 3),
             Case("ours (stride_in_1x1)", lambda: None, items=32, times=[0.8, 1.0, 0.9],
                  cpu_times=[1.5] * 3),
             Case("keras.applications", lambda: None, items=32, times=[1.0, 1.1, 0.9],
                  cpu_times=[1.8] * 3),
             Case("keras-hub", lambda: None, items=32, times=[1.2, 1.1, 1.0],
                  cpu_times=[2.2] * 3)]
    rows = report.rows_from_cases("inference", cases, "keras.applications", model="resnet50",
                                  batch=32, input_size="224x224", dtype="float32")
    suite = Suite(MODES["quick"], verbose=False)
    suite.check("must", rows, "ours", Target("ours / keras.applications", 1.0))
    same_architecture_checks(suite, "fig", rows)
    must, v1, v15 = suite.checks
    assert must["must_show"] and must["value"] == 1.0  # rounds 1.0, 1.1, 0.9 vs k.a.
    assert not v1["must_show"] and v1["value"] == 1.1 and v1["cpu_value"] == 1.2
    assert "both v1" in v1["check"] and "keras-hub, both v1.5" in v15["check"]
    assert v15["value"] == 1.1 and v15["passed"] and v15["cpu_value"] == 1.1
    machine = {"host": "h", "cpu": "x", "cores": 2, "accelerators": [], "backend": "tensorflow",
               "tensorflow": "2", "keras": "3", "python": "3.11"}
    result = {"date": "2026-11-22", "mode": "quick", "machine": machine, "warmup": 1,
              "repeats": 3, "load_start": [], "load_end": [], "wall_s": 1.0, "rows": rows,
              "checks": suite.checks}
    text = report.markdown(result)
    must_part, same_part = text.split("## Like-for-like checks")
    assert "| must | 1.000 |" in must_part and "both v1" not in must_part
    assert "| fig: ours / keras-hub, both v1.5 | 1.100 | 1.100 | >= 1.0 | yes / yes |" in same_part


def test_cpu_runtime_contenders_serve_keras_exports(tmp_path):
    # The serving section's ONNX Runtime / OpenVINO contenders: Keras' own export of a model,
    # one request per run, the same outputs as Keras; labelled without a TensorFlow setting.
    keras = pytest.importorskip("keras")
    from benchmarks import serving, settings

    if serving.available_runtimes():
        pytest.skip(f"runtimes missing: {serving.available_runtimes()}")
    inputs = keras.Input((16, 16, 3))
    x = keras.layers.Conv2D(4, 3, padding="same", activation="relu")(inputs)
    model = keras.Model(inputs, keras.layers.Dense(3)(keras.layers.GlobalAveragePooling2D()(x)))
    paths = serving.export_runtimes({"tiny": model}, tmp_path, size=16)
    assert sorted(paths) == ["tiny, ONNX Runtime", "tiny, OpenVINO"]
    cases, keep = serving.runtime_cases(paths, batch=2, size=16)
    expected = model.predict(
        np.random.default_rng(0).uniform(-1, 1, (2, 16, 16, 3)).astype("float32"), verbose=0)
    for case in cases:
        out = case.run()
        first = out[0] if isinstance(out, list) else next(iter(out.values()))
        np.testing.assert_allclose(np.asarray(first), expected, rtol=1e-4, atol=1e-5)
        assert case.name.endswith(settings.RUNTIME_SUFFIXES) and case.items == 2
    assert len(keep) == 2


def test_bn_paths_time_three_traces_that_agree():
    # benchmarks.bn_paths on a CIFAR model: fused, branch (forced) and folded traces of a
    # dynamic batch, each timed per batch size; their outputs agree with the fused one's.
    pytest.importorskip("tensorflow")
    from benchmarks import bn_paths

    rows = bn_paths.measure([1, 2], rounds=1, name="resnet20", size=32)
    assert sorted({(r["path"], r["batch"]) for r in rows}) == [
        (p, b) for p in ("branch", "folded", "fused") for b in (1, 2)]
    assert all(r["cpu_ms"] > 0 and r["wall_ms"] > 0 for r in rows)
    assert max(r["max_abs_diff"] for r in rows) < 1e-4


def test_every_target_the_code_names_is_in_the_table_and_every_one_is_used():
    import ast
    from pathlib import Path

    from benchmarks.targets import TARGETS

    root = Path(__file__).resolve().parents[2] / "benchmarks"
    literals, subscripts = set(), set()
    for path in root.rglob("*.py"):
        if path.name == "targets.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                literals.add(node.value)
            if (isinstance(node, ast.Subscript) and isinstance(node.value, ast.Name)
                    and node.value.id == "TARGETS" and isinstance(node.slice, ast.Constant)):
                subscripts.add(node.slice.value)
    assert subscripts and subscripts <= set(TARGETS), subscripts - set(TARGETS)
    assert set(TARGETS) <= literals, set(TARGETS) - literals


def test_detection_section_checks_its_figures_against_the_targets_table():
    # The Faster R-CNN section without a detector: each figure's rows made up from the plan
    # it asks for (seconds per call by contender), as the workers would time them.
    from benchmarks import settings
    from benchmarks.sections import faster_rcnn
    from benchmarks.suite import MODES, Suite

    seconds = {"ours": {settings.ON: 1.0, settings.OFF: 2.0}, "torchvision": {settings.TORCH: 1.5},
               "voc pipeline": {settings.ON: 0.5}}

    class Planned(Suite):
        def compare_remote(self, section, figure, plan, baseline, repeats=None, items=None,
                           extra=None, **meta):
            cases = []
            for setting, (names, _args) in plan.items():
                for name in names:
                    t = seconds[name][setting]
                    cases.append(Case(settings.label(name, setting), lambda: None,
                                      items=items(name) if items else 1, times=[t] * 3,
                                      cpu_times=[t] * 3))
            rows = report.rows_from_cases(section, cases, baseline, model=meta["model"],
                                          batch=1, input_size="x", dtype="float32")
            for r, c in zip(rows, cases, strict=True):
                r["items"] = c.items
            self.rows += rows
            return rows

    suite = Planned(MODES["default"], verbose=False)
    faster_rcnn.configuration(suite, "resnet50", "fpn", "voc", ["torchvision"])
    faster_rcnn.configuration(suite, "resnet101", "c4", "voc", [])
    checks = {c["check"]: (c["value"], c["target"], c["must_show"]) for c in suite.checks}
    assert checks == {
        "Faster R-CNN resnet50-fpn inference: ours, oneDNN on / off": (2.0, ">= 1.0", False),
        "Faster R-CNN resnet50-fpn inference: ours, oneDNN on / torchvision":
            (1.5, ">= 1.0", False),
        "Faster R-CNN resnet50-fpn training step: ours, oneDNN on / torchvision":
            (1.5, ">= 1.0", True),
        "Faster R-CNN resnet50-fpn training step: ours, oneDNN on / off": (2.0, ">= 1.0", False),
        "Faster R-CNN resnet101-c4 inference: ours, oneDNN on / off": (2.0, ">= 1.0", False),
        # 20 batches in 0.5 s against one step in 1.0 s
        "VOC pipeline / Faster R-CNN R101-C4 training step": (40.0, ">= 3.0", True),
        "Faster R-CNN resnet101-c4 training step: ours, oneDNN on / off": (2.0, ">= 1.0", False),
    }
    assert {r["section"] for r in suite.rows if r["contender"].startswith("voc")} == {
        "input pipeline"}
