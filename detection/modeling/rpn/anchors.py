"""Anchor boxes (Faster R-CNN sec. 3.1.1): `sizes x aspect ratios` at every feature-map cell.

Centre convention (detectron2's, `offset=0.0`): the anchors of cell `(i, j)` of a map with
stride `s` are centred at pixel `(x, y) = ((j + offset) * s, (i + offset) * s)`, i.e. on the
cell's top-left corner. For a size `a` and ratio `r = h / w` the anchor is
`w = a / sqrt(r)`, `h = a * sqrt(r)`, so its area is `a**2`. Anchors are ordered cell-major
(row, column), then size, then ratio, matching a `[B, H, W, A * k]` conv output reshaped to
`[B, H * W * A, k]`.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

C4_SIZES = (32, 64, 128, 256, 512)
FPN_SIZES = ((32,), (64,), (128,), (256,), (512,))
RATIOS = (0.5, 1.0, 2.0)


def cell_anchors(sizes: Sequence[float], ratios: Sequence[float] = RATIOS,
                 rounded: bool = False) -> np.ndarray:
    """The `len(sizes) * len(ratios)` anchors centred at (0, 0), xyxy, size-major.

    `rounded` rounds the corners to integers (half to even) as torchvision's
    `AnchorGenerator` does, in float32 arithmetic like it."""
    out = []
    for size in sizes:
        for ratio in ratios:
            if rounded:
                h_ratio = np.sqrt(np.float32(ratio))
                w = (np.float32(1.0) / h_ratio) * np.float32(size)
                h = h_ratio * np.float32(size)
            else:
                w, h = size / np.sqrt(ratio), size * np.sqrt(ratio)
            out.append([-w / 2, -h / 2, w / 2, h / 2])
    out = np.asarray(out, dtype=np.float32)
    return np.round(out) if rounded else out


def grid_anchors(
    feature_height: int,
    feature_width: int,
    stride: int | Sequence[int],
    sizes: Sequence[float],
    ratios: Sequence[float] = RATIOS,
    offset: float = 0.0,
    rounded: bool = False,
) -> np.ndarray:
    """All anchors of one feature map, `[H * W * A, 4]` xyxy in input pixels (see module doc).

    `stride` is one int or a `(y, x)` pair. Computed in numpy because a fixed canvas makes
    every feature size static; the result becomes a constant of the traced graph.
    """
    stride_y, stride_x = (stride, stride) if np.isscalar(stride) else tuple(stride)
    if feature_height <= 0 or feature_width <= 0 or min(stride_y, stride_x) <= 0:
        raise ValueError(
            f"grid_anchors: feature map {feature_height}x{feature_width} and stride {stride} "
            "must be positive"
        )
    base = cell_anchors(sizes, ratios, rounded)
    ys = (np.arange(feature_height, dtype=np.float32) + offset) * stride_y
    xs = (np.arange(feature_width, dtype=np.float32) + offset) * stride_x
    yy, xx = np.meshgrid(ys, xs, indexing="ij")
    shifts = np.stack([xx, yy, xx, yy], axis=-1).reshape(-1, 1, 4)
    return (shifts + base[None]).reshape(-1, 4).astype(np.float32)


def multilevel_anchors(
    feature_shapes: Sequence[tuple[int, int]],
    strides: Sequence,
    sizes: Sequence[Sequence[float]],
    ratios: Sequence[float] = RATIOS,
    offset: float = 0.0,
    rounded: bool = False,
) -> list[np.ndarray]:
    """Anchors for each pyramid level (FPN: one size per level, sec. 3 of Lin et al. 2017)."""
    if not len(feature_shapes) == len(strides) == len(sizes):
        raise ValueError(
            f"multilevel_anchors: got {len(feature_shapes)} feature maps, {len(strides)} strides "
            f"and {len(sizes)} size groups; they must match"
        )
    return [
        grid_anchors(h, w, s, sz, ratios, offset, rounded)
        for (h, w), s, sz in zip(feature_shapes, strides, sizes, strict=True)
    ]
