"""`build_parts`: the four parts of a Faster R-CNN from a few choices (backbone name, head,
canvas), with detectron2's defaults; `FasterRCNN(num_classes, ...)` calls it."""

from __future__ import annotations

import numbers
from collections.abc import Sequence

import keras

from detection.modeling.fpn import FPN
from detection.modeling.roi_heads import C4ROIHeads, FPNROIHeads
from detection.modeling.rpn import RPN
from detection.modeling.rpn import anchors as anchor_ops
from detection.modeling.transform import ImageTransform

# RPN pre-/post-NMS top-k as (train, test) per head design (detectron2 defaults; FPN's
# pre-NMS count is per level).
RPN_TOPK = {"c4": ((12000, 2000), (6000, 1000)), "fpn": ((2000, 1000), (1000, 1000))}
FPN_LEVELS = ("C2", "C3", "C4", "C5")


def _backbone_model(backbone, image_size, weights, freeze_at, norm, backbone_kwargs):
    if isinstance(backbone, keras.Model):
        if not hasattr(backbone, "feature_info"):
            raise ValueError("backbone: a keras.Model backbone needs a `feature_info` attribute "
                             "({'C4': {'channels': ..., 'stride': 16}, ...}) like "
                             "keras_resnet_suite.backbones models")
        return backbone
    if not isinstance(backbone, str):
        raise TypeError(f"backbone must be a model name or a keras.Model, got {type(backbone)}")
    from keras_resnet_suite import backbones

    return backbones.build(backbone, weights=weights, input_shape=tuple(image_size) + (3,),
                           freeze_at=freeze_at, norm=norm, **(backbone_kwargs or {}))


def _output(backbone: keras.Model, level: str):
    out = backbone.output
    if isinstance(out, dict) and level in out:
        return out[level]
    raise ValueError(f"backbone {backbone.name} has no output {level!r}; outputs: "
                     f"{sorted(out) if isinstance(out, dict) else out}")


def _static_hw(tensor) -> tuple[int, int]:
    hw = tuple(tensor.shape[1:3])
    if any(s is None for s in hw):
        raise ValueError("backbone feature maps need static sizes; build it on the canvas")
    return hw


def _c4_parts(net, anchor_sizes):
    """`[C4]` trunk and the `conv5_x` stage that the C4 RoI head runs per RoI."""
    c4 = _output(net, "C4")
    trunk = keras.Model(net.inputs, [c4], name="backbone_c4")
    stride = int(net.feature_info["C4"]["stride"])
    sizes = [tuple(anchor_sizes or anchor_ops.C4_SIZES)]
    return trunk, [_static_hw(c4)], [stride], sizes


def _fpn_parts(net, anchor_sizes, fpn_channels, fpn_norm=None):
    """C2..C5 + the FPN neck as one `[P2, ..., P6]` model."""
    outs = [_output(net, level) for level in FPN_LEVELS]
    pyramid = FPN(fpn_channels, norm=fpn_norm, name="fpn")(outs)
    trunk = keras.Model(net.inputs, pyramid, name="backbone_fpn")
    strides = [int(net.feature_info[level]["stride"]) for level in FPN_LEVELS]
    strides.append(strides[-1] * 2)
    sizes = [tuple(s) for s in (anchor_sizes or anchor_ops.FPN_SIZES)]
    if len(sizes) != 5:
        raise ValueError(f"anchor_sizes for FPN needs 5 groups (P2..P6), got {sizes}")
    return trunk, [_static_hw(p) for p in pyramid], strides, sizes


def _check(num_classes, head, image_size) -> tuple[str, tuple[int, int]]:
    if isinstance(num_classes, bool) or not isinstance(num_classes, numbers.Integral) \
            or num_classes < 1:
        raise ValueError(f"num_classes must be a positive int, got {num_classes!r}")
    head = str(head).lower()
    if head not in ("c4", "fpn"):
        raise ValueError(f"head must be 'c4' or 'fpn', got {head!r}")
    image_size = tuple(int(s) for s in image_size)
    if len(image_size) != 2 or min(image_size) < 32:
        raise ValueError(f"image_size must be (height, width) >= 32, got {image_size}")
    if head == "fpn" and any(s % 32 for s in image_size):
        raise ValueError(f"image_size {image_size}: FPN needs multiples of 32 so that the "
                         "top-down pathway's upsampled maps line up")
    return head, image_size


def build_parts(
    num_classes: int,
    backbone: str | keras.Model = "resnet101",
    head: str = "c4",
    image_size: Sequence[int] = (608, 1024),
    backbone_weights: str | None = None,
    freeze_at: int | None = None,
    norm: str | None = None,
    backbone_kwargs: dict | None = None,
    anchor_sizes: Sequence | None = None,
    anchor_ratios: Sequence[float] = anchor_ops.RATIOS,
    rpn_pre_nms_topk: Sequence[int] | None = None,
    rpn_post_nms_topk: Sequence[int] | None = None,
    rpn_nms_threshold: float = 0.7,
    rpn_batch_size: int = 256,
    rpn_positive_fraction: float = 0.5,
    roi_batch_size: int = 512,
    roi_positive_fraction: float = 0.25,
    score_threshold: float = 0.05,
    nms_threshold: float = 0.5,
    max_detections: int = 100,
    fpn_channels: int = 256,
    fc_dims: Sequence[int] = (1024, 1024),
    roi_pooled_size: int | None = None,
    roi_sampling_ratio: int = 2,
    pixel_mean: Sequence[float] | None = None,
    pixel_std: Sequence[float] | None = None,
    seed: int | None = None,
    # reference conventions (the checkpoint presets of detection.checkpoints set them)
    resize: str = "canvas", resize_min_size: float = 800.0, resize_max_size: float = 1333.0,
    quantize_resized: bool = False, pad_after_normalize: bool = False,
    anchor_strides: str = "nominal", rounded_anchors: bool = False, rpn_min_size: float = 0.0,
    rpn_head_convs: int = 1, fpn_norm: str | None = None, roi_aligned: bool = True,
    roi_level_rule: str = "detectron2", box_head_convs: Sequence[int] = (),
    detection_min_size: float = 0.0, detection_pre_nms_topk: int = 1000,
) -> dict:
    """`{"backbone", "rpn", "roi_heads", "transform"}` of a Faster R-CNN.

    Args:
        num_classes: object classes, labels `0 .. num_classes - 1` (background is internal).
        backbone: a `keras_resnet_suite.backbones` name (`"resnet101"`, ...) or a built
            backbone `keras.Model` with dict outputs C2..C5 and `feature_info`.
        head: `"c4"` (RoIAlign on C4, conv5_x per RoI) or `"fpn"` (P2-P6, 2x1024 FC head).
        image_size: the fixed `(height, width)` canvas (both multiples of 32 for FPN).
        backbone_weights, freeze_at, norm, backbone_kwargs: for the backbone builder; by
            default conv1-conv2_x frozen, BN frozen only with pretrained weights.
        anchor_sizes: C4: one tuple of sizes; FPN: one tuple per level P2..P6.
        rpn_pre_nms_topk / rpn_post_nms_topk: `(train, test)`; defaults per `RPN_TOPK`.
        roi_batch_size / roi_positive_fraction: head sampling (512 at 0.25).
        roi_pooled_size, roi_sampling_ratio, roi_aligned, roi_level_rule: RoIAlign output
            (14 for C4, 7 for FPN), samples per bin side (0: adaptive), pixel-centre
            alignment and FPN level rule (see `detection.modeling.ops.roi_align`).
        score_threshold, nms_threshold, max_detections, detection_min_size,
        detection_pre_nms_topk: post-processing (see `ROIHeads`).
        pixel_mean, pixel_std: explicit input normalisation (RGB, 0-255 scale); by default
            the backbone checkpoint's own convention (torch mean/std without weights).
        resize, resize_min_size, resize_max_size, quantize_resized, pad_after_normalize:
            the input size rule and padding (see `detection.modeling.transform`).
        anchor_strides, rounded_anchors, rpn_min_size, rpn_head_convs: see `RPN`.
        fpn_norm, box_head_convs: FPN BatchNorm; 3x3 convs before the FC head (torchvision
            v2: "batch", (256,) * 4).
    """
    options = dict(locals())
    head, image_size = _check(num_classes, head, image_size)
    pretrained = backbone_weights is not None
    freeze_at = (2 if pretrained else 0) if freeze_at is None else freeze_at
    norm = ("frozen" if pretrained else "batch") if norm is None else norm
    net = _backbone_model(backbone, image_size, backbone_weights, freeze_at, norm,
                          backbone_kwargs)
    transform = ImageTransform(
        image_size, getattr(net, "preprocessing", None) or "torch", pixel_mean, pixel_std,
        resize=resize, min_size=resize_min_size, max_size=resize_max_size,
        quantize=quantize_resized, pad_after_normalize=pad_after_normalize, name="transform")
    if head == "c4":
        trunk, shapes, strides, sizes = _c4_parts(net, anchor_sizes)
    else:
        trunk, shapes, strides, sizes = _fpn_parts(net, anchor_sizes, fpn_channels, fpn_norm)
    return {"backbone": trunk, "rpn": _rpn(head, image_size, shapes, strides, sizes, options),
            "roi_heads": _roi_heads(net, head, strides, options),
            "transform": transform}


def _rpn(head: str, image_size, shapes, strides, sizes, o: dict) -> RPN:
    """The RPN from `build_parts`' options `o`."""
    (train_pre, train_post), (test_pre, test_post) = RPN_TOPK[head]
    if o["anchor_strides"] not in ("nominal", "padded"):
        raise ValueError(f"anchor_strides must be 'nominal' or 'padded', got "
                         f"{o['anchor_strides']!r}")
    if o["anchor_strides"] == "padded":  # torchvision: canvas size // map size per axis
        strides = [(image_size[0] // h, image_size[1] // w) for h, w in shapes]
    return RPN(shapes, strides, sizes, o["anchor_ratios"],
               pre_nms_topk=o["rpn_pre_nms_topk"] or (train_pre, test_pre),
               post_nms_topk=o["rpn_post_nms_topk"] or (train_post, test_post),
               nms_threshold=o["rpn_nms_threshold"], batch_size_per_image=o["rpn_batch_size"],
               positive_fraction=o["rpn_positive_fraction"], seed=o["seed"],
               rounded_anchors=o["rounded_anchors"],
               min_size=o["rpn_min_size"], head_convs=o["rpn_head_convs"], name="rpn")


def _roi_heads(net, head: str, strides, o: dict):
    """The C4 or FPN second stage from `build_parts`' options `o`."""
    common = {"num_classes": int(o["num_classes"]),
              "batch_size_per_image": o["roi_batch_size"],
              "positive_fraction": o["roi_positive_fraction"],
              "score_threshold": o["score_threshold"], "nms_threshold": o["nms_threshold"],
              "max_detections": o["max_detections"], "min_size": o["detection_min_size"],
              "pre_nms_topk": o["detection_pre_nms_topk"], "name": "roi_heads",
              "sampling_ratio": o["roi_sampling_ratio"], "aligned": o["roi_aligned"],
              # its own random stream, not a copy of the RPN's anchor sampling draws
              "seed": None if o["seed"] is None else o["seed"] + 1}
    if head == "c4":
        return C4ROIHeads(net.get_layer("conv5_x"), pooled_size=o["roi_pooled_size"] or 14,
                          stride=strides[0], **common)
    return FPNROIHeads(strides=strides[:4], pooled_size=o["roi_pooled_size"] or 7,
                       fc_dims=o["fc_dims"], level_rule=o["roi_level_rule"],
                       conv_dims=o["box_head_convs"], **common)
