"""A detection data set written once as TFRecord shards (`python -m detection records`), for
training on many workers from shared storage, as TF Model Garden and TFDS feed multi-host runs.

A shards folder holds, per split, `<split>-00000-of-0000N.tfrecord` files and one
`manifest.json`: the class names, the source format, and per shard its record count, byte size,
SHA-256 and each record's length (so any record is found by offset: random access, which the
constant-time resume of `detection.data.resume` needs). Each record is one image: its encoded
bytes as read from the file (never re-encoded), size, EXIF orientation, boxes, labels, difficult,
crowd, area and, when written with masks, one compressed COCO RLE per box.

The writer is resumable: a shard is written to a temporary name, renamed when complete and
listed in `manifest.partial.json`; a killed run started again keeps the finished shards. At the
end every shard is read back (TFRecord CRCs checked), counted and hashed before `manifest.json`
is written. The reader lives in `detection.data.shard_reader`.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np
import tensorflow as tf
from tqdm.auto import tqdm

from detection.data.records import Record

MANIFEST = "manifest.json"
PARTIAL = "manifest.partial.json"
VERSION = 1
_HEADER = 12  # uint64 length + uint32 masked CRC of the length
_FOOTER = 4  # uint32 masked CRC of the data


def shard_name(split: str, index: int, count: int) -> str:
    """`train-00003-of-00008.tfrecord`, the usual TFDS/Model Garden naming."""
    return f"{split}-{index:05d}-of-{count:05d}.tfrecord"


def record_offsets(lengths) -> np.ndarray:
    """Byte offset of each record of a TFRecord file whose records have `lengths`."""
    sizes = np.asarray(lengths, np.int64) + _HEADER + _FOOTER
    return np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64) if len(sizes) else \
        np.zeros(0, np.int64)


def _ints(values) -> tf.train.Feature:
    return tf.train.Feature(int64_list=tf.train.Int64List(value=np.asarray(values).ravel()))


def _floats(values) -> tf.train.Feature:
    return tf.train.Feature(float_list=tf.train.FloatList(value=np.asarray(values).ravel()))


def _bytes(values) -> tf.train.Feature:
    return tf.train.Feature(bytes_list=tf.train.BytesList(value=list(values)))


def serialize(record: Record, image_bytes: bytes, masks: bool) -> bytes:
    """One `tf.train.Example` of `record` with the file's encoded bytes (and RLE counts)."""
    objects = np.concatenate([
        np.asarray(record.boxes, np.float32).reshape(-1, 4),
        np.stack([np.asarray(record.labels), np.asarray(record.difficult),
                  np.asarray(record.iscrowd), np.asarray(record.area)], axis=1).astype(
                      np.float32).reshape(-1, 4)], axis=1)
    features = {  # few features: parsing costs per feature
        "image/encoded": _bytes([image_bytes]),
        "image/id": _bytes([str(record.image_id).encode()]),
        "image/info": _ints([record.height, record.width, int(record.orientation)]),
        # per object: x1 y1 x2 y2 label difficult iscrowd area (labels exact below 2**24)
        "objects": _floats(objects),
    }
    if masks:
        counts = [m["counts"] if isinstance(m["counts"], bytes) else m["counts"].encode()
                  for m in record.masks]
        features["masks"] = _bytes(counts)
    return tf.train.Example(features=tf.train.Features(feature=features)).SerializeToString()


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _write_shard(records: list[Record], path: Path, masks: bool, bar) -> dict:
    """Write one shard under a temporary name, then rename; its manifest entry."""
    tmp = path.with_name(path.name + ".tmp")
    lengths = []
    with tf.io.TFRecordWriter(str(tmp)) as writer:
        for record in records:
            data = serialize(record, Path(record.image_path).read_bytes(), masks)
            writer.write(data)
            lengths.append(len(data))
            bar.update(1)
    os.replace(tmp, path)
    return {"file": path.name, "count": len(records), "bytes": path.stat().st_size,
            "sha256": _sha256(path), "lengths": lengths,
            "objects": [len(r.labels) for r in records]}


def _atomic_json(path: Path, value: dict) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(value))
    os.replace(tmp, path)


def _fingerprint(records: list[Record], num_shards: int, masks: bool) -> dict:
    """What a resumed run must agree on with the killed one: same images, shards, masks."""
    ids = hashlib.sha256("\n".join(str(r.image_id) for r in records).encode()).hexdigest()
    return {"images": len(records), "image_ids_sha256": ids, "num_shards": num_shards,
            "masks": masks}


def _kept(entry: dict, folder: Path) -> bool:
    path = folder / entry["file"]
    return path.is_file() and path.stat().st_size == entry["bytes"]


def write_split(records: list[Record], out: str | Path, split: str, num_shards: int,
                masks: bool = False, progress: bool = True) -> dict:
    """Write `records` as `num_shards` TFRecord files in `out` (contiguous, balanced blocks),
    keeping the shards a killed run with the same records finished; the split's manifest
    entry (`{"count", "fingerprint", "shards": [...]}`), each shard read back and checked."""
    out = Path(out)
    if not isinstance(num_shards, int) or num_shards < 1:
        raise ValueError(f"num_shards must be a positive integer, got {num_shards!r}")
    if num_shards > len(records):
        raise ValueError(f"split {split!r} has {len(records)} images, fewer than --num-shards "
                         f"{num_shards}: every shard needs at least one image")
    if masks and any(r.masks is None or len(r.masks) != len(r.labels) for r in records):
        raise ValueError(f"split {split!r}: masks asked but some image has no mask per box")
    out.mkdir(parents=True, exist_ok=True)
    fingerprint = _fingerprint(records, num_shards, masks)
    partial_path = out / f"{split}.{PARTIAL}"
    done: dict = {}
    if partial_path.is_file():
        partial = json.loads(partial_path.read_text())
        if partial.get("fingerprint") == fingerprint:
            done = {e["file"]: e for e in partial["shards"] if _kept(e, out)}
    blocks = np.array_split(np.arange(len(records)), num_shards)
    entries = []
    with tqdm(total=len(records), desc=f"writing {split} shards", unit="img") as bar:
        for index, block in enumerate(blocks):
            name = shard_name(split, index, num_shards)
            if name in done:
                entries.append(done[name])
                bar.update(len(block))
                continue
            entries.append(_write_shard([records[i] for i in block], out / name, masks, bar))
            _atomic_json(partial_path, {"fingerprint": fingerprint, "shards": entries})
    entry = {"count": len(records), "objects": sum(len(r.labels) for r in records),
             "turned": any(int(r.orientation) != 1 for r in records),  # any EXIF turn to apply
             "fingerprint": fingerprint, "shards": entries}
    verify_split(out, split, entry)
    partial_path.unlink(missing_ok=True)
    return entry


def verify_split(folder: str | Path, split: str, entry: dict, checksums: bool = True) -> None:
    """Check every shard of `split` against `entry`: its size, and with `checksums` its SHA-256,
    TFRecord CRCs and record count (a full read); a bad shard is named in one line
    (ValueError)."""
    folder = Path(folder)
    for shard in entry["shards"]:
        path = folder / shard["file"]
        if not path.is_file():
            raise ValueError(f"shard {path} is missing (listed in {folder / MANIFEST})")
        size = path.stat().st_size
        if size != shard["bytes"]:
            raise ValueError(f"shard {path} is truncated or changed: {size} bytes, the manifest "
                             f"says {shard['bytes']}")
        if not checksums:
            continue
        if _sha256(path) != shard["sha256"]:
            raise ValueError(f"shard {path} is corrupted: its SHA-256 differs from the manifest's")
        try:
            count = sum(1 for _ in tf.data.TFRecordDataset(str(path)))
        except tf.errors.OpError as error:
            message = str(error).splitlines()[0] if str(error) else type(error).__name__
            raise ValueError(f"shard {path} is corrupted: {message}") from None
        if count != shard["count"]:
            raise ValueError(f"shard {path} holds {count} records, the manifest says "
                             f"{shard['count']}")


def write_manifest(out: str | Path, splits: dict, meta: dict) -> Path:
    """`manifest.json` of a finished folder: `meta` (class names, format, ...) and the splits."""
    path = Path(out) / MANIFEST
    _atomic_json(path, {"format": "detection-shards", "version": VERSION, **meta,
                        "splits": splits})
    return path

