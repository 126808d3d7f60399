"""Mask R-CNN's mask ops: pasting and the RoIAligned targets equal torchvision's (stored in
parity/masks.npz, and rerun where torchvision is installed); the per-class loss equals a
direct numpy cross-entropy; the transform brings masks onto the canvas as it does images."""

import pathlib

import numpy as np
import pytest
from keras import ops

from detection.evaluation.paste import paste_masks
from detection.modeling.ops import masks
from detection.modeling.transform import ImageTransform
from tests.conftest import load_script, reference_npz, stored_or_live

pytestmark = pytest.mark.jax

PARITY = pathlib.Path(__file__).resolve().parents[2] / "parity"
MAKE = PARITY / "make_mask_reference.py"



make = load_script("make_mask_reference", MAKE)


@pytest.fixture(scope="module", params=stored_or_live("torchvision"))
def reference(request, tmp_path_factory):
    """torchvision's pasted masks and mask targets with their inputs: stored, or computed
    afresh in a subprocess (torch and TensorFlow crash in one process)."""
    return reference_npz(request.param, PARITY / "masks.npz", MAKE, tmp_path_factory)


def test_stored_inputs_are_the_scripts():
    stored = np.load(PARITY / "masks.npz")
    for key, value in make.inputs().items():
        np.testing.assert_array_equal(stored[key], value)


def test_paste_masks_equals_torchvision(reference):
    got = paste_masks(reference["probs"], reference["paste_boxes"], make.HEIGHT, make.WIDTH)
    assert got.dtype == np.uint8 and got.shape == (6, make.HEIGHT, make.WIDTH)
    assert reference["pasted"].sum() > 1000  # the reference pastes something
    np.testing.assert_array_equal(got, reference["pasted"])


def test_paste_masks_detectron2_rule_equals_its_grid_sample(reference):
    got = paste_masks(reference["probs"], reference["paste_boxes"], make.HEIGHT,
                            make.WIDTH, rule="detectron2")
    want = reference["pasted_detectron2"]
    assert want.sum() > 1000 and (want != reference["pasted"]).any()  # another rule
    np.testing.assert_array_equal(got, want)


def test_mask_targets_equal_torchvision(reference, jit):
    fn = jit(lambda m, i, r: masks.mask_targets(m, i, r, make.SIZE))
    got = ops.convert_to_numpy(fn(reference["gt_masks"], reference["matched"], reference["rois"]))
    assert got.shape == (2, 4, make.SIZE, make.SIZE)
    assert 0.1 < reference["targets"].mean() < 0.9  # neither empty nor full
    np.testing.assert_allclose(got, reference["targets"], atol=1e-5)


def test_paste_masks_outside_the_image_and_bad_shapes():
    probs = np.ones((2, 4, 4), "float32")
    boxes = np.array([[50.0, 45.0, 70.0, 60.0], [2.0, 2.0, 5.0, 5.0]], "float32")
    got = paste_masks(probs, boxes, 40, 48)
    assert got[0].sum() == 0  # wholly outside: nothing (torchvision raises here)
    assert got[1].sum() > 0
    with pytest.raises(ValueError, match=r"masks must be \[N, S, S\].*\(2, 4, 4\).*\(1, 4\)"):
        paste_masks(probs, boxes[:1], 40, 48)
    with pytest.raises(ValueError, match="rule must be one of .*'torchvision'.*got 'tf'"):
        paste_masks(probs, boxes, 40, 48, rule="tf")
    d2 = paste_masks(probs, boxes, 40, 48, rule="detectron2")
    assert d2[0].sum() == 0 and d2[1].sum() == 9  # the 3x3 pixels whose centres are inside


def test_mask_targets_crop_the_matched_object():
    gt = np.zeros((1, 2, 16, 16), "uint8")
    gt[0, 0, :8] = 1  # top half
    gt[0, 1, :, :8] = 1  # left half
    # Unaligned sampling reads pixel indices: a sample at 7.5 is half row 7, half row 8.
    rois = np.array([[[0.0, 0.0, 16.0, 7.0], [0.0, 0.0, 7.0, 16.0], [8.0, 0.0, 16.0, 16.0]]],
                    "float32")
    got = ops.convert_to_numpy(masks.mask_targets(gt, np.array([[0, 1, 1]]), rois, 4))
    np.testing.assert_array_equal(got[0, 0], np.ones((4, 4)))  # inside the top half
    np.testing.assert_array_equal(got[0, 1], np.ones((4, 4)))  # inside the left half
    np.testing.assert_array_equal(got[0, 2], np.zeros((4, 4)))  # right of the left half


def _bce(x, t):
    return np.maximum(x, 0) - x * t + np.log1p(np.exp(-np.abs(x)))


def test_mask_loss_is_the_true_class_cross_entropy_over_positive_pixels(jit):
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(4, 3, 5, 5)).astype("float32") * 3
    targets = (rng.uniform(size=(4, 5, 5)) > 0.5).astype("float32")
    labels = np.array([2, 0, 1, 1], "int32")
    positive = np.array([True, True, False, True])
    want = np.mean([_bce(logits[r, labels[r]], targets[r]) for r in (0, 1, 3)])
    got = float(jit(masks.mask_loss)(logits, targets, labels, positive))
    assert got == pytest.approx(want, rel=1e-5)
    other = logits.copy()
    other[:, [1, 2, 0, 0]] = 100.0  # no RoI's own class: the loss cannot see it
    other[np.arange(4), labels] = logits[np.arange(4), labels]
    assert float(masks.mask_loss(other, targets, labels, positive)) == pytest.approx(want, rel=1e-5)
    none = masks.mask_loss(logits, targets, labels, np.zeros(4, bool))
    assert float(none) == 0.0


def test_batched_mask_loss_averages_per_image_so_replicas_agree(jit):
    # [B, R, ...]: each image's own average, then the images' mean; the two halves of the
    # batch (two replicas' shares) average to the same value, unequal positives or not.
    rng = np.random.default_rng(1)
    logits = rng.normal(size=(4, 3, 2, 5, 5)).astype("float32") * 3
    targets = (rng.uniform(size=(4, 3, 5, 5)) > 0.5).astype("float32")
    labels = rng.integers(0, 2, (4, 3)).astype("int32")
    positive = np.array([[1, 1, 1], [1, 0, 0], [0, 0, 0], [0, 1, 0]], bool)
    per_image = [masks.mask_loss(logits[b], targets[b], labels[b], positive[b]) for b in range(4)]
    want = float(np.mean([float(x) for x in per_image]))
    assert float(per_image[2]) == 0.0
    assert float(jit(masks.mask_loss)(logits, targets, labels, positive)) == \
        pytest.approx(want, rel=1e-5)
    halves = [float(masks.mask_loss(logits[h], targets[h], labels[h], positive[h]))
              for h in (slice(0, 2), slice(2, 4))]
    assert np.mean(halves) == pytest.approx(want, rel=1e-5)


def test_masks_follow_the_images_onto_the_canvas(jit):
    transform = ImageTransform((64, 96))
    rng = np.random.default_rng(1)
    m = (rng.uniform(size=(1, 2, 30, 40)) > 0.5).astype("uint8")
    images = np.zeros((1, 30, 40, 3), "float32")
    _, info = transform(images)
    truth = {"boxes": np.zeros((1, 2, 4), "float32"), "labels": np.zeros((1, 2), "int32"),
             "masks": m}
    got = jit(lambda t: transform.targets_to_canvas(t, info)["masks"])(truth)
    got = ops.convert_to_numpy(got)
    scale = 64 / 30  # min(64 / 30, 96 / 40): the image covers 64 x 85 (round(40 * scale))
    ys = np.minimum(np.floor(np.arange(64, dtype="float32") / np.float32(scale)), 29)
    xs = np.minimum(np.floor(np.arange(85, dtype="float32") / np.float32(scale)), 39)
    assert got.shape == (1, 2, 64, 96) and got.dtype == np.uint8
    np.testing.assert_array_equal(got[0, :, :, :85], m[0][:, ys.astype(int)][:, :, xs.astype(int)])
    assert got[0, :, :, 85:].max() == 0  # padding
