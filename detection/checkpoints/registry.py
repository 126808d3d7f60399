"""Pretrained COCO Faster R-CNN and Mask R-CNN checkpoints of torchvision and detectron2:
where each file lives, how it is verified, and what it needs (architecture, preprocessing
preset, class layout, published box AP and, for Mask R-CNN, mask AP).

Sources (checked against the publishers' code):
- torchvision 0.29 `models/detection/faster_rcnn.py`: `FasterRCNN_ResNet50_FPN_Weights
  .COCO_V1` and `FasterRCNN_ResNet50_FPN_V2_Weights.COCO_V1` (URL and `box_map`);
  `models/detection/mask_rcnn.py`: `MaskRCNN_ResNet50_FPN_Weights.COCO_V1` and
  `MaskRCNN_ResNet50_FPN_V2_Weights.COCO_V1` (URL, `box_map` and `mask_map`).
- detectron2 `detectron2/model_zoo/model_zoo.py` (`_ModelZooUrls`: S3 prefix + config path +
  `<model id>/model_final_<suffix>.pkl`) and `MODEL_ZOO.md` (box AP on COCO val2017; the
  "COCO Instance Segmentation Baselines with Mask R-CNN" table for box AP and mask AP), at
  commit 02b5c4e295e990042a714712c21dc79b731e8833.

Hashes: torchvision names each file after the first 8 hex digits of its SHA-256. detectron2
publishes no separate checksum; `MODEL_ZOO.md` states that each file name "contains its md5
prefix" (6 hex digits), so that prefix is checked as an MD5 digest prefix. It is only 24 bits
(and `model_zoo.py` calls the suffix a "commit"): it catches truncated or corrupt downloads,
not a deliberately substituted file.
"""

from __future__ import annotations

import difflib
import os
from dataclasses import dataclass

from .coco_classes import num_classes

LIBRARIES = ("torchvision", "detectron2")
PRESETS = ("torchvision", "torchvision_v2", "detectron2")


@dataclass(frozen=True)
class DetectorCheckpoint:
    """One published COCO detector and everything needed to download and use it.

    `file_hash` is a prefix of the file's `hash_algorithm` digest (see the module docstring
    for what each publisher gives); `box_ap` is the publisher's COCO val2017 box AP (percent),
    `mask_ap` its mask AP (None for a box-only detector); `masks` tells a Mask R-CNN
    checkpoint (it holds mask head weights: `detection.MaskRCNN.from_checkpoint`).
    `source` names the publisher's weights enum or config; `class_layout` is a key of
    `coco_classes.LAYOUTS`. The fields `url`, `filename`, `file_hash`, `hash_algorithm` and
    `name` are what `keras_resnet_suite.weights.fetch` / `verify` read.
    """

    name: str
    library: str  # "torchvision" | "detectron2"
    url: str
    file_hash: str
    hash_algorithm: str  # "sha256" | "md5"
    box_ap: float
    backbone: str  # "resnet50" | "resnet101"
    head: str  # "fpn" | "c4"
    variant: str | None  # torchvision's "v1" / "v2"; None for detectron2
    preset: str  # detector preset of the model builder: one of PRESETS
    class_layout: str  # "coco91" | "coco80"
    source: str = ""
    mask_ap: float | None = None
    masks: bool = False

    @property
    def filename(self) -> str:
        """The cache file name: the URL's, prefixed by the config for detectron2's
        `model_final_*.pkl` (their basenames say nothing of the model)."""
        base = self.url.rsplit("/", 1)[-1]
        if self.library == "detectron2" and base.startswith("model_final"):
            config, model_id = self.url.split("/")[-3:-1]
            return f"detectron2-{config}-{model_id}-{base}"
        return base

    @property
    def num_classes(self) -> int:
        """Foreground classes of the box predictor (90 torchvision slots, 80 detectron2)."""
        return num_classes(self.class_layout)


_TV = "https://download.pytorch.org/models/"
_D2 = "https://dl.fbaipublicfiles.com/detectron2/"


def _tv(variant: str, file: str, box_ap: float, source: str,
        mask_ap: float | None = None) -> DetectorCheckpoint:
    kind = "maskrcnn" if mask_ap is not None else "fasterrcnn"
    name = f"{kind}_resnet50_fpn" + ("_v2" if variant == "v2" else "")
    return DetectorCheckpoint(
        f"torchvision/{name}", "torchvision", _TV + file, file.rsplit("-", 1)[1].split(".")[0],
        "sha256", box_ap, "resnet50", "fpn", variant,
        "torchvision_v2" if variant == "v2" else "torchvision", "coco91", source, mask_ap,
        mask_ap is not None)


def _d2(config: str, model_id: str, suffix: str, box_ap: float,
        mask_ap: float | None = None) -> DetectorCheckpoint:
    # faster_rcnn_R_<depth>_<head>_<schedule> / mask_rcnn_R_<depth>_<head>_<schedule>
    depth, head = config.split("_")[3:5]
    folder = "COCO-Detection" if mask_ap is None else "COCO-InstanceSegmentation"
    return DetectorCheckpoint(
        f"detectron2/{config}", "detectron2",
        f"{_D2}{folder}/{config}/{model_id}/model_final_{suffix}.pkl", suffix, "md5", box_ap,
        f"resnet{depth}", head.lower(), None, "detectron2", "coco80",
        f"{folder}/{config}.yaml", mask_ap, mask_ap is not None)


CHECKPOINTS: dict[str, DetectorCheckpoint] = {c.name: c for c in [
    _tv("v1", "fasterrcnn_resnet50_fpn_coco-258fb6c6.pth", 37.0,
        "FasterRCNN_ResNet50_FPN_Weights.COCO_V1"),
    _tv("v2", "fasterrcnn_resnet50_fpn_v2_coco-dd69338a.pth", 46.7,
        "FasterRCNN_ResNet50_FPN_V2_Weights.COCO_V1"),
    _d2("faster_rcnn_R_50_C4_1x", "137257644", "721ade", 35.7),
    _d2("faster_rcnn_R_50_C4_3x", "137849393", "f97cb7", 38.4),
    _d2("faster_rcnn_R_101_C4_3x", "138204752", "298dad", 41.1),
    _d2("faster_rcnn_R_50_FPN_3x", "137849458", "280758", 40.2),
    _d2("faster_rcnn_R_101_FPN_3x", "137851257", "f6e8b1", 42.0),
    _tv("v1", "maskrcnn_resnet50_fpn_coco-bf2d0c1e.pth", 37.9,
        "MaskRCNN_ResNet50_FPN_Weights.COCO_V1", mask_ap=34.6),
    _tv("v2", "maskrcnn_resnet50_fpn_v2_coco-73cbd019.pth", 47.4,
        "MaskRCNN_ResNet50_FPN_V2_Weights.COCO_V1", mask_ap=41.8),
    _d2("mask_rcnn_R_50_C4_1x", "137259246", "9243eb", 36.8, mask_ap=32.2),
    _d2("mask_rcnn_R_50_C4_3x", "137849525", "4ce675", 39.8, mask_ap=34.4),
    _d2("mask_rcnn_R_101_C4_3x", "138363239", "a2914c", 42.6, mask_ap=36.7),
    _d2("mask_rcnn_R_50_FPN_1x", "137260431", "a54504", 38.6, mask_ap=35.2),
    _d2("mask_rcnn_R_50_FPN_3x", "137849600", "f10217", 41.0, mask_ap=37.2),
    _d2("mask_rcnn_R_101_FPN_3x", "138205316", "a3ec72", 42.9, mask_ap=38.6),
]}

CHECKPOINT_SUFFIXES = (".pth", ".pt", ".pkl", ".th", ".bin", ".safetensors")


def names() -> list[str]:
    """The registered checkpoint names, for help texts and error messages."""
    return sorted(CHECKPOINTS)


def get(name: str) -> DetectorCheckpoint:
    """The registered checkpoint `name`; an unknown name lists the known ones."""
    if name in CHECKPOINTS:
        return CHECKPOINTS[name]
    short = {n.split("/", 1)[1]: n for n in CHECKPOINTS}
    close = difflib.get_close_matches(name, list(CHECKPOINTS), n=1, cutoff=0.6) or \
        [short[m] for m in difflib.get_close_matches(name, list(short), n=1, cutoff=0.6)]
    hint = f" Did you mean {close[0]!r}?" if close else ""
    raise ValueError(f"no detector checkpoint named {name!r}.{hint} Known: "
                     f"{', '.join(names())} (or pass a local .pth/.pkl file path)")


def register(checkpoint: DetectorCheckpoint) -> DetectorCheckpoint:
    """Add (or replace) a checkpoint, e.g. a mirror or an in-house fine-tune."""
    if checkpoint.library not in LIBRARIES or checkpoint.preset not in PRESETS:
        raise ValueError(f"{checkpoint.name}: library must be one of {LIBRARIES} and preset "
                         f"one of {PRESETS}")
    CHECKPOINTS[checkpoint.name] = checkpoint
    return checkpoint


def fetch_checkpoint(checkpoint: DetectorCheckpoint | str) -> str:
    """The checkpoint's local file: downloaded once into `cache_dir()/downloads` (or
    `$KRS_WEIGHTS_DIR/downloads`) and hash-checked on every call; offline, the error names
    the URL and the exact path to place the file at."""
    from keras_resnet_suite.weights import fetch  # TensorFlow loads only when downloading

    if isinstance(checkpoint, str):
        checkpoint = get(checkpoint)
    return fetch(checkpoint)


def _published(path: str) -> DetectorCheckpoint | None:
    """The registered checkpoint a local file is (same file name and matching hash)."""
    from keras_resnet_suite.weights import verify

    base = os.path.basename(path)
    for checkpoint in CHECKPOINTS.values():
        if base in (checkpoint.filename, checkpoint.url.rsplit("/", 1)[-1]):
            try:
                verify(path, checkpoint)
            except ValueError:
                return None
            return checkpoint
    return None


def resolve(name_or_path: str | os.PathLike | DetectorCheckpoint,
            ) -> tuple[DetectorCheckpoint | None, str]:
    """(checkpoint or None, local file) for a registry name, a checkpoint or a local file.

    A local file is returned as is (its library is told by `readers.read_checkpoint` from its
    content), with its registered checkpoint when it is a published file; a path that does not
    exist is a FileNotFoundError, an unknown name a ValueError listing the known ones.
    """
    if isinstance(name_or_path, DetectorCheckpoint):
        return name_or_path, fetch_checkpoint(name_or_path)
    text = os.fspath(name_or_path)
    if text in CHECKPOINTS:
        return CHECKPOINTS[text], fetch_checkpoint(CHECKPOINTS[text])
    if os.path.isfile(text):
        return _published(text), text
    looks_like_file = (os.sep in text and text.split("/", 1)[0] not in LIBRARIES) or \
        text.endswith(CHECKPOINT_SUFFIXES) or not isinstance(name_or_path, str)
    if looks_like_file:
        raise FileNotFoundError(f"{text}: no such checkpoint file (registered checkpoints: "
                                f"{', '.join(names())})")
    return get(text), fetch_checkpoint(get(text))
