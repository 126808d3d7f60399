"""Detection losses, normalised as detectron2 does: smooth-L1 (Fast R-CNN eq. 3), the RPN's
binary objectness loss and the box head's cross-entropy + class-specific box loss."""

from __future__ import annotations

from keras import ops


def box_head_losses(class_logits, box_deltas, valid, class_targets, box_targets,
                    smooth_l1_beta: float = 1.0):
    """Cross-entropy over the sampled RoIs and smooth-L1 on the deltas of the true class of
    foreground RoIs, both divided by the number of sampled RoIs (detectron2 `FastRCNNOutputs`).

    The division is per image, then images are averaged: the same as detectron2's division
    by the batch's count when every image samples its full budget, and unchanged however
    the batch is split across replicas (a replica's count would otherwise differ from the
    global one whenever an image has fewer candidates than its budget).
    """
    num_classes = box_deltas.shape[2]
    logits = ops.cast(class_logits, "float32")
    validf = ops.cast(valid, "float32")
    count = ops.maximum(ops.sum(validf, axis=1, keepdims=True), 1.0)  # [B, 1]
    images = ops.cast(ops.shape(validf)[0], "float32")
    log_probs = ops.log_softmax(logits, axis=-1)
    target = ops.one_hot(class_targets, num_classes + 1)
    ce = -ops.sum(target * log_probs, axis=-1)
    loss_cls = ops.sum(ce * validf / count) / images
    fg = ops.cast(class_targets < num_classes, "float32") * validf
    cls_idx = ops.minimum(class_targets, num_classes - 1)
    picked = ops.sum(ops.cast(box_deltas, "float32")
                     * ops.one_hot(cls_idx, num_classes)[..., None], axis=2)
    loss_box = ops.sum(smooth_l1(picked - box_targets, smooth_l1_beta) * fg[..., None]
                       / count[..., None]) / images
    return loss_cls, loss_box


def smooth_l1(diff, beta: float):
    """Elementwise smooth-L1 (Fast R-CNN eq. 3; beta=1 there); beta=0 is plain L1."""
    absd = ops.abs(diff)
    if beta <= 0:
        return absd
    return ops.where(absd < beta, 0.5 * diff * diff / beta, absd - 0.5 * beta)


def sigmoid_cross_entropy(logits, targets):
    """Numerically stable binary cross-entropy of `logits` against 0/1 `targets`."""
    return ops.maximum(logits, 0.0) - logits * targets + ops.log1p(ops.exp(-ops.abs(logits)))
