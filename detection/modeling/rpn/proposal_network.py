"""Region Proposal Network (Faster R-CNN sec. 3.1): head, proposal generator and its losses."""

from __future__ import annotations

from collections.abc import Sequence

import keras
import numpy as np
from keras import layers, ops

from detection.modeling.ops import boxes as box_ops
from detection.modeling.ops import matching, nms, sampling
from detection.modeling.ops.losses import sigmoid_cross_entropy, smooth_l1
from detection.modeling.rpn import anchors as anchor_ops
from keras_resnet_suite import compat


@keras.saving.register_keras_serializable(package="detection")
class RPNHead(layers.Layer):
    """`convs` 3x3 conv + ReLU layers (1 in the paper; torchvision's v2 uses 2), then 1x1
    convs for `A` objectness logits and `4A` deltas per cell.

    Shared across pyramid levels (FPN). Returns, per level, `[B, H*W*A]` logits and
    `[B, H*W*A, 4]` deltas in the anchor order of `detection.modeling.rpn.anchors`.
    """

    def __init__(self, num_anchors: int, channels: int | None = None, convs: int = 1,
                 **kwargs):
        super().__init__(**kwargs)
        self.num_anchors = num_anchors
        self.channels = channels
        self.num_convs = int(convs)
        init = keras.initializers.RandomNormal(stddev=0.01)
        self.conv = None  # the paper's 3x3 conv; `more_convs` holds any further ones
        self.more_convs: list = []
        self.objectness = layers.Conv2D(num_anchors, 1, kernel_initializer=init,
                                        name="objectness", dtype=self.dtype_policy)
        self.deltas = layers.Conv2D(4 * num_anchors, 1, kernel_initializer=init,
                                    name="deltas", dtype=self.dtype_policy)
        self._init = init

    @property
    def convs(self) -> list:
        return ([self.conv] if self.conv is not None else []) + self.more_convs

    def build(self, input_shape):
        if self.conv is not None:
            return
        nested = isinstance(input_shape[0], (list, tuple))
        shape = tuple(input_shape[0] if nested else input_shape)
        channels = self.channels or shape[-1]
        for i in range(self.num_convs):
            conv = layers.Conv2D(channels, 3, padding="same", activation="relu",
                                 kernel_initializer=self._init,
                                 name="conv" if i == 0 else f"conv{i + 1}",
                                 dtype=self.dtype_policy)
            conv.build(shape)
            shape = shape[:-1] + (channels,)
            if i == 0:
                self.conv = conv
            else:
                self.more_convs.append(conv)
        self.objectness.build(shape)
        self.deltas.build(shape)

    def call(self, features):
        single = not isinstance(features, (list, tuple))
        feats = [features] if single else features
        logits, deltas = [], []
        for f in feats:
            h = f
            for conv in self.convs:
                h = conv(h)
            lg = self.objectness(h)
            dl = self.deltas(h)
            n = f.shape[1] * f.shape[2] * self.num_anchors
            logits.append(ops.reshape(lg, (-1, n)))
            deltas.append(ops.reshape(dl, (-1, n, 4)))
        return (logits[0], deltas[0]) if single else (logits, deltas)

    def get_config(self):
        return {**super().get_config(), "num_anchors": self.num_anchors,
                "channels": self.channels, "convs": self.num_convs}


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
    (`image_height`/`image_width`: floats or `[B, 1]` per-image extents) and boxes not
    larger than `min_size` dropped; NMS at `nms_threshold` runs within each level
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
        keep_idx, keep = nms.nms(bx, scores, nms_threshold, min(post_nms_topk, k),
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
    bce = sigmoid_cross_entropy(logits, targets_obj)
    batch = ops.cast(ops.shape(logits)[0], "float32")
    normaliser = float(batch_size_per_image) * batch
    loss_obj = ops.sum(bce * sampled_f) / normaliser
    matched_boxes = matching.gather_rows(ops.cast(gt_boxes, "float32"), matched)
    targets = ops.stop_gradient(box_ops.encode(matched_boxes, anchors[None], box_ops.RPN_WEIGHTS))
    loss_box = ops.sum(smooth_l1(ops.cast(deltas, "float32") - targets, smooth_l1_beta)
                       * fg[..., None]) / normaliser
    return loss_obj, loss_box



@keras.saving.register_keras_serializable(package="detection")
class RPN(layers.Layer):
    """The whole first stage: anchors on every feature map, the shared `RPNHead`, proposals
    (decode, clip, per-level NMS, top-k) and, given targets, its own losses.

    `feature_shapes`/`strides` describe the maps it is called on (static: the detector's
    canvas is fixed); a stride is one int or a `(y, x)` pair (torchvision's anchors use the
    canvas size // map size: its P6 stride on an 800 canvas is 61, not 64).
    `anchor_sizes` holds one tuple of sizes per map. `pre_nms_topk` and `post_nms_topk` are
    `(train, test)` pairs. `rounded_anchors` rounds the cell anchors as torchvision does;
    `min_size` drops smaller proposals and `head_convs` sets the head's 3x3 convs.

    `rpn(features, image_info, targets=None)` returns `(proposals, losses)`: proposals
    `{"boxes": [B, P, 4], "valid": [B, P]}` clipped to each image's extent on the canvas;
    losses `{"rpn_cls_loss", "rpn_box_loss"}` against the canvas `targets` `{"boxes",
    "labels"}`, or `{}` without targets.
    """

    def __init__(self, feature_shapes: Sequence[Sequence[int]], strides: Sequence,
                 anchor_sizes: Sequence[Sequence[float]],
                 anchor_ratios: Sequence[float] = anchor_ops.RATIOS,
                 pre_nms_topk: Sequence[int] = (12000, 6000),
                 post_nms_topk: Sequence[int] = (2000, 1000), nms_threshold: float = 0.7,
                 batch_size_per_image: int = sampling.RPN_BATCH_SIZE,
                 positive_fraction: float = sampling.RPN_POSITIVE_FRACTION,
                 head_channels: int | None = None, seed: int | None = None,
                 rounded_anchors: bool = False, min_size: float = 0.0, head_convs: int = 1,
                 **kwargs):
        super().__init__(**kwargs)
        # Ground-truth boxes and extents stay float32 under a mixed-precision policy (the head
        # converts the feature maps).
        compat.inputs_as_given(self)
        self.feature_shapes = [tuple(int(v) for v in hw) for hw in feature_shapes]
        self.strides = [(int(s), int(s)) if np.isscalar(s) else tuple(int(v) for v in s)
                        for s in strides]
        self.anchor_sizes = [tuple(float(a) for a in s) for s in anchor_sizes]
        self.anchor_ratios = tuple(float(r) for r in anchor_ratios)
        if not len(self.feature_shapes) == len(self.strides) == len(self.anchor_sizes):
            raise ValueError(f"RPN: {len(self.feature_shapes)} feature maps, "
                             f"{len(self.strides)} strides and {len(self.anchor_sizes)} anchor "
                             "size groups; they must match (one group of sizes per map)")
        if len({len(s) for s in self.anchor_sizes}) != 1:
            raise ValueError(f"RPN: every map needs the same number of anchor sizes (the head "
                             f"is shared), got {self.anchor_sizes}")
        self.pre_nms_topk = tuple(int(k) for k in pre_nms_topk)
        self.post_nms_topk = tuple(int(k) for k in post_nms_topk)
        self.nms_threshold = float(nms_threshold)
        self.batch_size_per_image = int(batch_size_per_image)
        self.positive_fraction = float(positive_fraction)
        self.seed = seed
        self.rounded_anchors = bool(rounded_anchors)
        self.min_size = float(min_size)
        self.anchors = anchor_ops.multilevel_anchors(self.feature_shapes, self.strides,
                                                     self.anchor_sizes, self.anchor_ratios,
                                                     rounded=self.rounded_anchors)
        num_anchors = len(self.anchor_sizes[0]) * len(self.anchor_ratios)
        self.head = RPNHead(num_anchors, head_channels, head_convs, name="rpn_head",
                            dtype=self.dtype_policy)
        self.seed_generator = keras.random.SeedGenerator(seed)

    def build(self, input_shape):
        shapes = input_shape if isinstance(input_shape[0], (list, tuple)) else [input_shape]
        self.head.build([tuple(s) for s in shapes])
        self.built = True

    def call(self, features, image_info, targets: dict | None = None, training=False):
        logits, deltas = self.head(list(features))
        i = 0 if training else 1
        extent = ops.cast(image_info.extent, "float32")
        boxes, valid = generate_proposals(
            logits, deltas, self.anchors, extent[:, :1], extent[:, 1:], self.pre_nms_topk[i],
            self.post_nms_topk[i], self.nms_threshold, self.min_size)
        losses = {} if targets is None else self.losses_of(logits, deltas, targets)
        return {"boxes": boxes, "valid": valid}, losses

    def losses_of(self, logits: Sequence, deltas: Sequence, targets: dict) -> dict:
        """Objectness and box losses of the anchors sampled against the canvas `targets`."""
        cls_loss, box_loss = rpn_losses(
            ops.concatenate(logits, axis=1), ops.concatenate(deltas, axis=1),
            np.concatenate(self.anchors, axis=0), targets["boxes"], targets["labels"],
            self.batch_size_per_image, self.positive_fraction, seed=self.seed_generator)
        return {"rpn_cls_loss": cls_loss, "rpn_box_loss": box_loss}

    def get_config(self) -> dict:
        return {**super().get_config(), "feature_shapes": self.feature_shapes,
                "strides": self.strides, "anchor_sizes": self.anchor_sizes,
                "anchor_ratios": self.anchor_ratios, "pre_nms_topk": self.pre_nms_topk,
                "post_nms_topk": self.post_nms_topk, "nms_threshold": self.nms_threshold,
                "batch_size_per_image": self.batch_size_per_image,
                "positive_fraction": self.positive_fraction,
                "head_channels": self.head.channels, "seed": self.seed,
                "rounded_anchors": self.rounded_anchors, "min_size": self.min_size,
                "head_convs": self.head.num_convs}
