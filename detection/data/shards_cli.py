"""`python -m detection records`: a VOC/COCO data set's train and val splits written as TFRecord
shards (`detection.data.shards`), resumable and verified, then trained from with `--data DIR`."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from detection.data.coco import coco_records
from detection.data.discover import inspect_data
from detection.data.records import Record
from detection.data.shard_reader import read_manifest
from detection.data.shards import MANIFEST, verify_split, write_manifest, write_split
from detection.data.voc import voc_records


def load_records(spec: dict, class_names: list[str], masks: bool) -> tuple[list[Record], dict]:
    """The parsed records of a VOC/COCO loader spec (as `inspect_data` describes it) and the
    manifest's metadata (class names, COCO category ids)."""
    spec = dict(spec)
    loader = spec.pop("loader")
    if loader == "coco":
        records, report, meta = coco_records(**spec, masks=masks)
        print(report.summary())
        return records, {"class_names": meta["class_names"],
                         "category_ids": list(meta["category_ids"])}
    if masks:
        raise ValueError(f"--masks: the VOC XML data set {spec.get('data_dir')} holds boxes "
                         "only, no instance masks (use a COCO JSON)")
    records, report = voc_records(**spec, class_names=list(class_names))
    print(report.summary())
    return records, {"class_names": list(report.known_classes)}


def _finished(out: Path, source: dict, num_shards: int, masks: bool) -> bool:
    """Whether `out` already holds these shards (verified again); another data set's shards
    in `out` are refused in one line."""
    if not (out / MANIFEST).is_file():
        return False
    manifest = read_manifest(out)
    same = (manifest.get("source") == source and manifest.get("num_shards") == num_shards
            and bool(manifest.get("masks")) == masks)
    if not same:
        raise ValueError(f"--out {out} already holds shards of {manifest.get('source')} "
                         f"(num_shards {manifest.get('num_shards')}, masks "
                         f"{bool(manifest.get('masks'))}): choose another --out or remove it")
    for split, entry in manifest["splits"].items():
        verify_split(out, split, entry)
    return True


def _per_class(labels: np.ndarray, meta: dict) -> dict[str, int]:
    counts = np.bincount(labels, minlength=len(meta["class_names"]))
    return {str(n): int(c) for n, c in zip(meta["class_names"], counts, strict=False)}


def run(args) -> int:
    """`python -m detection records --data PATH --out DIR --num-shards N [--masks]`: the data
    set's train and val splits written as verified TFRecord shards (resumable)."""
    info = inspect_data(args.data, args.images, args.val_fraction)
    for line in info.describe():
        print(line)
    out, masks, num_shards = Path(args.out), bool(args.masks), int(args.num_shards)
    source = {k: v for k, v in info.loader.items()}
    if _finished(out, source, num_shards, masks):
        print(f"{out}: already complete and verified ({MANIFEST})")
        return 0
    splits, meta, objects = {}, {}, np.zeros(0, np.int64)
    for name, split in (("train", info.train_split), ("val", info.eval_split)):
        records, meta = load_records({**info.loader, "split": split}, info.class_names, masks)
        objects = np.concatenate([objects, *[np.asarray(r.labels, np.int64) for r in records]])
        count = num_shards if name == "train" else max(1, min(num_shards, len(records)))
        splits[name] = write_split(records, out, name, count, masks)
    path = write_manifest(out, splits, {**meta, "source_format": info.format, "source": source,
                                        "num_shards": num_shards, "masks": masks,
                                        "objects_per_class": _per_class(objects, meta)})
    total = ", ".join(f"{k} {v['count']} images in {len(v['shards'])} shards"
                      for k, v in splits.items())
    print(f"wrote {path}: {total}; verified (sizes, SHA-256, TFRecord CRCs, counts); train "
          f"with: python -m detection train --data {out}")
    return 0
