"""Box arithmetic: IoU by hand, encode/decode round trip, the log(1000/16) clamp."""

import math

import numpy as np
import pytest
from keras import ops

from detection.modeling.ops import boxes as box_ops

pytestmark = pytest.mark.jax


def test_iou_hand_computed():
    a = np.array([[0, 0, 10, 10], [0, 0, 0, 0]], "float32")
    b = np.array([[5, 5, 15, 15], [0, 0, 10, 10], [20, 20, 30, 30]], "float32")
    got = ops.convert_to_numpy(box_ops.iou(a, b))
    # 25 / (100 + 100 - 25); identical; disjoint; an empty (padding) box overlaps nothing.
    want = np.array([[25 / 175, 1.0, 0.0], [0.0, 0.0, 0.0]])
    np.testing.assert_allclose(got, want, atol=1e-6)


def test_iou_batched_matches_unbatched(jit):
    rng = np.random.default_rng(1)
    xy = rng.uniform(0, 50, (2, 6, 2))
    b = np.concatenate([xy, xy + rng.uniform(1, 20, (2, 6, 2))], -1).astype("float32")
    batched, first, second = jit(
        lambda x: (box_ops.iou(x, x[:, :4]), box_ops.iou(x[0], x[0, :4]), box_ops.iou(x[1], x[1, :4]))
    )(b)
    for i, single in enumerate((first, second)):
        np.testing.assert_allclose(ops.convert_to_numpy(batched)[i], ops.convert_to_numpy(single),
                                   rtol=1e-6)


@pytest.mark.parametrize("weights", [box_ops.RPN_WEIGHTS, box_ops.HEAD_WEIGHTS])
def test_encode_decode_round_trip(weights, jit):
    rng = np.random.default_rng(0)
    xy = rng.uniform(0, 100, (2, 50, 2))
    anchors = np.concatenate([xy, xy + rng.uniform(4, 80, (2, 50, 2))], -1).astype("float32")
    xy = rng.uniform(0, 100, (2, 50, 2))
    boxes = np.concatenate([xy, xy + rng.uniform(4, 80, (2, 50, 2))], -1).astype("float32")
    fn = jit(lambda b, a: box_ops.decode(box_ops.encode(b, a, weights), a, weights))
    np.testing.assert_allclose(ops.convert_to_numpy(fn(boxes, anchors)), boxes, atol=1e-3)


def test_encode_hand_computed_with_head_weights():
    anchor = np.array([[0, 0, 10, 20]], "float32")  # centre (5, 10), 10 x 20
    box = np.array([[2, 4, 22, 24]], "float32")  # centre (12, 14), 20 x 20
    got = ops.convert_to_numpy(box_ops.encode(box, anchor, box_ops.HEAD_WEIGHTS))
    want = [10 * 7 / 10, 10 * 4 / 20, 5 * math.log(2.0), 5 * math.log(1.0)]
    np.testing.assert_allclose(got[0], want, rtol=1e-5, atol=1e-6)


def test_decode_clamps_scale():
    anchor = np.array([[0, 0, 16, 16]], "float32")
    deltas = np.array([[0, 0, 50.0, 50.0]], "float32")
    got = ops.convert_to_numpy(box_ops.decode(deltas, anchor))
    # exp(log(1000/16)) * 16 = 1000 pixels, centred on (8, 8); no overflow to inf.
    np.testing.assert_allclose(got[0], [8 - 500, 8 - 500, 8 + 500, 8 + 500], rtol=1e-4)


def test_clip_and_nonempty():
    b = np.array([[-5, -5, 30, 8], [3, 3, 3, 9], [4, 2, 1, 9]], "float32")
    clipped = ops.convert_to_numpy(box_ops.clip(b, 10.0, 20.0))
    np.testing.assert_allclose(clipped[0], [0, 0, 20, 8])
    np.testing.assert_array_equal(ops.convert_to_numpy(box_ops.nonempty(b)), [True, False, False])
    np.testing.assert_allclose(ops.convert_to_numpy(box_ops.area(b)), [35 * 13, 0, 0])
