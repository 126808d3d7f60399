"""Detection data: PASCAL VOC, COCO and TFDS loaders (also as labelling tools export them: see
`voc` and `coco`), the data report, box-aware augmentation.

`pipeline` (fixed-canvas training batches) and `augment` are imported on first use; `shapes`
(the synthetic set, module `synthetic`) and the TFDS loaders are reached the same way.
"""

import importlib

from detection.data.build import dataset_from_config
from detection.data.coco import coco, coco_records
from detection.data.report import DataReport
from detection.data.voc import VOC_CLASSES, voc, voc_class_names, voc_records

__all__ = [
    "DataReport", "VOC_CLASSES", "coco", "coco_records", "coco_tfds", "dataset_from_config",
    "voc", "voc_class_names", "voc_records",
    "voc_tfds", "augment", "pipeline", "shapes",
]

_LAZY = {
    "shapes": ("detection.data.synthetic", "shapes"),
    "pipeline": ("detection.data.pipeline", None),
    "augment": ("detection.data.augment", None),
    "voc_tfds": ("detection.data.tfds", "voc_tfds"),
    "coco_tfds": ("detection.data.tfds", "coco_tfds"),
}


def __getattr__(name: str):
    if name not in _LAZY:
        raise AttributeError(f"module 'detection.data' has no attribute {name!r}")
    module_name, attribute = _LAZY[name]
    module = importlib.import_module(module_name)
    return getattr(module, attribute) if attribute else module
