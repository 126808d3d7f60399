"""oneDNN on/off side by side (benchmarks.settings): worker processes under each setting, calls
alternated across them, rows tagged for the side-by-side table."""

import pytest

from benchmarks import report, settings
from benchmarks.timing import Case


def test_workers_run_under_their_setting_and_alternate():
    pool = settings.Pool()
    try:
        assert pool.get(settings.ON).request("call", fn="info")["result"]["onednn"] is True
        assert pool.get(settings.OFF).request("call", fn="info")["result"]["onednn"] is False
        plan = {s: (["keras.applications"], {"depth": 50, "batch": 1})
                for s in (settings.ON, settings.OFF)}
        cases = settings.setup(pool, "classify-infer", plan, lambda _name: 1)
        assert [c.name for c in cases] == ["keras.applications, oneDNN on",
                                           "keras.applications, oneDNN off"]
        settings.alternate(cases, warmup=1, repeats=2)
        assert all(len(c.times) == 2 and c.cpu_times and c.peak_rss_mb > 0 for c in cases)
        assert min(t for c in cases for t in c.times) > 1e-3  # a ResNet-50 call in the worker
        with pytest.raises(settings.WorkerError, match="KeyError"):  # answered, worker still serving
            pool.get(settings.ON).request("run", case="nobody")
        settings.free(pool)
    finally:
        pool.close()
    assert not pool.workers


def test_side_by_side_table():
    def case(name, t):
        return Case(name, lambda: None, items=16, times=[t, t], cpu_times=[t, t])

    cases = [case("ours, oneDNN on", 1.0), case("ours, oneDNN off", 1.5),
             case("keras.applications, oneDNN on", 1.2), case("torchvision", 2.0)]
    rows = report.rows_from_cases("train step", cases, "keras.applications, oneDNN on",
                                  model="resnet50", batch=16, input_size="224x224",
                                  dtype="float32")
    for r, (peer, setting) in zip(rows, [("ours", settings.ON), ("ours", settings.OFF),
                                         ("keras.applications", settings.ON), ("torchvision", None)],
                                        strict=True):
        r["peer"], r["setting"] = peer, setting
    lines = report.settings_table(rows)
    assert "| train step, resnet50, batch 16 | keras.applications, oneDNN on | 1.200 (1.000 s) " \
           "| 0.800 (1.500 s) | 1.000 (1.200 s) | - | 0.600 (2.000 s) |" in lines
    assert report.settings_table([{k: v for k, v in r.items() if k != "setting"}
                                  for r in rows]) == []


def test_fresh_process_answers_its_last_json_line_or_fails_in_one_line():
    import sys

    code = "print('noise'); print('{\"a\": 1}'); print('{\"a\": 2}')"
    assert settings.fresh_process([sys.executable, "-c", code]) == {"a": 2}
    code = "import sys; print('{}'); sys.exit('ValueError: images must be 3-D')"
    with pytest.raises(settings.WorkerError) as failed:
        settings.fresh_process([sys.executable, "-c", code], what="probe")
    assert str(failed.value) == "probe: exit 1: ValueError: images must be 3-D"
    with pytest.raises(settings.WorkerError, match=r"^probe: exit 0: no output$"):
        settings.fresh_process([sys.executable, "-c", "pass"], what="probe")
