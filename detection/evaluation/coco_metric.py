"""COCO box and mask AP (AP, AP50, AP75, APs/m/l) of per-image lists, computed by pycocotools."""

from __future__ import annotations

import contextlib
import io
from collections.abc import Mapping, Sequence

import numpy as np

from detection.evaluation.coco_masks import (
    check_masks,
    encode_masks,
    ground_truth_rles,
    rle_areas,
)
from detection.evaluation.voc_metric import _valid

STAT_NAMES = ("AP", "AP50", "AP75", "APs", "APm", "APl",
              "AR1", "AR10", "AR100", "ARs", "ARm", "ARl")
IOU_TYPES = ("bbox", "segm")


def _pycocotools():
    try:
        from pycocotools.coco import COCO
        from pycocotools.cocoeval import COCOeval
    except ImportError as error:
        raise ImportError("coco_ap needs pycocotools: pip install 'keras-resnet-suite[coco]' "
                          "(or pip install pycocotools)") from error
    return COCO, COCOeval


def _xywh(boxes: np.ndarray) -> np.ndarray:
    return np.concatenate([boxes[:, :2], boxes[:, 2:] - boxes[:, :2]], axis=1)


def _segm_columns(
    pred: Mapping, i: int, size: tuple | None, n: int, keep: np.ndarray,
) -> list[dict]:
    """RLEs of prediction i's kept masks, checked (and against its image's size when given)."""
    if "masks" not in pred:
        raise ValueError(f"prediction {i} has no 'masks': iou_type='segm' needs [N, H, W] binary "
                         f"image-sized masks (paste box-relative masks with "
                         f"detection.evaluation.paste.paste_masks)")
    count = len(np.asarray(pred["classes"]).reshape(-1))
    masks = check_masks(pred["masks"], count, size, f"prediction {i} 'masks'")
    return encode_masks(masks[:n][keep])


def to_coco(
    predictions: Sequence[Mapping], ground_truths: Sequence[Mapping], iou_type: str = "bbox",
) -> tuple[dict, list]:
    """The lists as a COCO ground-truth dict and a detection-results list (ids start at 1).

    Labels l become category ids l + 1 and image i becomes id i + 1: pycocotools treats an
    annotation id of 0 as "unmatched", so 0-based ids would silently lose true positives.
    With iou_type="segm" every annotation and result also carries a compressed-RLE
    `segmentation`; results' areas are their masks' (as `COCO.loadRes` gives mask-only results),
    ground truths' their given `area`, else their masks'.
    """
    if iou_type not in IOU_TYPES:
        raise ValueError(f"iou_type must be 'bbox' or 'segm', got {iou_type!r}")
    segm = iou_type == "segm"
    images, annotations, labels_seen, sizes = [], [], set(), []
    for i, truth in enumerate(ground_truths):
        boxes, labels, keep, n = _valid(truth, "labels")
        area = np.asarray(truth["area"], np.float64).reshape(-1)[:n] if "area" in truth else (
            (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]))
        crowd = np.asarray(truth.get("iscrowd", np.zeros(n, bool))).reshape(-1)[:n]
        image = {"id": i + 1}
        rles = [None] * n
        if segm:
            rles, size = ground_truth_rles(truth, len(labels), f"ground truth {i}")
            rles = rles[:n]
            if "area" not in truth:
                area = rle_areas(rles)
            image.update(height=size[0], width=size[1])
            sizes.append(size)
        images.append(image)
        columns = (_xywh(boxes[keep]), labels[keep], area[keep], crowd[keep],
                   [r for r, k in zip(rles, keep, strict=True) if k])
        for box, label, a, c, rle in zip(*columns, strict=True):
            labels_seen.add(int(label))
            annotations.append({"id": len(annotations) + 1, "image_id": i + 1,
                                "category_id": int(label) + 1, "bbox": box.tolist(),
                                "area": float(a), "iscrowd": int(bool(c)),
                                **({"segmentation": rle} if segm else {})})
    results = []
    for i, pred in enumerate(predictions):
        boxes, classes, keep, n = _valid(pred, "classes", "num_detections")
        scores = np.asarray(pred["scores"], np.float64).reshape(-1)[:n]
        if segm:
            rles = _segm_columns(pred, i, sizes[i], n, keep)
            areas = rle_areas(rles)
        else:
            rles, areas = [None] * int(keep.sum()), np.prod(_xywh(boxes[keep])[:, 2:], axis=1)
        columns = (_xywh(boxes[keep]), classes[keep], scores[keep], rles, areas)
        for box, c, s, rle, a in zip(*columns, strict=True):
            results.append({"image_id": i + 1, "category_id": int(c) + 1, "bbox": box.tolist(),
                            "score": float(s), "area": float(a),
                            **({"segmentation": rle} if segm else {})})
    labels_seen |= {r["category_id"] - 1 for r in results}
    categories = [{"id": c + 1, "name": str(c)} for c in sorted(labels_seen)]
    return {"images": images, "annotations": annotations, "categories": categories}, results


def to_coco_results(
    predictions: Sequence[Mapping], image_ids: Sequence, label_to_category: Mapping[int, int],
    iou_type: str = "bbox",
) -> list[dict]:
    """Detections in the official COCO results format, with COCO's own image and category ids,
    for `COCO.loadRes` or test-dev: `[{image_id, category_id, bbox [x, y, w, h], score}]`, or
    with iou_type="segm" `[{image_id, category_id, segmentation (compressed RLE), score}]` from
    each prediction's binary image-sized `masks`; no bbox there, so `loadRes` sizes each result
    by its mask, as `coco_ap` does.
    """
    if iou_type not in IOU_TYPES:
        raise ValueError(f"iou_type must be 'bbox' or 'segm', got {iou_type!r}")
    if len(predictions) != len(image_ids):
        raise ValueError(f"{len(predictions)} predictions but {len(image_ids)} image ids")
    results = []
    for i, (pred, image_id) in enumerate(zip(predictions, image_ids, strict=True)):
        boxes, classes, keep, n = _valid(pred, "classes", "num_detections")
        scores = np.asarray(pred["scores"], np.float64).reshape(-1)[:n]
        image_id = int(image_id) if str(image_id).isdigit() else image_id
        if iou_type == "segm":
            regions = [{"segmentation": {"size": list(rle["size"]),
                                         "counts": rle["counts"].decode()}}
                       for rle in _segm_columns(pred, i, None, n, keep)]
        else:
            regions = [{"bbox": [round(float(v), 3) for v in box]}
                       for box in _xywh(boxes[keep])]
        for region, c, s in zip(regions, classes[keep], scores[keep], strict=True):
            results.append({"image_id": image_id, "category_id": int(label_to_category[int(c)]),
                            **region, "score": float(s)})
    return results


def evaluate_coco(gt_dict: dict, results: list, verbose: bool = False, iou_type: str = "bbox"):
    """Run COCOeval (`iou_type` "bbox" or "segm") on an in-memory ground truth and result list
    (results with their `area`, as `to_coco` makes them); returns the evaluator."""
    COCO, COCOeval = _pycocotools()
    sink = contextlib.nullcontext() if verbose else contextlib.redirect_stdout(io.StringIO())
    with sink:
        gt = COCO()
        gt.dataset = gt_dict
        gt.createIndex()
        dt = COCO()
        # Same fields COCO.loadRes adds; built directly so that an empty result list (a model
        # that finds nothing) still evaluates to AP 0 instead of failing.
        anns = [{"area": r["bbox"][2] * r["bbox"][3], **r, "id": k + 1, "iscrowd": 0}
                for k, r in enumerate(results)]
        dt.dataset = {"images": gt_dict["images"], "categories": gt_dict["categories"],
                      "annotations": anns}
        dt.createIndex()
        evaluator = COCOeval(gt, dt, iou_type)
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    return evaluator


def per_class_ap(evaluator) -> dict[int, float]:
    """AP@[.5:.95] per category id, from the accumulated precision table (area all, 100 dets)."""
    precision = evaluator.eval["precision"][:, :, :, 0, -1]  # [T, R, K]
    out = {}
    for k, cat_id in enumerate(evaluator.params.catIds):
        p = precision[:, :, k]
        p = p[p > -1]
        out[int(cat_id)] = float(np.mean(p)) if p.size else float("nan")
    return out


def coco_ap(
    predictions: Sequence[Mapping], ground_truths: Sequence[Mapping], verbose: bool = False,
    iou_type: str = "bbox",
) -> dict:
    """COCO box (iou_type="bbox") or mask ("segm") metrics {"AP", "AP50", "AP75", "APs", "APm",
    "APl", AR..., "per_class", "area_source"}.

    For "segm" each prediction carries `masks` [N, H, W] binary at its image's size (one per
    box), each ground truth `masks` [M, H, W] or COCO `segmentation` (polygons / RLE /
    uncompressed RLE, one per box) with its image's `height` and `width`; `iscrowd` objects are
    crowd RLE regions. Detections' areas are their masks' pixel counts (detectron2 drops result
    boxes for the same reason: pycocotools would otherwise size them by box); a ground truth's
    is its `area`, else its mask's (`area_source` "mask").

    Size ranges use each ground truth's `area` (COCO's segment area) when given, else the box
    area; `area_source` says which the figures rest on: "box" when every area used equals its
    box's w*h (no `area` given, or an export that wrote box areas; the loaders fill a missing
    `area` with the box area), else "annotation". APs/APm/APl from box areas differ from
    official figures, which use segment areas. `iscrowd` objects are matched as crowd regions.
    pycocotools' "-1" (no objects of a size) is returned as NaN so it cannot be averaged by
    mistake.
    """
    if len(predictions) != len(ground_truths):
        raise ValueError(f"coco_ap needs one prediction per ground truth image: got "
                         f"{len(predictions)} predictions and {len(ground_truths)} ground truths")
    gt_dict, results = to_coco(predictions, ground_truths, iou_type)
    if not gt_dict["annotations"]:
        raise ValueError("coco_ap: the ground truth has no objects, AP is undefined")
    evaluator = evaluate_coco(gt_dict, results, verbose, iou_type)
    stats = {name: (float(v) if v > -1 else float("nan"))
             for name, v in zip(STAT_NAMES, evaluator.stats, strict=True)}
    stats["per_class"] = {cat - 1: ap for cat, ap in per_class_ap(evaluator).items()}
    stats["area_source"] = area_source(gt_dict["annotations"])
    if iou_type == "segm" and not any("area" in truth for truth in ground_truths):
        stats["area_source"] = "mask"
    return stats


def area_source(annotations: Sequence[Mapping]) -> str:
    """"box" when every annotation's `area` is its bbox's w*h (to float32 precision), else
    "annotation" (at least one area comes from elsewhere: COCO's segment areas)."""
    for a in annotations:
        box_area = float(a["bbox"][2]) * float(a["bbox"][3])
        if abs(float(a["area"]) - box_area) > 1e-4 * max(box_area, 1.0):
            return "annotation"
    return "box"
