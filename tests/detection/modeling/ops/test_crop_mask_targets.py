"""`crop_mask_targets` (keras.ops, so under JAX too): targets read from box crops equal
`mask_targets` on the canvas masks when every crop pixel is at most one canvas pixel."""

import numpy as np
import pytest
from keras import ops

from detection.modeling.ops.masks import crop_mask_targets, mask_targets

pytestmark = pytest.mark.jax


def _crops(masks, boxes, size):
    """Each box's crop: the canvas pixel under each of `size x size` centres (the input
    pipeline's rule at scale 1)."""
    steps = (np.arange(size) + 0.5) / size
    out = np.zeros((len(masks), size, size), np.uint8)
    for k, (x1, y1, x2, y2) in enumerate(boxes):
        rows = np.clip(np.floor(y1 + steps * (y2 - y1)), 0, masks.shape[1] - 1).astype(int)
        cols = np.clip(np.floor(x1 + steps * (x2 - x1)), 0, masks.shape[2] - 1).astype(int)
        out[k] = masks[k][rows][:, cols]
    return out


def test_crop_targets_equal_canvas_targets():
    rng = np.random.default_rng(0)
    height, width, count = 48, 64, 3
    boxes = np.array([[3.5, 4.0, 30.0, 40.5], [20.0, 10.5, 61.5, 33.0], [40, 30, 52, 46]],
                     "float32")
    masks = np.zeros((count, height, width), np.uint8)
    ys, xs = np.mgrid[:height, :width] + 0.5
    for k, (x1, y1, x2, y2) in enumerate(boxes):  # an ellipse inscribed in each box
        cx, cy, rx, ry = (x1 + x2) / 2, (y1 + y2) / 2, (x2 - x1) / 2, (y2 - y1) / 2
        masks[k] = ((xs - cx) / rx) ** 2 + ((ys - cy) / ry) ** 2 <= 1
    matched = rng.integers(0, count, (1, 12))
    rois = (boxes[matched[0]] + rng.normal(0, 3, (12, 4))).astype("float32")[None]
    want = ops.convert_to_numpy(mask_targets(masks[None], matched, rois, 14))
    got = ops.convert_to_numpy(crop_mask_targets(_crops(masks, boxes, 56)[None], boxes[None],
                                                 matched, rois, (height, width), 14))
    assert want.sum() > 10
    np.testing.assert_array_equal(got, want)
