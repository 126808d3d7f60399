"""PASCAL VOC from a VOCdevkit tree: XML parsed up front (reported), images decoded in tf.data."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import tensorflow as tf
from tqdm.auto import tqdm

from detection.data.records import Record, attach, check_images, clean_boxes, records_to_dataset
from detection.data.report import DataReport

VOC_CLASSES = (
    "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa",
    "train", "tvmonitor",
)


def find_voc_root(data_dir: str | Path, year: int) -> Path:
    """The `VOC<year>` folder: `data_dir`, `data_dir/VOC<year>` or `.../VOCdevkit/VOC<year>`."""
    data_dir = Path(data_dir).expanduser()
    candidates = [data_dir, data_dir / f"VOC{year}", data_dir / "VOCdevkit" / f"VOC{year}"]
    for path in candidates:
        if (path / "Annotations").is_dir():
            return path
    raise FileNotFoundError(
        f"no PASCAL VOC {year} tree under {data_dir}: looked for an 'Annotations' folder in "
        + ", ".join(str(p) for p in candidates)
    )


def read_split(root: Path, split: str) -> list[str]:
    """Image ids of `ImageSets/Main/<split>.txt` (first token per line, blank lines ignored)."""
    path = root / "ImageSets" / "Main" / f"{split}.txt"
    if not path.is_file():
        main = root / "ImageSets" / "Main"
        # class-specific lists (aeroplane_train.txt, ...) are not splits
        have = sorted(p.stem for p in main.glob("*.txt") if "_" not in p.stem)
        raise FileNotFoundError(f"split file {path} not found; available splits: {have or 'none'}")
    return [line.split()[0] for line in path.read_text().splitlines() if line.strip()]


def _parse_xml(path: Path, index: dict[str, int], report: DataReport) -> dict | None:
    """One annotation file -> {'filename', 'size', 'objects'}; None (reported) when unusable."""
    try:
        root = ET.parse(path).getroot()
    except ET.ParseError as error:
        report.add("malformed_annotation", path.name, str(error))  # names line and column
        return None
    size = None
    try:
        size = (int(float(root.findtext("size/width"))), int(float(root.findtext("size/height"))))
    except (TypeError, ValueError):
        pass  # optional: the image file's own size is what counts
    objects = []
    for k, obj in enumerate(root.iter("object")):
        name = (obj.findtext("name") or "").strip()
        if name not in index:
            report.add("unknown_class", path.name, f"object {k}: class {name!r}")
            continue
        try:
            coords = [float(obj.findtext(f"bndbox/{c}")) for c in ("xmin", "ymin", "xmax", "ymax")]
        except (TypeError, ValueError):
            report.add("malformed_annotation", path.name,
                       f"object {k} ({name}): missing or non-numeric bndbox")
            continue
        difficult = (obj.findtext("difficult") or "0").strip() in {"1", "true", "True"}
        objects.append((coords, index[name], difficult))
    return {"filename": (root.findtext("filename") or "").strip(), "size": size, "objects": objects}


def voc_records(
    data_dir: str | Path,
    year: int | Sequence[int] = 2007,
    split: str = "trainval",
    class_names: Sequence[str] = VOC_CLASSES,
    skip_difficult: bool = False,
    report: DataReport | None = None,
    verify_images: bool = False,
) -> tuple[list[Record], DataReport]:
    """Parse a VOC split into records; bad files are skipped and counted in the report.

    Boxes go from VOC's 1-based inclusive pixel indices to continuous xyxy
    (xmin - 1, ymin - 1, xmax, ymax), as detectron2 does, so width = xmax - xmin + 1.
    """
    years = [year] if isinstance(year, int) else list(year)
    class_names = list(class_names)
    if len(set(class_names)) != len(class_names) or not class_names:
        raise ValueError(f"class_names must be non-empty and unique, got {class_names}")
    index = {name: i for i, name in enumerate(class_names)}
    report = report if report is not None else DataReport(
        "+".join(f"VOC{y}" for y in years) + f" {split}")
    report.known_classes = class_names
    records: list[Record] = []
    for y in years:
        root = find_voc_root(data_dir, y)
        parsed = []
        for image_id in tqdm(read_split(root, split), desc=f"VOC{y} {split}", leave=False):
            xml_path = root / "Annotations" / f"{image_id}.xml"
            if not xml_path.is_file():
                report.add("missing_annotation", xml_path.name, f"listed in {split}.txt")
                continue
            ann = _parse_xml(xml_path, index, report)
            if ann is None:
                continue
            image_path = root / "JPEGImages" / f"{image_id}.jpg"
            if not image_path.is_file() and ann["filename"]:
                image_path = root / "JPEGImages" / ann["filename"]
            parsed.append((image_id, xml_path, image_path, ann))
        sizes = check_images([p[2] for p in parsed], report, verify=verify_images)
        for (image_id, xml_path, image_path, ann), size in zip(parsed, sizes, strict=True):
            if size is None:
                continue
            if ann["size"] is not None and ann["size"] != size:
                report.add("size_mismatch", xml_path.name,
                           f"annotated {ann['size'][0]}x{ann['size'][1]}, file {size[0]}x{size[1]}")
            objects = [o for o in ann["objects"] if not (skip_difficult and o[2])]
            raw = np.array([o[0] for o in objects], np.float32).reshape(-1, 4)
            raw[:, :2] -= 1.0
            boxes, keep = clean_boxes(raw, size[0], size[1], report, xml_path.name)
            boxes = boxes[keep]
            records.append(Record(
                image_path=str(image_path), image_id=image_id, width=size[0], height=size[1],
                boxes=boxes,
                labels=np.array([o[1] for o in objects], np.int32)[keep],
                difficult=np.array([o[2] for o in objects], bool)[keep],
                iscrowd=np.zeros(len(boxes), bool),
                area=((boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])).astype(np.float32),
            ))
    report.num_images += len(records)
    report.num_objects += sum(len(r.labels) for r in records)
    return records, report


def voc(
    data_dir: str | Path,
    year: int | Sequence[int] = 2007,
    split: str = "trainval",
    class_names: Sequence[str] = VOC_CLASSES,
    shuffle: bool = False,
    seed: int | None = None,
    skip_difficult: bool = False,
    report: DataReport | None = None,
    verify_images: bool = False,
    verbose: bool = True,
) -> tf.data.Dataset:
    """PASCAL VOC (2007/2012, or a custom VOC-layout set via `class_names`) as tf.data.

    Elements: {"images", "bounding_boxes": {"boxes", "labels"}, "image_id", "difficult",
    "iscrowd", "area"}. The dataset carries `class_names`, `report`, `num_examples`,
    `label_to_name` and `name_to_label`. `year=(2007, 2012)` concatenates both (VOC 07+12).
    """
    records, report = voc_records(data_dir, year, split, class_names, skip_difficult, report,
                                  verify_images)
    if verbose:
        print(report.summary())
    names = list(class_names)
    ds = records_to_dataset(records, shuffle=shuffle, seed=seed)
    return attach(ds, class_names=names, report=report, num_examples=len(records),
                  label_to_name=dict(enumerate(names)),
                  name_to_label={n: i for i, n in enumerate(names)})
