"""COCO from the official `annotations/instances_<split>.json` and image folder, as tf.data."""

from __future__ import annotations

import json
import math
from collections import defaultdict
from pathlib import Path

import numpy as np
import tensorflow as tf
from tqdm.auto import tqdm

from detection.data.records import Record, attach, check_images, clean_boxes, records_to_dataset
from detection.data.report import DataReport


def load_coco_json(path: str | Path) -> dict:
    """The parsed annotation file; a syntax error names the file, line and column."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"COCO annotation file {path} not found")
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except json.JSONDecodeError as error:
        raise ValueError(f"{path}: malformed JSON at line {error.lineno}, column {error.colno}: "
                         f"{error.msg}") from error
    missing = [k for k in ("images", "annotations", "categories") if k not in data]
    if missing:
        raise ValueError(f"{path}: not a COCO instances file, missing key(s) {missing}")
    return data


def _bbox(ann: dict) -> list[float] | None:
    box = ann.get("bbox")
    if not isinstance(box, (list, tuple)) or len(box) != 4:
        return None
    try:
        box = [float(v) for v in box]
    except (TypeError, ValueError):
        return None
    return box if all(math.isfinite(v) for v in box) else None


def coco_records(
    data_dir: str | Path,
    split: str = "train2017",
    report: DataReport | None = None,
    skip_empty: bool = False,
    skip_crowd: bool = False,
    verify_images: bool = False,
    annotation_file: str | Path | None = None,
    image_dir: str | Path | None = None,
) -> tuple[list[Record], DataReport, dict]:
    """Parse a COCO split into records plus `{"class_names", "category_ids"}`.

    Category ids (sparse, 1..90) map to contiguous labels 0..C-1 in id order; COCO's
    `[x, y, w, h]` becomes xyxy; `area` is the annotation's own (segment) area, which
    pycocotools uses for the small/medium/large ranges; crowd regions keep `iscrowd`.
    """
    data_dir = Path(data_dir).expanduser()
    ann_path = Path(annotation_file) if annotation_file else (
        data_dir / "annotations" / f"instances_{split}.json")
    image_dir = Path(image_dir) if image_dir else data_dir / split
    if not image_dir.is_dir():
        raise FileNotFoundError(f"COCO image folder {image_dir} not found")
    data = load_coco_json(ann_path)
    report = report if report is not None else DataReport(f"COCO {split}")
    name = ann_path.name

    categories = sorted(data["categories"], key=lambda c: c["id"])
    category_ids = [int(c["id"]) for c in categories]
    class_names = [str(c.get("name", c["id"])) for c in categories]
    category_to_label = {cid: i for i, cid in enumerate(category_ids)}
    report.known_classes = class_names

    images = {}
    for k, image in enumerate(data["images"]):
        if "id" not in image or "file_name" not in image:
            report.add("malformed_annotation", name, f"images[{k}]: needs 'id' and 'file_name'")
            continue
        images[image["id"]] = image
    objects = defaultdict(list)
    for k, ann in enumerate(tqdm(data["annotations"], desc=f"COCO {split}", leave=False)):
        where = f"annotations[{k}] (id {ann.get('id')})"
        box = _bbox(ann)
        if ann.get("image_id") not in images or box is None:
            problem = "bbox must be 4 finite numbers" if box is None else (
                f"unknown image_id {ann.get('image_id')}")
            report.add("malformed_annotation", name, f"{where}: {problem}")
            continue
        if ann.get("category_id") not in category_to_label:
            report.add("unknown_class", name, f"{where}: category_id {ann.get('category_id')}")
            continue
        crowd = bool(ann.get("iscrowd", 0))
        if skip_crowd and crowd:
            continue
        x, y, w, h = box
        area = float(ann.get("area", w * h))
        label = category_to_label[ann["category_id"]]
        objects[ann["image_id"]].append(([x, y, x + w, y + h], label, crowd, area))

    chosen = [im for im in images.values() if objects[im["id"]] or not skip_empty]
    sizes = check_images([image_dir / im["file_name"] for im in chosen], report, verify_images)
    records = []
    for image, size in zip(chosen, sizes, strict=True):
        if size is None:
            continue
        declared = (image.get("width"), image.get("height"))
        if None not in declared and tuple(declared) != size:
            report.add("size_mismatch", image["file_name"],
                       f"annotated {declared[0]}x{declared[1]}, file {size[0]}x{size[1]}")
        objs = objects[image["id"]]
        raw = np.array([o[0] for o in objs], np.float32).reshape(-1, 4)
        boxes, keep = clean_boxes(raw, size[0], size[1], report, image["file_name"])
        if skip_empty and not keep.any():
            continue
        records.append(Record(
            image_path=str(image_dir / image["file_name"]), image_id=str(image["id"]),
            width=size[0], height=size[1], boxes=boxes[keep],
            labels=np.array([o[1] for o in objs], np.int32)[keep],
            difficult=np.zeros(int(keep.sum()), bool),
            iscrowd=np.array([o[2] for o in objs], bool)[keep],
            area=np.array([o[3] for o in objs], np.float32)[keep],
        ))
    report.num_images += len(records)
    report.num_objects += sum(len(r.labels) for r in records)
    meta = {"class_names": class_names, "category_ids": category_ids}
    return records, report, meta


def coco(
    data_dir: str | Path,
    split: str = "train2017",
    shuffle: bool = False,
    seed: int | None = None,
    report: DataReport | None = None,
    skip_empty: bool = False,
    skip_crowd: bool = False,
    verify_images: bool = False,
    annotation_file: str | Path | None = None,
    image_dir: str | Path | None = None,
    verbose: bool = True,
) -> tf.data.Dataset:
    """COCO instances as tf.data in the agreed element format.

    The dataset carries `class_names`, `report`, `num_examples`, `category_ids`,
    `label_to_category` and `category_to_label` (to write results with COCO's own ids).
    """
    records, report, meta = coco_records(data_dir, split, report, skip_empty, skip_crowd,
                                         verify_images, annotation_file, image_dir)
    if verbose:
        print(report.summary())
    ids = meta["category_ids"]
    ds = records_to_dataset(records, shuffle=shuffle, seed=seed)
    return attach(ds, class_names=meta["class_names"], report=report, num_examples=len(records),
                  category_ids=ids, label_to_category=dict(enumerate(ids)),
                  category_to_label={c: i for i, c in enumerate(ids)})
