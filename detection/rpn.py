"""Region Proposal Network (Faster R-CNN sec. 3.1): head, proposal generator and its losses."""

from __future__ import annotations

from collections.abc import Sequence

import keras
from keras import layers, ops

from detection import boxes as box_ops
from detection import matching, postprocess, sampling


@keras.saving.register_keras_serializable(package="detection")
class RPNHead(layers.Layer):
    """3x3 conv + ReLU, then 1x1 convs for `A` objectness logits and `4A` deltas per cell.

    Shared across pyramid levels (FPN). Returns, per level, `[B, H*W*A]` logits and
    `[B, H*W*A, 4]` deltas in the anchor order of `detection.anchors`.
    """

    def __init__(self, num_anchors: int, channels: int | None = None, **kwargs):
        super().__init__(**kwargs)
        self.num_anchors = num_anchors
        self.channels = channels
        init = keras.initializers.RandomNormal(stddev=0.01)
        self.conv = None
        self.objectness = layers.Conv2D(num_anchors, 1, kernel_initializer=init,
                                        name="objectness", dtype=self.dtype_policy)
        self.deltas = layers.Conv2D(4 * num_anchors, 1, kernel_initializer=init,
                                    name="deltas", dtype=self.dtype_policy)
        self._init = init

    def build(self, input_shape):
        shape = input_shape[0] if isinstance(input_shape, list) else input_shape
        channels = self.channels or shape[-1]
        self.conv = layers.Conv2D(channels, 3, padding="same", activation="relu",
                                  kernel_initializer=self._init, name="conv",
                                  dtype=self.dtype_policy)
        self.conv.build(shape)
        self.objectness.build(shape[:-1] + (channels,))
        self.deltas.build(shape[:-1] + (channels,))

    def call(self, features):
        single = not isinstance(features, (list, tuple))
        feats = [features] if single else features
        logits, deltas = [], []
        for f in feats:
            h = self.conv(f)
            lg = self.objectness(h)
            dl = self.deltas(h)
            n = f.shape[1] * f.shape[2] * self.num_anchors
            logits.append(ops.reshape(lg, (-1, n)))
            deltas.append(ops.reshape(dl, (-1, n, 4)))
        return (logits[0], deltas[0]) if single else (logits, deltas)

    def get_config(self):
        return {**super().get_config(), "num_anchors": self.num_anchors,
                "channels": self.channels}


def generate_proposals(
    logits: Sequence,
    deltas: Sequence,
    anchors: Sequence,
    image_height: float,
    image_width: float,
    pre_nms_topk: int,
    post_nms_topk: int,
    nms_threshold: float = 0.7,
    min_size: float = 0.0,
):
    """Proposals `[B, post_nms_topk, 4]` and their validity from per-level RPN outputs.

    Per level: the `pre_nms_topk` highest-scoring anchors are decoded, clipped to the image
    and boxes not larger than `min_size` dropped; NMS at `nms_threshold` runs within each level
    (detectron2's FPN behaviour; one level for C4) and the best `post_nms_topk` over all
    levels are kept. NMS runs level by level (L matrices of k^2 instead of one of (L k)^2: 3-4x
    less work for FPN); a level can give at most `post_nms_topk`, so the merged top-k equals a
    joint NMS whose levels cannot suppress each other. No gradient flows through proposals
    (the paper's approximate joint training).
    """
    cand_boxes, cand_scores, cand_valid = [], [], []
    for lg, dl, an in zip(logits, deltas, anchors, strict=True):
        lg = ops.stop_gradient(ops.cast(lg, "float32"))
        dl = ops.stop_gradient(ops.cast(dl, "float32"))
        k = min(pre_nms_topk, lg.shape[1])
        scores, idx = ops.top_k(lg, k)
        idx = ops.cast(idx, "int32")
        sel_deltas = ops.take_along_axis(dl, idx[..., None], axis=1)
        sel_anchors = ops.take(ops.convert_to_tensor(an), idx, axis=0)  # [B, k, 4]
        bx = box_ops.clip(box_ops.decode(sel_deltas, sel_anchors, box_ops.RPN_WEIGHTS),
                          image_height, image_width)
        keep_idx, keep = postprocess.nms(bx, scores, nms_threshold, min(post_nms_topk, k),
                                         box_ops.nonempty(bx, min_size))
        cand_boxes.append(ops.take_along_axis(bx, keep_idx[..., None], axis=1))
        cand_scores.append(ops.take_along_axis(scores, keep_idx, axis=1))
        cand_valid.append(keep)
    boxes = ops.concatenate(cand_boxes, axis=1)
    valid = ops.concatenate(cand_valid, axis=1)
    scores = ops.where(valid, ops.concatenate(cand_scores, axis=1), -1e30)
    k = min(post_nms_topk, scores.shape[1])
    _, order = ops.top_k(scores, k)
    order = ops.cast(order, "int32")
    proposals = ops.take_along_axis(boxes, order[..., None], axis=1)
    keep = ops.take_along_axis(valid, order, axis=1)
    if k < post_nms_topk:  # fewer candidates than asked for: pad to the static size
        proposals = ops.pad(proposals, [[0, 0], [0, post_nms_topk - k], [0, 0]])
        keep = ops.pad(keep, [[0, 0], [0, post_nms_topk - k]])
    return ops.stop_gradient(proposals), keep


def rpn_losses(
    logits,
    deltas,
    anchors,
    gt_boxes,
    gt_labels,
    batch_size_per_image: int = sampling.RPN_BATCH_SIZE,
    positive_fraction: float = sampling.RPN_POSITIVE_FRACTION,
    thresholds: Sequence[float] = matching.RPN_THRESHOLDS,
    smooth_l1_beta: float = 1.0 / 9.0,
    seed=None,
):
    """RPN objectness and box losses (Faster R-CNN eq. 1), normalised as detectron2 does.

    `logits [B, N]`, `deltas [B, N, 4]` over all levels, `anchors [N, 4]`. Both losses are
    sums over the sampled anchors divided by `batch_size_per_image * B` (the constant keeps
    the loss identical however the batch is split across replicas). Box loss is smooth-L1
    (Huber with `beta`) on foreground anchors only.
    """
    anchors = ops.convert_to_tensor(anchors)
    matched, labels = matching.match_boxes(anchors, gt_boxes, gt_labels, thresholds,
                                           allow_low_quality_matches=True)
    sampled = sampling.subsample_labels(labels, batch_size_per_image, positive_fraction, seed)
    sampled_f = ops.cast(sampled, "float32")
    fg = ops.cast(ops.logical_and(sampled, labels == 1), "float32")
    targets_obj = ops.cast(labels == 1, "float32")
    logits = ops.cast(logits, "float32")
    bce = ops.maximum(logits, 0.0) - logits * targets_obj + ops.log1p(ops.exp(-ops.abs(logits)))
    batch = ops.cast(ops.shape(logits)[0], "float32")
    normaliser = float(batch_size_per_image) * batch
    loss_obj = ops.sum(bce * sampled_f) / normaliser
    matched_boxes = matching.gather_rows(ops.cast(gt_boxes, "float32"), matched)
    targets = ops.stop_gradient(box_ops.encode(matched_boxes, anchors[None], box_ops.RPN_WEIGHTS))
    loss_box = ops.sum(smooth_l1(ops.cast(deltas, "float32") - targets, smooth_l1_beta)
                       * fg[..., None]) / normaliser
    return loss_obj, loss_box


def smooth_l1(diff, beta: float):
    """Elementwise smooth-L1 (Fast R-CNN eq. 3; beta=1 there); beta=0 is plain L1."""
    absd = ops.abs(diff)
    if beta <= 0:
        return absd
    return ops.where(absd < beta, 0.5 * diff * diff / beta, absd - 0.5 * beta)
