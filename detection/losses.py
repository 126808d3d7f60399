"""Second-stage (Fast R-CNN) training targets and losses, normalised as detectron2 does."""

from __future__ import annotations

from collections.abc import Sequence

from keras import ops

from detection import boxes as box_ops
from detection import matching, sampling
from detection.rpn import smooth_l1


def sample_rois(
    proposals,
    proposal_valid,
    gt_boxes,
    gt_labels,
    num_classes: int,
    batch_size_per_image: int = sampling.HEAD_BATCH_SIZE,
    positive_fraction: float = sampling.HEAD_POSITIVE_FRACTION,
    thresholds: Sequence[float] = matching.HEAD_THRESHOLDS,
    seed=None,
):
    """Training RoIs for the box head (Fast R-CNN sec. 2.3, Faster R-CNN sec. 3.2).

    Ground-truth boxes are appended to the proposals (so every object has a perfect
    foreground RoI early in training), matched at IoU 0.5 and sampled 25% foreground.
    Returns `rois [B, S, 4]`, `valid [B, S]`, `class_targets [B, S]` (background =
    `num_classes`) and `box_targets [B, S, 4]` encoded with the head weights (10, 10, 5, 5).
    """
    gt_boxes = ops.cast(gt_boxes, "float32")
    gt_valid = ops.logical_and(gt_labels >= 0, box_ops.nonempty(gt_boxes))
    candidates = ops.concatenate([ops.cast(proposals, "float32"), gt_boxes], axis=1)
    cand_valid = ops.concatenate([ops.cast(proposal_valid, "bool"), gt_valid], axis=1)
    matched, labels = matching.match_boxes(candidates, gt_boxes, gt_labels, thresholds)
    labels = ops.where(cand_valid, labels, -1)
    mask = sampling.subsample_labels(labels, batch_size_per_image, positive_fraction, seed)
    idx, valid = sampling.sampled_indices(mask, batch_size_per_image)
    rois = ops.take_along_axis(candidates, idx[..., None], axis=1)
    fg = ops.logical_and(ops.take_along_axis(labels, idx, axis=1) == 1, valid)
    gt_idx = ops.take_along_axis(matched, idx, axis=1)
    matched_labels = ops.take_along_axis(ops.cast(gt_labels, "int32"), gt_idx, axis=1)
    class_targets = ops.where(fg, matched_labels, num_classes)
    matched_boxes = matching.gather_rows(gt_boxes, gt_idx)
    box_targets = box_ops.encode(matched_boxes, rois, box_ops.HEAD_WEIGHTS)
    return (ops.stop_gradient(rois), valid, ops.stop_gradient(class_targets),
            ops.stop_gradient(box_targets))


def box_head_losses(class_logits, box_deltas, valid, class_targets, box_targets,
                    smooth_l1_beta: float = 1.0):
    """Cross-entropy over the sampled RoIs and smooth-L1 on the deltas of the true class of
    foreground RoIs, both divided by the number of sampled RoIs (detectron2 `FastRCNNOutputs`).
    """
    num_classes = box_deltas.shape[2]
    logits = ops.cast(class_logits, "float32")
    validf = ops.cast(valid, "float32")
    count = ops.maximum(ops.sum(validf), 1.0)
    log_probs = ops.log_softmax(logits, axis=-1)
    target = ops.one_hot(class_targets, num_classes + 1)
    ce = -ops.sum(target * log_probs, axis=-1)
    loss_cls = ops.sum(ce * validf) / count
    fg = ops.cast(class_targets < num_classes, "float32") * validf
    cls_idx = ops.minimum(class_targets, num_classes - 1)
    picked = ops.sum(ops.cast(box_deltas, "float32")
                     * ops.one_hot(cls_idx, num_classes)[..., None], axis=2)
    loss_box = ops.sum(smooth_l1(picked - box_targets, smooth_l1_beta) * fg[..., None]) / count
    return loss_cls, loss_box
