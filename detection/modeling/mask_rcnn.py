"""Mask R-CNN (He et al. 2017): Faster R-CNN's parts plus a mask head, a fifth part.

Training adds `mask_loss` (per-class binary cross-entropy, sec. 3) on the positive RoIs the
box head sampled, against their matched ground-truth masks cropped by RoIAlign
(`ops.masks.mask_targets`); the four Faster R-CNN losses are computed exactly as without
masks. Inference runs the mask head on the final detections (after NMS, as torchvision and
detectron2 do) and returns each detection's mask probabilities of its detected class,
box-relative (the TF OD API's `detection_masks`): `detection.evaluation.paste.paste_masks`
puts them into the image. Training elements carry `"masks": [B, M, H, W]` 0/1, one per
ground-truth box.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import keras
from keras import ops

from detection.checkpoints import pretrained
from detection.modeling import builder
from detection.modeling.faster_rcnn import LOSS_KEYS, PARTS, FasterRCNN, GeneralizedRCNN
from detection.modeling.ops import masks as mask_ops
from detection.modeling.ops import sampling
from detection.modeling.options import DetectorOptions
from detection.modeling.roi_heads.mask_heads import MaskHead, class_masks, mask_head_for
from detection.modeling.transform import ImageInfo
from keras_resnet_suite.model_kind import WrongModelKind, file_kind

MASK_LOSS_KEYS = LOSS_KEYS + ("mask_loss",)


@keras.saving.register_keras_serializable(package="detection")
class MaskRCNN(FasterRCNN):
    """Mask R-CNN with a ResNet backbone, C4 or FPN head: `MaskRCNN(num_classes,
    backbone="resnet101", head="c4", image_size=..., options=..., **keywords)` builds
    FasterRCNN's four parts (`builder.build_parts`) and `mask_head` (FPN: 4 convs, 28x28
    masks; C4: the box head's res5 + deconv, 14x14 masks, as detectron2's R50-C4), its width
    the option `mask_head_dim` (256), BatchNorm after each conv with `mask_head_norm="batch"`.

    `fit` takes `{"images", "bounding_boxes": {"boxes", "labels"}, "masks": [B, M, H, W]}`;
    `predict` returns FasterRCNN's outputs plus `"masks": [B, N, S, S]` probabilities.
    """

    parts = PARTS + ("mask_head",)
    loss_keys = MASK_LOSS_KEYS

    def __init__(self, num_classes: int, backbone: str | keras.Model = "resnet101",
                 head: str = "c4", image_size: Sequence[int] = (608, 1024), *,
                 options: DetectorOptions | None = None, name: str = "mask_rcnn",
                 dtype: str | keras.DTypePolicy | None = None, **keywords):
        options = (options or DetectorOptions()).merged(**keywords)  # build_parts checks
        with builder.dtype_policy(dtype):  # every part and the model under one policy
            parts = builder.build_parts(num_classes, backbone, head, image_size, options)
            GeneralizedRCNN.__init__(self, name=name, **parts)
            self._attach_mask_head(mask_head_for(self.head_type, self.num_classes,
                                                 options.roi_heads.mask_head_dim,
                                                 options.roi_heads.mask_head_norm))

    @classmethod
    def compose(cls, backbone, rpn, roi_heads, transform, mask_head: MaskHead,
                name: str = "mask_rcnn"):
        """A `MaskRCNN` of given parts (what `.keras` loading does)."""
        model = cls.__new__(cls)
        GeneralizedRCNN.__init__(model, backbone, rpn, roi_heads, transform, name=name)
        model._attach_mask_head(mask_head)
        return model

    @classmethod
    def from_checkpoint(cls, name_or_path, image_size: Sequence[int] | None = None,
                        **overrides) -> MaskRCNN:
        """A Mask R-CNN with a library's published COCO weights, as
        `FasterRCNN.from_checkpoint`: a registry name whose checkpoint has `masks` (e.g.
        "detectron2/mask_rcnn_R_50_FPN_3x") or a Mask R-CNN `.pth` / `.pkl`; a Faster R-CNN
        checkpoint is refused in one line (it has no mask head weights)."""
        arch, state, source = pretrained.read(name_or_path, masks=True)
        model = cls.from_architecture(arch, image_size, **overrides)
        pretrained.load_state(model, state, arch, source=source)
        return model

    def _attach_mask_head(self, mask_head: MaskHead):
        if not isinstance(mask_head, MaskHead) or mask_head.num_classes != self.num_classes:
            raise ValueError(f"{self.name}: mask_head must be a MaskHead for "
                             f"{self.num_classes} classes, got {mask_head!r}")
        self.mask_head = mask_head
        shapes = [tuple(o.shape) for o in self.backbone.outputs]
        self.mask_head.build(self.roi_heads.mask_feature_shape(shapes))

    @property
    def mask_size(self) -> int:
        """Side of the predicted box-relative masks (FPN 28, C4 14)."""
        shapes = [tuple(o.shape) for o in self.backbone.outputs]
        return int(self.mask_head.compute_output_shape(
            self.roi_heads.mask_feature_shape(shapes))[1])

    def mask_logits(self, features: list, rois, training=False):
        """`[B, R, S, S, K]` mask logits of `rois [B, R, 4]` (canvas pixels)."""
        x = self.mask_head(self.roi_heads.mask_features(features, rois, training),
                           training=training)
        return ops.reshape(x, (-1, rois.shape[1]) + tuple(x.shape[1:]))

    def call(self, inputs, training=False):
        if training and isinstance(inputs, dict) and inputs.get("bounding_boxes") is not None:
            key = "mask_crops" if "mask_crops" in inputs else "masks"
            if key not in inputs:
                raise ValueError(f"{type(self).__name__} trains on elements with 'masks' "
                                 "[B, M, H, W] (one 0/1 mask per box; data loaders give them "
                                 "with masks=True) or 'mask_crops' [B, M, S, S] "
                                 f"(training_batches); got keys {sorted(inputs)}")
            self._check_masks(inputs, key)
            x, info = self.transform(inputs["images"])
            truth = {**inputs["bounding_boxes"], key: inputs[key]}
            return self.training_losses(x, info, self.transform.targets_to_canvas(truth, info))
        return super().call(inputs, training=training)

    def _check_masks(self, inputs: dict, key: str = "masks"):
        """One line naming what is wrong when the masks cannot belong to the boxes and images
        (`[B, M, H, W]`: M as the boxes, H x W as the images; crops `[B, M, S, S]`), where
        shapes are static."""
        masks, images = tuple(inputs[key].shape), tuple(inputs["images"].shape)
        boxes = tuple(inputs["bounding_boxes"]["boxes"].shape)
        crops = key == "mask_crops"
        side = masks[2:3] * 2 if crops and len(masks) == 4 else images[1:3]
        want = (images[0], boxes[1]) + side if len(images) == 4 and len(boxes) == 3 else None
        if want is None or len(masks) != 4 or any(
                m is not None and w is not None and m != w
                for m, w in zip(masks, want, strict=True)):
            what, why = ("crop, crop", "one square crop per box") if crops else (
                "height, width", "one mask per box at the image's size")
            raise ValueError(f"{type(self).__name__}: '{key}' must be [batch, boxes, {what}] = "
                             f"{want} ({why}), got {masks}")

    def stage_losses(self, x, info: ImageInfo, targets: dict) -> dict:
        """FasterRCNN's four losses and `mask_loss` on the box head's positive RoIs."""
        features = self._features(x, training=True)
        proposals, rpn_losses = self.rpn(features, info, targets, training=True)
        sampled, roi_losses = self.roi_heads(features, proposals, info, targets, training=True)
        return {**rpn_losses, **roi_losses,
                "mask_loss": self.mask_loss(features, sampled, targets)}

    def mask_loss(self, features: list, sampled: dict, targets: dict):
        """`L_mask` on the positive sampled RoIs: at most `batch_size_per_image *
        positive_fraction` per image (the sampler's cap), gathered first so the head runs on
        a static number of RoIs."""
        heads = self.roi_heads
        positive = ops.logical_and(sampled["valid"], sampled["class_targets"] < heads.num_classes)
        cap = max(1, int(heads.batch_size_per_image * heads.positive_fraction))
        cap = min(cap, int(positive.shape[1]))
        idx, valid = sampling.sampled_indices(positive, cap)

        def pick(t):
            return ops.take_along_axis(t, idx, axis=1)

        rois = ops.take_along_axis(sampled["rois"], idx[..., None], axis=1)
        labels, matched = pick(sampled["class_targets"]), pick(sampled["matched"])
        size = self.mask_size
        if "mask_crops" in targets:
            boxes = targets["mask_boxes"]
            goal = mask_ops.crop_mask_targets(targets["mask_crops"], boxes, matched, rois,
                                              self.transform.image_size, size)
        else:
            goal = mask_ops.mask_targets(targets["masks"], matched, rois, size)
        logits = ops.transpose(self.mask_logits(features, rois, training=True), (0, 1, 4, 2, 3))
        return mask_ops.mask_loss(logits, goal, labels, valid)

    def detect(self, x, info: ImageInfo) -> dict:
        """FasterRCNN's detections plus `"masks" [B, N, S, S]`: the mask head on the final
        boxes, the probabilities of each detection's class (zero on padding rows)."""
        features = self._features(x, training=False)
        proposals, _ = self.rpn(features, info, training=False)
        detections, _ = self.roi_heads(features, proposals, info, training=False)
        logits = self.mask_logits(features, ops.stop_gradient(detections["boxes"]))
        probs = ops.sigmoid(class_masks(logits, detections["classes"]))
        valid = ops.cast(detections["classes"] >= 0, "float32")[:, :, None, None]
        return {**self.transform.detections_to_input(detections, info), "masks": probs * valid}


def detector_from_checkpoint(name_or_path, image_size: Sequence[int] | None = None,
                             **overrides) -> FasterRCNN:
    """The detector a published checkpoint makes: a `MaskRCNN` for a Mask R-CNN checkpoint
    (mask head weights), else a `FasterRCNN`; what the commands' `--weights` load, so
    `predict`/`evaluate`/`export` of a mask checkpoint keep its masks."""
    if Path(name_or_path).is_dir() or str(name_or_path).endswith((".keras", ".weights.h5")):
        kind = file_kind(name_or_path)[1] or "a trained model"
        raise WrongModelKind(f"--weights {name_or_path} is {kind}: expected published COCO "
                             "weights (a registry name, torchvision .pth or detectron2 .pkl); "
                             "a trained detector goes to --checkpoint (predict: --model)")
    try:
        arch, state, source = pretrained.read(name_or_path)
    except ValueError as err:  # a classifier's .pth: say which file is not a detector's
        if str(name_or_path) in str(err):
            raise
        raise ValueError(f"--weights {name_or_path}: {err}") from err
    cls = MaskRCNN if arch.masks else FasterRCNN
    model = cls.from_architecture(arch, image_size, **overrides)
    pretrained.load_state(model, state, arch, source=source)
    return model
