"""What every second stage (Fast R-CNN) shares: training RoIs sampled from the proposals,
the box-head losses and the test-time post-processing. A head subclass only says how it
turns `(features, rois)` into class logits and class-specific box deltas (`box_outputs`).
"""

from __future__ import annotations

from collections.abc import Sequence

import keras
from keras import layers, ops

from detection.modeling.ops import boxes as box_ops
from detection.modeling.ops import matching, sampling
from detection.modeling.ops.losses import box_head_losses
from detection.modeling.ops.nms import postprocess_detections
from keras_resnet_suite import compat


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
    return_matches: bool = False,
):
    """Training RoIs for the box head (Fast R-CNN sec. 2.3, Faster R-CNN sec. 3.2).

    Ground-truth boxes are appended to the proposals (so every object has a perfect
    foreground RoI early in training), matched at IoU 0.5 and sampled 25% foreground.
    Returns `rois [B, S, 4]`, `valid [B, S]`, `class_targets [B, S]` (background =
    `num_classes`) and `box_targets [B, S, 4]` encoded with the head weights (10, 10, 5, 5);
    with `return_matches` also `matched [B, S]`, each RoI's ground-truth index (the mask
    head crops that object's mask).
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
    sampled = (ops.stop_gradient(rois), valid, ops.stop_gradient(class_targets),
               ops.stop_gradient(box_targets))
    return sampled + (gt_idx,) if return_matches else sampled


def predictors(num_classes: int, dtype) -> tuple[layers.Dense, layers.Dense]:
    """Class logits (K + 1, background last) and class-specific deltas (4K), detectron2 init."""
    cls = layers.Dense(num_classes + 1, name="class_logits", dtype=dtype,
                       kernel_initializer=keras.initializers.RandomNormal(stddev=0.01))
    box = layers.Dense(4 * num_classes, name="box_deltas", dtype=dtype,
                       kernel_initializer=keras.initializers.RandomNormal(stddev=0.001))
    return cls, box


class ROIHeads(layers.Layer):
    """Base of the RoI heads: sampling, losses and post-processing around `box_outputs`.

    `roi_heads(features, proposals, image_info, targets=None)` returns `(outputs, losses)`:
    with canvas `targets` `{"boxes", "labels"}` (training) the sampled RoIs `{"rois" [B, S, 4],
    "valid", "class_targets" (background = num_classes), "matched" (ground-truth index)}`
    (what a mask head trains on) and the losses `{"roi_cls_loss", "roi_box_loss"}` on them;
    without targets padded
    canvas detections `{"boxes", "scores", "classes", "num_detections"}`, boxes clipped to
    each image's extent, and `{}`.

    Args:
        num_classes: object classes (the background class is added internally, last).
        batch_size_per_image / positive_fraction: training RoIs per image (512 at 0.25).
        score_threshold, nms_threshold, max_detections: post-processing (0.05, 0.5, 100).
        min_size: detections must be wider and taller (torchvision: 0.01 px).
        pre_nms_topk: (box, class) candidates per image that enter the per-class NMS.
    """

    head_type = ""  # "c4" or "fpn": the design a subclass implements

    def __init__(self, num_classes: int,
                 batch_size_per_image: int = sampling.HEAD_BATCH_SIZE,
                 positive_fraction: float = sampling.HEAD_POSITIVE_FRACTION,
                 score_threshold: float = 0.05, nms_threshold: float = 0.5,
                 max_detections: int = 100, seed: int | None = None, min_size: float = 0.0,
                 pre_nms_topk: int = 1000, **kwargs):
        super().__init__(**kwargs)
        # Proposals and ground-truth boxes stay float32 under a mixed-precision policy
        # (RoIAlign and the layers convert what they use).
        compat.inputs_as_given(self)
        self.num_classes = int(num_classes)
        self.batch_size_per_image = int(batch_size_per_image)
        self.positive_fraction = float(positive_fraction)
        self.score_threshold = float(score_threshold)
        self.nms_threshold = float(nms_threshold)
        self.max_detections = int(max_detections)
        self.min_size = float(min_size)
        self.pre_nms_topk = int(pre_nms_topk)
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)
        self.cls, self.box = predictors(self.num_classes, self.dtype_policy)

    def box_outputs(self, features: Sequence, rois, training=False):
        """`([B, R, K + 1] logits, [B, R, K, 4] deltas)` of `rois [B, R, 4]` (canvas xyxy)."""
        raise NotImplementedError

    def call(self, features, proposals: dict, image_info, targets: dict | None = None,
             training=False):
        features = list(features)
        if targets is not None:
            return self.losses_of(features, proposals, targets, training)
        return self.detect(features, proposals, image_info), {}

    def _outputs(self, x, num_rois: int):
        logits = ops.reshape(self.cls(x), (-1, num_rois, self.num_classes + 1))
        deltas = ops.reshape(self.box(x), (-1, num_rois, self.num_classes, 4))
        return logits, deltas

    def mask_features(self, features: Sequence, rois, training=False):
        """`[B * R, h, w, C]` features of `rois [B, R, 4]` for a mask head (RoIAlign 14x14 on
        the same maps as the box head; C4 also runs its `res5`)."""
        raise NotImplementedError

    def sample(self, proposals: dict, targets: dict):
        """Training RoIs, their targets and matched ground-truth indices (see `sample_rois`)."""
        return sample_rois(proposals["boxes"], proposals["valid"], targets["boxes"],
                           targets["labels"], self.num_classes, self.batch_size_per_image,
                           self.positive_fraction, seed=self.seed_generator,
                           return_matches=True)

    def losses_of(self, features: list, proposals: dict, targets: dict,
                  training=True) -> tuple[dict, dict]:
        """The sampled RoIs and `{"roi_cls_loss", "roi_box_loss"}` on them."""
        rois, roi_valid, cls_targets, box_targets, matched = self.sample(proposals, targets)
        logits, deltas = self.box_outputs(features, rois, training=training)
        cls_loss, box_loss = box_head_losses(logits, deltas, roi_valid, cls_targets, box_targets)
        sampled = {"rois": rois, "valid": roi_valid, "class_targets": cls_targets,
                   "matched": matched}
        return sampled, {"roi_cls_loss": cls_loss, "roi_box_loss": box_loss}

    def detect(self, features: list, proposals: dict, image_info) -> dict:
        """Padded canvas detections `{"boxes", "scores", "classes", "num_detections"}`, boxes
        clipped to each image's extent on the canvas (`image_info.extent`)."""
        rois = proposals["boxes"]
        logits, deltas = self.box_outputs(features, rois, training=False)
        probs = ops.softmax(ops.cast(logits, "float32"), axis=-1)
        probs = probs * ops.cast(proposals["valid"], "float32")[..., None]
        class_boxes = box_ops.decode(deltas, rois[:, :, None, :], box_ops.HEAD_WEIGHTS)
        extent = ops.cast(image_info.extent, "float32")
        return postprocess_detections(
            probs, class_boxes, extent[:, :1], extent[:, 1:], self.score_threshold,
            self.nms_threshold, self.max_detections, self.pre_nms_topk, self.min_size)

    def get_config(self) -> dict:
        return {**super().get_config(), "num_classes": self.num_classes,
                "batch_size_per_image": self.batch_size_per_image,
                "positive_fraction": self.positive_fraction,
                "score_threshold": self.score_threshold, "nms_threshold": self.nms_threshold,
                "max_detections": self.max_detections, "seed": self.seed,
                "min_size": self.min_size, "pre_nms_topk": self.pre_nms_topk}
