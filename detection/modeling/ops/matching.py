"""Assign each anchor / proposal to a ground-truth box by IoU (Faster R-CNN sec. 3.1.2).

Labels: 1 foreground, 0 background, -1 ignored. Ground truth is padded to a fixed count with
label -1; padded rows never match. Batched `[B, N]` outputs, static shapes.
"""

from __future__ import annotations

from collections.abc import Sequence

from keras import ops

from detection.modeling.ops import boxes as box_ops

RPN_THRESHOLDS = (0.3, 0.7)
HEAD_THRESHOLDS = (0.5,)


def match(
    iou_matrix,
    gt_valid,
    thresholds: Sequence[float],
    allow_low_quality_matches: bool = False,
):
    """Match predictions to ground truth from `iou_matrix [B, N, M]` and `gt_valid [B, M]`.

    With thresholds `(lo, hi)`: IoU < lo is background, lo <= IoU < hi ignored, >= hi
    foreground; with `(t,)`: below t background, else foreground. `allow_low_quality_matches`
    adds the RPN rule that, for each ground truth, the anchor(s) with its highest IoU are
    foreground even below `hi`. Returns `(matched_index [B, N] int32, labels [B, N] int32)`.
    """
    if len(thresholds) not in (1, 2):
        raise ValueError(f"match: thresholds must have one or two values, got {thresholds}")
    gt_valid = ops.cast(gt_valid, "bool")
    # Padded ground truth gets IoU -1 so it can never be anyone's best match.
    iou_matrix = ops.where(gt_valid[:, None, :], ops.cast(iou_matrix, "float32"), -1.0)
    matched_iou = ops.max(iou_matrix, axis=-1)
    matched_index = ops.cast(ops.argmax(iou_matrix, axis=-1), "int32")
    lo, hi = (thresholds[0], thresholds[-1])
    labels = ops.where(matched_iou >= hi, 1, ops.where(matched_iou < lo, 0, -1))
    if allow_low_quality_matches:
        best_per_gt = ops.max(iou_matrix, axis=1, keepdims=True)  # [B, 1, M]
        is_best = ops.logical_and(iou_matrix == best_per_gt, best_per_gt > 0.0)
        is_best = ops.logical_and(is_best, gt_valid[:, None, :])
        labels = ops.where(ops.any(is_best, axis=-1), 1, labels)
    return matched_index, ops.cast(labels, "int32")


def match_boxes(
    predictions,
    gt_boxes,
    gt_labels,
    thresholds: Sequence[float],
    allow_low_quality_matches: bool = False,
):
    """`match` from boxes: predictions `[B, N, 4]` (or shared `[N, 4]`), gt `[B, M, 4]`, `[B, M]`.

    Ground truth with label < 0 or an empty box is ignored.
    """
    gt_valid = ops.logical_and(gt_labels >= 0, box_ops.nonempty(gt_boxes))
    ious = box_ops.iou(predictions, gt_boxes)
    return match(ious, gt_valid, thresholds, allow_low_quality_matches)


def gather_rows(values, indices):
    """`values [B, M, ...]` gathered along axis 1 by `indices [B, N]` -> `[B, N, ...]`."""
    extra = len(values.shape) - 2
    if extra == 0:
        return ops.take_along_axis(values, indices, axis=1)
    # Dynamic leading dims: the per-replica batch size may be unknown when tracing.
    lead = tuple(ops.shape(indices))
    idx = ops.reshape(indices, lead + (1,) * extra)
    idx = ops.broadcast_to(idx, lead + tuple(values.shape[2:]))
    return ops.take_along_axis(values, idx, axis=1)
