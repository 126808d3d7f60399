"""Published Mask R-CNN checkpoints without the network: the mask head's weights are mapped
(torchvision's ConvTranspose2d layout, its background map dropped, v2's BatchNorm head, old key
names), parameter counts equal torchvision's, a file's keys tell a Mask R-CNN, every problem of
a bad file is listed at once, and the box-only / mask mismatches answer in one line."""

from __future__ import annotations

import json
import pickle
import re
from pathlib import Path

import keras
import numpy as np
import pytest
from parity.seeded import load_skeleton, seeded_state
from PIL import Image

from detection import FasterRCNN, MaskRCNN
from detection.checkpoints import presets, pretrained, registry
from detection.modeling import detector_from_checkpoint
from detection.modeling.roi_heads import MaskHead
from tests.detection.checkpoints.test_pretrained import _non_frozen_params

SMALL = (128, 160)


def _np(x) -> np.ndarray:
    return keras.ops.convert_to_numpy(x)


def _d2_pkl(path: Path, state: dict) -> Path:
    with open(path, "wb") as f:
        pickle.dump({"model": state}, f)
    return path


@pytest.fixture(scope="module")
def d2_c4(tmp_path_factory):
    """detectron2's R50-C4 Mask R-CNN state (seeded) as a `.pkl`, loaded by from_checkpoint."""
    state = seeded_state(load_skeleton("d2_mask_r50_c4"), seed=0)
    path = _d2_pkl(tmp_path_factory.mktemp("d2") / "model_final.pkl", state)
    return state, path, MaskRCNN.from_checkpoint(path, SMALL)


@pytest.mark.tf_only
def test_a_detectron2_mask_file_loads_into_the_inferred_architecture(d2_c4):
    state, _, model = d2_c4
    arch = model.architecture
    assert (arch.library, arch.backbone, arch.head, arch.num_classes, arch.masks) == (
        "detectron2", "resnet50", "c4", 80, True)
    head = model.mask_head
    assert head.conv_dims == () and model.mask_size == 14
    # ConvTranspose2d [in, out, kh, kw] -> Conv2DTranspose [kh, kw, out, in], no flip
    np.testing.assert_array_equal(_np(head.deconv.kernel),
                                  state["roi_heads.mask_head.deconv.weight"].transpose(2, 3, 1, 0))
    np.testing.assert_array_equal(_np(head.predictor.kernel)[0, 0],
                                  state["roi_heads.mask_head.predictor.weight"][:, :, 0, 0].T)


@pytest.mark.tf_only
def test_every_problem_of_a_bad_mask_file_is_listed_at_once(d2_c4):
    state, _, model = d2_c4
    bad = dict(state)
    del bad["roi_heads.mask_head.deconv.weight"]
    bad["roi_heads.mask_head.mask_fcn1.weight"] = np.zeros((256, 2048, 3, 3), "float32")
    bad["roi_heads.mask_head.predictor.bias"] = np.zeros(81, "float32")
    with pytest.raises(ValueError) as err:
        pretrained.load_state(model, bad, model.architecture, source="bad.pkl")
    text = str(err.value)
    for expected in ("bad.pkl does not fit", "missing: roi_heads.mask_head.deconv.weight",
                     "unexpected: roi_heads.mask_head.mask_fcn1.weight",
                     "wrong shape: mask_head/mask_logits: checkpoint [(1, 1, 256, 80), (81,)]"):
        assert expected in text, (expected, text)


@pytest.mark.tf_only
def test_a_mask_checkpoint_gives_faster_rcnn_its_box_parts_with_a_note(d2_c4, capsys):
    state, path, mask_model = d2_c4
    model = FasterRCNN.from_checkpoint(path, SMALL)
    assert capsys.readouterr().out == (
        f"note: {path} is a Mask R-CNN checkpoint; FasterRCNN takes its box parts and leaves out "
        "the mask head (4 tensors; detection.MaskRCNN.from_checkpoint loads them)\n")
    np.testing.assert_array_equal(_np(model.roi_heads.cls.kernel),
                                  _np(mask_model.roi_heads.cls.kernel))


@pytest.mark.tf_only
def test_the_commands_weights_keep_a_mask_checkpoints_masks(d2_c4):
    # `--weights` of predict / evaluate / export: the checkpoint's kind picks the detector, and
    # each image at its reference canvas (ReferenceSizes) still returns its masks, padded alike
    _, path, _ = d2_c4
    # built at the canvas detectron2 gives a 90x120 image at 96/160, so one model serves
    model = detector_from_checkpoint(path, (96, 128), resize_min_size=96, resize_max_size=160,
                                     rpn_pre_nms_topk=(200, 200), rpn_post_nms_topk=(40, 40),
                                     score_threshold=0.0, max_detections=12)
    assert type(model) is MaskRCNN
    images = np.random.default_rng(0).integers(0, 256, (2, 90, 120, 3)).astype("float32")
    sizes = pretrained.ReferenceSizes(model)
    out = sizes.predict(images)
    assert sizes.model_for(90, 120) is model
    assert out["masks"].shape == (2, 12, 14, 14)
    for b in range(2):
        n = int(out["num_detections"][b])
        alone = sizes(images[b])
        assert n == len(alone["masks"]) > 0
        np.testing.assert_array_equal(out["masks"][b, :n], alone["masks"])
        assert not out["masks"][b, n:].any()


def test_a_faster_rcnn_checkpoint_cannot_make_a_mask_rcnn(tmp_path):
    # a registered name is refused before any download; a file after reading its keys
    box_only = _d2_pkl(tmp_path / "faster.pkl", seeded_state(load_skeleton("d2_r50_c4")))
    for source in ("torchvision/fasterrcnn_resnet50_fpn", box_only):
        with pytest.raises(ValueError, match=(
                rf"^{re.escape(str(source))}: a Faster R-CNN checkpoint \(no mask head weights\) cannot make a "
                r"MaskRCNN; use FasterRCNN.from_checkpoint, or a Mask R-CNN checkpoint: "
                r"detectron2/mask_rcnn_R_101_C4_3x, .*torchvision/maskrcnn_resnet50_fpn_v2$")):
            MaskRCNN.from_checkpoint(source)
    assert type(detector_from_checkpoint(box_only, SMALL)) is FasterRCNN  # what --weights build


@pytest.mark.tf_only
@pytest.mark.parametrize("name, published", [
    ("torchvision/maskrcnn_resnet50_fpn", 44_401_393),
    ("torchvision/maskrcnn_resnet50_fpn_v2", 46_359_409)])
def test_torchvision_masks_load_and_parameter_counts_equal_torchvision(name, published):
    # torchvision's `num_params`; it also has the background's box deltas (4 x 1024 + 4) and
    # mask map (256 + 1), which this package never computes.
    arch = pretrained.Architecture.of(registry.get(name))
    model = MaskRCNN.from_architecture(arch, SMALL)
    assert _non_frozen_params(model) + 4 * 1024 + 4 + 256 + 1 == published
    skeleton = "tv_mask_r50_fpn_v2" if name.endswith("_v2") else "tv_mask_r50_fpn_v1"
    state = seeded_state(load_skeleton(skeleton), seed=0)
    assert pretrained.infer_architecture("torchvision", state, name) == arch
    if skeleton.endswith("v1"):  # the published v1 file predates MaskRCNNHeads' renames
        old = (re.fullmatch(r"roi_heads\.mask_head\.(\d)\.0\.(weight|bias)", k) for k in state)
        state = {f"roi_heads.mask_head.mask_fcn{int(m[1]) + 1}.{m[2]}" if m else k: v
                 for m, (k, v) in zip(old, state.items(), strict=True)}
        assert "roi_heads.mask_head.mask_fcn4.bias" in state
    pretrained.load_state(model, state, arch, source=name)
    head = model.mask_head
    logits = state["roi_heads.mask_predictor.mask_fcn_logits.weight"][:, :, 0, 0]
    np.testing.assert_array_equal(_np(head.predictor.kernel)[0, 0], logits[1:].T)  # no bg
    if skeleton.endswith("v2"):
        assert head.norm == "batch" and not head.convs[0].use_bias
        np.testing.assert_array_equal(_np(head.norms[2].moving_variance),
                                      state["roi_heads.mask_head.2.1.running_var"])
    else:
        np.testing.assert_array_equal(_np(head.convs[3].bias),
                                      state["roi_heads.mask_head.mask_fcn4.bias"])


@pytest.mark.jax
def test_mask_head_norm_option_round_trips_and_old_configs_load():
    head = MaskHead(5, (8, 8), 8, norm="batch")
    head.build((None, 7, 7, 4))
    assert [n.name for n in head.norms] == ["mask_fcn1_bn", "mask_fcn2_bn"]
    assert MaskHead.from_config(head.get_config()).norm == "batch"
    old = {k: v for k, v in MaskHead(5, (8,), 8).get_config().items() if k != "norm"}
    assert MaskHead.from_config(old).norm is None  # a .keras saved before the option
    with pytest.raises(ValueError, match=r"^MaskHead: norm must be None or 'batch', got 'group'$"):
        MaskHead(5, norm="group")


@pytest.mark.tf_only
def test_the_commands_predict_evaluate_and_export_a_mask_checkpoint(d2_c4, tmp_path, shared_data,
                                                                    monkeypatch):
    import tensorflow as tf

    from detection.__main__ import main

    _, path, _ = d2_c4
    # a smaller size rule and fewer proposals than detectron2's (800 px, 1000) keep it quick
    monkeypatch.setitem(presets.DETECTRON2, "c4", presets.DETECTRON2["c4"].replace(
        resize_min_size=160.0, resize_max_size=256.0, rpn_post_nms_topk=(50, 50)))
    coco = shared_data / "coco-mini"
    image = coco / "val2017" / "000000000139.jpg"
    assert main(["predict", str(image), "--weights", str(path), "--out", str(tmp_path / "p"),
                 "--score-threshold", "0.0"]) == 0
    dets = json.loads((tmp_path / "p" / "detections.json").read_text())[0]["detections"]
    assert dets and all(d["mask_rle"]["size"] == [426, 640] for d in dets)
    # COCO data and a Mask R-CNN: mask AP, with the same detections' box AP beside it
    assert main(["evaluate", "--weights", str(path), "--data", str(coco), "--max-images", "1",
                 "--json", str(tmp_path / "ap.json")]) == 0
    scores = json.loads((tmp_path / "ap.json").read_text())
    assert {"AP", "AP50", "AP75"} <= set(scores) and {"AP", "AP50"} <= set(scores["bbox"])
    out = tmp_path / "saved"
    assert main(["export", "--weights", str(path), "--image-size", "160", "256",
                 "--out", str(out)]) == 0
    served = tf.saved_model.load(str(out)).signatures["serving_default"]
    pixels = np.asarray(Image.open(image).convert("RGB"))
    got = {k: v.numpy()[0] for k, v in served(images=tf.constant(pixels[None])).items()}
    assert got["detection_masks"].shape[1:] == (14, 14) and int(got["num_detections"]) > 0
