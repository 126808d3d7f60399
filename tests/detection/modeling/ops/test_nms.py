"""NMS equals a brute-force greedy reference; per-class post-processing; the RPN proposals."""

import numpy as np
import pytest
from keras import ops

from detection.modeling.ops import boxes as box_ops
from detection.modeling.ops import nms as postprocess
from detection.modeling.rpn import anchors
from detection.modeling.rpn import proposal_network as rpn

pytestmark = pytest.mark.jax


def _iou(a, b):
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def _brute_nms(boxes, scores, thr):
    order = sorted(range(len(scores)), key=lambda i: -scores[i])
    kept = []
    for i in order:
        if all(_iou(boxes[i], boxes[j]) <= thr for j in kept):
            kept.append(i)
    return kept


def _random_boxes(rng, b, n, extent=60.0):
    xy = rng.uniform(0, extent, (b, n, 2))
    return np.concatenate([xy, xy + rng.uniform(4, 30, (b, n, 2))], -1).astype("float32")


@pytest.mark.parametrize("thr", [0.3, 0.5, 0.7])
def test_nms_equals_brute_force(thr, jit):
    rng = np.random.default_rng(int(thr * 10))
    boxes = _random_boxes(rng, 3, 80)
    scores = rng.uniform(size=(3, 80)).astype("float32")
    idx, valid = jit(lambda b, s: postprocess.nms(b, s, thr, 100))(boxes, scores)
    idx, valid = ops.convert_to_numpy(idx), ops.convert_to_numpy(valid)
    assert idx.shape == (3, 100)
    for i in range(3):
        want = _brute_nms(boxes[i], scores[i], thr)
        assert list(idx[i][valid[i]]) == want
        assert not valid[i, len(want):].any()


def test_nms_respects_input_validity_and_output_cap(jit):
    boxes = np.array([[[0, 0, 10, 10], [0, 0, 10, 10.5], [20, 20, 30, 30], [40, 40, 50, 50]]],
                     "float32")
    scores = np.array([[0.9, 0.95, 0.5, 0.4]], "float32")
    valid_in = np.array([[True, False, True, True]])
    idx, valid = jit(lambda b, s, v: postprocess.nms(b, s, 0.5, 2, valid=v))(boxes, scores,
                                                                           valid_in)
    np.testing.assert_array_equal(ops.convert_to_numpy(idx), [[0, 2]])
    assert ops.convert_to_numpy(valid).all()


def test_batched_nms_keeps_overlapping_boxes_of_other_classes(jit):
    boxes = np.array([[[0, 0, 10, 10], [0, 0, 10, 10], [0, 0, 10, 10]]], "float32")
    scores = np.array([[0.9, 0.8, 0.7]], "float32")
    groups = np.array([[0, 1, 0]], "int32")
    idx, valid = jit(lambda b, s, g: postprocess.batched_nms(b, s, g, 0.5, 3))(boxes, scores,
                                                                             groups)
    np.testing.assert_array_equal(ops.convert_to_numpy(idx)[0, :2], [0, 1])
    np.testing.assert_array_equal(ops.convert_to_numpy(valid), [[True, True, False]])


def test_postprocess_threshold_per_class_nms_and_padding(jit):
    # 3 RoIs x 2 classes (+ background column).
    probs = np.array([[[0.90, 0.02, 0.08], [0.80, 0.10, 0.10], [0.01, 0.60, 0.39]]], "float32")
    cls_boxes = np.zeros((1, 3, 2, 4), "float32")
    cls_boxes[0, 0] = [[0, 0, 10, 10], [50, 50, 60, 60]]
    cls_boxes[0, 1] = [[1, 0, 10, 10], [0, 0, 10, 10]]  # class-0 box duplicates RoI 0's
    cls_boxes[0, 2] = [[30, 30, 40, 40], [-5, 30, 40, 80]]  # class-1 box gets clipped
    fn = jit(lambda p, b: postprocess.postprocess_detections(p, b, 64.0, 64.0, 0.05, 0.5, 5))
    out = {k: ops.convert_to_numpy(v) for k, v in fn(probs, cls_boxes).items()}
    # Kept: (RoI 0, cls 0) 0.9; (RoI 2, cls 1) 0.6, clipped; (RoI 1, cls 1) 0.1, which overlaps
    # the 0.9 box but is another class. Suppressed: (RoI 1, cls 0) 0.8 (IoU 0.9 with the 0.9
    # box). Below 0.05: 0.02 and 0.01.
    assert out["num_detections"].tolist() == [3]
    np.testing.assert_allclose(out["scores"][0], [0.9, 0.6, 0.1, 0, 0], atol=1e-6)
    np.testing.assert_array_equal(out["classes"][0], [0, 1, 1, -1, -1])
    np.testing.assert_allclose(out["boxes"][0, :3], [[0, 0, 10, 10], [0, 30, 40, 64],
                                                     [0, 0, 10, 10]])
    np.testing.assert_allclose(out["boxes"][0, 3:], 0)


def test_postprocess_score_threshold(jit):
    probs = np.array([[[0.04, 0.5, 0.46]]], "float32")
    cls_boxes = np.array([[[[0, 0, 5, 5], [10, 10, 20, 20]]]], "float32")
    out = jit(lambda p, b: postprocess.postprocess_detections(p, b, 32.0, 32.0))(probs,
                                                                                cls_boxes)
    assert int(ops.convert_to_numpy(out["num_detections"])[0]) == 1
    assert int(ops.convert_to_numpy(out["classes"])[0, 0]) == 1
    assert ops.convert_to_numpy(out["boxes"]).shape == (1, 100, 4)


def test_proposals_decode_clip_and_nms(jit):
    an = anchors.grid_anchors(2, 2, 16, (16,), (1.0,))  # 4 anchors centred at (0|16, 0|16)
    logits = np.array([[3.0, 2.0, 1.0, 0.0]], "float32")
    deltas = np.zeros((1, 4, 4), "float32")
    deltas[0, 1] = [-1.0, 0, 0, 0]  # moves anchor 1 onto anchor 0 -> suppressed at 0.7
    fn = jit(lambda lg, dl: rpn.generate_proposals([lg], [dl], [an], 20.0, 20.0, 3, 3, 0.7))
    props, valid = fn(logits, deltas)
    props, valid = ops.convert_to_numpy(props), ops.convert_to_numpy(valid)
    np.testing.assert_array_equal(valid, [[True, True, False]])
    np.testing.assert_allclose(props[0, 0], [0, 0, 8, 8])  # clipped to the 20 x 20 image
    np.testing.assert_allclose(props[0, 1], [0, 8, 8, 20])  # anchor 2 (pre-NMS top 3)


def _joint_proposals(logits, deltas, anchor_sets, size, pre, post, thr):
    """The reference: one NMS over all levels' candidates, levels kept apart by offsets."""
    boxes, scores, levels = [], [], []
    for i, (lg, dl, an) in enumerate(zip(logits, deltas, anchor_sets, strict=True)):
        k = min(pre, lg.shape[1])
        s, idx = ops.top_k(lg, k)
        d = ops.take_along_axis(dl, idx[..., None], axis=1)
        a = ops.take(an, idx, axis=0)
        boxes.append(box_ops.clip(box_ops.decode(d, a, box_ops.RPN_WEIGHTS), size, size))
        scores.append(s)
        levels.append(np.full(s.shape, i, "int32"))
    boxes, scores = ops.concatenate(boxes, 1), ops.concatenate(scores, 1)
    idx, keep = postprocess.batched_nms(boxes, scores, np.concatenate(levels, 1), thr, post,
                                        box_ops.nonempty(boxes))
    return ops.take_along_axis(boxes, idx[..., None], axis=1), keep


def test_per_level_proposals_equal_one_joint_nms():
    rng = np.random.default_rng(0)
    shapes, strides = [(8, 8), (4, 4), (2, 2)], [4, 8, 16]
    anchor_sets = [anchors.grid_anchors(h, w, s, (8 * s,), (0.5, 1.0, 2.0))
                   for (h, w), s in zip(shapes, strides, strict=True)]
    logits = [rng.normal(size=(2, len(a))).astype("float32") for a in anchor_sets]
    deltas = [rng.normal(0, 0.3, size=(2, len(a), 4)).astype("float32") for a in anchor_sets]
    for pre, post in [(50, 40), (300, 500)]:  # post beyond the candidates: padded
        got, gv = rpn.generate_proposals(logits, deltas, anchor_sets, 32.0, 32.0, pre, post, 0.6)
        want, wv = _joint_proposals(logits, deltas, anchor_sets, 32.0, pre, post, 0.6)
        gv, wv = ops.convert_to_numpy(gv), ops.convert_to_numpy(wv)
        np.testing.assert_array_equal(gv, wv)
        assert 0 < gv.sum() < gv.size
        np.testing.assert_allclose(ops.convert_to_numpy(got)[gv], ops.convert_to_numpy(want)[wv],
                                   atol=1e-5)


@pytest.mark.tf_only
@pytest.mark.parametrize("jit_compile", [False, True])
def test_native_tensorflow_nms_equals_the_matrix_form(jit_compile):
    import tensorflow as tf

    rng = np.random.default_rng(7)
    boxes = _random_boxes(rng, 2, 300, extent=120.0)
    boxes[:, 10] = boxes[:, 11]  # an exact duplicate
    scores = rng.uniform(size=(2, 300)).astype("float32")
    scores[:, 20:25] = 0.5  # ties: the lower index ranks first in both
    valid = rng.uniform(size=(2, 300)) > 0.1
    for thr, cap in ((0.3, 40), (0.7, 400), (0.5, 1)):  # cap below, above N, and 1
        native = tf.function(lambda b, s, v, thr=thr, cap=cap: postprocess._native_nms(
            b, s, v, thr, cap), jit_compile=jit_compile)(boxes, scores, valid)
        matrix = postprocess._matrix_nms(boxes, scores, valid, thr, cap)
        (idx, ok), (want_idx, want_ok) = [map(ops.convert_to_numpy, r) for r in (native, matrix)]
        assert idx.shape == want_idx.shape == (2, cap)
        np.testing.assert_array_equal(ok, want_ok)  # same count, kept entries first
        np.testing.assert_array_equal(idx[ok], want_idx[want_ok])  # same boxes, same order
        assert ok.sum() > 0
