"""The one DataReport: classification's skip() and detection's kinds, notes and totals."""

import pytest

from keras_resnet_suite.data.report import DataReport


class _Kinds(DataReport):
    KINDS = {"corrupt_image": "cannot be decoded", **DataReport.KINDS}


def test_skip_and_kinds_share_one_report_and_round_trip():
    report = _Kinds("toy", {"train": 3})
    report.skip("a.txt", "not an image")
    report.add("corrupt_image", "b.jpg", "truncated")
    report.note("classes discovered: cat, dog")
    other = _Kinds("toy")
    other.num_images, other.num_objects = 2, 5
    report.merge(other)
    assert report.skipped == [("a.txt", "not an image")] and report.num_skipped == 1
    assert report.counts == {"skipped": 1, "corrupt_image": 1}
    assert report.files("corrupt_image") == ["b.jpg"] and report.name == "toy"
    text = report.summary()
    assert text.startswith("Data report for toy: train=3; 2 images, 5 objects kept; skipped 1")
    assert "classes discovered" in text and "b.jpg: truncated" in text and "a.txt" in text
    again = _Kinds.from_dict(report.to_dict())
    assert again.summary() == text and again.counts == report.counts
    with pytest.raises(ValueError, match="unknown data-report kind"):
        DataReport().add("corrupt_image", "b.jpg")


def test_old_cached_form_still_loads():
    report = DataReport.from_dict({"source": "cifar10", "loaded": {"train": 1},
                                   "skipped": [["x.png", "bad"]]})
    assert report.loaded == {"train": 1} and report.skipped == [("x.png", "bad")]
