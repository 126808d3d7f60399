"""Model-side resizing: any input size onto the detector's fixed canvas, and back.

An image `h x w` is scaled by `s = min(H / h, W / w)` (shorter side up to the canvas, the
longer side capped: the paper's "shorter side 600, longer at most 1000" for a 600 x 1000
canvas) and placed in the top-left corner, the rest zero. Bilinear resizing is separable, so
it is two einsums with interpolation matrices: the output shape is static (the canvas) even
when the input size is only known at run time, as after Keras retraces `predict` with
relaxed shapes. Half-pixel centres as `tf.image.resize(..., "bilinear")`, no antialiasing.
"""

from __future__ import annotations

from collections.abc import Sequence

import keras
from keras import layers, ops

from detection.modeling.ops import boxes as box_ops
from keras_resnet_suite.preprocessing import MODES, preprocess_input


def _interp_matrix(out_len: int, in_len, scale):
    """`[out_len, in_len]` bilinear weights; rows past the scaled extent are zero (padding)."""
    in_len_f = ops.cast(in_len, "float32")
    dst = ops.cast(ops.arange(out_len), "float32")
    src = ops.clip((dst + 0.5) / scale - 0.5, 0.0, in_len_f - 1.0)
    low = ops.floor(src)
    frac = src - low
    high = ops.minimum(low + 1.0, in_len_f - 1.0)
    grid = ops.cast(ops.arange(in_len), "float32")
    w = (1.0 - frac)[:, None] * ops.cast(low[:, None] == grid[None], "float32")
    w = w + frac[:, None] * ops.cast(high[:, None] == grid[None], "float32")
    inside = dst < ops.round(in_len_f * scale)
    return w * ops.cast(inside, "float32")[:, None]


def canvas_scale(height, width, canvas: tuple[int, int]):
    """Scale factor `min(H / h, W / w)` of an `h x w` image onto the canvas."""
    h = ops.cast(height, "float32")
    w = ops.cast(width, "float32")
    return ops.minimum(canvas[0] / h, canvas[1] / w)


def resize_to_canvas(images, canvas: tuple[int, int]):
    """`images [B, h, w, C]` -> `([B, H, W, C] float32, scale)`, aspect ratio kept, zero padded."""
    images = ops.cast(images, "float32")
    static_hw = tuple(images.shape[1:3])
    if static_hw == tuple(canvas):
        return images, ops.convert_to_tensor(1.0, "float32")
    shape = ops.shape(images)
    h, w = shape[1], shape[2]
    scale = canvas_scale(h, w, canvas)
    ay = _interp_matrix(canvas[0], h, scale)
    ax = _interp_matrix(canvas[1], w, scale)
    out = ops.einsum("Hh,bhwc->bHwc", ay, images)
    out = ops.einsum("Ww,bHwc->bHWc", ax, out)
    return out, scale


def boxes_to_input(boxes, scale, height, width):
    """Canvas-pixel xyxy boxes back to the input image's pixels, clipped to it."""
    boxes = boxes / scale
    limits = ops.stack([ops.cast(width, "float32"), ops.cast(height, "float32")] * 2)
    return ops.minimum(ops.maximum(boxes, 0.0), limits)


@keras.saving.register_keras_serializable(package="detection")
class ImageTransform(layers.Layer):
    """The model's input side: images of any size onto the fixed canvas, normalised as the
    backbone's checkpoint was trained (`preprocessing`: "torch", "caffe" or "tf" of
    `keras_resnet_suite.preprocessing`), and detections mapped back to the input's pixels.
    `pixel_mean`/`pixel_std` (RGB, 0-255 scale) replace the mode when given."""

    def __init__(self, image_size: Sequence[int], preprocessing: str = "torch",
                 pixel_mean: Sequence[float] | None = None,
                 pixel_std: Sequence[float] | None = None, **kwargs):
        super().__init__(**kwargs)
        image_size = tuple(int(s) for s in image_size)
        if len(image_size) != 2 or min(image_size) < 32:
            raise ValueError(f"image_size must be (height, width) >= 32, got {image_size}")
        if preprocessing not in MODES:
            raise ValueError(f"preprocessing must be one of {MODES}, got {preprocessing!r}")
        if (pixel_mean is None) != (pixel_std is None):
            raise ValueError("pixel_mean and pixel_std go together (or neither: preprocessing)")
        self.image_size = image_size
        self.preprocessing = preprocessing
        self.pixel_mean = None if pixel_mean is None else tuple(float(v) for v in pixel_mean)
        self.pixel_std = None if pixel_std is None else tuple(float(v) for v in pixel_std)

    def resize(self, images):
        """`(canvas images [B, H, W, 3] float32 0-255, scale)`."""
        return resize_to_canvas(images, self.image_size)

    def normalize(self, canvas):
        """What the backbone is fed: the canvas in its checkpoint's convention."""
        if self.pixel_mean is None:
            return preprocess_input(canvas, self.preprocessing)
        mean = ops.convert_to_tensor(self.pixel_mean, "float32")
        return (canvas - mean) / ops.convert_to_tensor(self.pixel_std, "float32")

    def call(self, images):
        canvas, scale = self.resize(images)
        return self.normalize(canvas), scale

    def targets_to_canvas(self, truth: dict, scale):
        """Ground truth `{"boxes", "labels"}` (input pixels) -> canvas boxes and labels, -1
        where the box is padding or nothing of it is left inside the canvas."""
        boxes = ops.cast(truth["boxes"], "float32") * scale
        boxes = box_ops.clip(boxes, float(self.image_size[0]), float(self.image_size[1]))
        labels = ops.cast(truth["labels"], "int32")
        valid = ops.logical_and(labels >= 0, box_ops.nonempty(boxes))
        return boxes, ops.where(valid, labels, -1)

    def detections_to_input(self, detections: dict, scale, height, width) -> dict:
        """Canvas detections -> the input image's pixels (padding rows stay zero)."""
        valid = ops.cast(detections["classes"] >= 0, "float32")[..., None]
        boxes = boxes_to_input(detections["boxes"], scale, height, width) * valid
        return {**detections, "boxes": boxes}

    def get_config(self) -> dict:
        return {**super().get_config(), "image_size": self.image_size,
                "preprocessing": self.preprocessing, "pixel_mean": self.pixel_mean,
                "pixel_std": self.pixel_std}
