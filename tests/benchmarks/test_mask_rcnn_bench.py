"""The Mask R-CNN section (`python -m benchmarks --only mask_rcnn`): its plan, checks, counts
and the mask head's cost from made-up timings, its skips, and a torch worker without
TensorFlow."""

import pytest

from benchmarks import mask_rcnn as masks
from benchmarks import peers, report, settings
from benchmarks.timing import Case

SECONDS = {masks.OURS: 4.0, masks.OURS_BOXES: 3.0, masks.TORCHVISION: 6.0,
           masks.DETECTRON2: 5.0}


class FakeWorker:
    def __init__(self, counts):
        self.counts, self.requests = counts, []

    def request(self, op, **fields):
        self.requests.append((op, fields))
        return {"result": self.counts}


class FakePool:
    """The workers' detection counts by setting, as `mask_counts` answers them."""

    def __init__(self, counts):
        self.workers = {s: FakeWorker(c) for s, c in counts.items()}

    def get(self, setting):
        return self.workers[setting]


def planned_suite(mode_masks=True):
    """A suite whose `compare_remote` times each planned contender at `SECONDS` (3 rounds,
    the last round of ours 0.5 s slower), as the workers would."""
    from dataclasses import replace

    from benchmarks.suite import MODES, Suite

    class Planned(Suite):
        def compare_remote(self, section, figure, plan, baseline, repeats=None, items=None,
                           extra=None, **meta):
            self.asked = (section, figure, plan, baseline, repeats, meta)
            cases = []
            for setting, (names, _args) in plan.items():
                for name in names:
                    t = SECONDS[name]
                    times = [t, t, t + 0.5] if name == masks.OURS else [t] * 3
                    cases.append(Case(settings.label(name, setting), lambda: None,
                                      times=times, cpu_times=times))
            rows = report.rows_from_cases(section, cases, baseline, model=meta["model"],
                                          batch=1, input_size="x", dtype="float32")
            for r, c in zip(rows, cases, strict=True):
                r["peer"] = c.name.split(", oneDNN")[0]
            self.rows += rows
            return rows

    mode = replace(MODES["default"], masks=mode_masks)
    return Planned(mode, verbose=False)


@pytest.fixture
def data_and_d2(tmp_path, monkeypatch):
    """A data folder holding the photo's path and a detectron2 source tree with its config
    (neither is read: the timings are made up)."""
    photo = tmp_path / "data" / masks.PHOTO
    photo.parent.mkdir(parents=True)
    photo.write_bytes(b"")
    d2 = tmp_path / "d2"
    (d2 / "detectron2").mkdir(parents=True)
    (d2 / "detectron2" / "__init__.py").write_text("")
    (d2 / "configs" / masks.D2_CONFIG).parent.mkdir(parents=True)
    (d2 / "configs" / masks.D2_CONFIG).write_text("")
    monkeypatch.setenv("KRS_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv(masks.D2_ENV, str(d2))
    monkeypatch.setattr(peers, "torchvision_wanted", lambda: True)
    return d2


def test_section_plans_ours_and_both_peers_and_checks_each(data_and_d2):
    from benchmarks.sections import mask_rcnn
    from keras_resnet_suite.runtime import onednn_pays_off

    ours_setting = settings.ON if onednn_pays_off(1) else settings.OFF
    suite = planned_suite()
    suite.pool = FakePool({ours_setting: {masks.OURS: 100, masks.OURS_BOXES: 100},
                           settings.TORCH: {masks.TORCHVISION: 100, masks.DETECTRON2: 97}})
    mask_rcnn.mask_rcnn(suite)
    section, figure, plan, baseline, repeats, meta = suite.asked
    assert (section, figure, baseline, repeats) == (
        "mask_rcnn inference", "mask-rcnn-infer", masks.TORCHVISION, suite.mode.det_repeats)
    assert plan == {ours_setting: ([masks.OURS, masks.OURS_BOXES], {}),
                    settings.TORCH: ([masks.TORCHVISION, masks.DETECTRON2], {})}
    ours = settings.label(masks.OURS, ours_setting)
    checks = {c["check"]: (c["value"], c["target"], c["must_show"]) for c in suite.checks}
    assert checks == {  # rounds: 6 / 4, 6 / 4, 6 / 4.5 and 5 / 4, 5 / 4, 5 / 4.5
        f"Mask R-CNN R50-FPN inference: {ours} / {masks.TORCHVISION}": (1.5, ">= 1.0", False),
        f"Mask R-CNN R50-FPN inference: {ours} / {masks.DETECTRON2}": (1.25, ">= 1.0", False),
    }
    assert {r["contender"]: r["detections"] for r in suite.rows} == {
        ours: 100, settings.label(masks.OURS_BOXES, ours_setting): 100,
        masks.TORCHVISION: 100, masks.DETECTRON2: 97}
    assert any(f"{masks.DETECTRON2} 97" in n for n in suite.notes)
    cost = next(n for n in suite.notes if n.startswith("our mask head's cost"))
    assert cost == ("our mask head's cost at 100 detections: 1.00 s wall, 1.00 s CPU per image "
                    "(paired medians; MaskRCNN 4.00 s vs FasterRCNN 3.00 s, which is 1.33x as "
                    "fast)")
    assert suite.skipped == [mask_rcnn.SAVED_MODEL_NOT_TIMED]


def test_section_says_why_it_skips(data_and_d2, monkeypatch, tmp_path):
    from benchmarks.sections import mask_rcnn

    suite = planned_suite(mode_masks=False)
    mask_rcnn.mask_rcnn(suite)
    assert suite.skipped == ["Mask R-CNN timings: opt-in: python -m benchmarks --only "
                             "mask_rcnn (or --detection)"] and not suite.rows
    monkeypatch.setenv(masks.D2_ENV, str(tmp_path / "absent"))
    suite = planned_suite()
    suite.pool = FakePool({s: {} for s in (settings.ON, settings.OFF, settings.TORCH)})
    mask_rcnn.mask_rcnn(suite)
    assert suite.asked[2][settings.TORCH] == ([masks.TORCHVISION], {})
    assert suite.skipped[0] == (f"{masks.DETECTRON2}: detectron2 source not found at "
                                f"{tmp_path / 'absent'} (set DETECTRON2_SRC)")
    assert [c["check"].split(" / ")[-1] for c in suite.checks] == [masks.TORCHVISION]
    monkeypatch.setenv("KRS_DATA_DIR", str(tmp_path / "nodata"))
    (tmp_path / "nodata").mkdir()
    suite = planned_suite()
    mask_rcnn.mask_rcnn(suite)
    assert suite.skipped == [f"Mask R-CNN timings: ../shared/data/{masks.PHOTO} not found"]


def test_detectron2_config_absent_is_named(tmp_path, monkeypatch):
    (tmp_path / "detectron2").mkdir()
    (tmp_path / "detectron2" / "__init__.py").write_text("")
    monkeypatch.setenv(masks.D2_ENV, str(tmp_path))
    assert masks.detectron2_missing() == \
        f"{tmp_path / 'configs' / masks.D2_CONFIG}: config not found"


def test_only_mask_rcnn_opts_in_and_is_a_cpu_section():
    from benchmarks import run
    from benchmarks.sections import CPU_SECTIONS, SECTIONS

    assert "mask_rcnn" in SECTIONS and "mask_rcnn" in CPU_SECTIONS
    parse = run.parser().parse_args
    assert run._mode(parse(["--only", "mask_rcnn"]), False).masks
    assert run._mode(parse(["--detection"]), False).masks
    assert not run._mode(parse(["--only", "detection"]), False).masks
    assert run._mode(parse(["--only", "mask_rcnn", "--repeats", "5"]), False).det_repeats == 5


def test_counted_cases_record_each_calls_detections():
    outputs = iter([{"n": 100}, {"n": 7}])
    case = masks._counted("x", lambda: next(outputs), lambda out: out["n"])
    case.run()
    assert masks.COUNTS["x"] == 100
    case.run()
    assert masks.COUNTS["x"] == 7 and case.items == 1


def test_torch_worker_loads_no_tensorflow():
    # The Mask R-CNN peers share their process with no TensorFlow: the torch worker loads
    # Keras only for figures that import it ("onednn" is answered only where TF is loaded).
    if not peers.torchvision_wanted():  # find_spec only: torch after TF segfaults (run.py)
        pytest.skip("torch/torchvision not installed (optional peers)")
    pool = settings.Pool()
    try:
        info = pool.get(settings.TORCH).request("call", fn="info")["result"]
        counts = pool.get(settings.TORCH).request("call", fn="mask_counts")["result"]
    finally:
        pool.close()
    assert "onednn" not in info and info["torch_threads"] >= 1
    assert counts == {}
