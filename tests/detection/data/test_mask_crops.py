"""Compact masks (issue 30): training batches carry each box's mask as a 112x112 crop
(`"mask_crops"`) instead of canvas pixels; the mask targets and `mask_loss` made from the crops
equal those made from the canvas masks (exactly while a box is at most the crop size a side),
and a batch's masks cost the same bytes at any canvas size."""

import keras
import numpy as np
import pytest
import tensorflow as tf
from detector_helpers import tiny_detector
from keras import ops

from detection.data.pipeline import MASK_CROP_SIZE, to_canvas, training_batches
from detection.data.synthetic import shapes
from detection.modeling.ops.masks import crop_mask_targets, mask_targets


def _pair(canvas, crop, count=6, size=64, **kwargs):
    """The same elements on `canvas` as canvas pixels and as `crop` crops (same flips/sizes)."""
    ds = shapes(count, image_size=size, masks=True, max_objects=3)
    options = dict(max_boxes=4, flip=True, seed=3, **kwargs)
    pixels = list(to_canvas(ds, canvas, **options).as_numpy_iterator())
    crops = list(to_canvas(ds, canvas, mask_crop_size=crop, **options).as_numpy_iterator())
    return pixels, crops


def _jittered_rois(boxes, count, rng, scale=4.0):
    """`count` RoIs near the real boxes (the sampler's positives), with their matches."""
    real = int((boxes[:, 2] > boxes[:, 0]).sum())
    matched = rng.integers(0, max(real, 1), (1, count))
    rois = boxes[matched[0]] + rng.normal(0, scale, (count, 4)).astype("float32")
    return matched, rois[None]


@pytest.mark.parametrize("sides", [None, (40, 56)])
def test_crop_targets_equal_canvas_targets_exactly(sides):
    """Flipped and resized (scale 1.5 and multi-scale): every RoI's 28x28 target from the crops
    equals torchvision's RoIAlign on the canvas mask, bit for bit (boxes <= 112 px)."""
    pixels, crops = _pair((96, 128), MASK_CROP_SIZE, shorter_sides=sides)
    rng = np.random.default_rng(0)
    compared = 0
    for p, c in zip(pixels, crops, strict=True):
        boxes = c["bounding_boxes"]["boxes"]
        np.testing.assert_array_equal(boxes, p["bounding_boxes"]["boxes"])
        assert c["mask_crops"].shape == (4, MASK_CROP_SIZE, MASK_CROP_SIZE)
        assert c["mask_crops"].dtype == np.uint8 and "masks" not in c
        matched, rois = _jittered_rois(boxes, 24, rng)
        want = mask_targets(p["masks"][None], matched, rois, 28)
        got = crop_mask_targets(c["mask_crops"][None], boxes[None], matched, rois, (96, 128), 28)
        np.testing.assert_array_equal(ops.convert_to_numpy(got), ops.convert_to_numpy(want))
        compared += float(ops.convert_to_numpy(want).sum()) > 0
    assert compared >= 4


def test_small_crops_differ_only_along_edges():
    """Crops coarser than the boxes (16 px for boxes of 20-60 px) approximate: the targets'
    mean error stays small though single edge bins may flip."""
    pixels, crops = _pair((96, 96), 16)
    rng = np.random.default_rng(1)
    errors = []
    for p, c in zip(pixels, crops, strict=True):
        boxes = c["bounding_boxes"]["boxes"]
        matched, rois = _jittered_rois(boxes, 16, rng)
        want = ops.convert_to_numpy(mask_targets(p["masks"][None], matched, rois, 28))
        got = ops.convert_to_numpy(crop_mask_targets(c["mask_crops"][None], boxes[None],
                                                     matched, rois, (96, 96), 28))
        errors.append(np.abs(got - want).mean())
    assert 0 < max(errors) < 0.05, errors


def test_training_batches_carry_crops_of_fixed_bytes():
    """Default batches: `mask_crops` [B, 100, 112, 112] uint8 = 1.25 MB per image at any canvas
    (canvas pixels at 800x1333 would be 107 MB); `mask_crop_size=None` keeps the pixels."""
    ds = shapes(4, image_size=64, masks=True, max_objects=3)
    for canvas in ((64, 64), (800, 1333)):
        batch = next(iter(training_batches(ds, canvas, batch_size=2)))
        assert sorted(batch) == ["bounding_boxes", "images", "mask_crops"]
        assert batch["mask_crops"].shape == (2, 100, 112, 112)
        assert batch["mask_crops"].dtype == tf.uint8
        assert batch["mask_crops"][0].numpy().nbytes == 1_254_400 <= 2 * 2**20
    pixels = next(iter(training_batches(ds, (64, 64), batch_size=2, mask_crop_size=None)))
    assert pixels["masks"].shape == (2, 100, 64, 64)


@pytest.mark.parametrize("bad", [0, -3])
def test_a_bad_crop_size_is_one_clear_error(bad):
    ds = shapes(2, image_size=64, masks=True)
    with pytest.raises(ValueError, match=rf"^mask_crop_size must be a positive int or None, "
                                         rf"got {bad}$"):
        training_batches(ds, (64, 64), batch_size=2, mask_crop_size=bad)


@pytest.fixture(scope="module")
def batches():
    """One flipped shapes batch as canvas pixels and as crops (64x64 canvas)."""
    ds = shapes(4, image_size=64, masks=True, max_objects=3)
    options = dict(batch_size=2, max_boxes=4, flip=True, seed=5)
    pixels = next(iter(training_batches(ds, (64, 64), mask_crop_size=None, **options)))
    crops = next(iter(training_batches(ds, (64, 64), **options)))
    return pixels, crops


@pytest.mark.parametrize("head", ["c4", "fpn"])
def test_mask_loss_from_crops_equals_the_loss_from_pixels(batches, head):
    """A tiny MaskRCNN's five losses on the same batch, masks as pixels or as crops: equal
    (the sampler's state restored in between)."""
    pixels, crops = batches
    keras.utils.set_random_seed(0)
    model = tiny_detector(head, masks=True)
    x, info = model.transform(pixels["images"])
    state = [np.array(v.numpy()) for v in model.variables]
    losses = []
    for batch, key in ((pixels, "masks"), (crops, "mask_crops")):
        for v, value in zip(model.variables, state, strict=True):
            v.assign(value)
        truth = {**batch["bounding_boxes"], key: batch[key]}
        losses.append(model.stage_losses(x, info, model.transform.targets_to_canvas(truth, info)))
    assert float(losses[0]["mask_loss"]) > 0.1
    for name in losses[0]:
        assert float(losses[1][name]) == pytest.approx(float(losses[0][name]), abs=1e-6), name


def test_fit_on_crops_trains_and_bad_crops_are_one_line(batches):
    _, crops = batches
    keras.utils.set_random_seed(0)
    model = tiny_detector("c4", masks=True)
    model.compile(optimizer=keras.optimizers.SGD(0.01))
    logs = model.fit(tf.data.Dataset.from_tensors(crops).repeat(2), verbose=0).history
    assert np.isfinite(logs["mask_loss"][0]) and logs["mask_loss"][0] > 0
    bad = {**crops, "mask_crops": crops["mask_crops"][:, :, :100]}
    with pytest.raises(ValueError, match=r"MaskRCNN: 'mask_crops' must be \[batch, boxes, crop, "
                                         r"crop\] = \(2, 4, 100, 100\) \(one square crop per "
                                         r"box\), got \(2, 4, 100, 112\)"):
        model(bad, training=True)
