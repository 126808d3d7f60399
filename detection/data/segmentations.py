"""Instance masks of COCO annotations: polygons, RLE and crowd RLE checked and encoded once when
the annotations are parsed (a broken one is named before training starts), decoded per image
in tf.data. pycocotools is imported only when masks are asked for.

An encoded mask is pycocotools' compressed RLE `{"size": [h, w], "counts": bytes}`, always in
the upright frame of the image (EXIF orientation applied), as the decoded image is.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np


def mask_utils():
    """`pycocotools.mask`, or an ImportError that says how to install it."""
    try:
        from pycocotools import mask  # optional dependency: only masks need it
    except ImportError as error:
        raise ImportError("instance masks need pycocotools: pip install "
                          "'keras-resnet-suite[coco]' (or pip install pycocotools)") from error
    return mask


def _is_number(value) -> bool:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    return isinstance(value, int) or math.isfinite(value)  # an int of any size is finite


def _string_counts(counts: str) -> list[int] | None:
    """The run lengths of a compressed RLE string (pycocotools' `rleFrString`), or None when
    the string is not one; read here because pycocotools' C decoder trusts it blindly."""
    runs: list[int] = []
    p = 0
    while p < len(counts):
        x, k, more = 0, 0, True
        while more:
            if p >= len(counts):
                return None
            c = ord(counts[p]) - 48
            if not 0 <= c < 64:
                return None
            x |= (c & 0x1F) << (5 * k)
            more = bool(c & 0x20)
            p += 1
            k += 1
            if not more and c & 0x10:
                x |= -1 << (5 * k)
        if len(runs) > 2:
            x += runs[-2]
        runs.append(x)
    return runs


def _rle_problem(segmentation: dict, height: int, width: int) -> str | None:
    size, counts = segmentation.get("size"), segmentation.get("counts")
    if (not isinstance(size, (list, tuple)) or len(size) != 2
            or not all(isinstance(v, int) and not isinstance(v, bool) for v in size)):
        return f"RLE 'size' {size!r} is not [height, width]"
    if list(size) != [height, width]:
        return f"RLE size {size[0]}x{size[1]} (h x w) is not the image's {height}x{width}"
    if isinstance(counts, str):
        runs = _string_counts(counts)
        if runs is None:
            return "RLE 'counts' is not a compressed RLE string"
    elif isinstance(counts, list) and all(isinstance(v, int) and not isinstance(v, bool)
                                          for v in counts):
        runs = counts
    else:
        return "RLE 'counts' is neither a list of integers nor a compressed string"
    if any(v < 0 for v in runs):
        return "RLE 'counts' has a negative run length"
    if sum(runs) != height * width:
        return f"RLE 'counts' cover {sum(runs)} pixels, not the image's {height * width}"
    return None


_PLAIN_NUMBERS = {int, float}


def _finite_numbers(polygon: list) -> bool:
    """Whether every value of `polygon` is a finite int or float (not a bool): the types
    gathered and the values summed at C speed, value by value only when that cannot tell
    (an odd type, or a sum that is not finite: an inf, a NaN or an overflow)."""
    if set(map(type, polygon)) <= _PLAIN_NUMBERS:
        try:
            if math.isfinite(sum(polygon)):
                return True
        except OverflowError:  # an int too large for a float: decided below
            pass
    return all(_is_number(v) for v in polygon)


def _polygon_problem(segmentation: list) -> str | None:
    if not segmentation:
        return "no segmentation (empty list)"
    for i, polygon in enumerate(segmentation):
        if not isinstance(polygon, list) or not _finite_numbers(polygon):
            return f"polygon {i} is not a list of finite numbers"
        if len(polygon) < 6 or len(polygon) % 2:
            return (f"polygon {i} has {len(polygon)} coordinates (needs an even number, at "
                    "least 6: three x, y points)")
    return None


def encode_segmentation(segmentation, height: int, width: int) -> tuple[dict | None, str | None]:
    """(compressed RLE of a COCO `segmentation` in a `height` x `width` frame, None), or
    (None, what is wrong with it). Polygons are rasterised with pycocotools (as COCOeval does);
    an RLE must be of the frame's size."""
    if isinstance(segmentation, dict):
        problem = _rle_problem(segmentation, height, width)
        if problem is not None:
            return None, problem
        counts = segmentation["counts"]
        if isinstance(counts, str):
            return {"size": [height, width], "counts": counts.encode("ascii")}, None
        return mask_utils().frPyObjects(segmentation, height, width), None
    if segmentation is None:
        return None, "no segmentation"
    if not isinstance(segmentation, list):
        return None, f"segmentation is a {type(segmentation).__name__}, not polygons or an RLE"
    problem = _polygon_problem(segmentation)
    if problem is not None:
        return None, problem
    utils = mask_utils()
    return utils.merge(utils.frPyObjects(segmentation, height, width)), None


def upright_mask(mask: np.ndarray, orientation: int) -> np.ndarray:
    """A [H, W] mask of a file's stored pixels turned as EXIF `orientation` turns the image
    (as `keras_resnet_suite.data.images.upright_image` and `records.upright_boxes` do)."""
    turn = {
        1: lambda m: m,
        2: np.fliplr,
        3: lambda m: np.rot90(m, 2),
        4: np.flipud,
        5: np.transpose,
        6: lambda m: np.rot90(m, -1),
        7: lambda m: np.rot90(m.T, 2),
        8: lambda m: np.rot90(m, 1),
    }[int(orientation)]
    return np.ascontiguousarray(turn(mask))


def turn_rle(rle: dict, orientation: int) -> dict:
    """`rle` (drawn on the stored pixels) re-encoded in the upright frame."""
    utils = mask_utils()
    mask = upright_mask(utils.decode(rle), orientation)
    return utils.encode(np.asfortranarray(mask.astype(np.uint8)))


def decode_masks(rles: Sequence[dict], height: int, width: int) -> np.ndarray:
    """uint8 0/1 masks [M, height, width] of compressed RLEs, in their order."""
    if not rles:
        return np.zeros((0, height, width), np.uint8)
    masks = mask_utils().decode(list(rles))  # [H, W, M] uint8, Fortran order
    # one copy into [M, H, W] C order (a second, astype's, cost as much as the decode)
    return np.ascontiguousarray(np.transpose(masks, (2, 0, 1)), dtype=np.uint8)
