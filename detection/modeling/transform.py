"""Model-side resizing: any input size onto the detector's fixed canvas, and back.

Three size rules (`resize`):
- `"canvas"`: scale by `s = min(H / h, W / w)` (shorter side up to the canvas, the longer
  side capped: the paper's "shorter side 600, longer at most 1000" on a 600 x 1000 canvas);
  the image covers `round(h * s) x round(w * s)` pixels.
- `"torchvision"`: `s = min(min_size / short, max_size / long)`, size `floor(h * s)` per
  axis (torchvision's `GeneralizedRCNNTransform`); each axis samples at its own `size / h`.
- `"detectron2"`: the same `s`, size `int(h * s + 0.5)` (detectron2's `ResizeShortestEdge`);
  with `quantize` the result is rounded to integers as its PIL resize on uint8 does.
The two reference rules are further capped by the canvas, so an image always fits: when
the canvas is at least the reference's padded size, the model sees exactly what the
reference sees. The image lies in the top-left corner; the rest is zero, before
normalisation (`"canvas"`) or after it (`pad_after_normalize`, both references).

Bilinear resizing is separable, so it is two einsums with interpolation matrices: the output
shape is static (the canvas) even when the input size is only known at run time. Half-pixel
centres as `tf.image.resize(..., "bilinear")` and torch's `interpolate(align_corners=False)`;
no antialiasing. Sizes are computed in Python (double precision, as the references do) when
the input shape is static, else in float32 in the graph.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, NamedTuple

import keras
from keras import layers, ops

from detection.modeling.ops import boxes as box_ops
from keras_resnet_suite.preprocessing import MODES, preprocess_input

RESIZE_RULES = ("canvas", "torchvision", "detectron2")


def _interp_matrix(out_len: int, in_len, scale, extent, columns=None):
    """`[out_len, columns]` (default `in_len`) bilinear weights sampling the first `in_len`
    inputs at `scale`; rows from `extent` on and columns from `in_len` on are zero (padding)."""
    in_len_f = ops.cast(in_len, "float32")
    dst = ops.cast(ops.arange(out_len), "float32")
    src = ops.clip((dst + 0.5) / scale - 0.5, 0.0, in_len_f - 1.0)
    low = ops.floor(src)
    frac = src - low
    high = ops.minimum(low + 1.0, in_len_f - 1.0)
    grid = ops.cast(ops.arange(in_len if columns is None else columns), "float32")
    w = (1.0 - frac)[:, None] * ops.cast(low[:, None] == grid[None], "float32")
    w = w + frac[:, None] * ops.cast(high[:, None] == grid[None], "float32")
    inside = dst < ops.cast(extent, "float32")
    return w * ops.cast(inside, "float32")[:, None]


def bucket_side(n):
    """The side an image of `n` pixels is zero-padded to before the resize's matrix products
    when sizes are known only at run time (a SavedModel's): the next of 32 * 2**(k/4), rounded
    up to a multiple of 8. oneDNN's kernels (TensorFlow's default on x86) cache compiled code
    per input shape, so a server that sees a new image size on every request grew ~0.2 MiB a
    request; padded, the products see at most ~45 sizes per axis, and the zero columns of the
    interpolation matrices leave the result unchanged."""
    nf = ops.maximum(ops.cast(n, "float32"), 32.0)
    k = ops.ceil(4.0 * ops.log2(nf / 32.0) - 1e-4)
    side = ops.cast(ops.ceil(32.0 * ops.power(2.0, k / 4.0) / 8.0) * 8.0, "int32")
    return ops.maximum(side, ops.cast(n, "int32"))


def canvas_scale(height, width, canvas: tuple[int, int]):
    """Scale factor `min(H / h, W / w)` of an `h x w` image onto the canvas."""
    h = ops.cast(height, "float32")
    w = ops.cast(width, "float32")
    return ops.minimum(canvas[0] / h, canvas[1] / w)


def static_sizes(h: int, w: int, canvas, rule: str, min_size: float, max_size: float):
    """`(extent_h, extent_w, scale_h, scale_w)` in Python arithmetic, as each reference."""
    fit = min(canvas[0] / h, canvas[1] / w)
    if rule != "canvas":
        s = min(min_size / min(h, w), max_size / max(h, w))
        if rule == "torchvision":
            eh, ew = math.floor(float(h) * s), math.floor(float(w) * s)
        else:  # detectron2's ResizeShortestEdge.get_output_shape
            s = min_size / min(h, w)
            nh, nw = (min_size, s * w) if h < w else (s * h, min_size)
            if max(nh, nw) > max_size:
                shrink = max_size / max(nh, nw)
                nh, nw = nh * shrink, nw * shrink
            eh, ew = int(nh + 0.5), int(nw + 0.5)
        if eh <= canvas[0] and ew <= canvas[1]:
            return eh, ew, eh / h, ew / w
    return round(h * fit), round(w * fit), fit, fit


def _graph_sizes(h, w, canvas, rule: str, min_size: float, max_size: float):
    """`static_sizes` for sizes known only at run time (float32)."""
    hf, wf = ops.cast(h, "float32"), ops.cast(w, "float32")
    fit = canvas_scale(h, w, canvas)
    fit_h, fit_w = ops.round(hf * fit), ops.round(wf * fit)
    if rule == "canvas":
        return fit_h, fit_w, fit, fit
    s = ops.minimum(min_size / ops.minimum(hf, wf), max_size / ops.maximum(hf, wf))
    rounding = ops.floor if rule == "torchvision" else (lambda v: ops.floor(v + 0.5))
    eh, ew = rounding(hf * s), rounding(wf * s)
    fits = ops.logical_and(eh <= canvas[0], ew <= canvas[1])
    return (ops.where(fits, eh, fit_h), ops.where(fits, ew, fit_w),
            ops.where(fits, eh / hf, fit), ops.where(fits, ew / wf, fit))


def resize_to_canvas(images, canvas: tuple[int, int], rule: str = "canvas",
                     min_size: float = 800.0, max_size: float = 1333.0, quantize: bool = False):
    """`images [B, h, w, C]` -> `(canvas [B, H, W, C] float32, scale (y, x), extent (h, w))`.

    `scale` is the per-axis factor from input to canvas pixels and `extent` the size the
    image covers on the canvas (see the module doc for the rules); zero elsewhere.
    `quantize` resizes as PIL does on uint8 images: the horizontal pass first, each pass
    rounded half up to an integer.
    """
    images = ops.cast(images, "float32")
    h, w = images.shape[1], images.shape[2]
    if h is not None and w is not None:
        eh, ew, sy, sx = static_sizes(int(h), int(w), canvas, rule, min_size, max_size)
        if (h, w) == tuple(canvas) and (eh, ew) == (h, w):
            one = ops.convert_to_tensor([1.0, 1.0], "float32")
            return images, one, ops.convert_to_tensor([float(h), float(w)], "float32")
        eh, ew, sy, sx = (ops.convert_to_tensor(float(v), "float32") for v in (eh, ew, sy, sx))
        rows, cols = h, w
    else:
        shape = ops.shape(images)
        h, w = shape[1], shape[2]
        eh, ew, sy, sx = _graph_sizes(h, w, canvas, rule, min_size, max_size)
        rows, cols = bucket_side(h), bucket_side(w)
        images = _pad_bottom_right(images, rows - h, cols - w)
    ay = _interp_matrix(canvas[0], h, sy, eh, rows)
    ax = _interp_matrix(canvas[1], w, sx, ew, cols)
    if quantize:
        def pil_round(v):
            return ops.floor(ops.clip(v, 0.0, 255.0) + 0.5)

        out = pil_round(ops.einsum("Ww,bhwc->bhWc", ax, images))
        out = pil_round(ops.einsum("Hh,bhWc->bHWc", ay, out))
    else:
        out = ops.einsum("Hh,bhwc->bHwc", ay, images)
        out = ops.einsum("Ww,bHwc->bHWc", ax, out)
    return out, ops.stack([sy, sx]), ops.stack([eh, ew])


def _pad_bottom_right(images, rows, cols):
    """`images [B, h, w, C]` with `rows` zero rows and `cols` zero columns added (run-time
    amounts: only a TensorFlow graph has sizes unknown when it is built)."""
    import tensorflow as tf

    return tf.pad(images, tf.stack([[0, 0], [0, rows], [0, cols], [0, 0]]))


def _xyxy(pair):
    """`[..., 2]` (y, x) pairs -> `[..., 1, 4]` factors for xyxy boxes."""
    return ops.stack([pair[..., 1], pair[..., 0], pair[..., 1], pair[..., 0]], axis=-1)[..., None, :]


def boxes_to_input(boxes, scale, height, width):
    """Canvas-pixel xyxy boxes back to the input image's pixels, clipped to it. `scale` is
    a scalar or the per-axis `(y, x)` factor (`[2]` or `[B, 2]`); `height`/`width` are
    scalars or `[B, 1]`."""
    scale = ops.convert_to_tensor(scale, "float32")
    boxes = boxes / (scale if len(scale.shape) == 0 else _xyxy(scale))
    limits = ops.stack([ops.cast(width, "float32"), ops.cast(height, "float32")] * 2, axis=-1)
    return ops.minimum(ops.maximum(boxes, 0.0), limits)


class ImageInfo(NamedTuple):
    """Per-image geometry of a batch on the canvas, made by `ImageTransform` and read by every
    later stage (torchvision's `ImageList.image_sizes`, with the way back to the input).

    `scale [B, 2]`: the `(y, x)` input-to-canvas factors; `extent [B, 2]`: the `(h, w)` the
    image covers on the canvas (proposals and detections are clipped to it); `size [B, 2]`:
    the input image's `(h, w)`, which detections are mapped back to and clipped by.
    """

    scale: Any
    extent: Any
    size: Any


@keras.saving.register_keras_serializable(package="detection")
class ImageTransform(layers.Layer):
    """The model's input side: images of any size onto the fixed canvas, normalised as the
    backbone's checkpoint was trained (`preprocessing`: "torch", "caffe" or "tf" of
    `keras_resnet_suite.preprocessing`), and detections mapped back to the input's pixels.
    `pixel_mean`/`pixel_std` (RGB, 0-255 scale) replace the mode when given. `resize`,
    `min_size`, `max_size`, `quantize` and `pad_after_normalize`: see the module doc.

    Calling it returns `(x, info)`: the normalised canvas `[B, H, W, 3]` and its `ImageInfo`.
    `image_size`, the canvas, is kept here only: the other stages learn it from their maps.
    """

    def __init__(self, image_size: Sequence[int], preprocessing: str = "torch",
                 pixel_mean: Sequence[float] | None = None,
                 pixel_std: Sequence[float] | None = None, resize: str = "canvas",
                 min_size: float = 800.0, max_size: float = 1333.0, quantize: bool = False,
                 pad_after_normalize: bool = False, **kwargs):
        super().__init__(**kwargs)
        image_size = tuple(int(s) for s in image_size)
        if len(image_size) != 2 or min(image_size) < 32:
            raise ValueError(f"image_size must be (height, width) >= 32, got {image_size}")
        if preprocessing not in MODES:
            raise ValueError(f"preprocessing must be one of {MODES}, got {preprocessing!r}")
        if (pixel_mean is None) != (pixel_std is None):
            raise ValueError("pixel_mean and pixel_std go together (or neither: preprocessing)")
        if resize not in RESIZE_RULES:
            raise ValueError(f"resize must be one of {RESIZE_RULES}, got {resize!r}")
        self.image_size = image_size
        self.preprocessing = preprocessing
        self.pixel_mean = None if pixel_mean is None else tuple(float(v) for v in pixel_mean)
        self.pixel_std = None if pixel_std is None else tuple(float(v) for v in pixel_std)
        self.resize_rule = resize
        self.min_size, self.max_size = float(min_size), float(max_size)
        self.quantize = bool(quantize)
        self.pad_after_normalize = bool(pad_after_normalize)

    def resize(self, images):
        """`(canvas images [B, H, W, 3] float32 0-255, scale (y, x), extent (h, w))`."""
        # detectron2 resizes uint8 images with PIL: `quantize` rounds as it does.
        return resize_to_canvas(images, self.image_size, self.resize_rule, self.min_size,
                                self.max_size, self.quantize)

    def normalize(self, canvas, extent=None):
        """What the backbone is fed: the canvas in its checkpoint's convention (zero outside
        `extent` when padding comes after normalisation)."""
        if self.pixel_mean is None:
            x = preprocess_input(canvas, self.preprocessing)
        else:
            mean = ops.convert_to_tensor(self.pixel_mean, "float32")
            x = (canvas - mean) / ops.convert_to_tensor(self.pixel_std, "float32")
        if self.pad_after_normalize and extent is not None:
            x = x * self.inside_mask(extent)
        return x

    def inside_mask(self, extent):
        """`[B, H, W, 1]` float: 1 where the canvas holds the image (`extent [B, 2]`)."""
        extent = ops.reshape(ops.cast(extent, "float32"), (-1, 1, 2))
        ys = ops.cast(ops.arange(self.image_size[0]), "float32")[None, :, None]
        xs = ops.cast(ops.arange(self.image_size[1]), "float32")[None, None, :]
        inside = ops.logical_and(ys < extent[..., :1], xs < extent[..., 1:])
        return ops.cast(inside, "float32")[..., None]

    def call(self, images):
        canvas, scale, extent = self.resize(images)
        per_image = ops.zeros_like(canvas[:, 0, 0, :2])  # [B, 2], the batch may be dynamic
        shape = ops.shape(images)
        size = per_image + ops.cast(ops.stack([shape[1], shape[2]]), "float32")
        info = ImageInfo(per_image + scale, per_image + extent, size)
        return self.normalize(canvas, info.extent), info

    def targets_to_canvas(self, truth: dict, info: ImageInfo) -> dict:
        """Ground truth `{"boxes", "labels"}` (input pixels) -> the same on the canvas, label
        -1 where the box is padding or nothing of it is left inside the image. Instance
        `"masks" [B, M, h, w]` (the images' size), when given, are brought to the canvas with
        the images' scale (`masks_to_canvas`)."""
        boxes = ops.cast(truth["boxes"], "float32") * _xyxy(ops.cast(info.scale, "float32"))
        boxes = box_ops.clip(boxes, info.extent[:, :1], info.extent[:, 1:])
        labels = ops.cast(truth["labels"], "int32")
        valid = ops.logical_and(labels >= 0, box_ops.nonempty(boxes))
        out = {"boxes": boxes, "labels": ops.where(valid, labels, -1)}
        if truth.get("masks") is not None:
            out["masks"] = self.masks_to_canvas(truth["masks"], info)
        if truth.get("mask_crops") is not None:  # box-relative: they scale with their boxes
            out["mask_crops"] = truth["mask_crops"]
            out["mask_boxes"] = ops.cast(truth["boxes"], "float32") * _xyxy(
                ops.cast(info.scale, "float32"))
        return out

    def masks_to_canvas(self, masks, info: ImageInfo):
        """`[B, M, h, w]` 0/1 masks -> `[B, M, H, W]` on the canvas (same dtype): resized with
        the images' scale by nearest neighbour, as torchvision's transform resizes target
        masks (they stay binary, and a gather costs O(M H W) where a bilinear resize by
        interpolation matrices would cost O(M H h w), more than the backbone at COCO sizes),
        zero outside the image's extent. A batch shares one input size, so one scale."""
        shape = ops.shape(masks)
        scale = ops.cast(info.scale, "float32")[0]
        extent = ops.cast(info.extent, "float32")[0]

        def source(axis: int, length):
            dst = ops.cast(ops.arange(self.image_size[axis]), "float32")
            src = ops.floor(dst / scale[axis])
            src = ops.cast(ops.clip(src, 0.0, ops.cast(length, "float32") - 1.0), "int32")
            return src, dst < extent[axis]

        ys, inside_y = source(0, shape[2])
        xs, inside_x = source(1, shape[3])
        out = ops.take(ops.take(masks, ys, axis=2), xs, axis=3)
        inside = ops.logical_and(inside_y[:, None], inside_x[None, :])
        return ops.where(inside[None, None], out, ops.zeros_like(out[..., :1, :1]))

    def detections_to_input(self, detections: dict, info: ImageInfo) -> dict:
        """Canvas detections -> the input image's pixels (padding rows stay zero)."""
        valid = ops.cast(detections["classes"] >= 0, "float32")[..., None]
        size = ops.cast(info.size, "float32")
        boxes = boxes_to_input(detections["boxes"], info.scale, size[:, :1], size[:, 1:])
        return {**detections, "boxes": boxes * valid}

    def get_config(self) -> dict:
        return {**super().get_config(), "image_size": self.image_size,
                "preprocessing": self.preprocessing, "pixel_mean": self.pixel_mean,
                "pixel_std": self.pixel_std, "resize": self.resize_rule,
                "min_size": self.min_size, "max_size": self.max_size,
                "quantize": self.quantize, "pad_after_normalize": self.pad_after_normalize}
