"""Dataset-level evaluation: run any `predict(images)` over a tf.data set and score it."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping, Sequence

import numpy as np
from tqdm.auto import tqdm

from detection.evaluation.coco_metric import coco_ap
from detection.evaluation.paste import paste_masks
from detection.evaluation.voc_metric import voc_ap


def _predict_fn(predictor) -> Callable:
    predict = predictor.predict if hasattr(predictor, "predict") else predictor
    try:
        params = inspect.signature(predict).parameters
    except (TypeError, ValueError):
        return predict
    takes_kwargs = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    is_keras = any(c.__module__.startswith("keras") and c.__name__ == "Model"
                   for c in type(predictor).__mro__)
    if "verbose" in params or (takes_kwargs and is_keras):  # no progress bar per batch
        return lambda images: predict(images, verbose=0)
    return predict


def _to_numpy(value) -> np.ndarray:
    return np.asarray(value.numpy() if hasattr(value, "numpy") else value)


def _split_outputs(outputs: Mapping, batch: int) -> list[dict]:
    """Per-image prediction dicts from a batched `{"boxes", "scores", "classes", ...}` (and
    `masks` [B, N, h, w], kept per image as they come)."""
    missing = {"boxes", "scores", "classes"} - set(outputs)
    if missing:
        raise ValueError(f"predict() must return 'boxes', 'scores' and 'classes' (and optionally "
                         f"'num_detections'); missing {sorted(missing)} in {sorted(outputs)}")
    arrays = {k: _to_numpy(outputs[k])
              for k in ("boxes", "scores", "classes", "num_detections", "masks") if k in outputs}
    if arrays["boxes"].ndim != 3 or arrays["boxes"].shape[0] != batch:
        raise ValueError(f"predict() returned boxes of shape {arrays['boxes'].shape} for a batch "
                         f"of {batch} images; expected [{batch}, max_detections, 4]")
    out = []
    for b in range(batch):
        n = int(arrays["num_detections"][b]) if "num_detections" in arrays else None
        n = arrays["boxes"].shape[1] if n is None else n
        out.append({"boxes": arrays["boxes"][b, :n].astype(np.float32),
                    "scores": arrays["scores"][b, :n].astype(np.float32),
                    "classes": arrays["classes"][b, :n].astype(np.int64)})
        if "masks" in arrays:
            out[-1]["masks"] = arrays["masks"][b, :n]
    return out


def _image_masks(pred: dict, padded: tuple[int, int], height: int, width: int) -> dict:
    """Binary image-sized masks for scoring: image-sized ones (their size is the input's) cut
    to the image, probabilities at 0.5 as the TF OD API's evaluation does; box-relative
    `[N, S, S]` ones (`MaskRCNN.predict`) pasted at their boxes (`paste_masks`)."""
    masks = pred.get("masks")
    if masks is None or masks.ndim != 3:
        return pred
    if tuple(masks.shape[1:]) == tuple(padded):
        masks = masks[:, :height, :width]
        if np.issubdtype(masks.dtype, np.floating):
            masks = masks > 0.5
        return {**pred, "masks": masks.astype(np.uint8)}
    if masks.shape[1] == masks.shape[2] and len(masks) == len(pred["boxes"]):
        return {**pred, "masks": paste_masks(masks, pred["boxes"], height, width)}
    return pred  # for coco_ap to refuse, naming the shapes


def ground_truth_of(element: Mapping) -> dict:
    """The evaluation-list ground truth of one unbatched dataset element."""
    boxes = element["bounding_boxes"]
    truth = {"boxes": _to_numpy(boxes["boxes"]).reshape(-1, 4),
             "labels": _to_numpy(boxes["labels"]).reshape(-1).astype(np.int64)}
    for key in ("difficult", "iscrowd", "area"):
        if key in element:
            truth[key] = _to_numpy(element[key]).reshape(-1)
    if "masks" in element:  # [M, H, W], one per box, for segm AP
        truth["masks"] = _to_numpy(element["masks"])
    return truth


def _pad(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    h, w = image.shape[:2]
    if h > size[0] or w > size[1]:
        raise ValueError(f"pad_to={tuple(size)} is smaller than an image of {h}x{w}; "
                         f"choose a size at least as large as every image")
    return np.pad(image, ((0, size[0] - h), (0, size[1] - w), (0, 0)))


def _clip(pred: dict, height: int, width: int) -> dict:
    boxes = pred["boxes"].copy()
    boxes[:, 0::2] = np.clip(boxes[:, 0::2], 0, width)
    boxes[:, 1::2] = np.clip(boxes[:, 1::2], 0, height)
    return {**pred, "boxes": boxes}


def _count(dataset, max_images: int | None) -> int | None:
    """How many images a pass over `dataset` (at most `max_images`) sees, for the progress
    bar's total and ETA: the loaders' `num_examples`, else a known cardinality, else None."""
    count = getattr(dataset, "num_examples", None)
    if count is None and hasattr(dataset, "cardinality"):
        known = int(dataset.cardinality())
        count = known if known >= 0 else None
    elif count is None and hasattr(dataset, "__len__"):
        count = len(dataset)
    if count is None:
        return max_images
    return int(count) if max_images is None else min(int(count), max_images)


def predict_dataset(
    predictor, dataset, batch_size: int = 1, max_images: int | None = None,
    progress: bool = True, pad_to: tuple[int, int] | None = None,
) -> tuple[list[dict], list[dict], list[str]]:
    """(predictions, ground_truths, image_ids) over an unbatched dataset in the agreed format.

    By default consecutive images of the same size are batched (up to `batch_size`) and the
    detector sees each image exactly as stored. `pad_to=(H, W)` zero-pads every image at the
    bottom/right to one size instead: pixel coordinates are unchanged, one compiled graph
    serves the whole set and any images batch together (boxes are clipped to the original
    image); the detector then sees every image at the scale of the padded size.
    Predicted `masks` the size of the input are cut to each image and thresholded at 0.5;
    elements' `masks` pass into the ground truths.
    """
    predict = _predict_fn(predictor)
    predictions, truths, ids, sizes = [], [], [], []
    pending: list[np.ndarray] = []

    def flush() -> None:
        if pending:
            outputs = _split_outputs(predict(np.stack(pending)), len(pending))
            start, padded = len(predictions), pending[0].shape[:2]
            outputs = [_image_masks(p, padded, *sizes[start + k]) for k, p in enumerate(outputs)]
            predictions.extend(_clip(p, *sizes[start + k]) if pad_to else p
                               for k, p in enumerate(outputs))
            pending.clear()

    items = dataset.take(max_images) if max_images is not None else dataset
    for element in tqdm(items, desc="evaluating", total=_count(dataset, max_images),
                        unit="img", leave=False, disable=not progress):
        image = _to_numpy(element["images"])
        if image.ndim != 3:
            raise ValueError(f"predict_dataset needs an unbatched dataset (images [H, W, 3]); "
                             f"got images of shape {image.shape}: call .unbatch() first")
        sizes.append(image.shape[:2])
        if pad_to is not None:
            image = _pad(image, pad_to)
        if pending and (image.shape != pending[0].shape or len(pending) >= batch_size):
            flush()
        pending.append(image)
        truths.append(ground_truth_of(element))
        image_id = element.get("image_id")
        ids.append(_to_numpy(image_id).item().decode() if image_id is not None else str(len(ids)))
    flush()
    return predictions, truths, ids


def format_table(
    per_class: Mapping[int, float], class_names: Sequence[str] | None = None,
    title: str = "AP", mean: float | None = None,
) -> str:
    """A plain-text per-class AP table, one class per line, with the mean last."""
    rows = [(class_names[c] if class_names and 0 <= c < len(class_names) else str(c), ap)
            for c, ap in sorted(per_class.items())]
    width = max([len(name) for name, _ in rows] + [len("class"), len("mean")])
    lines = [f"{'class':<{width}}  {title:>7}", "-" * (width + 9)]
    lines += [f"{name:<{width}}  {ap:7.4f}" for name, ap in rows]
    if mean is not None:
        lines += ["-" * (width + 9), f"{'mean':<{width}}  {mean:7.4f}"]
    return "\n".join(lines)


def evaluate_dataset(
    predictor, dataset, metric: str = "voc", iou_threshold: float = 0.5,
    use_07_metric: bool = True, class_names: Sequence[str] | None = None,
    batch_size: int = 1, max_images: int | None = None, verbose: bool = True,
    pad_to: tuple[int, int] | None = None,
) -> dict:
    """Score a detector on a dataset with `voc_ap` (metric="voc"), `coco_ap` ("coco") or its
    mask AP (`coco_ap(..., iou_type="segm")`, "segm").

    `predictor` is any object with `predict(images [B, H, W, 3]) -> {"boxes", "scores",
    "classes", "num_detections"}` (a `detection.FasterRCNN`, a loaded SavedModel wrapper, ...);
    for "segm" also `masks` (image-sized [B, N, H, W] or box-relative [B, N, S, S], pasted),
    and the dataset's elements carry `masks`; "segm" also reports the same detections' box AP
    as `"bbox"`: `{"AP", "AP50", "AP75", "APs", "APm", "APl"}`. With class names (given, or
    the dataset's) `per_class` and `num_positives` are keyed by name (`by_class_name`).
    """
    if metric not in {"voc", "coco", "segm"}:
        raise ValueError(f"metric must be 'voc', 'coco' or 'segm', got {metric!r}")
    class_names = class_names or getattr(dataset, "class_names", None)
    predictions, truths, _ = predict_dataset(predictor, dataset, batch_size, max_images,
                                             progress=verbose, pad_to=pad_to)
    if metric == "voc":
        result = voc_ap(predictions, truths, iou_threshold, use_07_metric)
        headline, title = result["mAP"], f"AP{int(round(iou_threshold * 100))}"
    else:
        result = coco_ap(predictions, truths, iou_type="segm" if metric == "segm" else "bbox")
        headline, title = result["AP"], "mask AP" if metric == "segm" else "AP"
        if metric == "segm":  # the same predictions' boxes: one pass gives both figures
            box = coco_ap(predictions, truths)
            result["bbox"] = {k: float(box[k]) for k in ("AP", "AP50", "AP75", "APs", "APm",
                                                         "APl")}
    if verbose:
        print(format_table(result["per_class"], class_names, title, headline))
    return by_class_name(result, class_names)


def by_class_name(result: dict, class_names: Sequence[str] | None) -> dict:
    """`result` with its per-class figures (`per_class`, `num_positives`) keyed by class name
    instead of 0-based label index (an index without a name stays, as a string), so that
    metrics.json, --json files and logs read "kangaroo", not "0"."""
    if not class_names:
        return result

    def name(label) -> str:
        c = int(label)
        return class_names[c] if 0 <= c < len(class_names) else str(c)

    out = dict(result)
    for key in ("per_class", "num_positives"):
        if isinstance(result.get(key), dict):
            out[key] = {name(c): v for c, v in sorted(result[key].items())}
    return out
