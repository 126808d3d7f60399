"""Detection evaluation on plain per-image lists (any detector) and on whole datasets.

pycocotools is imported only when COCO metrics are computed.
"""

import importlib

from detection.evaluation.coco_metric import coco_ap, to_coco_results
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


def __getattr__(name: str):
    if name == "EvaluationCallback":  # imports keras; keep plain list evaluation light
        return importlib.import_module("detection.evaluation.callback").EvaluationCallback
    raise AttributeError(f"module 'detection.evaluation' has no attribute {name!r}")
