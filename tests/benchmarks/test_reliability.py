"""`python -m benchmarks.reliability`'s serving load in small: both exported SavedModels answer
every mixed request, each bad upload is answered invalid naming its index and each good one
valid; the results writer's files; the weight comparison of the kill-and-resume part."""

import json

import numpy as np
import pytest

keras = pytest.importorskip("keras")
if keras.backend.backend() != "tensorflow":
    pytest.skip("SavedModel export is TensorFlow-only", allow_module_level=True)

from benchmarks import reliability, saved_models  # noqa: E402
from benchmarks.serving_requests import serving_load  # noqa: E402


@pytest.fixture(autouse=True)
def _seed():
    """No per-test seeding or `clear_session`: the one test builds its own models."""


def test_serving_load_accounts_for_every_element_and_writes_results(tmp_path):
    paths = saved_models.export_models(tmp_path)
    s = serving_load(paths, calls=24, every=8, seed=1, bad_rate=0.5)
    assert s["calls"] == 24 and s["failures"] == 0, s["failure_examples"]
    assert s["accounting_errors"] == 0, s["accounting_examples"]
    assert s["bad_elements_sent"] > 0  # seed 1 sends bad uploads in this many calls
    assert s["invalid_answers"] == s["bad_elements_sent"]
    assert sum(k["calls"] for k in s["latency_ms_by_kind"].values()) == 24
    assert set(s["latency_ms_by_kind"]) == {f"{m} {sig}" for m in ("classifier", "detector")
                                           for sig in ("serving_default", "serving_bytes")}
    assert [n for n, _ in s["rss_mb"]] == [0, 8, 16, 24] and s["rss_growth_from_call"] == 0
    assert s["latency_ms"]["p50"] <= s["latency_ms"]["p95"]
    assert s["distinct_image_shapes"]["classifier"] <= 4  # [1-4, 32, 32, 3]
    assert 1 <= s["distinct_image_shapes"]["detector"] <= s["calls"] + 4

    result = {"host": "testhost", "date": "2026-12-06", "load": [1.0, 2.0, 3.0], "serving": s,
              "kill_and_resume": [{"name": "python -m detection train", "total_steps": 32,
                                   "killed_at_step": 11, "resumed_from_step": 8,
                                   "steps_redone": 3, "identical": True, "max_abs_diff": 0.0,
                                   "arrays": 163, "time_lost_s": 20.5,
                                   "uninterrupted_s": 24.0}]}
    js, md = reliability.write_results(result, tmp_path / "results")
    assert js.name == "reliability-testhost-2026-12-06.json" and md.suffix == ".md"
    assert json.loads(js.read_text())["serving"]["failures"] == 0
    table = md.read_text()
    assert ("| `python -m detection train` | 11 of 32 | 8 | 3 | bit-identical (163 arrays) | "
            "20.5 / 24.0 |") in table
    assert table.rstrip().endswith("`python -m benchmarks.reliability --calls 24`")
    assert f"| 24 | 0 | {s['bad_elements_sent']} / {s['invalid_answers']} | 0 |" in table


def test_compare_weights_reports_identity_and_the_largest_difference():
    a = {"w": np.array([1.0, 2.0], np.float32), "b": np.zeros(3, np.float32)}
    assert reliability.compare_weights(a, dict(a)) == {"arrays": 2, "identical": True,
                                                       "max_abs_diff": 0.0}
    b = {"w": np.array([1.0, 2.5], np.float32), "b": np.zeros(3, np.float32)}
    assert reliability.compare_weights(a, b) == {"arrays": 2, "identical": False,
                                                 "max_abs_diff": 0.5}
    with pytest.raises(ValueError, match="different weight names: \\['b'\\]"):
        reliability.compare_weights(a, {"w": a["w"]})


def test_a_run_with_onednn_off_is_written_beside_the_default_one(tmp_path):
    result = {"host": "h", "date": "2026-12-06", "load": [], "onednn": False,
              "tensorflow": "TensorFlow oneDNN kernels off (TF_ENABLE_ONEDNN_OPTS=0)"}
    js, md = reliability.write_results(result, tmp_path)
    assert (js.name, md.name) == ("reliability-h-2026-12-06-onednn-off.json",
                                  "reliability-h-2026-12-06-onednn-off.md")
    text = md.read_text()
    assert "kernels off (TF_ENABLE_ONEDNN_OPTS=0)" in text.splitlines()[0]
    assert text.rstrip().endswith(
        "Reproduce: `TF_ENABLE_ONEDNN_OPTS=0 python -m benchmarks.reliability --skip-train`")
