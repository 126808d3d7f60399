"""Pasting box-relative mask probabilities (Mask R-CNN's `[N, S, S]` outputs) into the image:
numpy post-processing for scoring (`coco_ap(..., iou_type="segm")`) and drawing, bit-exact with
torchvision's `paste_masks_in_image` and detectron2's `paste_masks_in_image`. Kept here, outside
`detection.modeling`, so evaluation stays importable without Keras."""

from __future__ import annotations

import numpy as np


def _resize_bilinear(mask: np.ndarray, height: int, width: int) -> np.ndarray:
    """`mask [h, w]` float32 -> `[height, width]`, torch `interpolate(mode="bilinear",
    align_corners=False)` in float32 as torch computes it (source index clamped at 0)."""

    def axis(out_len: int, in_len: int):
        scale = np.float32(in_len / out_len)
        src = (np.arange(out_len, dtype=np.float32) + np.float32(0.5)) * scale - np.float32(0.5)
        src = np.maximum(src, np.float32(0.0))
        low = src.astype(np.int64)
        high = np.minimum(low + 1, in_len - 1)
        frac = (src - low.astype(np.float32)).astype(np.float32)
        return low, high, frac

    y0, y1, fy = axis(height, mask.shape[0])
    x0, x1, fx = axis(width, mask.shape[1])
    one = np.float32(1.0)
    rows = mask[y0] * (one - fy)[:, None] + mask[y1] * fy[:, None]
    return (rows[:, x0] * (one - fx)[None] + rows[:, x1] * fx[None]).astype(np.float32)


PASTE_RULES = ("torchvision", "detectron2")


def _paste_detectron2(mask: np.ndarray, box: np.ndarray, height: int, width: int) -> np.ndarray:
    """detectron2's `_do_paste_mask`: each image pixel centre mapped into the box's
    `[-1, 1]` grid and sampled bilinearly (`grid_sample`, `align_corners=False`, zero
    outside the mask), in float32 as torch computes it."""
    size = np.float32(mask.shape[-1])
    one, two, half = np.float32(1.0), np.float32(2.0), np.float32(0.5)

    def taps(centres, lo, hi):
        grid = (centres - lo) / (hi - lo) * two - one
        src = ((grid + one) * size - one) / two  # grid_sample's unnormalisation
        low = np.floor(src)
        return low.astype(np.int64), (src - low).astype(np.float32)

    y0, fy = taps(np.arange(height, dtype=np.float32) + half, box[1], box[3])
    x0, fx = taps(np.arange(width, dtype=np.float32) + half, box[0], box[2])
    out = np.zeros((height, width), np.float32)
    n = mask.shape[-1]
    for dy, wy in ((0, one - fy), (1, fy)):
        for dx, wx in ((0, one - fx), (1, fx)):
            yy, xx = y0 + dy, x0 + dx
            inside = ((yy >= 0) & (yy < n))[:, None] & ((xx >= 0) & (xx < n))[None, :]
            values = mask[np.clip(yy, 0, n - 1)][:, np.clip(xx, 0, n - 1)]
            out = out + np.where(inside, values, np.float32(0.0)) * (wy[:, None] * wx[None, :])
    return out


def paste_masks(masks, boxes, height: int, width: int, threshold: float = 0.5,
                rule: str = "torchvision") -> np.ndarray:
    """Box-relative mask probabilities `[N, S, S]` at `boxes [N, 4]` (xyxy, image pixels) ->
    `[N, height, width]` uint8 binary masks.

    `rule="torchvision"` (`paste_masks_in_image`, kept where the probability is `>
    threshold` as its COCO evaluation does): each mask gets a 1-pixel zero border and its box
    is expanded by `(S + 2) / S` about its centre (so the mask's edge fades to zero outside
    the box instead of stopping at it), truncated to integers, resized bilinearly to
    `(x2 - x1 + 1) x (y2 - y1 + 1)` pixels and written where it overlaps the image.
    `rule="detectron2"` (`paste_masks_in_image`, kept where `>= threshold`): every pixel
    centre sampled from the mask at its float position in the box (no rounding of the box).
    """
    if rule not in PASTE_RULES:
        raise ValueError(f"paste_masks: rule must be one of {PASTE_RULES}, got {rule!r}")
    masks = np.asarray(masks, np.float32)
    boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
    if masks.ndim != 3 or masks.shape[1] != masks.shape[2] or len(masks) != len(boxes):
        raise ValueError(f"paste_masks: masks must be [N, S, S] with one box [N, 4] each, got "
                         f"masks {masks.shape} and boxes {boxes.shape}")
    out = np.zeros((len(masks), int(height), int(width)), np.uint8)
    if rule == "detectron2":
        for i in range(len(masks)):
            out[i] = _paste_detectron2(masks[i], boxes[i], int(height), int(width)) >= threshold
        return out
    size = masks.shape[-1]
    padded = np.pad(masks, ((0, 0), (1, 1), (1, 1)))
    scale = np.float32((size + 2) / size)
    half = np.float32(0.5)
    centre = (boxes[:, :2] + boxes[:, 2:]) * half
    extent = (boxes[:, 2:] - boxes[:, :2]) * half * scale
    expanded = np.concatenate([centre - extent, centre + extent], axis=1).astype(np.float32)
    expanded = np.trunc(expanded).astype(np.int64)  # torch's .to(int64) truncates toward 0
    for i, (x0, y0, x1, y1) in enumerate(expanded):
        w, h = max(int(x1 - x0 + 1), 1), max(int(y1 - y0 + 1), 1)
        pasted = _resize_bilinear(padded[i], h, w)
        ya, yb = max(y0, 0), min(y1 + 1, height)
        xa, xb = max(x0, 0), min(x1 + 1, width)
        if ya >= yb or xa >= xb:
            continue
        out[i, ya:yb, xa:xb] = pasted[ya - y0:yb - y0, xa - x0:xb - x0] > threshold
    return out
