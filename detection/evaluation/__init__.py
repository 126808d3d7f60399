"""Detection evaluation on plain per-image lists (any detector) and on whole datasets.

pycocotools is imported only when COCO metrics are computed.
"""

from detection.evaluation.dataset import (
    evaluate_dataset,
    format_table,
    ground_truth_of,
    predict_dataset,
)
from detection.evaluation.voc_metric import average_precision, iou_matrix, voc_ap

__all__ = [
    "EvaluationCallback", "average_precision", "coco_ap", "evaluate_dataset", "format_table",
    "ground_truth_of", "iou_matrix", "predict_dataset", "to_coco_results", "voc_ap",
]


def coco_ap(predictions, ground_truths, verbose: bool = False) -> dict:
    """COCO AP/AP50/AP75/APs/APm/APl via pycocotools; see `detection.evaluation.coco_metric.coco_ap`."""
    from detection.evaluation.coco_metric import coco_ap as _coco_ap

    return _coco_ap(predictions, ground_truths, verbose)


def to_coco_results(predictions, image_ids, label_to_category) -> list[dict]:
    """Official COCO results JSON entries; see `detection.evaluation.coco_metric.to_coco_results`."""
    from detection.evaluation.coco_metric import to_coco_results as _to_coco_results

    return _to_coco_results(predictions, image_ids, label_to_category)


def __getattr__(name: str):
    if name == "EvaluationCallback":  # imports keras; keep plain list evaluation light
        from detection.evaluation.callback import EvaluationCallback

        return EvaluationCallback
    raise AttributeError(f"module 'detection.evaluation' has no attribute {name!r}")
