"""MaskRCNN end to end on tiny backbones (C4 and FPN): the mask head's shapes, 2 training
steps with masks, predicted masks, `.keras` round trip, the four Faster R-CNN losses
unchanged by the mask branch, and bad input."""

import keras
import numpy as np
import pytest
from detector_helpers import tiny_detector, toy_batch
from keras import ops

from detection.modeling import LOSS_KEYS, MASK_LOSS_KEYS, MaskRCNN
from detection.modeling.faster_rcnn import GeneralizedRCNN
from detection.modeling.roi_heads import MaskHead
from detection.modeling.roi_heads.mask_heads import class_masks

pytestmark = pytest.mark.jax

MASK_SIZE = {"c4": 6, "fpn": 28}  # tiny C4 pools 6x6 -> res5 3x3 -> deconv 6x6


# FPN's traces take ~40 s under JAX on CPU; its mask RoIAlign (multilevel_roi_align) has its
# own JAX tests, so the JAX pass trains the C4 detector only.
@pytest.fixture(scope="module", params=["c4", pytest.param("fpn", marks=pytest.mark.tf_only)])
def trained(request, tmp_path_factory):
    """A tiny MaskRCNN fitted 2 steps on a batch with masks, its history and predictions
    before and after a `.keras` round trip (shared: one trace per head)."""
    keras.utils.set_random_seed(0)
    model = tiny_detector(request.param, masks=True)
    batch = toy_batch(masks=True)
    model.compile(optimizer=keras.optimizers.SGD(0.01))
    history = model.fit(batch, epochs=2, batch_size=2, verbose=0).history
    pred = model.predict(batch["images"], verbose=0)
    path = tmp_path_factory.mktemp("mask_rcnn") / f"{request.param}.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    return request.param, model, history, pred, loaded.predict(batch["images"], verbose=0), loaded


def test_mask_head_shapes_and_config():
    fpn = MaskHead(5, (8, 8, 8, 8), 8)
    fpn.build((None, 14, 14, 16))
    assert tuple(fpn(np.zeros((3, 14, 14, 16), "float32")).shape) == (3, 28, 28, 5)
    assert len(fpn.trainable_weights) == 2 * 4 + 2 + 2
    c4 = MaskHead.from_config(MaskHead(5, (), 8).get_config())
    assert c4.conv_dims == () and tuple(c4(np.zeros((2, 7, 7, 32), "float32")).shape) == \
        (2, 14, 14, 5)
    logits = np.arange(2 * 3 * 2 * 2 * 5, dtype="float32").reshape(2, 3, 2, 2, 5)
    got = ops.convert_to_numpy(class_masks(logits, np.array([[4, 0, -1], [1, 2, 3]])))
    np.testing.assert_array_equal(got[0, 0], logits[0, 0, ..., 4])
    np.testing.assert_array_equal(got[0, 2], logits[0, 2, ..., 0])  # padding: any map
    np.testing.assert_array_equal(got[1, 2], logits[1, 2, ..., 3])
    with pytest.raises(ValueError, match="MaskHead: num_classes must be >= 1, got 0"):
        MaskHead(0)


def test_fit_reports_five_finite_losses(trained):
    _, _, logs, _, _, _ = trained
    assert set(MASK_LOSS_KEYS) <= set(logs)
    assert all(np.isfinite(logs[k]).all() for k in MASK_LOSS_KEYS)
    assert 0.3 < logs["mask_loss"][0] < 1.0  # ~log 2 at the start: near-zero logits
    total = np.sum([logs[k][-1] for k in MASK_LOSS_KEYS])
    assert logs["loss"][-1] == pytest.approx(total, rel=1e-4)


def test_predict_gives_box_relative_masks_of_the_detected_class(trained):
    head, model, _, pred, _, _ = trained
    n = model.roi_heads.max_detections
    assert model.mask_size == MASK_SIZE[head]
    assert pred["masks"].shape == (2, n, MASK_SIZE[head], MASK_SIZE[head])
    assert pred["boxes"].shape == (2, n, 4)
    probs = pred["masks"]
    assert probs.min() >= 0.0 and probs.max() <= 1.0
    padding = pred["classes"] < 0
    assert np.all(probs[padding] == 0.0)
    assert np.all(probs[~padding] > 0.0)  # sigmoid of the detected class's logits


def test_saved_and_loaded_model_predicts_the_same(trained):
    _, model, _, pred, again, loaded = trained
    assert type(loaded).__name__ == "MaskRCNN" and loaded.mask_size == model.mask_size
    for key in pred:
        np.testing.assert_allclose(again[key], pred[key], atol=1e-6, err_msg=key)


# The composer's business, the same for both heads; eager (~20 s under JAX): one head.
@pytest.mark.parametrize("trained", ["c4"], indirect=True)
def test_the_four_faster_rcnn_losses_are_unchanged_by_masks(trained):
    _, model, _, _, _, _ = trained
    batch = toy_batch(masks=True)
    x, info = model.transform(batch["images"])
    truth = {**batch["bounding_boxes"], "masks": batch["masks"]}
    targets = model.transform.targets_to_canvas(truth, info)
    state = [np.array(v.numpy()) for v in model.variables]  # sampler seeds, BN statistics
    with_masks = model.stage_losses(x, info, targets)
    for v, value in zip(model.variables, state, strict=True):
        v.assign(value)
    boxes_only = GeneralizedRCNN.stage_losses(
        model, x, info, {k: targets[k] for k in ("boxes", "labels")})
    assert float(with_masks["mask_loss"]) > 0.0
    for key in LOSS_KEYS:
        assert float(with_masks[key]) == float(boxes_only[key]), key


def test_training_without_masks_is_one_clear_error(trained):
    _, model, _, _, _, _ = trained
    batch = toy_batch()
    with pytest.raises(ValueError, match=r"MaskRCNN trains on elements with 'masks'.*"
                                         r"got keys \['bounding_boxes', 'images'\]"):
        model(batch, training=True)


def test_masks_that_do_not_fit_the_boxes_are_one_clear_error(trained):
    _, model, _, _, _, _ = trained
    batch = toy_batch(masks=True)
    batch["masks"] = batch["masks"][:, :3]
    with pytest.raises(ValueError, match=r"'masks' must be \[batch, boxes, height, width\] = "
                                         r"\(2, 4, 64, 64\).*got \(2, 3, 64, 64\)"):
        model(batch, training=True)


def test_from_checkpoint_refuses_rather_than_leave_a_random_mask_head():
    # a box-only checkpoint has no mask head weights (before any download)
    with pytest.raises(ValueError, match=r"^torchvision/fasterrcnn_resnet50_fpn: a Faster R-CNN "
                                         r"checkpoint \(no mask head weights\) cannot make"):
        MaskRCNN.from_checkpoint("torchvision/fasterrcnn_resnet50_fpn")
