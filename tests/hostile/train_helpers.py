"""A tiny VOC set and detector config for the hostile-input training tests (imported by name)."""

from pathlib import Path

import yaml

TINY_BACKBONE = {"depths": [1, 1, 1, 1], "widths": [8, 16, 32, 64], "stem_width": 8}


def tiny_config(tmp_path: Path, data: dict | None = None, **train) -> dict:
    """A raw detection config: a 64 px ResNet-18-layout C4 detector on an 8-image train and
    3-image val VOC set written under `tmp_path/data` (4 steps of 2 images = one epoch)."""
    from detection.data.synthetic import CLASS_NAMES, write_voc

    root = tmp_path / "data"
    if not (root / "VOC2007").exists():
        for split, n in (("train", 8), ("val", 3)):
            write_voc(root / "VOC2007", n, split, image_size=64, seed=1)
    voc = {"loader": "voc", "data_dir": str(root), "year": 2007}
    return {
        "name": "tiny",
        "model": {"backbone": "resnet18", "backbone_kwargs": TINY_BACKBONE, "head": "c4",
                  "image_size": [64, 64], "anchor_sizes": [16, 32],
                  "rpn_pre_nms_topk": [200, 100], "rpn_post_nms_topk": [32, 16],
                  "rpn_batch_size": 64, "roi_batch_size": 16, "roi_pooled_size": 6,
                  "max_detections": 10, "fc_dims": [32], "seed": 0},
        "data": {"class_names": list(CLASS_NAMES), "train": {**voc, "split": "train"},
                 "eval": {**voc, "split": "val"}, "augment": {"flip": False},
                 "max_boxes": 4, "seed": 0, **(data or {})},
        "train": {"batch_size": 2, "optimizer": "sgd", "learning_rate": 0.01, "steps": 4,
                  "checkpoint_every": 2, "distribution": "none", **train},
        "eval": {"metric": "voc", "iou_threshold": 0.5},
    }


def write_config(tmp_path: Path, raw: dict, name: str = "run.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(raw))
    return path
