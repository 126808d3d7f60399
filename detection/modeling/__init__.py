"""The detector, in the order data flows through it: `transform` (canvas, normalisation) ->
backbone (`keras_resnet_suite.backbones`, with `fpn`) -> `rpn` -> `roi_heads` -> detections.
`ops` holds the pure box functions the parts are made of; `options` what each stage can be
told; `faster_rcnn` only composes; `mask_rcnn` adds the mask head."""

from detection.modeling.faster_rcnn import LOSS_KEYS, FasterRCNN, GeneralizedRCNN
from detection.modeling.mask_rcnn import MASK_LOSS_KEYS, MaskRCNN, detector_from_checkpoint
from detection.modeling.options import (
    BackboneOptions,
    DetectorOptions,
    ROIHeadsOptions,
    RPNOptions,
    TransformOptions,
)
from detection.modeling.transform import ImageInfo

__all__ = ["LOSS_KEYS", "MASK_LOSS_KEYS", "BackboneOptions", "DetectorOptions", "FasterRCNN",
           "GeneralizedRCNN", "ImageInfo", "MaskRCNN", "ROIHeadsOptions", "RPNOptions",
           "TransformOptions", "detector_from_checkpoint"]
