"""Property-based fuzzing of every reader a user's file reaches (issue 35), a short seeded run
of what `python -m benchmarks.fuzz` runs long: VOC XML, COCO JSON, labelling-tool export
folders, detection configs, `.pth`/`.th`/`.pkl`/`.h5` checkpoints, encoded-image headers and
the serving signatures' bytes decoding. Each input must end in a named error, a counted skip
or a correct result (`benchmarks.fuzz_targets`); anything else fails with the smallest input
Hypothesis finds. The `@example`s are the crashes the fuzzer found, kept as regressions.
"""

from __future__ import annotations

import json
import pickle

import numpy as np
import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, Phase, example, given, settings  # noqa: E402

from benchmarks.fuzz_inputs import checkpoint_seeds, image_seeds  # noqa: E402
from benchmarks.fuzz_targets import TARGETS, run_one  # noqa: E402

_VOC = (b"<annotation><size><width>%s</width><height>3</height></size><object><name>cat</name>"
        b"<bndbox><xmin>1</xmin><ymin>1</ymin><xmax>%s</xmax><ymax>3</ymax></bndbox></object>"
        b"</annotation>")


def _bogus_huffman() -> bytes:
    """A JPEG whose header walk passes but whose Huffman table libjpeg refuses."""
    jpeg = image_seeds()["jpeg"]
    i = jpeg.index(b"\xff\xc4")
    return jpeg[:i + 5] + b"\xff" * 16 + jpeg[i + 21:]


def _short(name: str):
    """Settings of one reader's short run: seeded, its `cases`, no deadline (shared CPUs), no
    shrinking (a failing input is reported as drawn: shrinking one through file readers can
    take minutes; `python -m benchmarks.fuzz` records failures without stopping)."""
    return settings(max_examples=TARGETS[name].cases, derandomize=True, deadline=None,
                    database=None, phases=[Phase.explicit, Phase.generate],
                    suppress_health_check=list(HealthCheck))


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return tmp_path_factory.mktemp("fuzz")


def _run(name, value, root) -> None:
    assert run_one(TARGETS[name], value, root) in ("error", "counted", "ok")


@_short("voc_xml")
@given(TARGETS["voc_xml"].strategy)
@example(_VOC % (b"inf", b"4"))  # OverflowError: int(float("inf")) for the size
@example(_VOC % (b"5", b"1e300"))  # a coordinate beyond float32: counted, not cast to inf
def test_fuzz_voc_xml(root, data):
    _run("voc_xml", data, root)


@_short("coco_json")
@given(TARGETS["coco_json"].strategy)
@example(b'{"images": [], "annotations": [], "categories": [], "x": "\xc6"}')  # not UTF-8
def test_fuzz_coco_json(root, data):
    _run("coco_json", data, root)


@_short("export_layout")
@given(TARGETS["export_layout"].strategy)
@example({"layout": "COCO root", "files": {"img.jpg": b"image",  # JSON not UTF-8
                                          "instances_train2017.json": b'{"images": \xfe'}})
def test_fuzz_export_layouts(root, export):
    _run("export_layout", export, root)


@_short("config_yaml")
@given(TARGETS["config_yaml"].strategy)
def test_fuzz_configs(root, data):
    _run("config_yaml", data, root)


@_short("checkpoint")
@given(TARGETS["checkpoint"].strategy)
# a classifier's state dict given as a detector checkpoint: the refusal did not name the file
@example(("pkl", pickle.dumps({"model": {"conv1.weight": np.zeros(2, np.float32)}}, 2)))
# a damaged HDF5 symbol-table node: h5py raised KeyError, not OSError
@example(("h5", checkpoint_seeds()["h5"].replace(b"SNOD", b"XNOD", 1)))
def test_fuzz_checkpoints(root, item):
    _run("checkpoint", item, root)


@_short("image_header")
@given(TARGETS["image_header"].strategy)
def test_fuzz_image_headers(root, data):
    _run("image_header", data, root)


@_short("serving_bytes")
@given(TARGETS["serving_bytes"].strategy)
@example(_bogus_huffman())  # InvalidArgumentError failed the whole batch
def test_fuzz_serving_bytes(root, data):
    _run("serving_bytes", data, root)


def test_the_long_run_records_counts(tmp_path):
    """`python -m benchmarks.fuzz` writes how many inputs each reader saw and how they ended."""
    from benchmarks import fuzz

    assert fuzz.main(["--cases", "5", "--targets", "config_yaml", "--out", str(tmp_path)]) == 0
    (result,) = tmp_path.glob("fuzz-*.json")
    record = json.loads(result.read_text())["targets"]["config_yaml"]
    assert record["cases"] == 5 and record["failures"] == 0
    assert sum(record["outcomes"].values()) == 5
    assert "| config_yaml | 5 |" in result.with_suffix(".md").read_text()
