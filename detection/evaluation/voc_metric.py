"""PASCAL VOC average precision with the devkit's rules (VOC 2007 11-point or area under PR)."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence

import numpy as np


def _valid(entry: Mapping, key: str, count_key: str | None = None) -> tuple[np.ndarray, ...]:
    """Boxes and the per-box arrays of one image, cut to `num_detections` and label >= 0."""
    boxes = np.asarray(entry["boxes"], np.float64).reshape(-1, 4)
    labels = np.asarray(entry[key]).reshape(-1).astype(np.int64)
    n = len(labels)
    if count_key and count_key in entry:
        n = min(n, int(np.asarray(entry[count_key]).reshape(-1)[0]))
    boxes, labels = boxes[:n], labels[:n]
    keep = labels >= 0  # -1 marks padding in batched model outputs and ground truth
    return boxes, labels, keep, n


def iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pairwise IoU of xyxy boxes in continuous coordinates: [len(a), len(b)]."""
    a, b = np.asarray(a, np.float64).reshape(-1, 4), np.asarray(b, np.float64).reshape(-1, 4)
    iw = np.minimum(a[:, None, 2], b[None, :, 2]) - np.maximum(a[:, None, 0], b[None, :, 0])
    ih = np.minimum(a[:, None, 3], b[None, :, 3]) - np.maximum(a[:, None, 1], b[None, :, 1])
    inter = np.clip(iw, 0, None) * np.clip(ih, 0, None)
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    union = area_a[:, None] + area_b[None, :] - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1), 0.0)


def average_precision(recall: np.ndarray, precision: np.ndarray, use_07_metric: bool) -> float:
    """AP from a PR curve: VOC2007 11-point interpolation, or the exact area (VOC2010+)."""
    if use_07_metric:
        points = [np.max(precision[recall >= t]) if np.any(recall >= t) else 0.0
                  for t in np.linspace(0, 1, 11)]
        return float(np.mean(points))
    mrec = np.concatenate([[0.0], recall, [1.0]])
    mpre = np.concatenate([[0.0], precision, [0.0]])
    mpre = np.maximum.accumulate(mpre[::-1])[::-1]  # precision envelope, monotone decreasing
    change = np.flatnonzero(mrec[1:] != mrec[:-1])
    return float(np.sum((mrec[change + 1] - mrec[change]) * mpre[change + 1]))


def voc_ap(
    predictions: Sequence[Mapping],
    ground_truths: Sequence[Mapping],
    iou_threshold: float = 0.5,
    use_07_metric: bool = True,
) -> dict:
    """Per-class VOC AP and its mean over classes that have non-difficult ground truth.

    Devkit semantics: detections of a class are ranked by score over the whole set; each is
    matched to the highest-IoU ground truth of its image; IoU > threshold and not yet taken is
    a true positive, a second hit on the same object is a false positive, a hit on a
    `difficult` object is neither. Boxes are continuous pixel xyxy (no devkit "+1").
    Returns {"mAP", "per_class": {label: AP}, "num_positives": {label: n}}.
    """
    if len(predictions) != len(ground_truths):
        raise ValueError(f"voc_ap needs one prediction per ground truth image: got "
                         f"{len(predictions)} predictions and {len(ground_truths)} ground truths")
    gt = defaultdict(dict)  # label -> image index -> (boxes, difficult)
    npos = defaultdict(int)
    for i, truth in enumerate(ground_truths):
        boxes, labels, keep, n = _valid(truth, "labels")
        difficult = np.asarray(truth.get("difficult", np.zeros(n, bool))).reshape(-1)[:n]
        difficult = difficult.astype(bool)
        for c in np.unique(labels[keep]):
            mask = keep & (labels == c)
            gt[int(c)][i] = (boxes[mask], difficult[mask])
            npos[int(c)] += int(np.sum(~difficult[mask]))
    dets = defaultdict(list)  # label -> [(score, image index, box)]
    for i, pred in enumerate(predictions):
        boxes, classes, keep, n = _valid(pred, "classes", "num_detections")
        scores = np.asarray(pred["scores"], np.float64).reshape(-1)[:n]
        for box, c, s in zip(boxes[keep], classes[keep], scores[keep], strict=True):
            dets[int(c)].append((s, i, box))

    per_class = {}
    for c in sorted(npos):
        if npos[c] == 0:
            continue  # only difficult objects: the devkit's AP is undefined, left out of the mean
        found = dets.get(c, [])
        order = np.argsort([-d[0] for d in found], kind="stable")
        taken = {i: np.zeros(len(b), bool) for i, (b, _) in gt[c].items()}
        tp, fp = np.zeros(len(found)), np.zeros(len(found))
        for rank, k in enumerate(order):
            _, i, box = found[k]
            if i not in gt[c]:
                fp[rank] = 1
                continue
            gt_boxes, difficult = gt[c][i]
            overlaps = iou_matrix(box[None], gt_boxes)[0]
            j = int(np.argmax(overlaps))
            if overlaps[j] > iou_threshold:
                if difficult[j]:
                    continue
                if taken[i][j]:
                    fp[rank] = 1
                else:
                    tp[rank], taken[i][j] = 1, True
            else:
                fp[rank] = 1
        tp, fp = np.cumsum(tp), np.cumsum(fp)
        recall = tp / npos[c]
        precision = tp / np.maximum(tp + fp, np.finfo(np.float64).eps)
        per_class[c] = average_precision(recall, precision, use_07_metric)
    mean = float(np.mean(list(per_class.values()))) if per_class else float("nan")
    return {"mAP": mean, "per_class": per_class, "num_positives": dict(npos)}
