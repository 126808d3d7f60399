"""Detection data as labelling tools write it: a flat folder of VOC XML files (labelImg, CVAT,
Roboflow) and an exported COCO JSON (CVAT, Label Studio, Roboflow), built in tmp_path from the
real raccoon and coco-mini sets; loaded with the counts stated, `init-config`, 20 training
steps through the CLI and through a short config."""

import json
import re
import shutil
import xml.etree.ElementTree as ET

import numpy as np
import pytest
import yaml
from PIL import Image

import detection.data

pytestmark = pytest.mark.tf_only

TINY_MODEL = {
    "backbone": "resnet18", "backbone_kwargs": {"depths": [1, 1, 1, 1],
                                                "widths": [8, 16, 32, 64], "stem_width": 8},
    "head": "c4", "image_size": [64, 64], "anchor_sizes": [16, 32],
    "rpn_pre_nms_topk": [200, 100], "rpn_post_nms_topk": [32, 16], "rpn_batch_size": 64,
    "roi_batch_size": 16, "roi_pooled_size": 6, "max_detections": 10, "fc_dims": [32], "seed": 0,
}
TINY_TRAIN = {"steps": 20, "batch_size": 2, "optimizer": "sgd", "learning_rate": 0.01,
              "distribution": "none"}
WINDOWS_PATH = r"C:\Users\someone\Pictures\IMG_0005.jpg"


def _set_box(obj, box):
    for tag, value in zip(("xmin", "ymin", "xmax", "ymax"), box, strict=True):
        obj.find(f"bndbox/{tag}").text = str(value)


def _box(obj):
    return [int(obj.findtext(f"bndbox/{t}")) for t in ("xmin", "ymin", "xmax", "ymax")]


def make_voc_export(src, xml_dir, image_dir):
    """The 200 raccoon photos as a labelling tool leaves them: no ImageSets, mixed extensions,
    two class names, two EXIF-rotated photos, a foreign `path`, and one of each bad record."""
    xml_dir.mkdir(parents=True, exist_ok=True)
    image_dir.mkdir(parents=True, exist_ok=True)
    for xml in sorted((src / "Annotations").glob("*.xml")):
        n = int(xml.stem.split("-")[1])
        tree = ET.parse(xml)
        root = tree.getroot()
        if n <= 50:  # a second class, so that discovery has something to sort
            for name in root.iter("name"):
                name.text = "trash panda"
        suffix = {1: ".JPG", 2: ".jpeg", 3: ".png"}.get(n % 10, ".jpg")
        image = src / "JPEGImages" / f"{xml.stem}.jpg"
        target = image_dir / f"{xml.stem}{suffix}"
        if suffix == ".png":
            Image.open(image).save(target)
        else:
            shutil.copyfile(image, target)
        root.find("filename").text = target.name
        if n in (10, 20):  # stored turned 90 degrees left, EXIF orientation 6 turns it back
            photo = Image.open(image)
            exif = photo.getexif()
            exif[0x0112] = 6
            photo.rotate(90, expand=True).save(target, exif=exif, quality=95)
        if n == 20:  # this tool drew on the stored pixels: stored size, stored-frame boxes
            width = int(root.findtext("size/width"))
            root.find("size/width").text, root.find("size/height").text = (
                root.findtext("size/height"), str(width))
            for obj in root.iter("object"):
                x1, y1, x2, y2 = _box(obj)  # continuous upright: (x1 - 1, y1 - 1, x2, y2)
                _set_box(obj, [y1, width - x2 + 1, y2, width - x1 + 1])
        if n == 5:  # labelImg on another machine, image renamed since
            root.find("filename").text = "IMG_0005.jpg"
            ET.SubElement(root, "path").text = WINDOWS_PATH
        if n == 32:  # box beyond the right edge
            obj = root.find("object")
            box = _box(obj)
            _set_box(obj, [box[0], box[1], int(root.findtext("size/width")) + 40, box[3]])
        if n == 33:  # a second, degenerate box (xmax < xmin)
            obj = ET.SubElement(root, "object")
            ET.SubElement(obj, "name").text = "raccoon"
            _set_box_new(obj, [50, 10, 40, 20])
        name = f"{xml.stem}_annotation.xml" if n == 7 else xml.name  # found by <filename>
        tree.write(xml_dir / name)
    text = (xml_dir / "raccoon-30.xml").read_text()
    (xml_dir / "raccoon-30.xml").write_text(text[: len(text) // 2])  # unparsable
    (image_dir / "raccoon-31.JPG").unlink()  # annotation without its image
    shutil.copyfile(src / "JPEGImages" / "raccoon-1.jpg", image_dir / "unlabelled.jpg")


def _set_box_new(obj, box):
    bndbox = ET.SubElement(obj, "bndbox")
    for tag, value in zip(("xmin", "ymin", "xmax", "ymax"), box, strict=True):
        ET.SubElement(bndbox, tag).text = str(value)


def make_coco_export(src, folder):
    """coco-mini train2017 as a Roboflow-style export: one folder, `_annotations.coco.json`
    without area/iscrowd/info/licenses, category ids +100 with a grouping category 100, one
    image entry without its file and one zero-width box."""
    raw = json.loads((src / "annotations" / "instances_train2017.json").read_text())
    folder.mkdir(parents=True)
    for key in ("info", "licenses"):
        raw.pop(key)
    for ann in raw["annotations"]:
        del ann["area"], ann["iscrowd"]
        ann["category_id"] += 100
    for cat in raw["categories"]:
        cat["id"] += 100
        cat["supercategory"] = "coco-mini"
    raw["categories"].insert(0, {"id": 100, "name": "coco-mini", "supercategory": "none"})
    for image in raw["images"]:
        shutil.copyfile(src / "train2017" / image["file_name"], folder / image["file_name"])
    raw["images"].append({"id": 1, "file_name": "gone.jpg", "width": 20, "height": 20})
    first = raw["images"][0]
    raw["annotations"].append({"id": 10**9, "image_id": first["id"], "bbox": [5, 5, 0, 10],
                               "category_id": 101})
    (folder / "_annotations.coco.json").write_text(json.dumps(raw))
    return raw


def _elements(ds):
    return {e["image_id"].decode(): e for e in ds.as_numpy_iterator()}


def test_voc_xml_folder_classes_split_exif_and_bad_records(shared_data, tmp_path):
    src = shared_data / "raccoon-voc" / "VOC2007"
    make_voc_export(src, tmp_path / "xml", tmp_path / "photos")
    kw = {"image_dir": tmp_path / "photos", "verbose": False}
    train = detection.data.voc(tmp_path / "xml", split="train", **kw)
    val = detection.data.voc(tmp_path / "xml", split="val", **kw)
    every = detection.data.voc(tmp_path / "xml", split="all", **kw)
    # 200 XML files: one unparsable, one without its image -> 198 images; 217 boxes less the
    # 2 of raccoon-31 and the 1 of raccoon-30 = 214, the degenerate extra box dropped.
    assert every.class_names == ["raccoon", "trash panda"]  # discovered, sorted
    assert every.num_examples == 198 and every.report.num_objects == 214
    assert (train.num_examples, val.num_examples) == (158, 40)  # 160 / 40 XML files, seeded
    assert train.num_examples + val.num_examples == 198
    assert not set(_elements(train)) & set(_elements(val))
    assert "seeded split of 200 XML files (val_fraction 0.2, split_seed 0): 160 train / 40 val" \
        in every.report.summary()
    assert "class names discovered in 200 XML files (objects): raccoon (165), trash panda (52)" \
        in every.report.summary()
    report = every.report
    assert report.counts == {"malformed_annotation": 1, "missing_image": 1,
                             "degenerate_box": 1, "box_clipped": 1, "grayscale_image": 3,
                             "filename_mismatch": 1, "exif_rotated": 2,
                             "unannotated_image": 1}
    assert report.files("malformed_annotation") == ["raccoon-30.xml"]
    assert report.files("missing_image") == ["raccoon-31.JPG"]
    assert report.files("unannotated_image") == ["unlabelled.jpg"]
    assert report.details("filename_mismatch") == [
        "raccoon-5.xml: <filename> 'IMG_0005.jpg', used raccoon-5.jpg (found by the XML name)"]
    assert "stored frame: boxes turned" in report.details("exif_rotated")[1]
    # the same split again, and another seed gives another one
    again = detection.data.voc(tmp_path / "xml", split="val", **kw)
    assert sorted(_elements(again)) == sorted(_elements(val))
    other = detection.data.voc(tmp_path / "xml", split="val", split_seed=1, **kw)
    assert sorted(_elements(other)) != sorted(_elements(val))

    elements = _elements(every)
    assert {"raccoon-1", "raccoon-2", "raccoon-3", "raccoon-7_annotation"} <= set(elements)
    original = {n: np.asarray(Image.open(src / "JPEGImages" / f"raccoon-{n}.jpg").convert("RGB"),
                              np.float32) for n in (10, 20)}
    for n in (10, 20):  # upright, the boxes on the raccoon whichever frame the XML used
        e = elements[f"raccoon-{n}"]
        assert e["images"].shape == original[n].shape
        assert np.abs(e["images"] - original[n]).mean() < 4
        truth = ET.parse(src / "Annotations" / f"raccoon-{n}.xml").getroot()
        expected = [[b[0] - 1, b[1] - 1, b[2], b[3]] for b in map(_box, truth.iter("object"))]
        np.testing.assert_allclose(e["bounding_boxes"]["boxes"], expected)
    assert elements["raccoon-3"]["images"].shape[-1] == 3  # the PNG
    width = elements["raccoon-32"]["images"].shape[1]
    assert elements["raccoon-32"]["bounding_boxes"]["boxes"][0, 2] == width  # clipped
    assert len(elements["raccoon-33"]["bounding_boxes"]["labels"]) == 1
    labels = elements["raccoon-40"]["bounding_boxes"]["labels"].tolist()
    assert labels == [1] and every.label_to_name[1] == "trash panda"

    with pytest.raises(ValueError, match="val_fraction must be in"):
        detection.data.voc(tmp_path / "xml", split="val", val_fraction=1.5, **kw)
    with pytest.raises(ValueError, match="split must be one of 'train', 'val', 'all'"):
        detection.data.voc(tmp_path / "xml", split="test", **kw)
    with pytest.raises(FileNotFoundError, match="pass image_dir"):
        detection.data.voc(tmp_path / "xml", split="all", verbose=False)


def test_voc_folder_init_config_and_train_cli(shared_data, tmp_path, capsys):
    from detection import cli
    from detection.config import load_config

    folder = tmp_path / "raccoons"  # XML and images in one folder, as Roboflow exports
    make_voc_export(shared_data / "raccoon-voc" / "VOC2007", folder, folder)
    out = tmp_path / "raccoons.yaml"
    assert cli.main(["init-config", str(folder), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "found a PASCAL VOC XML data set" in printed and "200 annotated images" in printed
    assert "raccoon (165), trash panda (52)" in printed and f"wrote {out}" in printed
    assert "seeded split, 160 train / 40 val (val_fraction 0.2, split_seed 0)" in printed
    written = yaml.safe_load(out.read_text())
    assert written["data"]["class_names"] == ["raccoon", "trash panda"]
    assert written["data"]["train"] == {"loader": "voc", "data_dir": str(folder.resolve()),
                                        "val_fraction": 0.2, "split_seed": 0, "split": "train"}
    assert written["data"]["eval"]["split"] == "val"
    assert written["model"]["backbone"] == "resnet18" and written["train"]["steps"] == 1000
    assert load_config(out).class_names() == ["raccoon", "trash panda"]
    assert cli.main(["init-config", str(folder), "--out", str(out)]) == 2  # kept
    assert "exists" in capsys.readouterr().err

    # `train --data PATH` alone starts from the same config (checked here without training:
    # its ImageNet backbone would be downloaded)
    from detection.config import from_dict, merge
    from detection.data.discover import data_overrides

    base, data = data_overrides(folder, classes="auto", val_fraction=0.25)
    config = from_dict(merge(base, {"data": data}))
    assert config.class_names() == ["raccoon", "trash panda"]
    assert config.data.train["val_fraction"] == 0.25 and config.model["backbone"] == "resnet18"
    with pytest.raises(ValueError, match="--classes must be 'auto' or distinct"):
        data_overrides(folder, classes="a,,b")

    tiny = tmp_path / "tiny.yaml"  # model and schedule only: --data gives the data section
    tiny.write_text(yaml.safe_dump({"model": TINY_MODEL, "train": TINY_TRAIN,
                                    "data": {"max_boxes": 4}}))
    run = tmp_path / "run"
    assert cli.main(["train", "--config", str(tiny), "--data", str(folder), "--classes", "auto",
                     "--out", str(run), "--eval-images", "4"]) == 0
    printed = capsys.readouterr().out
    assert "classes (2): raccoon, trash panda" in printed
    assert re.search(r"^mAP@0\.5 = \d\.\d{3}$", printed, re.MULTILINE)
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["steps"] == 20 and np.isfinite(metrics["loss_last_epoch"])
    saved = yaml.safe_load((run / "config.yaml").read_text())
    assert saved["data"]["class_names"] == ["raccoon", "trash panda"]  # resolved, not "auto"


def test_coco_export_loads_trains_and_states_area(shared_data, tmp_path, capsys):
    from detection import cli
    from detection.evaluation import coco_ap

    folder = tmp_path / "export"
    raw = make_coco_export(shared_data / "coco-mini", folder)
    json_path = folder / "_annotations.coco.json"
    every = detection.data.coco(folder, verbose=False)  # the folder with its one JSON
    train = detection.data.coco(json_path, "train", verbose=False)
    val = detection.data.coco(json_path, "val", verbose=False)
    # 81 image entries, one without its file; the 739 boxes (the 8 crowd regions are plain
    # boxes once iscrowd is gone) and a zero-width one, dropped
    assert every.num_examples == 80 and every.report.num_objects == 739
    assert (train.num_examples, val.num_examples) == (64, 16)  # of 65 + 16 entries, seeded
    assert every.report.counts == {"missing_image": 1, "degenerate_box": 1,
                                   "area_from_box": 740}
    assert every.report.files("missing_image") == ["gone.jpg"]
    assert "category 100 ('coco-mini') labels nothing and is the supercategory of 80 others" \
        in every.report.summary()
    names = [c["name"] for c in raw["categories"][1:]]
    assert every.class_names == names and len(names) == 80
    assert every.category_ids[0] == 101 and every.label_to_category[79] == 190
    elements = list(every.as_numpy_iterator())
    assert sum(int(e["iscrowd"].sum()) for e in elements) == 0
    for e in elements[:5]:  # missing area = box area
        boxes = e["bounding_boxes"]["boxes"]
        np.testing.assert_allclose(e["area"], (boxes[:, 2] - boxes[:, 0])
                                   * (boxes[:, 3] - boxes[:, 1]), rtol=1e-5)

    truths = [{"boxes": e["bounding_boxes"]["boxes"], "labels": e["bounding_boxes"]["labels"],
               "area": e["area"]} for e in elements]
    perfect = [{"boxes": t["boxes"], "scores": np.ones(len(t["labels"])),
                "classes": t["labels"]} for t in truths]
    result = coco_ap(perfect, truths)
    assert result["AP"] == pytest.approx(1.0) and result["area_source"] == "box"
    official = detection.data.coco(shared_data / "coco-mini", "train2017", verbose=False)
    official_truths = [{"boxes": e["bounding_boxes"]["boxes"], "area": e["area"],
                        "labels": e["bounding_boxes"]["labels"], "iscrowd": e["iscrowd"]}
                       for e in official.take(5).as_numpy_iterator()]
    guesses = [{"boxes": t["boxes"], "scores": np.ones(len(t["labels"])),
                "classes": t["labels"]} for t in official_truths]
    assert coco_ap(guesses, official_truths)["area_source"] == "annotation"

    out = tmp_path / "export.yaml"
    assert cli.main(["init-config", str(json_path), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "found a COCO JSON data set" in printed and "81 annotated images" in printed
    assert "seeded split, 65 train / 16 val" in printed
    written = yaml.safe_load(out.read_text())
    assert written["data"]["class_names"] == names and written["data"]["num_classes"] == 80

    config = tmp_path / "five_lines.yaml"
    spec = f"{{loader: coco, data_dir: {json_path}"
    config.write_text(
        f"model: {json.dumps(TINY_MODEL)}\n"
        f"data: {{class_names: auto, train: {spec}, split: train}}, eval: {spec}, split: val}}}}\n"
        f"train: {json.dumps(TINY_TRAIN)}\n"
        "eval: {metric: coco}\n")
    run = tmp_path / "run"
    assert cli.main(["train", "--config", str(config), "--out", str(run),
                     "--eval-images", "4"]) == 0
    printed = capsys.readouterr().out
    assert "note: APs/APm/APl use box areas" in printed
    assert re.search(r"^AP = \d\.\d{3}, AP50 = \d\.\d{3}", printed, re.MULTILINE)
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["steps"] == 20 and np.isfinite(metrics["loss_last_epoch"])


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_turns_pixels_and_boxes_alike(tmp_path, orientation):
    """Every EXIF orientation: the decoded image equals PIL's `exif_transpose`, and a box
    drawn on the stored pixels lands on the same bright patch in the upright image."""
    import tensorflow as tf
    from PIL import ImageOps

    from detection.data.records import inspect_image, upright_boxes, upright_image
    from detection.data.report import DataReport

    pixels = np.full((40, 60, 3), 20, np.uint8)
    pixels[5:15, 10:25] = 250  # the box (10, 5, 25, 15) in the stored frame
    photo = Image.fromarray(pixels)
    exif = photo.getexif()
    exif[0x0112] = orientation
    path = tmp_path / "photo.jpg"
    photo.save(path, exif=exif, quality=100)
    info = inspect_image(path, DataReport())
    assert info.orientation == orientation
    expected = np.asarray(ImageOps.exif_transpose(Image.open(path)), np.float32)
    image = upright_image(tf.io.decode_image(path.read_bytes(), channels=3),
                          tf.constant(orientation)).numpy()
    assert image.shape == expected.shape and info.upright_size == image.shape[1::-1]
    assert np.abs(image - expected).mean() < 1
    ys, xs = np.nonzero(expected[..., 0] > 128)
    np.testing.assert_array_equal(upright_boxes([[10, 5, 25, 15]], orientation, 60, 40),
                                  [[xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]])

