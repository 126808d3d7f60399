"""Annotation files matched to image files: names that differ only in case, the labelImg
export root (`annots/` + `images/`), and a decompression bomb among a detection set's images."""

from __future__ import annotations

import os

import numpy as np
import pytest

import detection
from detection.data.discover import data_overrides, inspect_data
from tests.hostile.inputs import write_image

RED, BLUE, GREEN = (220, 20, 20), (20, 20, 220), (20, 200, 20)


def write_xml(path, filename: str, size=(40, 30), objects=(("cat", (5, 5, 20, 20)),)) -> None:
    """A labelImg Pascal VOC file."""
    body = "".join(f"<object><name>{n}</name><difficult>0</difficult><bndbox><xmin>{b[0]}</xmin>"
                   f"<ymin>{b[1]}</ymin><xmax>{b[2]}</xmax><ymax>{b[3]}</ymax></bndbox></object>"
                   for n, b in objects)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"<annotation><folder>x</folder><filename>{filename}</filename>"
                    f"<path>C:\\Users\\me\\{filename}</path><size><width>{size[0]}</width>"
                    f"<height>{size[1]}</height><depth>3</depth></size>{body}</annotation>")


def load(folder, **kwargs):
    ds = detection.data.voc(folder, split="all", verbose=False, **kwargs)
    return ds, {e["image_id"].decode(): e for e in ds.as_numpy_iterator()}


def _colour(element) -> tuple:
    return tuple(int(round(v)) for v in element["images"][15, 30])


# --- 5. names that differ only in case -------------------------------------------------------

def test_case_twins_each_get_their_own_pixels(tmp_path):
    write_image(tmp_path / "IMG_A.jpg", color=RED)
    write_image(tmp_path / "img_a.jpg", color=BLUE)
    write_xml(tmp_path / "IMG_A.xml", "IMG_A.jpg")
    write_xml(tmp_path / "img_a.xml", "img_a.jpg", objects=(("dog", (1, 1, 9, 9)),))
    ds, elements = load(tmp_path)
    assert sorted(elements) == ["IMG_A", "img_a"] and not ds.report.issues
    assert np.allclose(_colour(elements["IMG_A"]), RED, atol=3)
    assert np.allclose(_colour(elements["img_a"]), BLUE, atol=3)
    assert elements["img_a"]["bounding_boxes"]["labels"].tolist() == [ds.class_names.index("dog")]


@pytest.mark.parametrize(("xml", "filename"), [
    ("Img_A.xml", "Img_A.jpg"),  # its own name fits both twins when case is ignored
    ("shot.xml", "img_A.JPG"),  # so does the <filename> it names
])
def test_an_ambiguous_case_match_is_reported_never_guessed(xml, filename, tmp_path):
    write_image(tmp_path / "IMG_A.jpg", color=RED)
    write_image(tmp_path / "img_a.jpg", color=BLUE)
    write_image(tmp_path / "b.jpg", color=GREEN)
    write_xml(tmp_path / xml, filename)
    write_xml(tmp_path / "b.xml", "b.jpg")
    ds, elements = load(tmp_path)
    assert sorted(elements) == ["b"]
    assert ds.report.details("ambiguous_image") == [
        f"{xml}: 2 images in {tmp_path} fit it when case is ignored (IMG_A.jpg, img_a.jpg) and "
        "none by its exact name: not guessed; rename the files or the XML"]
    assert "ambiguous_image: 1" in ds.report.summary()


def test_a_unique_case_insensitive_match_is_still_found(tmp_path):
    write_image(tmp_path / "DOG.JPG", color=GREEN)
    write_xml(tmp_path / "dog.xml", "DOG.JPG")
    ds, elements = load(tmp_path)
    assert list(elements) == ["dog"] and not ds.report.issues
    assert np.allclose(_colour(elements["dog"]), GREEN, atol=3)


def test_exact_name_wins_over_a_case_twin(tmp_path):
    write_image(tmp_path / "IMG_A.jpg", color=RED)
    write_image(tmp_path / "img_a.png", color=BLUE)
    write_xml(tmp_path / "img_a.xml", "img_a.png")
    ds, elements = load(tmp_path)
    assert np.allclose(_colour(elements["img_a"]), BLUE, atol=3)
    assert ds.report.files("unannotated_image") == []  # IMG_A.jpg's stem has an XML (case)


# --- 7. the labelImg export root ---------------------------------------------------------------

@pytest.mark.parametrize("xml_folder", ["annots", "Annots", "xmls", "labels", "annotations"])
def test_the_labelimg_root_is_recognised(xml_folder, tmp_path):
    for k, colour in enumerate((RED, BLUE, GREEN)):
        write_image(tmp_path / "images" / f"raccoon-{k}.jpg", color=colour)
        write_xml(tmp_path / xml_folder / f"raccoon-{k}.xml", f"raccoon-{k}.jpg",
                  objects=(("raccoon", (2, 3, 30, 25)),))
    info = inspect_data(tmp_path)
    assert (info.format, info.class_names, info.num_images) == ("voc", ["raccoon"], 3)
    assert info.loader["image_dir"] == str((tmp_path / "images").resolve())
    config, section = data_overrides(tmp_path)  # what `train --data ROOT` does
    assert section["class_names"] == ["raccoon"] and config["data"]["train"]["split"] == "train"
    spec = {k: v for k, v in section["train"].items() if k != "loader"}
    ds = detection.data.voc(**{**spec, "split": "all"}, verbose=False)
    assert ds.num_examples == 3 and not ds.report.issues


# --- 8. a decompression bomb among a detection set's images --------------------------------------

@pytest.mark.parametrize("layout", ["voc", "coco"])
def test_a_bomb_is_a_counted_skip_and_never_decoded(layout, tmp_path, bomb_jpeg, monkeypatch):
    import json

    from PIL import ImageFile

    write_image(tmp_path / "ok.jpg", color=RED)
    os.symlink(bomb_jpeg, tmp_path / "huge.jpg")
    monkeypatch.setattr(ImageFile.ImageFile, "load", lambda self: pytest.fail("decoded"))
    if layout == "voc":
        write_xml(tmp_path / "ok.xml", "ok.jpg")
        write_xml(tmp_path / "huge.xml", "huge.jpg", size=(8000, 8000))
        ds = detection.data.voc(tmp_path, split="all", verbose=False)
    else:
        (tmp_path / "set.json").write_text(json.dumps({
            "images": [{"id": 1, "file_name": "ok.jpg"}, {"id": 2, "file_name": "huge.jpg"}],
            "categories": [{"id": 1, "name": "cat"}],
            "annotations": [{"id": i, "image_id": i, "category_id": 1, "bbox": [1, 1, 9, 9],
                             "area": 81} for i in (1, 2)]}))
        ds = detection.data.coco(tmp_path / "set.json", verbose=False)
    assert ds.report.details("image_too_large") == [
        "huge.jpg: 8000x8000 pixels (64.0 megapixels) exceed the limit of 50 megapixels "
        "(max_pixels; $KRS_MAX_PIXELS raises it)"]
    assert ds.num_examples == 1 and ds.report.num_objects == 1
    monkeypatch.undo()
    monkeypatch.setenv("KRS_MAX_PIXELS", "100")  # 40x30 = 1200 pixels: now ok.jpg is too large
    if layout == "voc":
        again = detection.data.voc(tmp_path, split="all", verbose=False)
        assert again.report.files("image_too_large") == ["huge.jpg", "ok.jpg"]
