"""Faster R-CNN seconds per image and per training step (R101-C4, R50-FPN, 600-pixel canvas)."""

from __future__ import annotations

import numpy as np

from benchmarks.timing import Case

PHOTO = (600, 1000)
CLIP = 10.0  # global gradient-norm clip of the timed training steps

# The paper's 600-pixel shorter side (max 1000), rounded up to a multiple of 32 for FPN.
CANVAS = (608, 1024)
CONFIGS = (("resnet101", "c4"), ("resnet50", "fpn"))


def detection_available() -> str | None:
    """None when `detection.FasterRCNN` imports, else the reason it does not."""
    try:
        from detection.modeling import FasterRCNN  # noqa: F401
    except Exception as exc:  # any import failure means the section cannot run
        return f"detection.FasterRCNN unavailable: {exc!r}"
    return None


def build(backbone: str, head: str, num_classes: int = 20):
    """The fine-tuning configuration users run (detectron2's): an ImageNet backbone with
    frozen BN and stem + conv2_x frozen (`freeze_at=2`); random weights, since timing does
    not depend on their values and downloads are not possible offline."""
    import keras

    from detection.modeling import FasterRCNN

    model = FasterRCNN(num_classes=num_classes, backbone=backbone, head=head,
                       image_size=CANVAS, norm="frozen", freeze_at=2, seed=0)
    # Random weights under frozen BN give large activations; clipping (both contenders, norm
    # 10) keeps the timed steps finite without changing their cost noticeably.
    model.compile(optimizer=keras.optimizers.SGD(0.01, momentum=0.9, global_clipnorm=CLIP),
                  jit_compile=False)
    return model


def predict_case(name: str, model, image_hw: tuple[int, int] = PHOTO) -> Case:
    """One image per run, a 600x1000 photo (the paper's scale) resized onto the canvas."""
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 255, (1,) + tuple(image_hw) + (3,)).astype("float32")
    return Case(name, lambda: model.predict_on_batch(x), items=1)


def train_case(name: str, model, batch: dict) -> Case:
    """One SGD step on a real training batch (all four losses, backward, update)."""
    n = int(batch["images"].shape[0])

    def step():
        logs = model.train_on_batch(batch, return_dict=True)
        if not np.isfinite(logs["loss"]):  # a diverged step would time NaN arithmetic
            raise FloatingPointError(f"{name}: non-finite loss {logs}")
        return logs

    return Case(name, step, items=n)


def torchvision_cases(batch: dict, num_classes: int = 20,
                      image_hw: tuple[int, int] = PHOTO) -> tuple[Case, Case] | None:
    """torchvision's `fasterrcnn_resnet50_fpn` in the configuration `build` times: resize to a
    600-pixel shorter side (max 1000), frozen BN, stem + layer1 frozen (`trainable_layers=3`),
    random weights. Returns (inference case, training-step case), or None without torch."""
    from benchmarks import peers

    if not peers.torchvision_wanted():
        return None
    import torch
    from torchvision.models.detection import FasterRCNN
    from torchvision.models.detection.backbone_utils import resnet_fpn_backbone
    from torchvision.ops.misc import FrozenBatchNorm2d

    torch.manual_seed(0)
    backbone = resnet_fpn_backbone(backbone_name="resnet50", weights=None,
                                   norm_layer=FrozenBatchNorm2d, trainable_layers=3)
    model = FasterRCNN(backbone, num_classes=num_classes + 1, min_size=image_hw[0],
                       max_size=image_hw[1])
    rng = np.random.default_rng(0)
    photo = torch.from_numpy(rng.uniform(0, 1, (3,) + tuple(image_hw)).astype("float32"))

    def infer():
        model.eval()
        with torch.inference_mode():
            return model([photo])

    image = torch.from_numpy(np.asarray(batch["images"][0], "float32") / 255.0).permute(2, 0, 1)
    boxes = np.asarray(batch["bounding_boxes"]["boxes"][0], "float32")
    labels = np.asarray(batch["bounding_boxes"]["labels"][0])
    keep = labels >= 0
    target = {"boxes": torch.from_numpy(boxes[keep]),
              "labels": torch.from_numpy(labels[keep].astype("int64") + 1)}  # 0 = background
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.SGD(params, lr=0.01, momentum=0.9)

    def step():
        model.train()
        opt.zero_grad(set_to_none=True)
        loss = sum(model([image], [target]).values())
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, CLIP)
        opt.step()
        return loss

    return (Case("torchvision fasterrcnn_resnet50_fpn", infer, items=1),
            Case("torchvision fasterrcnn_resnet50_fpn step", step, items=1))
