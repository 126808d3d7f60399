"""The detection TFDS paths (`voc/2007`, `voc/2012`, `coco/2017`) end to end through the real
`tfds.load` machinery on `tfds.testing.mock_data` (code-only builders, no download): element
layout, class names, the normalised yxyx -> pixel xyxy conversion checked exactly against the
TFDS examples, two training steps of the tiny detector from a `voc_tfds` config, and the one
line an unavailable set gives."""

import functools
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

import detection.data
from detection.config import CONFIGS, from_dict
from detection.data.tfds import COCO_CATEGORY_IDS
from detection.data.voc import VOC_CLASSES
from keras_resnet_suite.data.tfds import DatasetUnavailable

tfds = pytest.importorskip("tensorflow_datasets")
mocking = pytest.importorskip("tensorflow_datasets.testing.mocking")

N = 3  # mock examples per split
REPO = Path(__file__).resolve().parents[3]


def _mock(**kwargs):
    return tfds.testing.mock_data(num_examples=N, policy=tfds.testing.MockPolicy.USE_CODE,
                                  **kwargs)


@pytest.fixture
def mocked():
    """Random examples from the builders' features: every variable length (image sides,
    objects per field) drawn independently, so images are not square."""
    with _mock():
        yield


@pytest.fixture
def aligned(monkeypatch):
    """Every variable length 10 (10x10 images, 10 objects in every per-object field), so the
    objects' boxes, labels and flags line up as in real data and a model can train on them."""
    init = mocking.RandomFakeGenerator.__init__
    monkeypatch.setattr(mocking.RandomFakeGenerator, "__init__",
                        functools.partialmethod(init, constant_dynamic_shape=True))
    with _mock():
        yield


def _pixel_xyxy(bbox, image):
    """The expected conversion in float32 (the same rounding as TensorFlow's)."""
    h, w = np.float32(image.shape[0]), np.float32(image.shape[1])
    ymin, xmin, ymax, xmax = bbox.T
    return np.stack([xmin * w, ymin * h, xmax * w, ymax * h], axis=1)


@pytest.mark.parametrize("year, split", [(2007, "train"), (2012, "validation")])
def test_voc_elements_are_the_tfds_examples_in_pixel_xyxy(mocked, tmp_path, year, split):
    ds = detection.data.voc_tfds(split, year=year, data_dir=tmp_path)
    ours = list(ds.as_numpy_iterator())
    raw = list(tfds.load(f"voc/{year}", split=split, data_dir=tmp_path).as_numpy_iterator())
    assert len(ours) == len(raw) == ds.num_examples == N
    assert ds.class_names == list(VOC_CLASSES) and len(ds.class_names) == 20
    assert ds.name_to_label["person"] == 14 and ds.label_to_name[14] == "person"
    # the builder's own label feature names the same 20 classes in the same order
    info = tfds.builder(f"voc/{year}").info
    assert list(info.features["objects"]["label"].names) == list(VOC_CLASSES)
    for e, r in zip(ours, raw, strict=True):
        assert set(e) == {"images", "bounding_boxes", "image_id", "difficult", "iscrowd", "area"}
        assert e["images"].dtype == np.float32 and e["images"].shape == r["image"].shape
        assert r["image"].shape[0] != r["image"].shape[1]  # height and width cannot be swapped
        np.testing.assert_array_equal(e["images"], r["image"].astype(np.float32))
        boxes = e["bounding_boxes"]["boxes"]
        assert boxes.dtype == np.float32
        np.testing.assert_array_equal(boxes, _pixel_xyxy(r["objects"]["bbox"], r["image"]))
        labels = e["bounding_boxes"]["labels"]
        assert labels.dtype == np.int32
        np.testing.assert_array_equal(labels, r["objects"]["label"])
        np.testing.assert_array_equal(e["difficult"], r["objects"]["is_difficult"])
        assert e["image_id"] == r["image/filename"].rsplit(b".", 1)[0]
        assert not e["iscrowd"].any() and len(e["iscrowd"]) == len(boxes)
        np.testing.assert_array_equal(
            e["area"], (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]))


def test_coco_elements_are_the_tfds_examples_in_pixel_xyxy(mocked, tmp_path):
    ds = detection.data.coco_tfds("validation", data_dir=tmp_path)
    ours = list(ds.as_numpy_iterator())
    raw = list(tfds.load("coco/2017", split="validation", data_dir=tmp_path)
               .as_numpy_iterator())
    assert len(ours) == len(raw) == ds.num_examples == N
    info = tfds.builder("coco/2017").info
    assert ds.class_names == list(info.features["objects"]["label"].names)
    assert len(ds.class_names) == 80 and tuple(ds.category_ids) == COCO_CATEGORY_IDS
    assert ds.label_to_category[0] == 1 and ds.category_to_label[90] == 79
    for e, r in zip(ours, raw, strict=True):
        np.testing.assert_array_equal(e["images"], r["image"].astype(np.float32))
        np.testing.assert_array_equal(e["bounding_boxes"]["boxes"],
                                      _pixel_xyxy(r["objects"]["bbox"], r["image"]))
        np.testing.assert_array_equal(e["bounding_boxes"]["labels"], r["objects"]["label"])
        np.testing.assert_array_equal(e["area"], r["objects"]["area"].astype(np.float32))
        np.testing.assert_array_equal(e["iscrowd"], r["objects"]["is_crowd"])
        assert e["image_id"] == str(r["image/id"]).encode()
        assert not e["difficult"].any()


def test_skip_difficult_drops_those_objects_and_keeps_the_rest_aligned(aligned, tmp_path):
    ds = detection.data.voc_tfds("train", data_dir=tmp_path, skip_difficult=True)
    raw = tfds.load("voc/2007", split="train", data_dir=tmp_path).as_numpy_iterator()
    for e, r in zip(ds.as_numpy_iterator(), raw, strict=True):
        keep = ~r["objects"]["is_difficult"]
        assert 0 < keep.sum() < 10  # the mock's 10 objects hold both kinds
        np.testing.assert_array_equal(e["bounding_boxes"]["boxes"],
                                      _pixel_xyxy(r["objects"]["bbox"][keep], r["image"]))
        np.testing.assert_array_equal(e["bounding_boxes"]["labels"],
                                      r["objects"]["label"][keep])
        assert not e["difficult"].any() and len(e["area"]) == keep.sum()


def test_tiny_detector_trains_two_steps_from_a_voc_tfds_config(aligned, tmp_path):
    from detection.engine.train import train

    raw = yaml.safe_load((CONFIGS / "raccoon_tiny.yaml").read_text())
    raw["model"].update(image_size=[64, 64], anchor_sizes=[16, 32],
                        backbone_kwargs={"depths": [1, 1, 1, 1], "widths": [8, 16, 32, 64],
                                         "stem_width": 8})
    raw["data"].update(num_classes=20, class_names=list(VOC_CLASSES), eval=None,
                       train={"loader": "voc_tfds", "year": 2007, "split": "train",
                              "data_dir": str(tmp_path / "tfds")})
    raw["train"].update(steps=2, batch_size=2, warmup_steps=0, lr_steps=[1], checkpoint_every=2)
    out = train(from_dict(raw), tmp_path / "run", verbose=0, evaluate=False)
    assert out["steps"] == 2 and out["weights"].is_file()
    history = out["history"]  # 3 images make one batch of 2 an epoch: two epochs of a step
    for key in ("loss", "rpn_cls_loss", "rpn_box_loss", "roi_cls_loss", "roi_box_loss"):
        assert len(history[key]) == 2 and np.isfinite(history[key]).all(), key


@pytest.mark.parametrize("loader, name", [("voc_tfds", "voc/2007"), ("coco_tfds", "coco/2017")])
def test_unprepared_set_is_one_line_naming_it_and_the_way_out(tmp_path, loader, name):
    spec = {"loader": loader, "split": "train", "data_dir": str(tmp_path), "download": False}
    with pytest.raises(DatasetUnavailable) as err:
        detection.data.dataset_from_config(spec)
    message = str(err.value)
    assert "\n" not in message
    assert message.startswith(f"TFDS dataset {name!r} is unavailable (FileNotFoundError: "
                              f"{name} is not prepared in {tmp_path}")
    assert f"prepared by hand in {tmp_path}" in message
    assert message.endswith("alternatively use the file loaders detection.data.voc / "
                            "detection.data.coco (loader: voc / coco) on a VOCdevkit or COCO "
                            "folder.")


def test_train_cli_answers_an_unprepared_set_with_one_error_line(tmp_path):
    raw = yaml.safe_load((CONFIGS / "raccoon_tiny.yaml").read_text())
    raw["data"].update(num_classes=20, class_names=list(VOC_CLASSES), eval=None,
                       train={"loader": "voc_tfds", "split": "train", "download": False,
                              "data_dir": str(tmp_path / "tfds")})
    config = tmp_path / "voc_tfds.yaml"
    config.write_text(yaml.safe_dump(raw))
    run = subprocess.run([sys.executable, "-m", "detection", "train", "--config", str(config),
                          "--out", str(tmp_path / "run")], cwd=REPO, capture_output=True,
                         text=True, timeout=300, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    assert run.returncode == 2, run.stderr
    errors = [line for line in run.stderr.splitlines() if line.startswith("error:")]
    assert errors == [line for line in run.stderr.splitlines() if "Traceback" in line
                      or line.startswith("error:")]
    assert len(errors) == 1 and errors[0].startswith(
        f"error: TFDS dataset 'voc/2007' is unavailable (FileNotFoundError: voc/2007 is not "
        f"prepared in {tmp_path / 'tfds'}")
    assert not (tmp_path / "run").exists()  # refused before anything was written
