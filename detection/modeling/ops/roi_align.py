"""RoIAlign (Mask R-CNN sec. 3): bilinear sampling of fixed-size features for each box.

Bilinear interpolation on a regular grid is separable, and so is the average of the
`sampling_ratio x sampling_ratio` samples in a bin, so each output bin is
`sum_{h,w} Ay[bin_y, h] * Ax[bin_x, w] * F[h, w]` with two sparse interpolation matrices.
Computing it as two einsums keeps shapes static, needs no gather, and is differentiable
with respect to the features. The sampling rule follows detectron2/torchvision exactly:
samples beyond one pixel outside the map are zero, others clamp to the border.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from keras import ops

# Most samples per bin side that `sampling_ratio=0` (adaptive) takes: enough for any RoI
# up to 1333 px on a C4 (stride 16, 14 bins: 6) or FPN level-5 map (stride 32, 7 bins: 6).
MAX_ADAPTIVE_SAMPLES = 6
# Intermediate values per chunk of boxes in `roi_align` and `multilevel_roi_align` (2^25
# floats: 128 MB), so that memory does not grow with the number of RoIs.
CHUNK_ELEMENTS = 2**25


def _check_sampling(sampling_ratio: int, where: str) -> None:
    if not isinstance(sampling_ratio, int) or sampling_ratio < 0:
        raise ValueError(f"{where}: sampling_ratio must be an int >= 0 (0: adaptive, "
                         f"ceil(bin size) samples per bin side), got {sampling_ratio!r}")


def _axis_weights(start, end, out_size: int, length: int, sampling_ratio: int, aligned: bool):
    """Averaged interpolation weights `[M, out_size, length]` along one axis for the `M`
    boxes of `start`/`end` (all leading axes flattened): the taps of `_axis_taps`
    scattered onto the `length` grid."""
    index, weight = _axis_taps(start, end, out_size, float(length), sampling_ratio, aligned)
    # (sample, corner) taps on one axis and the boxes on one: the one-hot intermediate
    # stays 4-D (TFLite kernels take at most 5-D), the same elements as unflattened.
    taps = 2 * (sampling_ratio or MAX_ADAPTIVE_SAMPLES)
    index = ops.reshape(index, (-1, out_size, taps))
    weight = ops.reshape(weight, (-1, out_size, taps))
    grid = ops.arange(length, dtype="int32")  # [L]
    # The taps carry 1 / samples: the sum is the bin's average.
    return ops.sum(weight[..., None] * ops.cast(index[..., None] == grid, "float32"), axis=-2)


def roi_align(
    features,
    boxes,
    output_size: int | Sequence[int],
    spatial_scale: float,
    sampling_ratio: int = 2,
    aligned: bool = True,
):
    """Pool `features [B, H, W, C]` inside `boxes [B, R, 4]` (xyxy, input pixels) to
    `[B, R, out_h, out_w, C]`.

    `spatial_scale` is 1 / stride. `aligned=True` shifts box coordinates by -0.5 pixel so that
    pixel centres line up (the corrected RoIAlign of detectron2). `sampling_ratio` samples
    per bin side; `0` is the adaptive rule of torchvision/detectron2 (`ceil(bin size)` per
    box), with at most `MAX_ADAPTIVE_SAMPLES` to keep shapes static.
    """
    if isinstance(output_size, int):
        output_size = (output_size, output_size)
    _check_sampling(sampling_ratio, "roi_align")
    height, width = features.shape[1], features.shape[2]
    if height is None or width is None:
        raise ValueError("roi_align: feature maps need static height and width (fixed canvas)")
    boxes = ops.cast(boxes, "float32") * spatial_scale
    if aligned:
        boxes = boxes - 0.5
    num_boxes = boxes.shape[1] if boxes.shape[1] is not None else ops.shape(boxes)[1]
    ay = _axis_weights(boxes[..., 1], boxes[..., 3], output_size[0], height, sampling_ratio, aligned)
    ax = _axis_weights(boxes[..., 0], boxes[..., 2], output_size[1], width, sampling_ratio, aligned)
    ay = ops.cast(ops.reshape(ay, (-1, num_boxes, output_size[0], height)), features.dtype)
    ax = ops.cast(ops.reshape(ax, (-1, num_boxes, output_size[1], width)), features.dtype)
    # Boxes in static chunks: the intermediate is `R * out * min(H, W) * C` values (1000 RoIs
    # on a C4 map of an 800x1216 canvas: 2.9 GB); each chunk is pooled before the next.
    per_box = output_size[0] * output_size[1] * min(height, width) * int(features.shape[-1])
    boxes_per_chunk = max(1, CHUNK_ELEMENTS // per_box)
    if not isinstance(num_boxes, int) or num_boxes <= boxes_per_chunk:
        return _separable_pool(ay, ax, features)
    return ops.concatenate([
        _separable_pool(ay[:, lo:lo + boxes_per_chunk], ax[:, lo:lo + boxes_per_chunk], features)
        for lo in range(0, num_boxes, boxes_per_chunk)], axis=1)


def _separable_pool(ay, ax, features):
    """`sum_{h,w} ay[b, r, p, h] * ax[b, r, q, w] * features[b, h, w, c]`, the longer axis
    contracted first to keep the intermediate small."""
    if features.shape[1] >= features.shape[2]:
        tmp = ops.einsum("brph,bhwc->brpwc", ay, features)
        return ops.einsum("brqw,brpwc->brpqc", ax, tmp)
    tmp = ops.einsum("brqw,bhwc->brhqc", ax, features)
    return ops.einsum("brph,brhqc->brpqc", ay, tmp)


LEVEL_RULES = ("detectron2", "torchvision")


def fpn_levels(boxes, min_level: int = 2, max_level: int = 5, canonical_size: float = 224.0,
               canonical_level: int = 4, rule: str = "detectron2"):
    """FPN level of each box, `k = floor(k0 + log2(sqrt(wh) / 224))` clamped (Lin et al. eq. 1).

    The small epsilon keeps boxes of exactly 224 px at level 4 despite float error; it sits
    inside the log in detectron2 (`+ 1e-8`) and outside in torchvision (`+ 1e-6`)."""
    w = boxes[..., 2] - boxes[..., 0]
    h = boxes[..., 3] - boxes[..., 1]
    size = ops.sqrt(ops.maximum(w * h, 1e-8))
    if rule == "torchvision":
        log2 = ops.log(size / canonical_size) / math.log(2.0) + 1e-6
    else:
        log2 = ops.log(size / canonical_size + 1e-8) / math.log(2.0)
    level = ops.floor(canonical_level + log2)
    return ops.cast(ops.clip(level, min_level, max_level), "int32")


def _axis_taps(start, end, out_size: int, length, sampling_ratio: int, aligned: bool):
    """Bilinear taps along one axis: integer positions (low, high) and their weights, each
    `[..., out_size, sampling_ratio, 2]`, by detectron2/torchvision's rule (samples beyond one
    pixel outside the map are zero, others clamp to the border). `length` is a float or a
    `[...]` tensor (a per-box map size). The weights include the bin's `1 / samples`; with
    `sampling_ratio=0` each box takes `ceil(bin size)` samples (at most
    `MAX_ADAPTIVE_SAMPLES`) and the unused sample slots weigh zero."""
    if not aligned:
        # Legacy RoIAlign forces at least a 1x1 box.
        end = start + ops.maximum(end - start, 1.0)
    bin_size = (end - start) / out_size
    bins = ops.cast(ops.arange(out_size), "float32")
    slots = sampling_ratio or MAX_ADAPTIVE_SAMPLES
    index = ops.cast(ops.arange(slots), "float32")
    if sampling_ratio:
        # A Python float, not an indexed constant tensor: OpenVINO's converter turned
        # `constant[None, None]` into garbage (RoIAlign pooled zeros).
        count = float(sampling_ratio)
    else:  # [..., 1, 1]
        count = ops.clip(ops.ceil(bin_size), 1.0, float(slots))[..., None, None]
    offsets = bins[:, None] + (index[None, :] + 0.5) / count  # [..., out, s]
    coords = start[..., None, None] + offsets * bin_size[..., None, None]  # [..., out, s]
    if not isinstance(length, float):
        length = length[..., None, None]
    inside = ops.cast(ops.logical_and(coords >= -1.0, coords <= length), "float32")
    coords = ops.minimum(ops.maximum(coords, 0.0), length - 1.0)
    low = ops.floor(coords)
    frac = coords - low
    high = ops.minimum(low + 1.0, length - 1.0)
    used = ops.cast(ops.broadcast_to(index, ops.shape(coords)) < count, "float32") / count
    weight = ops.stack([1.0 - frac, frac], axis=-1) * (inside * used)[..., None]
    taps = ops.cast(ops.stack([low, high], axis=-1), "int32")
    return taps, weight


def multilevel_roi_align(
    features: Sequence,
    strides: Sequence[int],
    boxes,
    output_size: int,
    sampling_ratio: int = 2,
    aligned: bool = True,
    level_rule: str = "detectron2",
):
    """RoIAlign each box on its FPN level (`features` P2..P5 in order, `strides` 4..32).

    Pooling every box on every level with the dense `roi_align` and then selecting the
    assigned one cost ~96 GMACs and a 1.8 GB intermediate for 1000 RoIs, 256 channels on the
    608x1024 canvas (~40% of R50-FPN inference). Here the levels are flattened into one
    `[B * sum(H_l * W_l), C]` table (static offsets) and each box gathers only the bilinear
    taps on its own level, `out^2 * sampling_ratio^2 * 4` rows, weighted and summed (~10x
    faster on CPU). Level sizes and strides are looked up per box from its level, so shapes
    stay static; the gradient w.r.t. the features is a scatter-add. The result equals
    `roi_align` on the assigned level (same sampling rule); `level_rule` see `fpn_levels`.
    """
    _check_sampling(sampling_ratio, "multilevel_roi_align")
    levels = [int(round(math.log2(s))) for s in strides]
    if levels != list(range(levels[0], levels[0] + len(levels))):
        raise ValueError(f"multilevel_roi_align: strides must be consecutive powers of 2, "
                         f"got {strides}")
    heights = [int(f.shape[1]) for f in features]
    widths = [int(f.shape[2]) for f in features]
    channels = features[0].shape[-1]
    starts = [0]
    for h, w in zip(heights, widths, strict=True):
        starts.append(starts[-1] + h * w)
    table = ops.concatenate([ops.reshape(f, (-1, h * w, channels))
                             for f, h, w in zip(features, heights, widths, strict=True)], axis=1)
    table = ops.reshape(table, (-1, channels))  # [B * N, C], N = starts[-1]
    batch, num_boxes = ops.shape(boxes)[0], boxes.shape[1]

    boxes = ops.cast(boxes, "float32")
    # A non-finite box (diverged training) pools zeros, as the dense `roi_align` does,
    # instead of turning into an out-of-range gather index.
    finite = ops.all(ops.isfinite(boxes), axis=-1)  # [B, R]
    boxes = ops.where(finite[..., None], boxes, 0.0)
    slot = fpn_levels(boxes, levels[0], levels[-1], rule=level_rule) - levels[0]  # [B, R] index into levels

    def per_box(values, dtype):
        return ops.take(ops.convert_to_tensor(values, dtype), slot)

    scaled = boxes * per_box([1.0 / s for s in strides], "float32")[..., None]
    if aligned:
        scaled = scaled - 0.5
    height, width = per_box(heights, "int32"), per_box(widths, "int32")
    yi, wy = _axis_taps(scaled[..., 1], scaled[..., 3], output_size,
                        ops.cast(height, "float32"), sampling_ratio, aligned)
    xi, wx = _axis_taps(scaled[..., 0], scaled[..., 2], output_size,
                        ops.cast(width, "float32"), sampling_ratio, aligned)
    # Taps of a bin: (y sample, y corner) x (x sample, x corner), 4 * samples^2 in all.
    # Boxes of all images on one axis (M = B * R) keep every intermediate at most 5-D,
    # which TFLite kernels require.
    side = 2 * (sampling_ratio or MAX_ADAPTIVE_SAMPLES)
    taps = side**2
    yi, wy = (ops.reshape(t, (-1, output_size, 1, side, 1)) for t in (yi, wy))
    xi, wx = (ops.reshape(t, (-1, 1, output_size, 1, side)) for t in (xi, wx))
    base = per_box(starts[:-1], "int32") + ops.arange(batch, dtype="int32")[:, None] * starts[-1]
    base, width = (ops.reshape(t, (-1,))[:, None, None, None, None] for t in (base, width))
    index = base + yi * width + xi
    weight = wy * wx  # [M, out, out, 2s, 2s], each axis already averaged
    weight = weight * ops.cast(ops.reshape(finite, (-1,)), "float32")[:, None, None, None, None]
    # Boxes in static chunks: the gathered taps of all boxes at once are `B * R * out^2 * taps`
    # rows of C (1000 RoIs, adaptive sampling: 7 GB); each chunk is pooled before the next.
    bins = output_size * output_size
    boxes_per_chunk = max(1, CHUNK_ELEMENTS // (bins * taps * int(channels)))
    if num_boxes is None or num_boxes <= boxes_per_chunk:
        pooled = _pool_taps(table, index, weight, taps, channels)
    else:
        index = ops.reshape(index, (-1, num_boxes, bins * taps))
        weight = ops.reshape(weight, (-1, num_boxes, bins, taps))
        pooled = ops.concatenate([ops.reshape(_pool_taps(
            table, index[:, lo:lo + boxes_per_chunk], weight[:, lo:lo + boxes_per_chunk], taps,
            channels), (-1, min(boxes_per_chunk, num_boxes - lo), bins, channels))
            for lo in range(0, num_boxes, boxes_per_chunk)], axis=1)
    return ops.reshape(pooled, (-1, num_boxes, output_size, output_size, channels))


def _pool_taps(table, index, weight, taps: int, channels):
    """`sum_t weight[m, t] * table[index[m, t]]`: the gathered taps weighted and summed."""
    gathered = ops.take(table, ops.reshape(index, (-1,)), axis=0)
    gathered = ops.reshape(gathered, (-1, taps, channels))
    weight = ops.cast(ops.reshape(weight, (-1, taps)), gathered.dtype)
    return ops.einsum("mt,mtc->mc", weight, gathered)
