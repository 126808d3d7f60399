"""Published detector checkpoints end to end, without the network: converted files load into
the preset's architecture (inferred from a file's keys), bad files fail with one error listing
every problem, parameter counts equal the libraries' own, and `predict`/`export --weights`
work with the class names and official COCO category ids that travel with the checkpoint."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import keras
import numpy as np
import pytest
from parity.seeded import load_skeleton, seeded_state
from PIL import Image

from detection import FasterRCNN
from detection.checkpoints import presets, pretrained, registry
from detection.checkpoints.coco_classes import COCO_CATEGORIES

COCO_IDS = {c for c, _ in COCO_CATEGORIES}

pytestmark = [pytest.mark.tf_only]
SMALL = (256, 320)


def _d2_pkl(path: Path, state: dict) -> Path:
    with open(path, "wb") as f:
        pickle.dump({"model": state, "__author__": "test"}, f)
    return path


def _non_frozen_params(model) -> int:
    """What `sum(p.numel() for p in model.parameters())` counts in PyTorch: every weight but
    BN running statistics, and no weight of a frozen BN (FrozenBatchNorm2d holds buffers)."""
    from keras_resnet_suite.compat import flatten_layers
    from keras_resnet_suite.normalization import FrozenBatchNormalization

    total = 0
    for layer in flatten_layers(model):
        if isinstance(layer, FrozenBatchNormalization):
            continue
        if isinstance(layer, keras.layers.BatchNormalization):
            total += int(np.prod(layer.gamma.shape)) * 2
        elif not layer._layers:
            total += sum(int(np.prod(w.shape)) for w in layer.weights)
    return total


@pytest.mark.parametrize("name, published", [
    ("torchvision/fasterrcnn_resnet50_fpn", 41_755_286),
    ("torchvision/fasterrcnn_resnet50_fpn_v2", 43_712_278)])
def test_parameter_counts_equal_torchvision(name, published):
    # torchvision's `num_params`; its predictor has box deltas for the background too
    # (4 x 1024 + 4), which this package never computes.
    model = FasterRCNN.from_architecture(pretrained.Architecture.of(registry.get(name)), SMALL)
    assert _non_frozen_params(model) + 4 * 1024 + 4 == published


def test_a_detectron2_file_loads_into_the_inferred_architecture(tmp_path):
    state = seeded_state(load_skeleton("d2_r50_fpn"), seed=0)
    path = _d2_pkl(tmp_path / "model_final.pkl", state)
    detector = FasterRCNN.from_checkpoint(path, SMALL)
    arch = detector.architecture
    assert (arch.library, arch.preset, arch.backbone, arch.head, arch.num_classes) == (
        "detectron2", "detectron2", "resnet50", "fpn", 80)
    assert detector.class_names[0] == "person" and detector.category_ids[-1] == 90
    fc2 = detector.roi_heads.fcs[1].kernel
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(fc2),
                                  state["roi_heads.box_head.fc2.weight"].T)
    # The stem takes RGB: detectron2's BGR kernel has its input channels reversed.
    stem = next(layer for layer in detector.backbone.get_layer("conv1").chain
                if isinstance(layer, keras.layers.Conv2D)).kernel
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(stem),
                                  state["backbone.bottom_up.stem.conv1.weight"]
                                  .transpose(2, 3, 1, 0)[:, :, ::-1])


def test_every_problem_of_a_bad_file_is_listed_at_once(tmp_path):
    state = seeded_state(load_skeleton("d2_r50_c4"), seed=0)
    del state["proposal_generator.rpn_head.conv.weight"]
    del state["backbone.res3.1.conv2.norm.running_var"]
    state["roi_heads.box_predictor.extra.weight"] = np.zeros(3, "float32")
    state["roi_heads.box_predictor.bbox_pred.bias"] = np.zeros(7, "float32")
    with pytest.raises(ValueError) as err:
        FasterRCNN.from_checkpoint(_d2_pkl(tmp_path / "bad.pkl", state), SMALL)
    text = str(err.value)
    for expected in ("bad.pkl", "backbone.res3.1.conv2.norm",
                     "proposal_generator.rpn_head.conv.weight",
                     "roi_heads.box_predictor.extra.weight", "box_deltas"):
        assert expected in text, (expected, text)


def test_predict_and_export_with_weights(tmp_path, shared_data, monkeypatch):
    import tensorflow as tf

    from detection.__main__ import main

    state = seeded_state(load_skeleton("d2_r50_fpn"), seed=0)
    path = _d2_pkl(tmp_path / "d2_r50_fpn.pkl", state)
    image = shared_data / "voc2007-sample" / "VOC2007" / "JPEGImages" / "000001.jpg"
    # At the reference size (800 x 576 for this 353 x 500 photo) a run is slow on 2 cores; a
    # smaller size rule exercises the same code.
    monkeypatch.setitem(presets.DETECTRON2, "fpn", presets.DETECTRON2["fpn"].replace(
        resize_min_size=192.0, resize_max_size=320.0, rpn_post_nms_topk=(100, 100)))
    assert main(["predict", str(image), "--weights", str(path), "--out", str(tmp_path / "p"),
                 "--score-threshold", "0.0"]) == 0
    result = json.loads((tmp_path / "p" / "detections.json").read_text())[0]
    assert result["detections"], "seeded weights give detections"
    assert {d["category_id"] for d in result["detections"]} <= COCO_IDS
    assert (tmp_path / "p" / "000001.png").stat().st_size > 0
    # evaluate: the data's classes matched by name, each image at its reference size.
    coco = shared_data / "coco-mini"
    assert main(["evaluate", "--weights", str(path), "--data", str(coco), "--max-images", "1",
                 "--json", str(tmp_path / "ap.json")]) == 0
    scores = json.loads((tmp_path / "ap.json").read_text())
    assert {"AP", "AP50", "AP75", "APs", "APm", "APl"} <= set(scores)
    # Scored are exactly the classes of the one image (the file's first), keyed by name; the
    # others have no ground truth (NaN).
    annotations = json.loads((coco / "annotations" / "instances_val2017.json").read_text())
    index = {c: i for i, c in enumerate(sorted(c["id"] for c in annotations["categories"]))}
    first = annotations["images"][0]["id"]
    present = {index[a["category_id"]] for a in annotations["annotations"]
               if a["image_id"] == first}
    names = [c["name"] for c in sorted(annotations["categories"], key=lambda c: c["id"])]
    assert {k for k, v in scores["per_class"].items() if v == v} == {names[i] for i in present}
    out = tmp_path / "saved"
    assert main(["export", "--weights", str(path), "--image-size", "256", "320",
                 "--out", str(out)]) == 0
    assert 'name: "person"' in (out / "assets.extra" / "label_map.pbtxt").read_text()
    served = tf.saved_model.load(str(out)).signatures["serving_default"]
    pixels = np.asarray(Image.open(image).convert("RGB"))
    got = {k: v.numpy()[0] for k, v in served(images=tf.constant(pixels[None])).items()}
    n = int(got["num_detections"])
    assert n > 0 and set(got["detection_classes"][:n].astype(int)) <= COCO_IDS
    # The SavedModel serves the Keras model's detections (same canvas, same weights).
    model = FasterRCNN.from_checkpoint(path, (256, 320))
    want = {k: v[0] for k, v in model.predict(pixels[None].astype("float32"), verbose=0).items()}
    assert int(want["num_detections"]) == n
    h, w = pixels.shape[:2]
    boxes = want["boxes"][:n][:, [1, 0, 3, 2]] / np.array([h, w, h, w], "float32")
    np.testing.assert_allclose(got["detection_boxes"][:n], boxes, atol=1e-4)
    np.testing.assert_allclose(got["detection_scores"][:n], want["scores"][:n], atol=1e-5)
    ids = np.asarray(model.category_ids)[want["classes"][:n]]
    np.testing.assert_array_equal(got["detection_classes"][:n].astype(int), ids)
