"""`build_parts`: the four parts of a Faster R-CNN from a few choices (backbone name, head,
canvas) and the stages' options (`detection.modeling.options`); `FasterRCNN(num_classes, ...)`
calls it."""

from __future__ import annotations

import contextlib
import numbers
from collections.abc import Iterator, Sequence

import keras

from detection.modeling.fpn import FPN
from detection.modeling.level_options import check_level_options
from detection.modeling.options import DetectorOptions, ROIHeadsOptions, RPNOptions
from detection.modeling.roi_heads import C4ROIHeads, FPNROIHeads
from detection.modeling.rpn import RPN
from detection.modeling.rpn import anchors as anchor_ops
from detection.modeling.transform import ImageTransform
from keras_resnet_suite import backbones

# RPN pre-/post-NMS top-k as (train, test) per head design (detectron2 defaults; FPN's
# pre-NMS count is per level).
RPN_TOPK = {"c4": ((12000, 2000), (6000, 1000)), "fpn": ((2000, 1000), (1000, 1000))}
FPN_LEVELS = ("C2", "C3", "C4", "C5")


@contextlib.contextmanager
def dtype_policy(dtype: str | keras.DTypePolicy | None) -> Iterator[None]:
    """Build inside this block under the Keras dtype policy `dtype` (`"mixed_bfloat16"`,
    `"bfloat16"`, ...; None: the global one), as every Keras layer's `dtype` argument does,
    then restore the global policy. Detection outputs (boxes, scores) stay float32."""
    if dtype is None:
        yield
        return
    try:
        policy = dtype if isinstance(dtype, keras.DTypePolicy) else keras.DTypePolicy(dtype)
    except (TypeError, ValueError) as err:
        raise ValueError(f"dtype must be a Keras dtype policy or its name ('float32', "
                         f"'mixed_bfloat16', 'mixed_float16', 'bfloat16'), got {dtype!r}"
                         ) from err
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(policy)
    try:
        yield
    finally:
        keras.config.set_dtype_policy(previous)


def _backbone_model(backbone, image_size, weights, freeze_at, norm, backbone_kwargs):
    if isinstance(backbone, keras.Model):
        if not hasattr(backbone, "feature_info"):
            raise ValueError("backbone: a keras.Model backbone needs a `feature_info` attribute "
                             "({'C4': {'channels': ..., 'stride': 16}, ...}) like "
                             "keras_resnet_suite.backbones models")
        return backbone
    if not isinstance(backbone, str):
        raise TypeError(f"backbone must be a model name or a keras.Model, got {type(backbone)}")
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


def build_parts(num_classes: int, backbone: str | keras.Model = "resnet101", head: str = "c4",
                image_size: Sequence[int] = (608, 1024),
                options: DetectorOptions | None = None, **keywords) -> dict:
    """`{"backbone", "rpn", "roi_heads", "transform"}` of a Faster R-CNN.

    Args:
        num_classes: object classes, labels `0 .. num_classes - 1` (background is internal).
        backbone: a `keras_resnet_suite.backbones` name (`"resnet101"`, ...) or a built
            backbone `keras.Model` with dict outputs C2..C5 and `feature_info`.
        head: `"c4"` (RoIAlign on C4, conv5_x per RoI) or `"fpn"` (P2-P6, 2x1024 FC head).
        image_size: the fixed `(height, width)` canvas (both multiples of 32 for FPN).
        options: every stage's options (`detection.modeling.options`), by default
            detectron2's; `keywords` (`options.KEYWORDS`, e.g. `score_threshold=0.1`)
            replace single fields of them.
    """
    head, image_size = _check(num_classes, head, image_size)
    options = (options or DetectorOptions()).merged(**keywords)
    check_level_options(head, options)  # shapes first (a clearer line), before any layer
    options = options.checked()
    b = options.backbone
    pretrained = b.weights is not None
    freeze_at = (2 if pretrained else 0) if b.freeze_at is None else b.freeze_at
    norm = ("frozen" if pretrained else "batch") if b.norm is None else b.norm
    net = _backbone_model(backbone, image_size, b.weights, freeze_at, norm, b.kwargs)
    t = options.transform
    transform = ImageTransform(
        image_size, getattr(net, "preprocessing", None) or "torch", t.pixel_mean, t.pixel_std,
        resize=t.resize, min_size=t.min_size, max_size=t.max_size, quantize=t.quantize,
        pad_after_normalize=t.pad_after_normalize, name="transform")
    anchor_sizes = options.rpn.anchor_sizes
    if head == "c4":
        trunk, shapes, strides, sizes = _c4_parts(net, anchor_sizes)
    else:
        trunk, shapes, strides, sizes = _fpn_parts(net, anchor_sizes, b.fpn_channels, b.fpn_norm)
    return {"backbone": trunk,
            "rpn": _rpn(head, image_size, shapes, strides, sizes, options.rpn, options.seed),
            "roi_heads": _roi_heads(net, head, num_classes, strides, options.roi_heads,
                                    options.seed),
            "transform": transform}


def _rpn(head: str, image_size, shapes, strides, sizes, o: RPNOptions, seed) -> RPN:
    """The RPN from its options `o`."""
    (train_pre, train_post), (test_pre, test_post) = RPN_TOPK[head]
    if o.anchor_strides not in ("nominal", "padded"):
        raise ValueError(f"anchor_strides must be 'nominal' or 'padded', got "
                         f"{o.anchor_strides!r}")
    if o.anchor_strides == "padded":  # torchvision: canvas size // map size per axis
        strides = [(image_size[0] // h, image_size[1] // w) for h, w in shapes]
    return RPN(shapes, strides, sizes, o.anchor_ratios,
               pre_nms_topk=o.pre_nms_topk or (train_pre, test_pre),
               post_nms_topk=o.post_nms_topk or (train_post, test_post),
               nms_threshold=o.nms_threshold, batch_size_per_image=o.batch_size,
               positive_fraction=o.positive_fraction, seed=seed,
               rounded_anchors=o.rounded_anchors, min_size=o.min_size,
               head_convs=o.head_convs, name="rpn")


def _roi_heads(net, head: str, num_classes: int, strides, o: ROIHeadsOptions, seed):
    """The C4 or FPN second stage from its options `o`."""
    common = {"num_classes": int(num_classes), "batch_size_per_image": o.batch_size,
              "positive_fraction": o.positive_fraction, "score_threshold": o.score_threshold,
              "nms_threshold": o.nms_threshold, "max_detections": o.max_detections,
              "min_size": o.min_size, "pre_nms_topk": o.pre_nms_topk, "name": "roi_heads",
              "sampling_ratio": o.sampling_ratio, "aligned": o.aligned,
              # its own random stream, not a copy of the RPN's anchor sampling draws
              "seed": None if seed is None else seed + 1}
    if head == "c4":
        return C4ROIHeads(net.get_layer("conv5_x"), pooled_size=o.pooled_size or 14,
                          stride=strides[0], **common)
    return FPNROIHeads(strides=strides[:4], pooled_size=o.pooled_size or 7, fc_dims=o.fc_dims,
                       level_rule=o.level_rule, conv_dims=o.box_head_convs, **common)
