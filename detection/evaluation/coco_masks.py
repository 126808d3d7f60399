"""Instance masks as COCO run-length encodings, for segm AP: binary masks and COCO's
`segmentation` (polygons, RLE, uncompressed RLE) checked and converted with pycocotools."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np


def _mask_utils():
    try:
        from pycocotools import mask as mask_utils
    except ImportError as error:
        raise ImportError("segm AP needs pycocotools: pip install 'keras-resnet-suite[coco]' "
                          "(or pip install pycocotools)") from error
    return mask_utils


def check_masks(masks, count: int, size: tuple[int, int] | None, where: str) -> np.ndarray:
    """`masks` as a [count, H, W] uint8 0/1 array, or ValueError naming `where` (e.g.
    "prediction 3 'masks'") and what is wrong: rank, count, size (when `size` is given) or values.
    """
    masks = np.asarray(masks)
    if masks.ndim != 3 or masks.shape[0] != count:
        raise ValueError(f"{where} has shape {list(masks.shape)}; expected [{count}, H, W]: "
                         f"one image-sized mask per box")
    if size is not None and tuple(masks.shape[1:]) != tuple(size):
        raise ValueError(f"{where} are {masks.shape[1]}x{masks.shape[2]} but the image is "
                         f"{size[0]}x{size[1]}; masks must be image-sized (paste box-relative "
                         f"masks into the image first)")
    if masks.dtype != bool:
        bad = masks[(masks != 0) & (masks != 1)]
        if bad.size:
            raise ValueError(f"{where} must be binary (0/1) but holds {bad.flat[0].item()!r}; threshold "
                             f"probabilities first (e.g. masks > 0.5)")
    return masks.astype(np.uint8)


def encode_masks(masks: np.ndarray) -> list[dict]:
    """Compressed COCO RLEs of binary masks [N, H, W] (pycocotools wants Fortran-ordered uint8)."""
    if len(masks) == 0:
        return []
    return _mask_utils().encode(np.asfortranarray(np.transpose(masks, (1, 2, 0)), np.uint8))


def segmentation_to_rle(segmentation, height: int, width: int) -> dict:
    """One COCO `segmentation` as a compressed RLE at the image's size, as `COCO.annToRLE` does:
    polygons (a list of [x1, y1, x2, y2, ...]) rasterised and merged, uncompressed RLE (`counts`
    a list) compressed, compressed RLE kept. Raises ValueError saying what is malformed."""
    mask_utils = _mask_utils()
    if isinstance(segmentation, list | tuple):
        polygons = [list(p) for p in segmentation if isinstance(p, list | tuple | np.ndarray)]
        if not segmentation or len(polygons) != len(segmentation) or any(
                len(p) < 6 or len(p) % 2 for p in polygons):
            raise ValueError("polygons must be a non-empty list of [x1, y1, x2, y2, ...] lists "
                             "with an even count of at least 6 numbers (3 points)")
        return mask_utils.merge(mask_utils.frPyObjects([[float(v) for v in p] for p in polygons],
                                                       height, width))
    if not isinstance(segmentation, Mapping) or not {"counts", "size"} <= set(segmentation):
        raise ValueError(f"expected polygons (a list of [x1, y1, ...] lists) or an RLE dict with "
                         f"'counts' and 'size', got {type(segmentation).__name__}")
    size = [int(v) for v in segmentation["size"]]
    if size != [height, width]:
        raise ValueError(f"RLE size {size} but the image is {height}x{width} ([height, width])")
    counts = segmentation["counts"]
    if isinstance(counts, list | tuple | np.ndarray):
        if sum(int(c) for c in counts) != height * width:
            raise ValueError(f"uncompressed RLE counts sum to {sum(int(c) for c in counts)}, not "
                             f"height*width = {height * width}")
        return mask_utils.frPyObjects({"size": size, "counts": [int(c) for c in counts]},
                                      height, width)
    if not isinstance(counts, str | bytes):
        raise ValueError(f"RLE counts must be a string or a list, got {type(counts).__name__}")
    return {"size": size, "counts": counts.encode() if isinstance(counts, str) else counts}


def ground_truth_rles(truth: Mapping, count: int, where: str) -> tuple[list[dict], tuple]:
    """A ground truth's RLEs (from `masks` [M, H, W], else `segmentation` at its `height` x
    `width`) and its image size (H, W); ValueError naming `where` and the key when malformed."""
    if "masks" in truth:
        masks = check_masks(truth["masks"], count, None, f"{where} 'masks'")
        return encode_masks(masks), tuple(masks.shape[1:])
    if "segmentation" not in truth:
        raise ValueError(f"{where} has neither 'masks' [M, H, W] nor 'segmentation': "
                         f"iou_type='segm' needs one of them")
    if "height" not in truth or "width" not in truth:
        raise ValueError(f"{where} has 'segmentation' but no 'height' and 'width': polygons and "
                         f"RLE are converted at the image's size")
    height, width = int(truth["height"]), int(truth["width"])
    segmentations = truth["segmentation"]
    if len(segmentations) != count:
        raise ValueError(f"{where} 'segmentation' has {len(segmentations)} entries for {count} "
                         f"boxes; expected one per box")
    rles = []
    for k, segmentation in enumerate(segmentations):
        try:
            rles.append(segmentation_to_rle(segmentation, height, width))
        except ValueError as error:
            raise ValueError(f"{where} 'segmentation'[{k}]: {error}") from None
    return rles, (height, width)


def rle_areas(rles: Sequence[dict]) -> np.ndarray:
    """Pixel areas of RLEs (what `COCO.loadRes` gives segm results)."""
    if not rles:
        return np.zeros(0, np.float64)
    return np.asarray(_mask_utils().area(list(rles)), np.float64).reshape(-1)

