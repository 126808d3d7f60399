"""Faster R-CNN seconds per image and per training step (R101-C4, R50-FPN, 600-pixel canvas)."""

from __future__ import annotations

import numpy as np

from benchmarks.timing import Case

# The paper's 600-pixel shorter side (max 1000), rounded up to a multiple of 32 for FPN.
CANVAS = (608, 1024)
CONFIGS = (("resnet101", "c4"), ("resnet50", "fpn"))


def detection_available() -> str | None:
    """None when `detection.FasterRCNN` imports, else the reason it does not."""
    try:
        from detection.faster_rcnn import FasterRCNN  # noqa: F401
    except Exception as exc:  # any import failure means the section cannot run
        return f"detection.FasterRCNN unavailable: {exc!r}"
    return None


def build(backbone: str, head: str, num_classes: int = 20):
    import keras

    from detection.faster_rcnn import FasterRCNN

    model = FasterRCNN(num_classes=num_classes, backbone=backbone, head=head,
                       image_size=CANVAS, seed=0)
    model.compile(optimizer=keras.optimizers.SGD(0.01, momentum=0.9), jit_compile=False)
    return model


def predict_case(name: str, model, image_hw: tuple[int, int] = (600, 800)) -> Case:
    """One image per run, a VOC-like 600x800 photo-sized input resized onto the canvas."""
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 255, (1,) + tuple(image_hw) + (3,)).astype("float32")
    return Case(name, lambda: model.predict_on_batch(x), items=1)


def train_case(name: str, model, batch: dict) -> Case:
    """One SGD step on a real training batch (all four losses, backward, update)."""
    n = int(batch["images"].shape[0])
    return Case(name, lambda: model.train_on_batch(batch), items=n)
