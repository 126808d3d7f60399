"""How each library's detector is built and fed: `DetectorOptions` per preset.

A checkpoint's numbers depend on every convention its library trained and tested with:
input size rule, normalisation and padding, anchors, RoIAlign, proposal and detection
post-processing, the ResNet variant. A preset states them so that the same weights give
the same detections here as there (see `tests/detection/parity`).
"""

from __future__ import annotations

import dataclasses
import math

from detection.modeling.options import (
    BackboneOptions,
    DetectorOptions,
    ROIHeadsOptions,
    RPNOptions,
    TransformOptions,
)
from detection.modeling.transform import static_sizes

# torchvision: RGB [0, 1] minus mean over std (here on the 0-255 scale).
_TV_MEAN = (123.675, 116.28, 103.53)
_TV_STD = (58.395, 57.12, 57.375)

TORCHVISION = DetectorOptions(
    backbone=BackboneOptions(freeze_at=2, norm="frozen", kwargs={"stride_in_1x1": False}),
    transform=TransformOptions(pixel_mean=_TV_MEAN, pixel_std=_TV_STD, resize="torchvision",
                               pad_after_normalize=True),
    rpn=RPNOptions(pre_nms_topk=(2000, 1000), post_nms_topk=(2000, 1000),
                   anchor_strides="padded", rounded_anchors=True, min_size=1e-3),
    roi_heads=ROIHeadsOptions(sampling_ratio=2, aligned=False, level_rule="torchvision",
                              min_size=1e-2, pre_nms_topk=5000),
)
# v2 keeps torchvision's trainable BatchNorm in the backbone too (the same in inference), and
# its Mask R-CNN has BatchNorm in the mask head's convs.
TORCHVISION_V2 = dataclasses.replace(
    TORCHVISION,
    backbone=dataclasses.replace(TORCHVISION.backbone, norm="batch", fpn_norm="batch"),
    rpn=dataclasses.replace(TORCHVISION.rpn, head_convs=2),
    roi_heads=dataclasses.replace(TORCHVISION.roi_heads, box_head_convs=(256, 256, 256, 256),
                                  fc_dims=(1024,), mask_head_norm="batch"),
)
# detectron2: BGR 0-255 minus its pixel mean, std 1. The model here takes RGB: the mean is
# given in RGB order and the converter reverses the stem kernel's input channels.
DETECTRON2 = {head: DetectorOptions(
    backbone=BackboneOptions(freeze_at=2, norm="frozen", kwargs={"stride_in_1x1": True}),
    transform=TransformOptions(pixel_mean=(123.675, 116.28, 103.53), pixel_std=(1.0, 1.0, 1.0),
                               resize="detectron2", quantize=True, pad_after_normalize=True),
    rpn=RPNOptions(pre_nms_topk=topk[0], post_nms_topk=topk[1]),
    roi_heads=ROIHeadsOptions(sampling_ratio=0, aligned=True, level_rule="detectron2",
                              pre_nms_topk=5000),
) for head, topk in {"c4": ((12000, 6000), (2000, 1000)),
                     "fpn": ((2000, 1000), (1000, 1000))}.items()}
PRESETS = ("torchvision", "torchvision_v2", "detectron2")
# The checkpoints' frozen-BN epsilon (torchvision's COCO_V1 weights were trained with 0).
BN_EPSILON = {"torchvision": 0.0, "torchvision_v2": 1e-5, "detectron2": 1e-5}


def options(preset: str, head: str) -> DetectorOptions:
    """A preset's options (`head` matters for detectron2 only)."""
    if preset == "torchvision":
        return TORCHVISION
    if preset == "torchvision_v2":
        return TORCHVISION_V2
    if preset == "detectron2":
        return DETECTRON2[head]
    raise ValueError(f"unknown detector preset {preset!r}; known: {PRESETS}")


def reference_size(preset: str, head: str, height: int, width: int,
                   min_size: float = 800.0, max_size: float = 1333.0) -> tuple[int, int]:
    """The padded `(H, W)` the reference library runs an `height x width` image at: its
    resized size rounded up to a multiple of 32, except detectron2's C4 (unpadded). A canvas
    of this size makes the model see exactly what the reference sees."""
    rule = "detectron2" if preset == "detectron2" else "torchvision"
    big = (10**6, 10**6)
    h, w, _, _ = static_sizes(height, width, big, rule, min_size, max_size)
    if preset == "detectron2" and head == "c4":
        return h, w
    return 32 * math.ceil(h / 32), 32 * math.ceil(w / 32)


def default_canvas(preset: str, head: str, max_size: float = 1333.0) -> tuple[int, int]:
    """The canvas a checkpoint is built on when none is given: landscape images up to the
    reference's largest size fit exactly; portrait ones are shrunk to fit (say so)."""
    if preset == "detectron2" and head == "c4":
        return 800, int(max_size)
    return 800, 32 * math.ceil(max_size / 32)
