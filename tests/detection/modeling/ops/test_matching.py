"""Matcher on hand-made cases: RPN 0.7/0.3 with the best-anchor rule, head 0.5, padded gt."""

import numpy as np
import pytest
from keras import ops

from detection.modeling.ops import matching

pytestmark = pytest.mark.jax


def _np(x):
    return ops.convert_to_numpy(x)


def test_rpn_thresholds_and_best_anchor_rule(jit):
    # 5 predictions x 3 gt; gt 2 is padding (invalid) with a tempting IoU of 0.9.
    iou = np.array([[[0.80, 0.10, 0.9],
                     [0.50, 0.20, 0.9],
                     [0.20, 0.40, 0.9],
                     [0.10, 0.25, 0.9],
                     [0.00, 0.00, 0.9]]], "float32")
    valid = np.array([[True, True, False]])
    idx, labels = jit(lambda i, v: matching.match(i, v, (0.3, 0.7), True))(iou, valid)
    # p0 >= 0.7 -> fg; p1 in [0.3, 0.7) ignored; p2 is gt1's best anchor (0.4) -> fg;
    # p3 < 0.3 background; p4 background. Nobody matches the padded gt.
    np.testing.assert_array_equal(_np(labels), [[1, -1, 1, 0, 0]])
    np.testing.assert_array_equal(_np(idx)[0, :3], [0, 0, 1])
    _, no_rule = matching.match(iou, valid, (0.3, 0.7), False)
    np.testing.assert_array_equal(_np(no_rule), [[1, -1, -1, 0, 0]])


def test_head_threshold():
    iou = np.array([[[0.5, 0.1], [0.49, 0.2], [0.0, 0.7]]], "float32")
    idx, labels = matching.match(iou, np.array([[True, True]]), (0.5,))
    np.testing.assert_array_equal(_np(labels), [[1, 0, 1]])
    np.testing.assert_array_equal(_np(idx), [[0, 0, 1]])  # p1 is background but still argmax 0


def test_image_without_objects_is_all_background(jit):
    preds = np.array([[0, 0, 10, 10], [5, 5, 20, 20]], "float32")
    gt = np.zeros((1, 4, 4), "float32")
    labels_in = -np.ones((1, 4), "int32")
    _, labels = jit(lambda p, g, lb: matching.match_boxes(p, g, lb, (0.3, 0.7), True))(
        preds, gt, labels_in)
    np.testing.assert_array_equal(_np(labels), [[0, 0]])


def test_match_boxes_and_gather(jit):
    preds = np.array([[0, 0, 10, 10], [20, 20, 30, 30], [0, 0, 9, 10]], "float32")
    gt = np.array([[[20, 20, 30, 31], [0, 0, 10, 10], [0, 0, 0, 0]]], "float32")
    idx, labels = jit(lambda p, g, lb: matching.match_boxes(p, g, lb, (0.5,)))(
        preds, gt, np.array([[3, 1, -1]]))
    np.testing.assert_array_equal(_np(labels), [[1, 1, 1]])
    np.testing.assert_array_equal(_np(idx), [[1, 0, 1]])
    np.testing.assert_allclose(_np(matching.gather_rows(gt, idx))[0, 1], [20, 20, 30, 31])
