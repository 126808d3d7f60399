"""TFRecord shards (detection.data.shards / shard_reader): a round trip equal to the COCO loader
(boxes, classes, masks, crowd, area), resume of a killed write, a damaged shard named in one
line, and the per-worker split by file (disjoint and complete for 2 and 4 workers)."""

import json
import shutil
import types

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

pytestmark = pytest.mark.tf_only


def write_coco(root, num_images=6, seed=0, size=(64, 48)):
    """A small COCO JSON with polygon, RLE-crowd and box-only objects over real PNG/JPEG files."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    w, h = size
    images, annotations = [], []
    for i in range(num_images):
        name = f"img{i}.{'jpg' if i % 2 else 'png'}"
        exif = Image.Exif()
        exif[0x0112] = 6 if i == 1 else 1  # one photo turned 90 degrees by its EXIF tag
        Image.fromarray(rng.integers(0, 255, (h, w, 3), np.uint8)).save(
            root / name, **({"exif": exif} if name.endswith("jpg") else {}))
        images.append({"id": 10 + i, "file_name": name, "width": w, "height": h})
        for k in range(1 + i % 3):
            x, y = float(rng.uniform(0, w / 2)), float(rng.uniform(0, h / 2))
            bw, bh = float(rng.uniform(6, w / 2)), float(rng.uniform(6, h / 2))
            polygon = [x, y, x + bw, y, x + bw, y + bh, x, y + bh * 0.5]
            annotations.append({"id": len(annotations) + 1, "image_id": 10 + i,
                                "category_id": 3 + 4 * (k % 2), "bbox": [x, y, bw, bh],
                                "area": bw * bh * 0.8, "iscrowd": 0,
                                "segmentation": [polygon]})
        if i % 3 == 2:  # a crowd region as an uncompressed RLE
            counts = [w * h // 2, w * 4, w * h - w * h // 2 - w * 4]
            annotations.append({"id": len(annotations) + 1, "image_id": 10 + i,
                                "category_id": 3, "bbox": [0, 0, w, h], "area": 4.0 * w,
                                "iscrowd": 1, "segmentation": {"size": [h, w],
                                                               "counts": counts}})
    data = {"images": images, "annotations": annotations,
            "categories": [{"id": 3, "name": "cat"}, {"id": 7, "name": "dog"}]}
    (root / "instances.json").write_text(json.dumps(data))
    return root / "instances.json"


def _args(data, out, num_shards=2, masks=True):
    return types.SimpleNamespace(data=str(data), out=str(out), num_shards=num_shards,
                                 masks=masks, images=None, val_fraction=0.34)


def _elements(ds):
    return {e["image_id"].decode(): e for e in ds.as_numpy_iterator()}


def test_round_trip_equals_the_coco_loader_masks_included(tmp_path, capsys):
    from detection.data.build import dataset_from_config
    from detection.data.shards_cli import run

    data = write_coco(tmp_path / "coco", 6)
    assert run(_args(data, tmp_path / "shards", 2)) == 0
    manifest = json.loads((tmp_path / "shards" / "manifest.json").read_text())
    assert manifest["class_names"] == ["cat", "dog"] and manifest["category_ids"] == [3, 7]
    assert [len(manifest["splits"][s]["shards"]) for s in ("train", "val")] == [2, 2]
    seen = []
    for split in ("train", "val"):
        ours = _elements(dataset_from_config({"loader": "shards", "data_dir": str(
            tmp_path / "shards"), "split": split, "masks": True}, verbose=False))
        ref = _elements(dataset_from_config({"loader": "coco", "data_dir": str(data),
                                             "split": split, "masks": True, "val_fraction": 0.34},
                                            verbose=False))
        assert sorted(ours) == sorted(ref) and ours
        seen += list(ours.values())
        for key, e in ref.items():
            o = ours[key]
            np.testing.assert_array_equal(o["images"], e["images"])
            np.testing.assert_array_equal(o["bounding_boxes"]["boxes"],
                                          e["bounding_boxes"]["boxes"])
            np.testing.assert_array_equal(o["bounding_boxes"]["labels"],
                                          e["bounding_boxes"]["labels"])
            for name in ("iscrowd", "area", "difficult", "masks"):
                assert o[name].dtype == e[name].dtype
                np.testing.assert_array_equal(o[name], e[name])
    assert len(seen) == 6 and any(e["iscrowd"].any() for e in seen)  # crowd RLEs went through
    assert {e["images"].shape[:2] for e in seen} == {(48, 64), (64, 48)}  # the EXIF turn too
    assert sum(len(e["masks"]) for e in seen) == sum(len(e["area"]) for e in seen)


def test_random_access_and_train_data_recognised(tmp_path):
    from detection.data.discover import class_names_of, inspect_data
    from detection.data.shard_reader import shards
    from detection.data.shards_cli import run

    run(_args(write_coco(tmp_path / "coco", 6), tmp_path / "shards", 3, masks=False))
    info = inspect_data(tmp_path / "shards")
    assert info.format == "coco" and info.loader["loader"] == "shards"
    assert info.data_section()["train"]["split"] == "train"
    assert class_names_of(info.loader) == ["cat", "dog"]
    ds = shards(tmp_path / "shards", verbose=False)
    ordered = [e["image_id"] for e in ds.as_numpy_iterator()]
    assert [ds.element_at(tf.constant(i, tf.int64))["image_id"].numpy()
            for i in (2, 0, 1)] == [ordered[2], ordered[0], ordered[1]]
    assert ds.report.num_objects == sum(len(e["area"]) for e in ds.as_numpy_iterator())


def test_a_killed_write_resumes_keeping_the_finished_shards(tmp_path, monkeypatch):
    from detection.data import shards as writer
    from detection.data.shards_cli import run

    data, out = write_coco(tmp_path / "coco", 9), tmp_path / "shards"
    real, calls = writer._write_shard, []

    def dies_on_third(records, path, masks, bar):
        calls.append(path.name)
        if len(calls) == 3:
            path.with_name(path.name + ".tmp").write_bytes(b"half a shard")
            raise KeyboardInterrupt  # killed while writing the third train shard
        return real(records, path, masks, bar)

    monkeypatch.setattr(writer, "_write_shard", dies_on_third)
    with pytest.raises(KeyboardInterrupt):
        run(_args(data, out, 4))
    assert not (out / "manifest.json").exists()
    kept = {p.name: p.stat().st_mtime_ns for p in out.glob("train-*.tfrecord")}
    assert sorted(kept) == ["train-00000-of-00004.tfrecord", "train-00001-of-00004.tfrecord"]
    calls.clear()
    monkeypatch.setattr(writer, "_write_shard", real)
    monkeypatch.setattr(writer, "_write_shard", lambda *a: calls.append(a[1].name) or real(*a))
    assert run(_args(data, out, 4)) == 0
    assert [c for c in calls if c.startswith("train")] == [
        "train-00002-of-00004.tfrecord", "train-00003-of-00004.tfrecord"]
    assert {n: (out / n).stat().st_mtime_ns for n in kept} == kept  # not rewritten
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["splits"]["train"]["count"] == 6 and not list(out.glob("*.tmp"))
    calls.clear()
    assert run(_args(data, out, 4)) == 0 and calls == []  # complete: only verified
    with pytest.raises(ValueError, match="already holds shards of .* choose another --out"):
        run(_args(data, out, 3))


def test_a_damaged_shard_is_named_in_one_line(tmp_path):
    from detection.data.shard_reader import shards
    from detection.data.shards_cli import run

    out = tmp_path / "shards"
    run(_args(write_coco(tmp_path / "coco", 6), out, 2, masks=False))
    victim = out / "train-00001-of-00002.tfrecord"
    good = victim.read_bytes()
    victim.write_bytes(good[:-10])
    with pytest.raises(ValueError, match=r"^shard .*train-00001-of-00002.tfrecord is truncated "
                                         r"or changed: \d+ bytes, the manifest says \d+$"):
        shards(out, verbose=False)
    flipped = bytearray(good)
    flipped[len(good) // 2] ^= 0xFF
    victim.write_bytes(bytes(flipped))
    with pytest.raises(ValueError, match=r"^shard .*train-00001.* is corrupted: its SHA-256"):
        shards(out, verify=True, verbose=False)
    (out / "manifest.json").write_text("{")
    with pytest.raises(ValueError, match=r"manifest.json is not valid JSON"):
        shards(out)
    with pytest.raises(FileNotFoundError, match=r"is not a shards folder: no manifest.json"):
        shards(tmp_path)


def test_worker_split_by_file_is_disjoint_and_complete(tmp_path):
    from detection.data.shard_reader import shards, worker_files
    from detection.data.shards_cli import run

    out = tmp_path / "shards"
    run(_args(write_coco(tmp_path / "coco", 12), out, 3, masks=False))
    ids = lambda ds: [e["image_id"] for e in ds.as_numpy_iterator()]  # noqa: E731
    whole = ids(shards(out, verbose=False))
    assert worker_files(3, 2, 0) == [0, 2] and worker_files(3, 2, 1) == [1]  # by file
    assert worker_files(3, 4, 3) is None  # fewer files than workers: by index
    for workers in (2, 4):
        _check_workers(out, ids, whole, workers)
    with pytest.raises(ValueError, match="worker must be in"):
        worker_files(4, 2, 2)


def _check_workers(out, ids, whole, workers):
    from detection.data.shard_reader import read_manifest, shards

    parts = [ids(shards(out, verbose=False, num_workers=workers, worker=w))
             for w in range(workers)]
    assert sorted(sum(parts, [])) == sorted(whole) and len(set(whole)) == len(whole) == 8
    assert all(parts)  # everyone has work
    if workers == 2:  # worker 1 reads exactly the records of file 1
        assert len(parts[1]) == read_manifest(out)["splits"]["train"]["shards"][1]["count"]
    assert ids(shards(out, verbose=False).for_worker(workers, 1)) == parts[1]


def test_cli_bad_input_is_one_line(tmp_path, capsys):
    from detection.cli import main

    data = write_coco(tmp_path / "coco", 4)
    assert main(["records", "--data", str(data), "--out", str(tmp_path / "s"),
                 "--num-shards", "9"]) == 2
    err = capsys.readouterr().err.strip().splitlines()  # progress bars, then one line
    assert err[-1] == ("error: split 'train' has 3 images, fewer than --num-shards 9: every "
                       "shard needs at least one image") and "Traceback" not in "".join(err)
    assert main(["records", "--data", str(tmp_path / "nope"), "--out", str(tmp_path / "s")]) == 2
    assert "does not exist" in capsys.readouterr().err


def _train_config(tmp_path, out):
    from detection.config import load_config
    from detection.data.synthetic import CLASS_NAMES

    config = {
        "name": "shards", "model": {"backbone": "resnet18", "image_size": [48, 48]},
        "data": {"num_classes": len(CLASS_NAMES), "class_names": "auto",
                 "train": {"loader": "shards", "data_dir": str(out), "split": "train"},
                 "augment": {"flip": True, "sizes": [32, 48]}, "max_boxes": 4, "seed": 5},
        "train": {"batch_size": 2, "steps": 10, "learning_rate": 0.01},
    }
    path = tmp_path / "shards.yaml"
    path.write_text(json.dumps(config))
    return load_config(path)


def test_training_stream_resumes_exactly_and_each_worker_reads_its_files(tmp_path, monkeypatch):
    """The `train` stream over shards: resumed at step S it gives the uninterrupted run's batch S;
    as worker w of 2 (the `dataset_fn` MultiWorkerMirroredStrategy calls) it reads file w only."""
    from detection.data import shard_reader
    from detection.data.build import dataset_from_config
    from detection.data.resume import worker_input
    from detection.data.shards_cli import run
    from detection.data.synthetic import write_voc
    from detection.engine.train import _train_stream

    write_voc(tmp_path / "voc" / "VOC2007", 10, "train", image_size=40, seed=2)
    shutil.rmtree(tmp_path / "voc" / "VOC2007" / "ImageSets")  # a labelling tool's folder
    run(_args(tmp_path / "voc" / "VOC2007", tmp_path / "shards", 2, masks=False))
    config = _train_config(tmp_path, tmp_path / "shards")
    base = dataset_from_config(config.data.train, config.class_names(), shuffle=True, seed=5,
                               verbose=False)
    make = _train_stream(config, base, 2)
    whole = list(make(0).take(6).as_numpy_iterator())
    for a, b in zip(whole[3:6], make(3).take(3).as_numpy_iterator(), strict=True):
        for x, y in zip(tf.nest.flatten(a), tf.nest.flatten(b), strict=True):
            np.testing.assert_array_equal(x, y)
    files, read = [], shard_reader._Files.read
    monkeypatch.setattr(shard_reader._Files, "read",
                        lambda self, f, *a: files.append(f) or read(self, f, *a))
    for w in (0, 1):
        files.clear()
        dataset_fn = worker_input(make, 2, 2, len(config.class_names()))
        batch = next(iter(dataset_fn(tf.distribute.InputContext(
            num_input_pipelines=2, input_pipeline_id=w, num_replicas_in_sync=2))))
        assert batch["images"].shape[0] == 1 and files and set(files) == {w}
