"""PASCAL VOC XML as tf.data: a VOCdevkit tree, or a labelling tool's folder of XML files.

Two layouts are read:

- a VOCdevkit tree `VOC<year>/{Annotations, JPEGImages, ImageSets/Main/<split>.txt}`;
- a folder of XML files as labelImg, CVAT, Roboflow or Label Studio write them, with the
  images in the same folder or another (`image_dir`), no split files and the class names
  only inside the XMLs. Class names are then discovered (sorted) and a seeded train/val split
  is made (`val_fraction`, `split_seed`).

XML is parsed up front (every problem reported); images are decoded in tf.data.
"""

from __future__ import annotations

import collections
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import tensorflow as tf
from tqdm.auto import tqdm

from detection.data import split as splits
from detection.data.folders import (
    ImageIndex,
    VOCFolders,
    basename,
    find_voc_folders,
    split_files,
)
from detection.data.records import (
    Record,
    attach,
    clean_boxes,
    inspect_images,
    orient,
    records_to_dataset,
)
from detection.data.report import DataReport
from keras_resnet_suite.file_errors import describe, reading

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
        have = split_files(root / "ImageSets" / "Main")
        raise FileNotFoundError(f"split file {path} not found; available splits: {have or 'none'}")
    with reading(path, "split file"):
        return [line.split()[0] for line in path.read_text().splitlines() if line.strip()]


_LARGEST = 1e9  # a pixel coordinate beyond this is no photo's (and overflows float32 later)


def _text(root: ET.Element, tag: str) -> str:
    return (root.findtext(tag) or "").strip()


def _parse_xml(path: Path, report: DataReport) -> dict | None:
    """One annotation file -> {'filename', 'path', 'size', 'objects'}; objects are
    (xyxy as written, class name, difficult). None (reported) when unusable."""
    try:
        root = ET.parse(path).getroot()
    except ET.ParseError as error:
        report.add("malformed_annotation", path.name, str(error))  # names line and column
        return None
    except Exception as error:  # whatever else the parser raised (RecursionError, ...)
        report.add("malformed_annotation", path.name, describe(error, "VOC XML file"))
        return None
    size = None
    try:
        size = (int(float(root.findtext("size/width"))), int(float(root.findtext("size/height"))))
    except (TypeError, ValueError, OverflowError):  # "inf" overflows int()
        pass  # optional: the image file's own size is what counts
    if size is not None and min(size) <= 0:
        size = None  # some tools write 0x0 when they did not read the image
    objects = []
    for k, obj in enumerate(root.iter("object")):
        name = _text(obj, "name")
        try:
            coords = [float(obj.findtext(f"bndbox/{c}")) for c in ("xmin", "ymin", "xmax", "ymax")]
        except (TypeError, ValueError):
            report.add("malformed_annotation", path.name,
                       f"object {k} ({name}): missing or non-numeric bndbox")
            continue
        if not all(abs(c) <= _LARGEST for c in coords):  # NaN fails this too
            report.add("malformed_annotation", path.name,
                       f"object {k} ({name}): bndbox {coords} is not finite pixel coordinates")
            continue
        difficult = _text(obj, "difficult") in {"1", "true", "True"}
        objects.append((coords, name, difficult))
    return {"filename": _text(root, "filename"), "path": _text(root, "path"), "size": size,
            "objects": objects}


def _parse_once(path: Path, report: DataReport, parsed: dict | None) -> dict | None:
    """`_parse_xml`, or what an earlier pass over the same file kept in `parsed` (its result
    and the problems it found, recorded into `report` now): each XML is read once when the
    class names were read from the files first."""
    if parsed is None or path not in parsed:
        return _parse_xml(path, report)
    ann, issues = parsed.pop(path)
    report.issues.extend(issues)
    return ann


def count_classes(xml_files: Sequence[Path], report: DataReport | None = None,
                  parsed: dict | None = None) -> collections.Counter:
    """Objects per class name over `xml_files` (unparsable files skipped). A `parsed` dict
    keeps each file's parse (and its problems) for `_parse_once`."""
    counts: collections.Counter = collections.Counter()
    scratch = report if report is not None else DataReport()
    for path in tqdm(xml_files, desc="reading class names", leave=False):
        if parsed is None:
            ann = _parse_xml(path, scratch)
        else:
            own = DataReport()
            ann = _parse_xml(path, own)
            parsed[path] = (ann, own.issues)
        if ann is not None:
            counts.update(name for _, name, _ in ann["objects"] if name)
    return counts


def voc_class_names(
    data_dir: str | Path, year: int | Sequence[int] = 2007, image_dir: str | Path | None = None,
) -> tuple[list[str], dict[str, int]]:
    """(sorted class names, objects per class) of every XML file of the data set, whichever
    split: the class list of a labelling-tool export, which only the XMLs hold."""
    years = [year] if isinstance(year, int) else list(year)
    files = [p for y in years for p in find_voc_folders(data_dir, y, image_dir).xml_files]
    counts = count_classes(files)
    if not counts:
        raise ValueError(f"no named objects in the {len(files)} XML files under {data_dir}: "
                         "cannot discover class names; pass class_names")
    return sorted(counts), dict(sorted(counts.items()))


def _resolve_classes(class_names, folders: list[VOCFolders], report: DataReport,
                     parsed: dict | None = None) -> list[str]:
    if class_names is not None and not isinstance(class_names, str):
        class_names = list(class_names)
        if len(set(class_names)) != len(class_names) or not class_names:
            raise ValueError(f"class_names must be non-empty and unique, got {class_names}")
        return class_names
    if isinstance(class_names, str) and class_names != "auto":
        raise ValueError(f"class_names must be a list of names, None or 'auto', got "
                         f"{class_names!r}")
    files = [p for f in folders for p in f.xml_files]
    counts = count_classes(files, parsed=parsed)
    if not counts:
        raise ValueError(f"no named objects in the {len(files)} XML files of "
                         f"{folders[0].annotations}: cannot discover class names; pass "
                         "class_names")
    found = sorted(counts)
    if class_names is None and all(f.splits is not None for f in folders) and set(found) <= set(
            VOC_CLASSES):
        report.note(f"class names: the 20 PASCAL VOC classes (found {', '.join(found)} in "
                    f"{len(files)} XML files)")
        return list(VOC_CLASSES)
    listed = ", ".join(f"{n} ({counts[n]})" for n in found)
    report.note(f"class names discovered in {len(files)} XML files (objects): {listed}")
    return found


def _split_ids(folder: VOCFolders, split: str, val_fraction: float, seed: int,
               report: DataReport, use_files: bool = True) -> list[str]:
    """The ids of `split`: from its split file, or a seeded split when there are none (or
    `use_files` is False)."""
    have = split_files(folder.splits) if folder.splits is not None and use_files else []
    standard = {"train", "val", "trainval"} & set(have)
    if have and (split in have or standard or split not in (*splits.SPLITS, *splits.ALIASES)):
        return read_split(folder.splits.parent.parent, split)  # errors list what is there
    # no split files, or only a tool's own (CVAT writes ImageSets/Main/default.txt)
    stems = [p.stem for p in folder.xml_files]
    ids = splits.seeded_split(stems, split, val_fraction, seed)
    report.note(splits.describe(stems, val_fraction, seed, "XML files")
                + f"; this is {split!r} ({len(ids)})")
    return ids


def _match_images(folder: VOCFolders, ids: Sequence[str], desc: str, report: DataReport,
                  whole: bool, cache: dict | None = None) -> list[tuple]:
    """(image id, XML path, image path, parsed XML) of each usable id; with `whole` (the
    entire folder was asked for) images that no XML names are reported too."""
    images = ImageIndex(folder.images)
    parsed = []
    for image_id in tqdm(ids, desc=desc, leave=False):
        xml_path = folder.annotations / f"{image_id}.xml"
        if not xml_path.is_file():
            report.add("missing_annotation", xml_path.name, "listed in the split file")
            continue
        ann = _parse_once(xml_path, report, cache)
        if ann is None:
            continue
        image_path, how, candidates = images.find(image_id, ann)
        if how == "ambiguous":
            report.add("ambiguous_image", xml_path.name,
                       f"{len(candidates)} images in {folder.images} fit it when case is ignored "
                       f"({', '.join(p.name for p in candidates)}) and none by its exact name: "
                       "not guessed; rename the files or the XML")
            continue
        if image_path is None:
            report.add("missing_image", basename(ann["filename"] or f"{image_id}.jpg"),
                       f"no image for {xml_path.name} in {folder.images} (tried its name, "
                       f"<filename> {ann['filename']!r} and <path> {ann['path']!r})")
            continue
        images.used.add(image_path)
        written = basename(ann["filename"]).lower()
        if written and written != image_path.name.lower():
            report.add("filename_mismatch", xml_path.name,
                       f"<filename> {ann['filename']!r}, used {image_path.name} (found by "
                       f"{'the XML name' if how == 'stem' else '<' + how + '>'})")
        parsed.append((image_id, xml_path, image_path, ann))
    if whole:
        xml_stems = {p.stem.lower() for p in folder.xml_files}
        for path in sorted(set(images.files) - images.used):
            if path.stem.lower() not in xml_stems:  # else its XML is there (and reported)
                report.add("unannotated_image", path.name, f"no XML for it in "
                                                           f"{folder.annotations}")
    return parsed


def _record(image_id: str, xml_path: Path, image_path: Path, ann: dict, info, index: dict,
            skip_difficult: bool, report: DataReport) -> Record:
    objects = []
    for k, (coords, name, difficult) in enumerate(ann["objects"]):
        if name not in index:
            report.add("unknown_class", xml_path.name, f"object {k}: class {name!r}")
        elif not (skip_difficult and difficult):
            objects.append((coords, index[name], difficult))
    raw = np.array([o[0] for o in objects], np.float32).reshape(-1, 4)
    raw[:, :2] -= 1.0
    (width, height), raw = orient(info, ann["size"], raw, report, xml_path.name)
    boxes, keep = clean_boxes(raw, width, height, report, xml_path.name)
    boxes = boxes[keep]
    return Record(
        image_path=str(image_path), image_id=image_id, width=width, height=height, boxes=boxes,
        labels=np.array([o[1] for o in objects], np.int32)[keep],
        difficult=np.array([o[2] for o in objects], bool)[keep],
        iscrowd=np.zeros(len(boxes), bool),
        area=((boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])).astype(np.float32),
        orientation=info.orientation)


def voc_records(
    data_dir: str | Path,
    year: int | Sequence[int] = 2007,
    split: str = "trainval",
    class_names: Sequence[str] | str | None = None,
    skip_difficult: bool = False,
    report: DataReport | None = None,
    verify_images: bool = False,
    image_dir: str | Path | None = None,
    val_fraction: float = 0.2,
    split_seed: int = 0,
    use_split_files: bool = True,
) -> tuple[list[Record], DataReport]:
    """Parse a VOC split into records; bad files are skipped and counted in the report, whose
    `known_classes` are the class names used (label i = name i).

    Boxes go from VOC's 1-based inclusive pixel indices to continuous xyxy
    (xmin - 1, ymin - 1, xmax, ymax), as detectron2 does, so width = xmax - xmin + 1.
    `class_names=None`: the names found in the XMLs, sorted, except that a VOCdevkit tree whose
    names are all PASCAL VOC classes gets the 20 `VOC_CLASSES` (their usual label numbers);
    `"auto"` always discovers. Without split files, `split` is "train", "val" or
    "all"/"trainval" of a seeded split (`val_fraction`, `split_seed`) of the XML files; so it is
    with `use_split_files=False`, which ignores `ImageSets/Main` (what `python -m detection
    train --data` writes when the files there have no train/val pair).
    Photos with an EXIF orientation are used upright (see `records.orient` for the boxes).
    """
    years = [year] if isinstance(year, int) else list(year)
    folders = [find_voc_folders(data_dir, y, image_dir) for y in years]
    report = report if report is not None else DataReport(
        "+".join(f"VOC{y}" for y in years) + f" {split}" if folders[0].splits else
        f"{folders[0].annotations} {split}")
    parsed: dict = {}  # the XMLs read for the class names, not read again for the records
    names = _resolve_classes(class_names, folders, report, parsed)
    index = {name: i for i, name in enumerate(names)}
    report.known_classes = names
    records: list[Record] = []
    for y, folder in zip(years, folders, strict=True):
        ids = _split_ids(folder, split, val_fraction, split_seed, report, use_split_files)
        seeded = folder.splits is None or not use_split_files
        parsed = _match_images(folder, ids, f"VOC{y} {split}", report,
                               whole=seeded and splits.ALIASES.get(
                                   split, split) == "all", cache=parsed)
        infos = inspect_images([p[2] for p in parsed], report, verify=verify_images)
        records += [_record(*item, info, index, skip_difficult, report)
                    for item, info in zip(parsed, infos, strict=True) if info is not None]
    report.num_images += len(records)
    report.num_objects += sum(len(r.labels) for r in records)
    return records, report


def voc(
    data_dir: str | Path,
    year: int | Sequence[int] = 2007,
    split: str = "trainval",
    class_names: Sequence[str] | str | None = None,
    shuffle: bool = False,
    seed: int | None = None,
    skip_difficult: bool = False,
    report: DataReport | None = None,
    verify_images: bool = False,
    verbose: bool = True,
    image_dir: str | Path | None = None,
    val_fraction: float = 0.2,
    split_seed: int = 0,
    masks: bool = False,
    use_split_files: bool = True,
) -> tf.data.Dataset:
    """PASCAL VOC XML (a VOCdevkit tree or a labelling tool's XML folder) as tf.data.

    `data_dir` is the VOC tree, the XML folder, or a folder holding both XML and images;
    `image_dir` names the image folder when it is not found beside the XMLs. Elements:
    {"images", "bounding_boxes": {"boxes", "labels"}, "image_id", "difficult", "iscrowd",
    "area"}. The dataset carries `class_names`, `report`, `num_examples`, `label_to_name` and
    `name_to_label`. `year=(2007, 2012)` concatenates both (VOC 07+12). See `voc_records` for
    `class_names=None`/"auto" and the seeded split of a folder without split files.
    VOC XML holds boxes only: `masks=True` is refused (use `coco(..., masks=True)`).
    """
    if masks:
        raise ValueError(f"voc({str(data_dir)!r}, masks=True): PASCAL VOC XML annotations hold "
                         "boxes only, no instance masks; use a COCO instances file "
                         "(detection.data.coco(..., masks=True)) for masks")
    records, report = voc_records(data_dir, year, split, class_names, skip_difficult,
                                         report, verify_images, image_dir, val_fraction,
                                         split_seed, use_split_files)
    if verbose:
        print(report.summary())
    names = list(report.known_classes)
    ds = records_to_dataset(records, shuffle=shuffle, seed=seed)
    return attach(ds, class_names=names, report=report, num_examples=len(records),
                  label_to_name=dict(enumerate(names)),
                  name_to_label={n: i for i, n in enumerate(names)})
