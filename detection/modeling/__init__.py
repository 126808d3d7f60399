"""The detector, in the order data flows through it: `transform` (canvas, normalisation) ->
backbone (`keras_resnet_suite.backbones`, with `fpn`) -> `rpn` -> `roi_heads` -> detections.
`ops` holds the pure box functions the parts are made of; `faster_rcnn` only composes."""

from detection.modeling.faster_rcnn import LOSS_KEYS, FasterRCNN, GeneralizedRCNN

__all__ = ["LOSS_KEYS", "FasterRCNN", "GeneralizedRCNN"]
