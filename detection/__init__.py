"""Faster R-CNN and Mask R-CNN with ResNet backbones, in backend-agnostic Keras 3.

Sub-packages follow the data: `modeling` (the model: transform, backbone, RPN, RoI heads,
and the pure `ops` they use), `data` (datasets), `evaluation` (VOC/COCO AP), `export`
(TF Serving SavedModels), `engine` (train/evaluate/predict loops), `config` (the typed run
configuration), `checkpoints` (torchvision and detectron2 COCO weights). Each is imported on
first use, so `detection.evaluation` or the data loaders work without building Keras models.
"""

from __future__ import annotations

import importlib
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # what the lazy names below resolve to, for type checkers and IDEs
    from detection import checkpoints, config, data, engine, evaluation, export, modeling
    from detection.modeling.faster_rcnn import FasterRCNN, GeneralizedRCNN
    from detection.modeling.mask_rcnn import MaskRCNN

if "keras" in sys.modules:  # the backend is chosen already: register the detector's layers
    from detection import modeling  # noqa: F401  (so keras.saving.load_model reads .keras files)

__all__ = ["FasterRCNN", "GeneralizedRCNN", "MaskRCNN", "checkpoints", "config", "data", "engine",
           "evaluation", "export", "modeling"]

_SUBMODULES = ("checkpoints", "config", "data", "engine", "evaluation", "export", "modeling")
_MODELS = {"FasterRCNN": "faster_rcnn", "GeneralizedRCNN": "faster_rcnn",
           "MaskRCNN": "mask_rcnn"}


def __getattr__(name: str):
    if name in _MODELS:
        return getattr(importlib.import_module(f"detection.modeling.{_MODELS[name]}"), name)
    if name in _SUBMODULES:
        return importlib.import_module(f"detection.{name}")
    raise AttributeError(f"module 'detection' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
