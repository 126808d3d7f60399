"""Faster R-CNN with ResNet backbones, in backend-agnostic Keras 3.

Sub-packages follow the data: `modeling` (the model: transform, backbone, RPN, RoI heads,
and the pure `ops` they use), `data` (datasets), `evaluation` (VOC/COCO AP), `export`
(TF Serving SavedModels), `engine` (train/evaluate/predict loops), `config` (the typed run
configuration), `checkpoints` (torchvision and detectron2 COCO weights). Each is imported on
first use, so `detection.evaluation` or the data loaders work without building Keras models.
"""

from __future__ import annotations

import functools
import importlib
import importlib.abc
import importlib.util
import sys
import types
import warnings

__all__ = ["FasterRCNN", "GeneralizedRCNN", "checkpoints", "config", "data", "engine",
           "evaluation", "export", "modeling"]

_SUBMODULES = ("checkpoints", "config", "data", "engine", "evaluation", "export", "modeling")

# Modules of the flat layout before the redesign, kept importable for users' code.
_MOVED = {
    "detection.anchors": "detection.modeling.rpn.anchors",
    "detection.boxes": "detection.modeling.ops.boxes",
    "detection.faster_rcnn": "detection.modeling.faster_rcnn",
    "detection.losses": "detection.modeling.ops.losses",
    "detection.matching": "detection.modeling.ops.matching",
    "detection.postprocess": "detection.modeling.ops.nms",
    "detection.roi_align": "detection.modeling.ops.roi_align",
    "detection.rpn": "detection.modeling.rpn.proposal_network",
    "detection.sampling": "detection.modeling.ops.sampling",
    "detection.transforms": "detection.modeling.transform",
    "detection.train": "detection.engine.train",
    "detection.evaluate": "detection.engine.evaluate",
    "detection.predict": "detection.engine.predict",
    "detection.demo": "detection.engine.demo",
    "detection.visualize": "detection.engine.visualize",
    "detection.data.transforms": "detection.data.pipeline",
    "detection.evaluation.voc": "detection.evaluation.voc_metric",
    "detection.evaluation.coco": "detection.evaluation.coco_metric",
}


class _MovedModules(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Resolves an old module path to a proxy of its new module (attribute reads delegate)."""

    def find_spec(self, fullname, path=None, target=None):
        if fullname in _MOVED:
            return importlib.util.spec_from_loader(fullname, self)
        return None

    def create_module(self, spec):
        new = _MOVED[spec.name]
        warnings.warn(f"{spec.name} moved to {new}", DeprecationWarning, stacklevel=2)
        target = importlib.import_module(new)
        proxy = types.ModuleType(spec.name, target.__doc__)
        proxy.__getattr__ = functools.partial(getattr, target)
        return proxy

    def exec_module(self, module):
        pass


if not any(isinstance(f, _MovedModules) for f in sys.meta_path):
    sys.meta_path.append(_MovedModules())


def __getattr__(name: str):
    if name in ("FasterRCNN", "GeneralizedRCNN"):
        from detection.modeling import faster_rcnn

        return getattr(faster_rcnn, name)
    if name in _SUBMODULES:
        return importlib.import_module(f"detection.{name}")
    raise AttributeError(f"module 'detection' has no attribute {name!r}")
