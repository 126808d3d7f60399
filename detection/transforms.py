"""Model-side resizing: any input size onto the detector's fixed canvas, and back.

An image `h x w` is scaled by `s = min(H / h, W / w)` (shorter side up to the canvas, the
longer side capped: the paper's "shorter side 600, longer at most 1000" for a 600 x 1000
canvas) and placed in the top-left corner, the rest zero. Bilinear resizing is separable, so
it is two einsums with interpolation matrices: the output shape is static (the canvas) even
when the input size is only known at run time, as after Keras retraces `predict` with
relaxed shapes. Half-pixel centres as `tf.image.resize(..., "bilinear")`, no antialiasing.
"""

from __future__ import annotations

from keras import ops


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
