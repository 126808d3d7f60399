"""Faster R-CNN with ResNet backbones, in backend-agnostic Keras 3.

`detection.FasterRCNN` is imported lazily, so `detection.boxes`, `detection.evaluation` and the
data loaders can be used without building Keras models.
"""

__all__ = ["FasterRCNN"]


def __getattr__(name: str):
    if name == "FasterRCNN":
        from detection.faster_rcnn import FasterRCNN

        return FasterRCNN
    raise AttributeError(f"module 'detection' has no attribute {name!r}")
