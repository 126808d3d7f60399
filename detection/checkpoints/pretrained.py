"""Published detector weights, loaded into a detector it is given.

A checkpoint (a registry name or a local `.pth`/`.pkl`) says which library made it and so
its `Architecture`; `read` returns both with the state dict. The factories
`detection.FasterRCNN.from_checkpoint` and `detection.MaskRCNN.from_checkpoint` (a checkpoint
with mask head weights) sit above this layer: each builds the preset's architecture
(`detection.checkpoints.presets`) and calls `load_state`, which copies the
weights, and `describe`, which gives the model its COCO class names and official category ids
(`model.class_names`, `model.category_ids`). `at_image_size` gives the same weights on another
canvas, which is how a run matches the reference exactly image by image.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

from detection.checkpoints import coco_classes, convert, presets, readers, registry


@dataclass(frozen=True)
class Architecture:
    """What must be built for a checkpoint: library, preset, backbone, head and classes."""

    library: str
    preset: str
    backbone: str
    head: str
    num_classes: int
    class_layout: str | None  # "coco91" | "coco80" | None (own classes)
    name: str = ""
    masks: bool = False  # a Mask R-CNN checkpoint (mask head weights)

    @classmethod
    def of(cls, ckpt: registry.DetectorCheckpoint) -> Architecture:
        return cls(ckpt.library, ckpt.preset, ckpt.backbone, ckpt.head, ckpt.num_classes,
                   ckpt.class_layout, ckpt.name, ckpt.masks)


def infer_architecture(library: str, state: dict, name: str = "") -> Architecture:
    """The architecture of a state dict from its keys (for files outside the registry)."""
    keys = set(state)
    if library == "torchvision":
        preset, head = ("torchvision_v2" if "rpn.head.conv.1.0.weight" in keys
                        else "torchvision"), "fpn"
        blocks = {k.split(".")[3] for k in keys if k.startswith("backbone.body.layer3.")}
        rows = state["roi_heads.box_predictor.cls_score.weight"].shape[0] - 1
        layout = "coco91" if rows == 90 else None
    else:
        preset = "detectron2"
        head = "c4" if any(k.startswith("roi_heads.res5.") for k in keys) else "fpn"
        prefix = "backbone.res4." if head == "c4" else "backbone.bottom_up.res4."
        blocks = {k[len(prefix):].split(".")[0] for k in keys if k.startswith(prefix)}
        rows = state["roi_heads.box_predictor.cls_score.weight"].shape[0] - 1
        layout = "coco80" if rows == 80 else None
    depth = {6: "resnet50", 23: "resnet101", 36: "resnet152"}.get(len(blocks))
    if depth is None:
        raise ValueError(f"{name or 'checkpoint'}: a ResNet with {len(blocks)} conv4_x blocks "
                         "is none of ResNet-50/101/152")
    masks = any(k.startswith(convert.MASK_PREFIXES) for k in keys)
    return Architecture(library, preset, depth, head, int(rows), layout, name, masks)


def describe(model, arch: Architecture, overrides: dict) -> None:
    """Give a detector built for `arch` what it knows about itself: the architecture, the
    build options that differ from the preset, its class names and category ids."""
    model.architecture = arch
    model.build_overrides = dict(overrides)
    if arch.class_layout:
        model.class_names = coco_classes.class_names(arch.class_layout)
        model.category_ids = coco_classes.category_ids(arch.class_layout)
    else:
        model.class_names = [f"class_{k}" for k in range(arch.num_classes)]
        model.category_ids = list(range(1, arch.num_classes + 1))


def load_state(model, state: dict, arch: Architecture, source: str = "checkpoint") -> None:
    """Copy a checkpoint's state dict (numpy, the library's names) into `model`, a detector
    built for `arch` (`FasterRCNN.from_architecture`). A Mask R-CNN checkpoint loaded into a
    detector without a mask head (a `FasterRCNN`) gives it its box parts: the mask head's
    weights are left out, with a note."""
    if arch.library == "torchvision":
        state = readers.normalize_torchvision_keys(state)
    if arch.masks and getattr(model, "mask_head", None) is None:
        dropped = [k for k in state if k.startswith(convert.MASK_PREFIXES)]
        state = {k: v for k, v in state.items() if not k.startswith(convert.MASK_PREFIXES)}
        print(f"note: {source} is a Mask R-CNN checkpoint; {type(model).__name__} takes its "
              f"box parts and leaves out the mask head ({len(dropped)} tensors; "
              "detection.MaskRCNN.from_checkpoint loads them)")
    convert.load_state(model, state, arch.library, source=source,
                       bn_epsilon=presets.BN_EPSILON[arch.preset])


def read(name_or_path: str | os.PathLike, masks: bool = False,
         ) -> tuple[Architecture, dict, str]:
    """`(architecture, state dict, source)` of a registered checkpoint (downloaded once into
    the weights cache, hash checked) or of a local torchvision `.pth` / detectron2 `.pkl`.
    `masks=True` (a Mask R-CNN is to be built) refuses a box-only checkpoint in one line,
    before downloading a registered one."""
    named = name_or_path if isinstance(name_or_path, registry.DetectorCheckpoint) else \
        registry.CHECKPOINTS.get(name_or_path) if isinstance(name_or_path, str) else None
    if masks and named is not None and not named.masks:
        raise _box_only(named.name)
    ckpt, path = registry.resolve(name_or_path)
    library, state = readers.read_checkpoint(path)
    arch = Architecture.of(ckpt) if ckpt else infer_architecture(library, state, str(path))
    if arch.library != library:
        raise ValueError(f"{path}: holds a {library} state dict, but {arch.name} is a "
                         f"{arch.library} checkpoint")
    if masks and not arch.masks:
        raise _box_only(str(path))
    return arch, state, str(path)


def _box_only(source: str) -> ValueError:
    masked = [c.name for c in registry.CHECKPOINTS.values() if c.masks]
    return ValueError(f"{source}: a Faster R-CNN checkpoint (no mask head weights) cannot make "
                      f"a MaskRCNN; use FasterRCNN.from_checkpoint, or a Mask R-CNN checkpoint: "
                      f"{', '.join(sorted(masked))}")


def at_image_size(model, image_size: tuple[int, int]):
    """The same detector (weights copied) on another canvas, built by the model's own class
    (`from_architecture`), so this layer never imports the detector."""
    image_size = tuple(int(s) for s in image_size)
    if image_size == tuple(model.image_size):
        return model
    other = type(model).from_architecture(model.architecture, image_size,
                                          **model.build_overrides)
    other.set_weights(model.get_weights())
    return other


class ReferenceSizes:
    """Runs each image on the canvas its reference library would use (`presets.
    reference_size`), building one model per canvas size (weights copied, the last
    `max_models` kept): exact reference behaviour for any mix of image sizes.

    `class_names` (e.g. a data set's) renumbers the classes by name: detections of classes
    it lacks are dropped. `predict(images)` has `FasterRCNN.predict`'s interface, so
    `detection.evaluation.evaluate_dataset` can score it.
    """

    def __init__(self, model, max_models: int = 4, class_names=None):
        self.model = model
        self.max_models = max_models
        self._models: dict = {}
        self.class_names = list(class_names) if class_names else list(model.class_names)
        index = {name: k for k, name in enumerate(self.class_names)}
        self._remap = np.array([index.get(name, -1) for name in model.class_names])
        if not (self._remap >= 0).any():
            raise ValueError(f"none of the checkpoint's classes ({model.class_names[:5]}, ...) "
                             f"is among {self.class_names[:5]}, ...")

    def canvas(self, height: int, width: int) -> tuple[int, int]:
        arch, transform = self.model.architecture, self.model.transform
        return presets.reference_size(arch.preset, arch.head, height, width,
                                      transform.min_size, transform.max_size)

    def model_for(self, height: int, width: int):
        size = self.canvas(height, width)
        if size not in self._models:
            if len(self._models) >= self.max_models:
                self._models.pop(next(iter(self._models)))
            self._models[size] = at_image_size(self.model, size)
        return self._models[size]

    def __call__(self, image) -> dict:
        """Detections (numpy, input pixels, only the valid rows) of one `[H, W, 3]` image, with
        `"masks"` (box-relative) for a `MaskRCNN`."""
        model = self.model_for(*image.shape[:2])
        out = {k: np.asarray(v)[0] for k, v in
               model.predict(np.asarray(image, "float32")[None], verbose=0).items()}
        n = int(out["num_detections"])
        classes = self._remap[out["classes"][:n]]
        keep = classes >= 0
        dets = {"boxes": out["boxes"][:n][keep], "scores": out["scores"][:n][keep],
                "classes": classes[keep]}
        if "masks" in out:  # a MaskRCNN's box-relative mask probabilities
            dets["masks"] = out["masks"][:n][keep]
        return dets

    def predict(self, images, verbose: int = 0) -> dict:
        """Batched padded detections of `images [B, H, W, 3]`, one image at a time."""
        dets = [self(image) for image in np.asarray(images)]
        size = self.model.roi_heads.max_detections
        out = {"boxes": np.zeros((len(dets), size, 4), "float32"),
               "scores": np.zeros((len(dets), size), "float32"),
               "classes": np.full((len(dets), size), -1, "int64"),
               "num_detections": np.array([len(d["scores"]) for d in dets], "int32")}
        if dets and "masks" in dets[0]:
            out["masks"] = np.zeros((len(dets), size, *dets[0]["masks"].shape[1:]), "float32")
        for b, d in enumerate(dets):
            for key in out.keys() - {"num_detections"}:
                out[key][b, :len(d["scores"])] = d[key]
        return out
