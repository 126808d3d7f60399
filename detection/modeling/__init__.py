"""The detector, in the order data flows through it: `transform` (canvas, normalisation) ->
backbone (`keras_resnet_suite.backbones`, with `fpn`) -> `rpn` -> `roi_heads` -> detections.
`ops` holds the pure box functions the parts are made of; `options` what each stage can be
told; `faster_rcnn` only composes."""

from detection.modeling.faster_rcnn import LOSS_KEYS, FasterRCNN, GeneralizedRCNN
from detection.modeling.options import (
    BackboneOptions,
    DetectorOptions,
    ROIHeadsOptions,
    RPNOptions,
    TransformOptions,
)
from detection.modeling.transform import ImageInfo

__all__ = ["LOSS_KEYS", "BackboneOptions", "DetectorOptions", "FasterRCNN", "GeneralizedRCNN",
           "ImageInfo", "ROIHeadsOptions", "RPNOptions", "TransformOptions"]
