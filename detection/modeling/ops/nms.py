"""Non-maximum suppression and detection post-processing with static (padded) output shapes.

Greedy NMS is computed as the fixed point of `keep[i] = not any(keep[j] and IoU(j, i) > t
for j ranked above i)`; after `t` sweeps the first `t` ranks are final, so the loop ends
with exactly the greedy result, usually after a handful of sweeps. It is a `while_loop`
over an `[N, N]` suppression matrix, so it jits on every backend.

Under the TensorFlow backend `nms` runs TensorFlow's native greedy kernel instead
(`NonMaxSuppressionV4`: O(N x kept) work and memory, not O(N^2)), image by image; it keeps
the same boxes in the same order (tested against the matrix form).
"""

from __future__ import annotations

import keras
from keras import ops

from detection.modeling.ops import boxes as box_ops
from keras_resnet_suite import compat


def _greedy_keep(suppress):
    """Greedy keep mask `[B, N]` from the boolean `[B, N, N]` 'j suppresses i' matrix (j < i)."""
    n = suppress.shape[-1]
    upper = ops.triu(ops.ones((n, n), "bool"), k=1)
    suppress = ops.logical_and(suppress, upper[None])
    suppress_f = ops.cast(suppress, "float32")

    def body(keep, _changed):
        hit = ops.einsum("bj,bji->bi", ops.cast(keep, "float32"), suppress_f)
        new_keep = hit < 0.5
        return new_keep, ops.any(new_keep != keep)

    keep0 = ops.ones_like(suppress[:, 0, :])  # the batch size may be dynamic
    keep, _ = ops.while_loop(
        lambda keep, changed: changed, body, (keep0, ops.convert_to_tensor(True)),
        maximum_iterations=n,
    )
    return keep


def nms(boxes, scores, iou_threshold: float, max_output: int, valid=None):
    """Greedy NMS per image: boxes `[B, N, 4]`, scores `[B, N]` -> `(indices [B, K], valid [B, K])`.

    `K = max_output`; the kept boxes come in descending score order, padding rows have
    valid=False. Entries with `valid=False` on input are never kept.
    """
    scores = ops.cast(scores, "float32")
    if valid is None:
        valid = ops.ones(ops.shape(scores), "bool")
    if keras.backend.backend() == "tensorflow":
        return _native_nms(boxes, scores, valid, iou_threshold, max_output)
    return _matrix_nms(boxes, scores, valid, iou_threshold, max_output)


def _native_nms(boxes, scores, valid, iou_threshold: float, max_output: int):
    """`nms` by TensorFlow's C++ greedy kernel, one image at a time (`map_fn`)."""
    import tensorflow as tf

    n = boxes.shape[1]
    # Ranked here (ties: lower index first, as top_k) and handed to the kernel as distinct
    # descending scores, so its own tie order (XLA's differs) cannot change the result.
    order = tf.math.top_k(tf.where(valid, scores, -1e30), n).indices
    boxes = tf.stop_gradient(_gather_rows(tf.cast(boxes, tf.float32), order))
    # The kernel keeps scores strictly above score_threshold: invalid entries go to -inf.
    rank = tf.cast(tf.range(n, 0, -1), tf.float32)
    scores = tf.where(_gather_rows(valid, order), rank, float("-inf"))
    k = min(int(max_output), n)  # XLA's kernel cannot pad beyond N
    lowest = tf.constant(-3.4e38, tf.float32)

    def one(args):
        b, s = args
        idx, count = compat.non_max_suppression_padded(b, s, k, float(iou_threshold), lowest)
        return idx, tf.range(k) < count

    if boxes.shape[0] is None:
        ranks, valid = tf.map_fn(one, (boxes, scores), fn_output_signature=(tf.int32, tf.bool))
    else:  # a static batch (a fixed export signature): no loop, which LiteRT mis-sized
        per_image = [one(args) for args in zip(tf.unstack(boxes), tf.unstack(scores),
                                               strict=True)]
        ranks = tf.stack([r for r, _ in per_image])
        valid = tf.stack([v for _, v in per_image])
    return _pad_to(_gather_rows(order, ranks), valid, max_output)


def _gather_rows(values, index):
    """`values [B, N, ...]` at `index [B, K]` per image -> `[B, K, ...]`, as one gather on
    flattened rows: OpenVINO's converter fails on `tf.gather(..., batch_dims=1)`."""
    import tensorflow as tf

    shape = tf.shape(values)
    flat = tf.reshape(values, tf.concat([[-1], shape[2:]], 0))
    offsets = tf.range(shape[0], dtype=index.dtype)[:, None] * tf.cast(shape[1], index.dtype)
    return tf.gather(flat, index + offsets)


def _pad_to(indices, valid, size: int):
    """Pad `[B, k]` indices (with 0) and validity (with False) to the static `size`."""
    pad = size - indices.shape[1]
    if pad > 0:
        indices = ops.pad(indices, [[0, 0], [0, pad]])
        valid = ops.pad(valid, [[0, 0], [0, pad]])
    return indices, valid


def _matrix_nms(boxes, scores, valid, iou_threshold: float, max_output: int):
    """`nms` as the fixed point of the `[N, N]` suppression matrix (any backend, jit-able)."""
    n = boxes.shape[1]
    order_scores, order = ops.top_k(ops.where(valid, scores, -1e30), n)
    order = ops.cast(order, "int32")
    sorted_boxes = ops.take_along_axis(ops.cast(boxes, "float32"), order[..., None], axis=1)
    sorted_valid = ops.take_along_axis(valid, order, axis=1)
    suppress = box_ops.iou(sorted_boxes, sorted_boxes) > iou_threshold
    keep = ops.logical_and(_greedy_keep(suppress), sorted_valid)
    k = min(max_output, n)
    # Kept entries first, in their (descending score) rank order.
    rank_key = ops.where(keep, float(n) - ops.cast(ops.arange(n), "float32"), -1.0)
    top_key, pos = ops.top_k(rank_key, k)
    indices = ops.take_along_axis(order, ops.cast(pos, "int32"), axis=1)
    del order_scores
    return _pad_to(indices, top_key > 0.0, max_output)


def batched_nms(boxes, scores, groups, iou_threshold: float, max_output: int, valid=None):
    """NMS within groups (classes or pyramid levels): boxes of different groups never
    suppress each other, done by shifting each group to its own disjoint coordinate range."""
    boxes = ops.cast(boxes, "float32")
    span = ops.max(boxes, axis=(1, 2), keepdims=True) + 1.0
    shifted = boxes + ops.cast(groups, "float32")[..., None] * span
    return nms(shifted, scores, iou_threshold, max_output, valid)


def postprocess_detections(
    class_probs,
    class_boxes,
    image_height: float,
    image_width: float,
    score_threshold: float = 0.05,
    iou_threshold: float = 0.5,
    max_detections: int = 100,
    pre_nms_topk: int = 1000,
    min_size: float = 0.0,
):
    """Final detections (Faster R-CNN at test time): threshold, per-class NMS, top-k per image.

    `class_probs [B, R, K + 1]` (last column background) and `class_boxes [B, R, K, 4]`
    (decoded), clipped to `image_height`/`image_width` (floats, or `[B, 1]` per image).
    Candidates are every (box, class) pair with score > `score_threshold` (strictly, as
    torchvision and detectron2) whose box is wider and taller than `min_size`; the best
    `pre_nms_topk` go through per-class NMS (a cap the references do not have, to bound the
    `[N, N]` NMS matrix). Returns padded `{"boxes", "scores", "classes", "num_detections"}`.
    """
    num_rois, num_classes = class_boxes.shape[1], class_boxes.shape[2]
    scores = ops.reshape(ops.cast(class_probs[..., :num_classes], "float32"),
                         (-1, num_rois * num_classes))
    cand_boxes = ops.reshape(class_boxes, (-1, num_rois * num_classes, 4))
    cand_boxes = box_ops.clip(cand_boxes, image_height, image_width)
    classes = ops.tile(ops.arange(num_classes, dtype="int32"), (num_rois,))  # [R * K]
    classes = ops.broadcast_to(classes[None], ops.shape(scores))
    keep = ops.logical_and(scores > score_threshold, box_ops.nonempty(cand_boxes, min_size))
    k = min(pre_nms_topk, num_rois * num_classes)
    top_scores, top = ops.top_k(ops.where(keep, scores, -1.0), k)
    top = ops.cast(top, "int32")
    top_boxes = ops.take_along_axis(cand_boxes, top[..., None], axis=1)
    top_classes = ops.take_along_axis(classes, top, axis=1)
    top_valid = top_scores > score_threshold
    idx, valid = batched_nms(top_boxes, top_scores, top_classes, iou_threshold, max_detections,
                             top_valid)
    det_boxes = ops.take_along_axis(top_boxes, idx[..., None], axis=1)
    det_scores = ops.take_along_axis(top_scores, idx, axis=1)
    det_classes = ops.take_along_axis(top_classes, idx, axis=1)
    validf = ops.cast(valid, "float32")
    return {
        "boxes": det_boxes * validf[..., None],
        "scores": det_scores * validf,
        "classes": ops.where(valid, det_classes, -1),
        "num_detections": ops.sum(ops.cast(valid, "int32"), axis=1),
    }
