"""Recognise a detection data set on disk and describe it as a config's `data` section.

Used by `python -m detection init-config PATH` (writes a starting YAML) and by
`python -m detection train --data PATH` / `data.class_names: auto` (class names read from the
annotations). Recognised: a VOCdevkit tree, a folder of VOC XML files (labelImg, CVAT, Roboflow),
the official COCO layout and a single exported COCO JSON.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from detection.backbone_weights import choose as choose_weights
from detection.data import split as splits
from detection.data.build import expand_path
from detection.data.coco import coco_categories, find_coco_files, load_coco_json
from detection.data.folders import find_voc_folders, split_files
from detection.data.report import DataReport
from detection.data.shard_reader import is_shards_folder, read_manifest
from detection.data.synthetic import CLASS_NAMES
from detection.data.voc import count_classes, voc_class_names


@dataclass
class DataSetInfo:
    """What `inspect_data` found: the format, the loader arguments, classes and counts."""

    format: str  # "voc" or "coco"
    loader: dict  # loader arguments shared by train and eval (no split)
    train_split: str
    eval_split: str
    class_names: list[str]
    objects_per_class: dict[str, int]
    num_images: int  # annotated images (XML files / JSON image entries) in the whole set
    seeded: bool  # True when the train/val split is made here (no split files)
    notes: list[str] = field(default_factory=list)

    def data_section(self, class_names: list[str] | str | None = None) -> dict:
        """The config's `data` section: class names, `train` and `eval` loader specs."""
        names = self.class_names if class_names in (None, "auto") else list(class_names)
        return {"num_classes": len(names), "class_names": list(names),
                "train": {**self.loader, "split": self.train_split},
                "eval": {**self.loader, "split": self.eval_split}}

    def describe(self) -> list[str]:
        """Human-readable lines: format, folders, images, classes, split."""
        where = ", ".join(f"{k} {v}" for k, v in self.loader.items()
                          if k in ("data_dir", "image_dir"))
        n = len(self.class_names)
        kind = 'PASCAL VOC XML' if self.format == 'voc' else 'COCO JSON'
        if self.loader.get("loader") == "shards":
            kind = f"TFRecord shards of a {kind}"
        lines = [f"found a {kind} data set "
                 f"({where}): {self.num_images} annotated images, "
                 f"{sum(self.objects_per_class.values())} objects, "
                 f"{n} class{'' if n == 1 else 'es'}"]
        shown = [f"{c} ({self.objects_per_class.get(c, 0)})" for c in self.class_names[:30]]
        more = f", ... ({n} in all)" if n > 30 else ""
        lines.append("classes (objects): " + ", ".join(shown) + more)
        if self.seeded:
            fraction = float(self.loader.get("val_fraction", 0.2))
            train, val = splits.split_sizes(self.num_images, fraction)
            lines.append(f"no split files: seeded split, {train} train / {val} val "
                         f"(val_fraction {fraction:g}, split_seed "
                         f"{self.loader.get('split_seed', 0)})")
        else:
            lines.append(f"splits: train {self.train_split!r}, eval {self.eval_split!r}")
        return lines + self.notes


def _voc_info(path: Path, image_dir: Path | None, val_fraction: float, seed: int
              ) -> DataSetInfo:
    folders = find_voc_folders(path, 2007, image_dir)
    files = folders.xml_files
    counts = count_classes(files)
    if not counts:
        raise ValueError(f"no named objects in the {len(files)} XML files of "
                         f"{folders.annotations}: cannot tell the class names")
    # a VOC tree is named by its own folder, so `year` does not matter (VOC2012 reads as is)
    root = folders.annotations.parent if folders.annotations.name == "Annotations" else path
    loader: dict = {"loader": "voc", "data_dir": str(root.resolve())}
    if image_dir is not None or folders.images not in (folders.annotations, path,
                                                      folders.annotations.parent / "JPEGImages"):
        loader["image_dir"] = str(folders.images.resolve())
    have = split_files(folders.splits) if folders.splits else []
    seeded = not {"train", "val"} <= set(have)
    notes = []
    if folders.splits is not None and seeded:
        notes.append(f"split files {have} in {folders.splits} have no train/val pair: "
                     "seeded split of all XML files instead")
    if seeded:
        loader.update(val_fraction=val_fraction, split_seed=seed)
        if folders.splits is not None:  # the loader would read the unpaired files
            loader["use_split_files"] = False
    return DataSetInfo("voc", loader, "train", "val", sorted(counts), dict(sorted(counts.items())),
                       len(files), seeded, notes)


def _coco_info(path: Path, image_dir: Path | None, val_fraction: float, seed: int
               ) -> DataSetInfo:
    official = path.is_dir() and (path / "annotations" / "instances_train2017.json").is_file()
    ann_path, _, _ = find_coco_files(path, "train2017" if official else None, None, image_dir)
    data = load_coco_json(ann_path)
    report = DataReport()
    categories = coco_categories(data, report)
    names = [str(c.get("name", c["id"])) for c in categories]
    by_id = dict(zip((c["id"] for c in categories), names, strict=True))
    counts = Counter(by_id[a["category_id"]] for a in data["annotations"]
                     if isinstance(a, dict) and isinstance(a.get("category_id"), int)
                     and a["category_id"] in by_id)
    loader: dict = {"loader": "coco", "data_dir": str((path if official else ann_path).resolve())}
    if image_dir is not None:
        loader["image_dir"] = str(image_dir.resolve())
    if official:
        if not (path / "annotations" / "instances_val2017.json").is_file():
            raise ValueError(f"{path}: COCO layout without annotations/instances_val2017.json")
        return DataSetInfo("coco", loader, "train2017", "val2017", names,
                           {n: counts.get(n, 0) for n in names}, len(data["images"]), False,
                           [*report.notes, f"(counts of {ann_path.name})"])
    loader.update(val_fraction=val_fraction, split_seed=seed)
    return DataSetInfo("coco", loader, "train", "val", names,
                       {n: counts.get(n, 0) for n in names}, len(data["images"]), True,
                       report.notes)


def _shards_info(path: Path) -> DataSetInfo:
    """A folder written by `python -m detection records`: its manifest's classes and splits."""
    manifest = read_manifest(path)
    if not {"train", "val"} <= set(manifest["splits"]):
        raise ValueError(f"{path / 'manifest.json'}: needs splits 'train' and 'val', has "
                         f"{', '.join(manifest['splits'])}")
    names = list(manifest["class_names"])
    splits_ = manifest["splits"]
    counts = manifest.get("objects_per_class") or {}
    return DataSetInfo(manifest["source_format"], {"loader": "shards",
                                                   "data_dir": str(path.resolve())},
                       "train", "val", names, {n: counts.get(n, 0) for n in names},
                       sum(int(s["count"]) for s in splits_.values()), False,
                       [f"TFRecord shards ({manifest['source_format']} data): train "
                        f"{splits_['train']['count']} images, val {splits_['val']['count']}"])


def inspect_data(
    path: str | Path, image_dir: str | Path | None = None, val_fraction: float = 0.2,
    split_seed: int = 0,
) -> DataSetInfo:
    """Recognise the data set at `path` (VOC tree or XML folder, COCO root, folder with one
    COCO JSON, or the JSON itself) and read its class names and counts."""
    path = Path(path).expanduser()
    image_dir = Path(image_dir).expanduser() if image_dir is not None else None
    fraction = splits.check_fraction(val_fraction)
    if not path.exists():
        raise FileNotFoundError(f"data path {path} does not exist")
    if is_shards_folder(path):
        return _shards_info(path)
    if path.is_file():
        if path.suffix.lower() != ".json":
            raise ValueError(f"data path {path}: expected a folder or a COCO .json file")
        return _coco_info(path, image_dir, fraction, split_seed)
    try:
        return _voc_info(path, image_dir, fraction, split_seed)
    except FileNotFoundError as voc_error:
        try:
            return _coco_info(path, image_dir, fraction, split_seed)
        except FileNotFoundError as coco_error:
            raise FileNotFoundError(f"no detection data set recognised at {path}: not VOC "
                                    f"({voc_error}); not COCO ({coco_error})") from None


def class_names_of(spec: Mapping) -> list[str]:
    """The class names a loader spec's data holds (for `data.class_names: auto`): sorted XML
    names for VOC, the categories in id order for COCO, the synthetic set's own names."""
    loader = spec.get("loader")
    if loader == "shapes":
        return list(CLASS_NAMES)
    if loader == "shards" and spec.get("data_dir"):
        return list(read_manifest(expand_path(spec["data_dir"]))["class_names"])
    if loader not in ("voc", "coco"):
        raise ValueError(f"class_names: auto needs a voc, coco or shapes loader, got {loader!r}; "
                         "list the class names")
    if not spec.get("data_dir"):
        raise ValueError(f"class_names: auto needs data.train.data_dir ({loader} loader)")
    paths = {k: expand_path(spec[k]) if spec.get(k) else None
             for k in ("data_dir", "image_dir", "annotation_file")}
    if loader == "voc":
        names, _ = voc_class_names(paths["data_dir"], spec.get("year", 2007), paths["image_dir"])
        return names

    ann_path, _, _ = find_coco_files(paths["data_dir"], spec.get("split"),
                                     paths["annotation_file"], paths["image_dir"])
    return [str(c.get("name", c["id"])) for c in coco_categories(load_coco_json(ann_path))]


# The starting config's model (issue 33, measured in `python -m benchmarks.own_data`): ResNet-18
# FPN (128 channels) on a 384x512 canvas with 100 test proposals, sized for a laptop CPU. The paper's C4 head
# runs res5 once per proposal (1,000 at test time): coco_r101_c4.yaml keeps that design.
STARTING_MODEL = {"backbone": "resnet18", "head": "fpn", "image_size": [384, 512],
                  "fpn_channels": 128, "rpn_pre_nms_topk": [1000, 500],
                  "rpn_post_nms_topk": [1000, 100], "roi_batch_size": 256}


def starting_config(info: DataSetInfo, name: str, backbone_weights: str | None = "imagenet"
                    ) -> dict:
    """A complete run config for `info`: a small model sized for a CPU (`STARTING_MODEL`) with
    `backbone_weights` (a pretrained backbone gets frozen BN and stem + conv2_x frozen; None
    or "none" trains every layer with batch norm), about 12 epochs of SGD, VOC mAP@0.5 or COCO
    AP as the data's own format."""
    data = info.data_section()
    train_images = splits.split_sizes(info.num_images, float(info.loader.get(
        "val_fraction", 0.2)))[0] if info.seeded else info.num_images
    batch = 2
    steps = max(200, int(math.ceil(12 * train_images / batch / 100.0)) * 100)
    weights = None if backbone_weights in (None, "none") else backbone_weights
    frozen = {"freeze_at": 2, "norm": "frozen"} if weights is not None else {}
    return {
        "name": name,
        "model": {**STARTING_MODEL, "backbone_weights": weights, **frozen},
        "data": {**data, "augment": {"flip": True, "brightness": 0.1, "contrast": 0.1},
                 "max_boxes": 50, "seed": 0},
        "train": {"batch_size": batch, "optimizer": "sgd", "learning_rate": 0.005,
                  "momentum": 0.9, "weight_decay": 0.0001, "steps": steps,
                  "lr_steps": [int(steps * 0.75)], "lr_gamma": 0.1, "warmup_steps": 100,
                  "warmup_factor": 0.001, "checkpoint_every": max(100, steps // 10),
                  "distribution": "auto"},
        "eval": {"metric": info.format, "iou_threshold": 0.5, "use_07_metric": False},
    }


def write_config(info: DataSetInfo, out: str | Path, name: str, force: bool = False,
                 backbone_weights: str | None = "imagenet") -> Path:
    """Write `starting_config(info, name, backbone_weights)` as YAML to `out`, with a header
    saying what was found; an existing file is kept unless `force`."""
    out = Path(out)
    if out.exists() and not force:
        raise FileExistsError(f"{out} exists; choose another --out or pass --force")
    source = {None: "no pretrained weights (trained from scratch: many more steps)",
              "none": "no pretrained weights (trained from scratch: many more steps)",
              "imagenet": "ImageNet weights (downloaded once when missing)"}.get(
        backbone_weights, f"weights from {backbone_weights}")
    header = ["# Written by `python -m detection init-config`; edit freely.",
              *[f"# {line}" for line in info.describe()],
              f"# model: ResNet-18 FPN sized for a CPU, {source}; for more accuracy try",
              "#   backbone: resnet50 and a larger image_size (multiples of 32), or the paper's",
              "#   C4 design (detection/configs/coco_r101_c4.yaml) on a GPU.",
              f"# train: python -m detection train --config {out}", ""]
    body = yaml.safe_dump(starting_config(info, name, backbone_weights), sort_keys=False,
                          default_flow_style=None)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(header) + body)
    return out


def parse_classes(value: str | None) -> list[str] | str | None:
    """`--classes`: None, "auto", or comma-separated names (blank ones are an error)."""
    if value is None or value.strip() == "auto":
        return None if value is None else "auto"
    names = [n.strip() for n in value.split(",")]
    if not all(names) or len(set(names)) != len(names):
        raise ValueError(f"--classes must be 'auto' or distinct comma-separated names, got "
                         f"{value!r}")
    return names


def data_overrides(
    path: str | Path | None, images: str | Path | None = None, classes: str | None = None,
    val_fraction: float = 0.2, backbone_weights: str | None = "imagenet",
) -> tuple[dict | None, dict]:
    """For `train --data PATH --classes ...`: (a starting config with `backbone_weights` when
    `path` is given, to use without --config; the `data` keys to override in any config)."""
    names = parse_classes(classes)
    if path is None:
        return None, ({"class_names": names} if names is not None else {})
    info = inspect_data(path, images, val_fraction)
    for line in info.describe():
        print(line)
    section = info.data_section(names)
    if names is None or names == "auto":
        section["class_names"] = "auto" if names == "auto" else info.class_names
    section["num_classes"] = None  # a config's own count must not contradict the new data
    return starting_config(info, Path(path).stem, backbone_weights), section


def run(args) -> int:
    """`python -m detection init-config PATH` (arguments in `detection.cli`)."""
    path = Path(args.path).expanduser()
    weights, weights_line = choose_weights(getattr(args, "backbone_weights", None),
                                           STARTING_MODEL["backbone"])
    info = inspect_data(path, args.images, args.val_fraction)
    name = path.stem if path.is_file() else path.resolve().name
    out = Path(args.out) if args.out else Path(f"{name}.yaml")
    for line in info.describe():
        print(line)
    print(weights_line)
    write_config(info, out, name, force=args.force, backbone_weights=weights)
    print(f"wrote {out}: ResNet-18 FPN ({'from scratch' if weights is None else 'pretrained'} "
          f"backbone), {len(info.class_names)} classes; train with: python -m detection train "
          f"--config {out}")
    return 0
