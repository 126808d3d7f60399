"""COCO instances JSON as tf.data: the official `annotations/instances_<split>.json` layout, or
one JSON file as CVAT, Label Studio or Roboflow export it (no `area`, `iscrowd`, `info` or
`licenses`, category ids starting anywhere, the images in one folder, no split)."""

from __future__ import annotations

import json
import os
from collections import defaultdict
from pathlib import Path

import numpy as np
import tensorflow as tf
from tqdm.auto import tqdm

from detection.data import split as splits
from detection.data.coco_checks import annotation_problem, check_structure, image_problem, is_id
from detection.data.records import (
    Record,
    attach,
    clean_boxes,
    drawn_on_stored,
    inspect_images,
    orient,
    records_to_dataset,
)
from detection.data.report import DataReport
from detection.data.segmentations import encode_segmentation, turn_rle
from keras_resnet_suite.file_errors import reading


def load_coco_json(path: str | Path) -> dict:
    """The parsed annotation file; a syntax error names the file, line and column."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"COCO annotation file {path} not found")
    with reading(path, "COCO annotation file"):
        try:
            with open(path, encoding="utf-8") as f:
                data = json.load(f)
        except json.JSONDecodeError as error:
            raise ValueError(f"{path}: malformed JSON at line {error.lineno}, column "
                             f"{error.colno}: {error.msg}") from error
    if not isinstance(data, dict):
        raise ValueError(f"{path}: not a COCO instances file (the top level is a "
                         f"{type(data).__name__}, not an object)")
    missing = [k for k in ("images", "annotations", "categories") if k not in data]
    if missing:
        raise ValueError(f"{path}: not a COCO instances file, missing key(s) {missing}")
    with reading(path, "COCO annotation file"):  # its values may be nested anywhere
        check_structure(data, path)
    return data


def find_coco_files(
    data_dir: str | Path, split: str | None = None, annotation_file: str | Path | None = None,
    image_dir: str | Path | None = None,
) -> tuple[Path, Path | None, bool]:
    """(annotation JSON, image folder or None to find per file, official layout?).

    Official: `data_dir/annotations/instances_<split>.json` and `data_dir/<split>/`.
    Exported: `data_dir` is the JSON file, or a folder holding exactly one JSON (directly or
    in `annotations/`), or `annotation_file` is given.
    """
    data_dir = Path(data_dir).expanduser()
    if annotation_file is not None:
        return Path(annotation_file).expanduser(), _dir(image_dir), False
    if data_dir.is_file():
        return data_dir, _dir(image_dir), False
    if not data_dir.is_dir():
        raise FileNotFoundError(f"COCO data {data_dir} does not exist (a folder or a .json file)")
    official = data_dir / "annotations" / f"instances_{split or 'train2017'}.json"
    if official.is_file() or split not in (None, *splits.SPLITS, *splits.ALIASES):
        folder = Path(image_dir) if image_dir else data_dir / (split or "train2017")
        if not folder.is_dir():
            raise FileNotFoundError(f"COCO image folder {folder} not found")
        return official, folder, True
    found = sorted(data_dir.glob("*.json")) or sorted((data_dir / "annotations").glob("*.json"))
    if len(found) != 1:
        raise FileNotFoundError(
            f"no COCO annotation file in {data_dir}: expected annotations/instances_"
            f"{split or 'train2017'}.json or exactly one *.json in {data_dir} or "
            f"{data_dir / 'annotations'} (found {[p.name for p in found] or 'none'}); pass "
            "annotation_file")
    return found[0], _dir(image_dir), False


def _dir(image_dir: str | Path | None) -> Path | None:
    if image_dir is None:
        return None
    folder = Path(image_dir).expanduser()
    if not folder.is_dir():
        raise FileNotFoundError(f"COCO image folder {folder} (image_dir) not found")
    return folder


def _image_path(folder: Path, file_name: str) -> Path:
    """`folder/file_name`, else `folder/<last part of file_name>` (exports keep foreign paths)."""
    path = folder / file_name
    if path.is_file():
        return path
    name = file_name.replace("\\", "/").rsplit("/", 1)[-1]
    return folder / name if (folder / name).is_file() else path


def _outside(path: Path, folders: list[Path]) -> bool:
    """Whether `path`, read lexically (`..` applied, links not followed: a data folder of
    links stays inside), lies under none of `folders`."""
    where = os.path.normpath(os.path.abspath(path))
    return not any(os.path.commonpath([where, os.path.normpath(os.path.abspath(f))])
                   == os.path.normpath(os.path.abspath(f)) for f in folders)


def _count_outside(used: list[tuple[Path, dict]], folders: list[Path],
                   report: DataReport) -> None:
    """Report each used image whose `file_name` (absolute, or `../` up) leads out of the data
    folders: what real exports write is used, never silently."""
    for path, image in used:
        if _outside(path, folders):
            report.add("outside_data_folder", str(image["file_name"]),
                       f"image id {image['id']}: {os.path.normpath(os.path.abspath(path))} is "
                       f"outside {', '.join(map(str, dict.fromkeys(folders)))}")


def _find_image_dir(json_path: Path, file_names: list[str]) -> Path:
    """The folder beside the JSON that holds most of the first 20 images: the JSON's own, its
    `images/`, the parent's `images/`, or the parent."""
    base = json_path.parent
    candidates = list(dict.fromkeys([base, base / "images", base.parent / "images", base.parent]))
    sample = file_names[:20]
    scores = [sum(_image_path(c, f).is_file() for f in sample) if c.is_dir() else 0
              for c in candidates]
    if not sample:
        return base
    if max(scores) == 0:
        raise FileNotFoundError(f"no image folder found for {json_path}: none of "
                                f"{sample[0]!r}, ... is in " + ", ".join(map(str, candidates))
                                + "; pass image_dir")
    return candidates[scores.index(max(scores))]


def coco_categories(data: dict, report: DataReport | None = None,
                    used: set | None = None) -> list[dict]:
    """The categories that are classes, in id order.

    Exports (Roboflow) add a category that only groups the others (the data set's name, used
    as their `supercategory`) and labels nothing: it is left out, with a note in `report`.
    `used` holds the category ids that label at least one annotation.
    """
    if used is None:
        used = {a.get("category_id") for a in data["annotations"]
                if isinstance(a, dict) and is_id(a.get("category_id"))}
    categories = sorted(data["categories"], key=lambda c: c["id"])
    kept = []
    for c in categories:
        name = str(c.get("name", c["id"]))
        others = [d for d in categories if d is not c and d.get("supercategory") == name]
        if c["id"] not in used and others:
            if report is not None:
                report.note(f"category {c['id']} ({name!r}) labels nothing and is the "
                            f"supercategory of {len(others)} others: not a class, left out")
            continue
        kept.append(c)
    return kept


def _group_objects(data: dict, images: dict, valid_ids: set, category_to_label: dict,
                   skip_crowd: bool, report: DataReport, desc: str, name: str) -> dict:
    """image id -> [(xyxy, label, crowd, area or NaN, annotation id, segmentation)] of the
    usable annotations of `images`."""
    objects = defaultdict(list)
    seen: dict = {}  # annotation id -> its index, for repeats
    for k, ann in enumerate(tqdm(data["annotations"], desc=desc, leave=False)):
        problem = annotation_problem(k, ann)
        if problem is not None:
            report.add("malformed_annotation", name, problem)
            continue
        where = f"annotations[{k}] (id {ann.get('id')})"
        if is_id(ann.get("id")):
            if ann["id"] in seen:  # pycocotools would keep only one of them
                report.add("malformed_annotation", name, f"annotations[{k}].id: {ann['id']!r} "
                           f"is also annotations[{seen[ann['id']]}].id (skipped)")
                continue
            seen[ann["id"]] = k
        box = [float(v) for v in ann["bbox"]]
        if ann["image_id"] not in images:
            if ann["image_id"] not in valid_ids:
                report.add("malformed_annotation", name,
                           f"annotations[{k}].image_id (id {ann.get('id')}): unknown image_id "
                           f"{ann['image_id']}")
            continue  # else: an image of the other split
        if ann["category_id"] not in category_to_label:
            report.add("unknown_class", name, f"{where}: category_id {ann['category_id']}")
            continue
        crowd = bool(ann.get("iscrowd") or 0)
        if skip_crowd and crowd:
            continue
        x, y, w, h = box
        area = ann.get("area")
        if area is None:
            report.add("area_from_box", name, f"{where}")
        label = category_to_label[ann["category_id"]]
        objects[ann["image_id"]].append(
            ([x, y, x + w, y + h], label, crowd, float("nan") if area is None else float(area),
             ann.get("id"), ann.get("segmentation")))

    return objects


def coco_records(
    data_dir: str | Path,
    split: str | None = None,
    report: DataReport | None = None,
    skip_empty: bool = False,
    skip_crowd: bool = False,
    verify_images: bool = False,
    annotation_file: str | Path | None = None,
    image_dir: str | Path | None = None,
    val_fraction: float = 0.2,
    split_seed: int = 0,
    masks: bool = False,
) -> tuple[list[Record], DataReport, dict]:
    """Parse a COCO split into records plus `{"class_names", "category_ids"}`.

    Category ids (sparse, starting anywhere) map to contiguous labels 0..C-1 in id order, names
    kept; COCO's `[x, y, w, h]` becomes xyxy; `area` is the annotation's own (segment) area,
    which pycocotools uses for the small/medium/large ranges, or, where an export left it out,
    the box area (reported as `area_from_box`); a missing `iscrowd` is 0; fields this loader
    does not use are ignored. An exported JSON (see `find_coco_files`) has no split: `split`
    is None/"all" for every image, or "train"/"val" of a seeded split of the image ids
    (`val_fraction`, `split_seed`). `masks=True` checks and encodes each object's
    `segmentation` (polygons, RLE, crowd RLE) into `Record.masks`; an object whose segmentation
    is broken is skipped and counted as `bad_segmentation` with its annotation id.
    """
    ann_path, image_dir, official = find_coco_files(data_dir, split, annotation_file, image_dir)
    data = load_coco_json(ann_path)
    split = (split or "train2017") if official else (split or "all")
    report = report if report is not None else DataReport(
        f"COCO {split}" if official else f"{ann_path} {split}")
    name = ann_path.name

    categories = coco_categories(data, report)
    category_ids = [int(c["id"]) for c in categories]
    class_names = [str(c.get("name", c["id"])) for c in categories]
    category_to_label = {cid: i for i, cid in enumerate(category_ids)}
    report.known_classes = class_names

    images, skipped_ids = {}, set()
    for k, image in enumerate(data["images"]):
        problem = image_problem(k, image)
        if problem is not None:
            report.add("malformed_annotation", name, problem)
            if isinstance(image, dict) and is_id(image.get("id")):
                skipped_ids.add(image["id"])  # its annotations go with it, without a word more
            continue
        images[image["id"]] = image
    valid_ids = set(images) | skipped_ids
    if not official:
        ids = splits.seeded_split([str(i) for i in images], split, val_fraction, split_seed)
        if splits.ALIASES.get(split, split) != "all":
            report.note(splits.describe([str(i) for i in images], val_fraction, split_seed,
                                        "images") + f"; this is {split!r} ({len(ids)})")
        chosen_ids = set(ids)
        images = {i: im for i, im in images.items() if str(i) in chosen_ids}
        if image_dir is None:
            image_dir = _find_image_dir(ann_path, [str(im["file_name"]) for im in images.values()])
    objects = _group_objects(data, images, valid_ids, category_to_label, skip_crowd, report,
                             f"COCO {split}", name)
    chosen = [im for im in images.values() if objects[im["id"]] or not skip_empty]
    paths = [_image_path(image_dir, str(im["file_name"])) for im in chosen]
    infos = inspect_images(paths, report, verify_images)  # a non-image is skipped, as anywhere
    _count_outside([(p, im) for p, im, info in zip(paths, chosen, infos, strict=True) if info],
                   [image_dir, ann_path.parent], report)
    records = []
    for image, info in zip(chosen, infos, strict=True):
        record = None if info is None else _record(image, info, objects[image["id"]],
                                                   image_dir, skip_empty, report, masks)
        if record is not None:
            records.append(record)
    report.num_images += len(records)
    report.num_objects += sum(len(r.labels) for r in records)
    meta = {"class_names": class_names, "category_ids": category_ids}
    return records, report, meta


def _record(image: dict, info, objs: list, image_dir: Path, skip_empty: bool,
            report: DataReport, masks: bool = False) -> Record | None:
    declared = (image.get("width"), image.get("height"))
    declared = None if None in declared else (int(declared[0]), int(declared[1]))
    raw = np.array([o[0] for o in objs], np.float32).reshape(-1, 4)
    file = str(image["file_name"])
    turned = drawn_on_stored(info, declared)
    (width, height), raw = orient(info, declared, raw, report, file)
    boxes, keep = clean_boxes(raw, width, height, report, file)
    rles = _encode_masks(objs, keep, info, turned, report, file) if masks else None
    if skip_empty and not keep.any():
        return None
    area = np.array([o[3] for o in objs], np.float32).reshape(-1)
    box_area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    area = np.where(np.isnan(area), box_area, area)  # exports without `area`
    return Record(
        image_path=str(_image_path(image_dir, file)), image_id=str(image["id"]),
        width=width, height=height, boxes=boxes[keep],
        labels=np.array([o[1] for o in objs], np.int32)[keep],
        difficult=np.zeros(int(keep.sum()), bool),
        iscrowd=np.array([o[2] for o in objs], bool)[keep],
        area=area[keep].astype(np.float32), orientation=info.orientation,
        masks=None if rles is None else [r for r, k in zip(rles, keep, strict=True) if k])


def _encode_masks(objs: list, keep: np.ndarray, info, turned: bool, report: DataReport,
                  file: str) -> list:
    """Each kept object's mask as a compressed RLE in the upright frame; an object whose
    segmentation is broken is dropped from `keep` (in place) with a `bad_segmentation` entry.

    Segmentations are in the frame the boxes were drawn in: the stored pixels when `turned`
    (then turned upright like the image), else the upright photo.
    """
    width, height = (info.width, info.height) if turned else info.upright_size
    rles = []
    for i, obj in enumerate(objs):
        rle = None
        if keep[i]:
            rle, problem = encode_segmentation(obj[5], height, width)
            if problem is not None:
                keep[i] = False
                report.add("bad_segmentation", file, f"annotation id {obj[4]}: {problem}")
            elif turned:
                rle = turn_rle(rle, info.orientation)
        rles.append(rle)
    return rles


def coco(
    data_dir: str | Path,
    split: str | None = None,
    shuffle: bool = False,
    seed: int | None = None,
    report: DataReport | None = None,
    skip_empty: bool = False,
    skip_crowd: bool = False,
    verify_images: bool = False,
    annotation_file: str | Path | None = None,
    image_dir: str | Path | None = None,
    verbose: bool = True,
    val_fraction: float = 0.2,
    split_seed: int = 0,
    masks: bool = False,
) -> tf.data.Dataset:
    """COCO instances (official layout or a tool's exported JSON) as tf.data in the agreed
    element format. `data_dir` is the COCO root, a folder with one exported JSON, or the JSON.

    `masks=True` adds `"masks"`: uint8 0/1 [M, H, W], one per box in the boxes' order, at the
    image's (upright) size, from polygons, RLE or crowd RLE (see `coco_records`).

    The dataset carries `class_names`, `report`, `num_examples`, `category_ids`,
    `label_to_category` and `category_to_label` (to write results with the file's own ids).
    """
    records, report, meta = coco_records(data_dir, split, report, skip_empty, skip_crowd,
                                         verify_images, annotation_file, image_dir,
                                         val_fraction, split_seed, masks)
    if verbose:
        print(report.summary())
    ids = meta["category_ids"]
    ds = records_to_dataset(records, shuffle=shuffle, seed=seed, masks=masks)
    return attach(ds, class_names=meta["class_names"], report=report, num_examples=len(records),
                  category_ids=ids, label_to_category=dict(enumerate(ids)),
                  category_to_label={c: i for i, c in enumerate(ids)})
