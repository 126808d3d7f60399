"""Box arithmetic in pixel `xyxy`: IoU, area, clipping and the R-CNN delta coding.

Boxes are `[..., 4]` tensors `(x1, y1, x2, y2)`; a box's width is `x2 - x1` (no "+1", as
detectron2). Everything is `keras.ops` with static shapes, so it runs inside `tf.function`
and `jax.jit`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from keras import ops
from keras.utils import bounding_boxes

# Largest allowed log-scale delta: a box may grow at most 1000/16 times its anchor (Fast
# R-CNN / detectron2), which keeps exp() finite early in training.
SCALE_CLAMP = math.log(1000.0 / 16)
RPN_WEIGHTS = (1.0, 1.0, 1.0, 1.0)
HEAD_WEIGHTS = (10.0, 10.0, 5.0, 5.0)


def area(boxes):
    """Area of `[..., 4]` xyxy boxes; zero for empty or inverted boxes."""
    w = ops.maximum(boxes[..., 2] - boxes[..., 0], 0.0)
    h = ops.maximum(boxes[..., 3] - boxes[..., 1], 0.0)
    return w * h


def iou(boxes1, boxes2):
    """Pairwise IoU `[..., N, M]` of xyxy boxes `[..., N, 4]` and `[..., M, 4]` (batched or not).

    Uses `keras.utils.bounding_boxes.compute_iou`; empty boxes (padding) get IoU 0.
    """
    return bounding_boxes.compute_iou(boxes1, boxes2, bounding_box_format="xyxy")


def clip(boxes, height, width):
    """Clip xyxy boxes to the image `[0, width] x [0, height]`."""
    x1 = ops.clip(boxes[..., 0], 0.0, width)
    y1 = ops.clip(boxes[..., 1], 0.0, height)
    x2 = ops.clip(boxes[..., 2], 0.0, width)
    y2 = ops.clip(boxes[..., 3], 0.0, height)
    return ops.stack([x1, y1, x2, y2], axis=-1)


def nonempty(boxes, min_size: float = 0.0):
    """True where a box is wider and taller than `min_size` (drops degenerate boxes)."""
    w = boxes[..., 2] - boxes[..., 0]
    h = boxes[..., 3] - boxes[..., 1]
    return ops.logical_and(w > min_size, h > min_size)


def _centre_size(boxes):
    w = boxes[..., 2] - boxes[..., 0]
    h = boxes[..., 3] - boxes[..., 1]
    return boxes[..., 0] + 0.5 * w, boxes[..., 1] + 0.5 * h, w, h


def encode(boxes, anchors, weights: Sequence[float] = RPN_WEIGHTS):
    """Regression targets `(dx, dy, dw, dh)` of `boxes` w.r.t. `anchors` (R-CNN eq. 1-4).

    `dx = wx (x - xa) / wa`, `dw = ww log(w / wa)`; `weights` are `(wx, wy, ww, wh)`:
    (1, 1, 1, 1) for the RPN and (10, 10, 5, 5) for the box head.
    """
    wx, wy, ww, wh = weights
    ax, ay, aw, ah = _centre_size(anchors)
    bx, by, bw, bh = _centre_size(boxes)
    # Guard against empty anchors/boxes (padding) so targets stay finite; those rows are
    # masked out of the loss anyway.
    aw = ops.maximum(aw, 1e-6)
    ah = ops.maximum(ah, 1e-6)
    bw = ops.maximum(bw, 1e-6)
    bh = ops.maximum(bh, 1e-6)
    return ops.stack(
        [
            wx * (bx - ax) / aw,
            wy * (by - ay) / ah,
            ww * ops.log(bw / aw),
            wh * ops.log(bh / ah),
        ],
        axis=-1,
    )


def decode(deltas, anchors, weights: Sequence[float] = RPN_WEIGHTS, scale_clamp=SCALE_CLAMP):
    """Inverse of `encode`: apply `deltas [..., 4]` to `anchors [..., 4]`, giving xyxy boxes.

    `dw`/`dh` are clamped to `log(1000/16)` before `exp` as detectron2 does.
    """
    deltas = ops.cast(deltas, "float32")
    anchors = ops.cast(anchors, "float32")
    wx, wy, ww, wh = weights
    ax, ay, aw, ah = _centre_size(anchors)
    dx = deltas[..., 0] / wx
    dy = deltas[..., 1] / wy
    dw = ops.minimum(deltas[..., 2] / ww, scale_clamp)
    dh = ops.minimum(deltas[..., 3] / wh, scale_clamp)
    cx = dx * aw + ax
    cy = dy * ah + ay
    w = ops.exp(dw) * aw
    h = ops.exp(dh) * ah
    return ops.stack([cx - 0.5 * w, cy - 0.5 * h, cx + 0.5 * w, cy + 0.5 * h], axis=-1)
