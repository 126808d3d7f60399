"""Pretrained COCO Faster R-CNN and Mask R-CNN checkpoints (torchvision, detectron2): the
registry, the file readers and the COCO class tables. Importing this package loads no
TensorFlow; only what reaches into `keras_resnet_suite` does: downloading and hash checks
(`fetch_checkpoint`, `resolve`) and reading a `.pth`/`.safetensors` without PyTorch."""

from .coco_classes import COCO_CATEGORIES, TORCHVISION_LABELS, category_ids, class_names
from .readers import (
    UnsafePickleError,
    library_of,
    normalize_torchvision_keys,
    read_checkpoint,
    read_detectron2_pkl,
    read_torchvision_pth,
)
from .registry import (
    CHECKPOINTS,
    DetectorCheckpoint,
    fetch_checkpoint,
    get,
    names,
    register,
    resolve,
)

__all__ = ["CHECKPOINTS", "COCO_CATEGORIES", "DetectorCheckpoint", "TORCHVISION_LABELS",
           "UnsafePickleError", "category_ids", "class_names", "fetch_checkpoint", "get",
           "library_of", "names", "normalize_torchvision_keys", "read_checkpoint",
           "read_detectron2_pkl", "read_torchvision_pth", "register", "resolve"]
