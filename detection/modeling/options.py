"""What `FasterRCNN(num_classes, backbone, head, image_size, ...)` can be told, one frozen
dataclass per stage, with detectron2's defaults; `detection.checkpoints.presets` holds each
library's conventions as instances of them.

`FasterRCNN`'s flat keyword arguments (the names configs and the CLI use: `rpn_nms_threshold`,
`score_threshold`, ...) map onto one field of one stage each (`KEYWORDS`); `OPTION_RULES` holds
each one's value rule (`keras_resnet_suite.schema`), checked on every built model's options
(presets and `DetectorOptions(...)` too), so a NaN threshold or a negative size is one
`ValueError` naming the keyword instead of a model that silently detects nothing.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from detection.modeling.rpn import anchors as anchor_ops
from keras_resnet_suite.schema import (
    NON_NEGATIVE,
    NON_NEGATIVE_INT,
    POSITIVE,
    POSITIVE_INT,
    PROBABILITY,
    SHARE,
    AnyOf,
    Flag,
    ListOf,
    Number,
    Rule,
    Table,
)


@dataclass(frozen=True)
class BackboneOptions:
    """The trunk: `keras_resnet_suite.backbones` builder arguments and the FPN neck.

    `weights`, `freeze_at`, `norm`: by default conv1-conv2_x frozen and BN frozen only with
    pretrained weights; `kwargs`: further builder arguments (e.g. `stride_in_1x1`);
    `fpn_channels`, `fpn_norm`: the neck's width and BatchNorm (torchvision v2: "batch").
    """

    weights: str | None = None
    freeze_at: int | None = None
    norm: str | None = None
    kwargs: Mapping[str, Any] | None = None
    fpn_channels: int = 256
    fpn_norm: str | None = None


@dataclass(frozen=True)
class TransformOptions:
    """The input side (see `detection.modeling.transform`): `pixel_mean`/`pixel_std` (RGB,
    0-255 scale; by default the backbone checkpoint's convention), the size rule `resize` with
    its `min_size`/`max_size`, PIL-like `quantize` and `pad_after_normalize`."""

    pixel_mean: Sequence[float] | None = None
    pixel_std: Sequence[float] | None = None
    resize: str = "canvas"
    min_size: float = 800.0
    max_size: float = 1333.0
    quantize: bool = False
    pad_after_normalize: bool = False


@dataclass(frozen=True)
class RPNOptions:
    """The first stage (see `detection.modeling.rpn.RPN`). `anchor_sizes`: C4 one tuple of
    sizes, FPN one per level P2..P6; `pre_nms_topk`/`post_nms_topk`: `(train, test)`, by
    default per head design (`RPN_TOPK`); `anchor_strides`: "nominal" (the maps' strides) or
    "padded" (canvas size // map size, torchvision)."""

    anchor_sizes: Sequence | None = None
    anchor_ratios: Sequence[float] = anchor_ops.RATIOS
    pre_nms_topk: Sequence[int] | None = None
    post_nms_topk: Sequence[int] | None = None
    nms_threshold: float = 0.7
    batch_size: int = 256
    positive_fraction: float = 0.5
    anchor_strides: str = "nominal"
    rounded_anchors: bool = False
    min_size: float = 0.0
    head_convs: int = 1


@dataclass(frozen=True)
class ROIHeadsOptions:
    """The second stage (see `detection.modeling.roi_heads`): training RoIs (`batch_size` at
    `positive_fraction`), RoIAlign (`pooled_size`: 14 for C4, 7 for FPN by default;
    `sampling_ratio` 0 is adaptive; `aligned`; FPN `level_rule`), the FPN box head
    (`box_head_convs` 3x3 convs, then `fc_dims`), post-processing and Mask R-CNN's mask head
    width (`mask_head_dim`) and norm (`mask_head_norm`: None or "batch"; Faster R-CNN
    ignores both)."""

    batch_size: int = 512
    positive_fraction: float = 0.25
    score_threshold: float = 0.05
    nms_threshold: float = 0.5
    max_detections: int = 100
    fc_dims: Sequence[int] = (1024, 1024)
    pooled_size: int | None = None
    sampling_ratio: int = 2
    aligned: bool = True
    level_rule: str = "detectron2"
    box_head_convs: Sequence[int] = ()
    min_size: float = 0.0
    pre_nms_topk: int = 1000
    mask_head_dim: int = 256
    mask_head_norm: str | None = None


@dataclass(frozen=True)
class DetectorOptions:
    """Every stage's options, and `seed` for the RPN's and the RoI heads' sampling."""

    backbone: BackboneOptions = field(default_factory=BackboneOptions)
    transform: TransformOptions = field(default_factory=TransformOptions)
    rpn: RPNOptions = field(default_factory=RPNOptions)
    roi_heads: ROIHeadsOptions = field(default_factory=ROIHeadsOptions)
    seed: int | None = None

    def replace(self, **keywords: Any) -> DetectorOptions:
        """These options with `FasterRCNN`'s flat keyword arguments (`KEYWORDS`) applied,
        every value checked (`checked`)."""
        return self.merged(**keywords).checked()

    def merged(self, **keywords: Any) -> DetectorOptions:
        """`replace` without the value checks (the builder checks per-level shapes first)."""
        unknown = sorted(set(keywords) - set(KEYWORDS))
        if unknown:
            raise ValueError(f"FasterRCNN: unknown option(s) {unknown}; valid: "
                             f"{', '.join(sorted(KEYWORDS))}")
        stages: dict[str, dict] = {}
        for keyword, value in keywords.items():
            stage, name = KEYWORDS[keyword]
            stages.setdefault(stage, {})[name] = value
        seed = stages.pop("", {}).get("seed", self.seed)
        return dataclasses.replace(self, seed=seed, **{
            stage: dataclasses.replace(getattr(self, stage), **values)
            for stage, values in stages.items()})

    def checked(self) -> DetectorOptions:
        """These options with every value checked by `OPTION_RULES` (single numbers normalised,
        sequences kept as given); a bad one raises `ValueError` naming its keyword
        (`score_threshold must be ...`)."""
        stages: dict[str, dict] = {}
        for keyword, rule in OPTION_RULES.items():
            stage, name = KEYWORDS[keyword]
            value = getattr(getattr(self, stage) if stage else self, name)
            checked = rule.check(value, keyword)
            stages.setdefault(stage, {})[name] = value if isinstance(checked, list) else checked
        seed = stages.pop("", {}).get("seed", self.seed)
        return dataclasses.replace(self, seed=seed, **{
            stage: dataclasses.replace(getattr(self, stage), **values)
            for stage, values in stages.items()})


# FasterRCNN's keyword -> (stage, field); "" is the detector itself.
KEYWORDS: dict[str, tuple[str, str]] = {
    "backbone_weights": ("backbone", "weights"), "freeze_at": ("backbone", "freeze_at"),
    "norm": ("backbone", "norm"), "backbone_kwargs": ("backbone", "kwargs"),
    "fpn_channels": ("backbone", "fpn_channels"), "fpn_norm": ("backbone", "fpn_norm"),
    "pixel_mean": ("transform", "pixel_mean"), "pixel_std": ("transform", "pixel_std"),
    "resize": ("transform", "resize"), "resize_min_size": ("transform", "min_size"),
    "resize_max_size": ("transform", "max_size"), "quantize_resized": ("transform", "quantize"),
    "pad_after_normalize": ("transform", "pad_after_normalize"),
    "anchor_sizes": ("rpn", "anchor_sizes"), "anchor_ratios": ("rpn", "anchor_ratios"),
    "rpn_pre_nms_topk": ("rpn", "pre_nms_topk"), "rpn_post_nms_topk": ("rpn", "post_nms_topk"),
    "rpn_nms_threshold": ("rpn", "nms_threshold"), "rpn_batch_size": ("rpn", "batch_size"),
    "rpn_positive_fraction": ("rpn", "positive_fraction"),
    "anchor_strides": ("rpn", "anchor_strides"), "rounded_anchors": ("rpn", "rounded_anchors"),
    "rpn_min_size": ("rpn", "min_size"), "rpn_head_convs": ("rpn", "head_convs"),
    "roi_batch_size": ("roi_heads", "batch_size"),
    "roi_positive_fraction": ("roi_heads", "positive_fraction"),
    "score_threshold": ("roi_heads", "score_threshold"),
    "nms_threshold": ("roi_heads", "nms_threshold"),
    "max_detections": ("roi_heads", "max_detections"), "fc_dims": ("roi_heads", "fc_dims"),
    "roi_pooled_size": ("roi_heads", "pooled_size"),
    "roi_sampling_ratio": ("roi_heads", "sampling_ratio"),
    "roi_aligned": ("roi_heads", "aligned"), "roi_level_rule": ("roi_heads", "level_rule"),
    "box_head_convs": ("roi_heads", "box_head_convs"),
    "detection_min_size": ("roi_heads", "min_size"),
    "detection_pre_nms_topk": ("roi_heads", "pre_nms_topk"),
    "mask_head_dim": ("roi_heads", "mask_head_dim"),
    "mask_head_norm": ("roi_heads", "mask_head_norm"),
    "seed": ("", "seed"),
}


_SIZES = ListOf(POSITIVE, min_length=1)
_TOPK = ListOf(POSITIVE_INT, length=2, optional=True)
# The value rule of each keyword with one (the others are names or layouts, checked where
# they are used). Thresholds are in [0, 1], sampled fractions in (0, 1], sizes finite > 0.
OPTION_RULES: dict[str, Rule] = {
    "freeze_at": Number(int, low=0, optional=True), "backbone_kwargs": Table(optional=True),
    "fpn_channels": POSITIVE_INT,
    "pixel_mean": ListOf(Number(float), length=3, optional=True),
    "pixel_std": ListOf(POSITIVE, length=3, optional=True),
    "resize_min_size": POSITIVE, "resize_max_size": POSITIVE,
    "quantize_resized": Flag(), "pad_after_normalize": Flag(),
    "anchor_sizes": AnyOf((_SIZES, ListOf(_SIZES, min_length=1)), optional=True),
    "anchor_ratios": _SIZES, "rpn_pre_nms_topk": _TOPK, "rpn_post_nms_topk": _TOPK,
    "rpn_nms_threshold": PROBABILITY, "rpn_batch_size": POSITIVE_INT,
    "rpn_positive_fraction": SHARE, "rounded_anchors": Flag(), "rpn_min_size": NON_NEGATIVE,
    "rpn_head_convs": NON_NEGATIVE_INT,
    "roi_batch_size": POSITIVE_INT, "roi_positive_fraction": SHARE,
    "score_threshold": PROBABILITY, "nms_threshold": PROBABILITY,
    "max_detections": POSITIVE_INT, "fc_dims": ListOf(POSITIVE_INT),
    "roi_pooled_size": Number(int, low=1, optional=True),
    "roi_sampling_ratio": NON_NEGATIVE_INT, "roi_aligned": Flag(),
    "box_head_convs": ListOf(POSITIVE_INT), "detection_min_size": NON_NEGATIVE,
    "detection_pre_nms_topk": POSITIVE_INT, "mask_head_dim": POSITIVE_INT,
    "seed": Number(int, low=0, optional=True),
}
