"""VOC loader on the real raccoon and VOC 2007 data, bad-input reporting, augmentation, TFDS."""


import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

import detection.data
from detection.data.augment import augment
from detection.data.tfds import from_tfds_voc

RACCOON = ["raccoon"]


def collect(ds):
    return list(ds.as_numpy_iterator())


def test_raccoon_reads_all_200_images_and_217_boxes(shared_data):
    ds = detection.data.voc(shared_data / "raccoon-voc", split="trainval", class_names=RACCOON,
                            verbose=False)
    elements = collect(ds)
    assert len(elements) == ds.num_examples == 200
    assert sum(len(e["bounding_boxes"]["labels"]) for e in elements) == 217
    assert ds.class_names == RACCOON and ds.report.num_objects == 217
    # The set has three grayscale JPEGs; they come out RGB and are reported, not dropped.
    assert ds.report.files("grayscale_image") == ["raccoon-150.jpg", "raccoon-152.jpg",
                                                  "raccoon-161.jpg"]
    assert set(ds.report.counts) == {"grayscale_image"}
    e = elements[0]
    assert e["images"].dtype == np.float32 and e["images"].shape[-1] == 3
    assert e["bounding_boxes"]["boxes"].dtype == np.float32
    assert e["bounding_boxes"]["labels"].dtype == np.int32
    assert e["difficult"].dtype == e["iscrowd"].dtype == bool and e["area"].dtype == np.float32
    counts = [detection.data.voc(shared_data / "raccoon-voc", split=s, class_names=RACCOON,
                                 verbose=False).num_examples for s in ("train", "val")]
    assert counts == [160, 40]


def test_voc2007_sample_boxes_labels_and_layouts(shared_data, tmp_path):
    root = shared_data / "voc2007-sample"
    (tmp_path / "VOCdevkit").mkdir()
    (tmp_path / "VOCdevkit" / "VOC2007").symlink_to(root / "VOC2007")
    for where in (root, root / "VOC2007", tmp_path, tmp_path / "VOCdevkit"):
        (e,) = collect(detection.data.voc(where, split="train", verbose=False))
        assert e["image_id"] == b"000001" and e["images"].shape == (500, 353, 3)
        # dog (48, 240, 195, 371) and person (8, 12, 352, 498), VOC's 1-based pixels made
        # continuous: x1 - 1, y1 - 1; areas (w+1)(h+1) as the devkit counts them.
        np.testing.assert_array_equal(e["bounding_boxes"]["boxes"],
                                      [[47, 239, 195, 371], [7, 11, 352, 498]])
        assert [detection.data.VOC_CLASSES[i] for i in e["bounding_boxes"]["labels"]] == [
            "dog", "person"]
        np.testing.assert_array_equal(e["area"], [148 * 132, 345 * 487])
        assert not e["difficult"].any()


def test_missing_tree_and_split_are_clear_errors(shared_data, tmp_path):
    with pytest.raises(FileNotFoundError, match="Annotations"):
        detection.data.voc(tmp_path)
    with pytest.raises(FileNotFoundError, match=r"trainval.txt not found; available splits: "
                                                r"\['train', 'val'\]"):
        detection.data.voc(shared_data / "voc2007-sample", split="trainval")


def _xml(name, size, objects):
    body = "".join(
        f"<object><name>{c}</name><difficult>{int(d)}</difficult><bndbox><xmin>{b[0]}</xmin>"
        f"<ymin>{b[1]}</ymin><xmax>{b[2]}</xmax><ymax>{b[3]}</ymax></bndbox></object>"
        for c, b, d in objects)
    return (f"<annotation><filename>{name}.jpg</filename><size><width>{size[0]}</width>"
            f"<height>{size[1]}</height><depth>3</depth></size>{body}</annotation>")


def write_bad_voc(root):
    """A VOC2007 tree with one example of every problem kind, plus two clean images."""
    for sub in ("Annotations", "JPEGImages", "ImageSets/Main"):
        (root / "VOC2007" / sub).mkdir(parents=True)
    voc = root / "VOC2007"
    rgb = (np.arange(40 * 60 * 3) % 251).reshape(40, 60, 3).astype(np.uint8)
    cat = ("cat", [11, 11, 30, 30], False)
    images = {
        "good": Image.fromarray(rgb), "difficult": Image.fromarray(rgb),
        "gray": Image.fromarray(rgb).convert("L"), "cmyk": Image.fromarray(rgb).convert("CMYK"),
        "outside": Image.fromarray(rgb), "unknown": Image.fromarray(rgb),
        "degenerate": Image.fromarray(rgb), "malformed": Image.fromarray(rgb),
    }
    for name, image in images.items():
        image.save(voc / "JPEGImages" / f"{name}.jpg", quality=95)
    (voc / "JPEGImages" / "garbage.jpg").write_bytes(b"this is not a jpeg")
    good = (voc / "JPEGImages" / "good.jpg").read_bytes()
    (voc / "JPEGImages" / "truncated.jpg").write_bytes(good[: len(good) // 2])
    # valid JPEG followed by 10 kB of trailer data (as phones append): not corrupt
    (voc / "JPEGImages" / "trailer.jpg").write_bytes(good + bytes(10_000))
    annotations = {
        "good": [cat, ("dog", [1, 1, 10, 20], False)],
        "difficult": [cat, ("dog", [2, 2, 20, 20], True)],
        "gray": [cat], "cmyk": [cat], "garbage": [cat], "truncated": [cat], "missing": [cat],
        "trailer": [cat],
        "outside": [("cat", [-5, 11, 80, 30], False)],
        "unknown": [cat, ("unicorn", [1, 1, 5, 5], False)],
        # xmax < xmin; and a box wholly right of the 60-pixel-wide image
        "degenerate": [cat, ("dog", [20, 5, 18, 9], False), ("dog", [70, 5, 90, 9], False)],
    }
    for name, objects in annotations.items():
        (voc / "Annotations" / f"{name}.xml").write_text(_xml(name, (60, 40), objects))
    (voc / "Annotations" / "malformed.xml").write_text(
        "<annotation>\n  <object>\n    <name>cat</name>\n  </objec>\n</annotation>\n")
    ids = [*annotations, "malformed", "no_annotation"]
    (voc / "ImageSets" / "Main" / "train.txt").write_text("\n".join(ids) + "\n")
    return ids


def test_bad_inputs_are_skipped_counted_and_named(tmp_path, capsys):
    write_bad_voc(tmp_path)
    ds = detection.data.voc(tmp_path, split="train", class_names=["cat", "dog"])
    report = ds.report
    assert report.counts == {
        "missing_annotation": 1, "malformed_annotation": 1, "unknown_class": 1,
        "missing_image": 1, "corrupt_image": 2, "degenerate_box": 2, "box_clipped": 1,
        "grayscale_image": 1, "cmyk_image": 1,
    }
    assert report.details("malformed_annotation") == [
        "malformed.xml: mismatched tag: line 4, column 4"]
    assert report.files("corrupt_image") == ["garbage.jpg", "truncated.jpg"]
    assert report.files("missing_image") == ["missing.jpg"]
    assert "unicorn" in report.details("unknown_class")[0]
    assert report.files("degenerate_box") == ["degenerate.xml"]
    assert report.files("no_such_kind") == []
    printed = capsys.readouterr().out
    assert "unknown_class: 1" in printed and "known class names: cat, dog" in printed

    elements = {e["image_id"].decode(): e for e in collect(ds)}
    assert sorted(elements) == ["cmyk", "degenerate", "difficult", "good", "gray", "outside",
                                "trailer", "unknown"]
    assert report.num_images == 8 and report.num_objects == 10
    for e in elements.values():
        assert e["images"].shape == (40, 60, 3)
    gray = elements["gray"]["images"]
    np.testing.assert_array_equal(gray[..., 0], gray[..., 2])  # grayscale -> equal channels
    cmyk = elements["cmyk"]["images"]
    assert np.abs(cmyk - elements["good"]["images"]).mean() < 8  # CMYK decoded to RGB colours
    np.testing.assert_array_equal(elements["outside"]["bounding_boxes"]["boxes"],
                                  [[0, 10, 60, 30]])
    assert len(elements["degenerate"]["bounding_boxes"]["labels"]) == 1
    assert len(elements["unknown"]["bounding_boxes"]["labels"]) == 1
    np.testing.assert_array_equal(elements["difficult"]["difficult"], [False, True])
    # skip_difficult drops the flagged object instead
    strict = detection.data.voc(tmp_path, split="train", class_names=["cat", "dog"],
                                skip_difficult=True, verbose=False)
    kept = {e["image_id"].decode(): e for e in collect(strict)}
    assert len(kept["difficult"]["bounding_boxes"]["labels"]) == 1


def test_shuffle_is_seeded(shared_data):
    def order(seed):
        ds = detection.data.voc(shared_data / "raccoon-voc", split="val", class_names=RACCOON,
                                shuffle=True, seed=seed, verbose=False)
        return [e["image_id"] for e in ds.map(lambda e: {"image_id": e["image_id"]})
                .as_numpy_iterator()]

    first, again, other = order(3), order(3), order(4)
    assert first == again and first != other and sorted(first) == sorted(other)


def _toy(n=6):
    def make(i):
        width = 40 + 8 * tf.cast(i, tf.int32)
        image = tf.cast(tf.reshape(tf.range(20 * width * 3) % 256, [20, width, 3]), tf.float32)
        box = tf.constant([[2.0, 4.0, 12.0, 16.0]])
        return {"images": image, "bounding_boxes": {"boxes": box, "labels": tf.constant([1])},
                "image_id": tf.strings.as_string(i), "difficult": tf.constant([False]),
                "iscrowd": tf.constant([False]), "area": tf.constant([120.0])}

    return tf.data.Dataset.range(n).map(make)


@pytest.mark.jax  # tf.data code, but it must also work when the detector trains on JAX
def test_augment_moves_boxes_with_pixels_and_is_seeded():
    def pipeline(seed):
        return augment(_toy(), seed=seed, num_parallel_calls=4)

    def same(xs, ys):
        return all(np.array_equal(x["images"], y["images"]) for x, y in zip(xs, ys, strict=True))

    first = pipeline(5)
    a, a_next_epoch = collect(first), collect(first)
    b, c = collect(pipeline(5)), collect(pipeline(6))
    assert same(a, b)  # same seed, parallel map: identical stream
    assert not same(a, c) and not same(a, a_next_epoch)  # other seed / next epoch: new draws
    flipped = 0
    for out, raw in zip(a, collect(_toy()), strict=True):
        h, w = out["images"].shape[:2]
        h0, w0 = raw["images"].shape[:2]
        assert out["images"].min() >= 0 and out["images"].max() <= 255
        sx, sy = w / w0, h / h0
        box = out["bounding_boxes"]["boxes"][0]
        plain = np.array([2 * sx, 4 * sy, 12 * sx, 16 * sy])
        mirrored = np.array([w - 12 * sx, 4 * sy, w - 2 * sx, 16 * sy])
        is_flip = np.allclose(box, mirrored, atol=1e-3)
        assert is_flip or np.allclose(box, plain, atol=1e-3)
        flipped += is_flip
        assert out["area"][0] == pytest.approx(120.0 * sx * sy, rel=1e-5)
        assert out["bounding_boxes"]["labels"].dtype == np.int32
    assert 0 < flipped < len(a)  # per-image draws, not one flip for the whole set


def test_augment_leaves_the_shorter_side_to_the_canvas():
    with pytest.raises(ValueError, match="shorter_sides"):
        augment(_toy(), sizes=(30, 40))


def test_tfds_voc_element_maps_to_pixel_xyxy():
    element = {
        "image": tf.zeros([100, 200, 3], tf.uint8),
        "image/filename": tf.constant("000005.jpg"),
        "objects": {"bbox": tf.constant([[0.1, 0.25, 0.5, 1.0]]),  # ymin, xmin, ymax, xmax
                    "label": tf.constant([8], tf.int64), "is_difficult": tf.constant([True])},
    }
    out = from_tfds_voc(element)
    np.testing.assert_allclose(out["bounding_boxes"]["boxes"], [[50, 10, 200, 50]])
    assert out["bounding_boxes"]["labels"].dtype == tf.int32
    assert out["image_id"] == b"000005" and out["difficult"].numpy().tolist() == [True]
    np.testing.assert_allclose(out["area"], [150 * 40])
    assert out["images"].dtype == tf.float32


@pytest.mark.parametrize("name", ["voc07_r101_c4", "coco_r101_c4", "coco_r101_fpn",
                                  "raccoon_r50_c4"])
def test_configs_parse_and_name_real_loaders(name):
    import yaml

    from detection.config import CONFIGS as REPO_CONFIGS

    config = yaml.safe_load((REPO_CONFIGS / f"{name}.yaml").read_text())
    assert config["name"] == name
    assert config["model"]["head"] in {"c4", "fpn"}
    assert config["model"]["backbone"] in {"resnet50", "resnet101"}
    for split in ("train", "eval"):
        assert config["data"][split]["loader"] in {"voc", "coco"}
    train = config["train"]
    assert train["lr_steps"] == sorted(train["lr_steps"]) and train["lr_steps"][-1] < train["steps"]
    assert all(size % 32 == 0 for size in config["model"]["image_size"])
    from detection.config import load_config  # every key known: model keys are FasterRCNN's

    assert load_config(REPO_CONFIGS / f"{name}.yaml").model == config["model"]


def test_raccoon_config_builds_its_datasets(shared_data, monkeypatch):
    import yaml

    from detection.config import CONFIGS as REPO_CONFIGS

    monkeypatch.setenv("KRS_DATA_DIR", str(shared_data))
    config = yaml.safe_load((REPO_CONFIGS / "raccoon_r50_c4.yaml").read_text())
    sizes = [detection.data.dataset_from_config(
        config["data"][split], config["data"]["class_names"], verbose=False).num_examples
        for split in ("train", "eval")]
    assert sizes == [160, 40]
    assert len(config["data"]["class_names"]) == config["data"]["num_classes"]
    with pytest.raises(ValueError, match="data loader must be one of"):
        detection.data.dataset_from_config({"loader": "kitti"})
    monkeypatch.delenv("VOC_DIR", raising=False)
    with pytest.raises(KeyError, match="VOC_DIR"):
        detection.data.dataset_from_config({"loader": "voc", "data_dir": "${VOC_DIR}"})


def test_package_exports_functions_not_same_named_modules():
    import importlib
    import types

    assert callable(detection.data.voc) and callable(detection.data.coco)
    assert isinstance(detection.data.augment, types.ModuleType)
    importlib.import_module("detection.data.synthetic")  # the generator module...
    assert callable(detection.data.shapes)  # ...is not named like the function
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        detection.data.nope  # noqa: B018
