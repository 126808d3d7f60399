"""Images outside the data folder (issue 35): a COCO `file_name` that is absolute or climbs out
with `../` is used (real exports write them) but never silently: each is counted as
`outside_data_folder` in the data report; a non-image there is still skipped as corrupt. VOC
finds images by name inside its image folder only, so its `<path>` never leads out."""

from __future__ import annotations

import json

import pytest

import detection
from tests.hostile.inputs import write_bytes, write_image


def coco_with(tmp_path, file_names: list[str]):
    data = tmp_path / "export"
    write_image(data / "in.jpg")
    images = [{"id": i + 1, "file_name": f} for i, f in enumerate(file_names)]
    annotations = [{"id": i + 1, "image_id": i + 1, "category_id": 1, "bbox": [1, 1, 5, 5],
                    "area": 25} for i in range(len(file_names))]
    path = data / "instances.json"
    path.write_text(json.dumps({"images": images, "annotations": annotations,
                                "categories": [{"id": 1, "name": "cat"}]}))
    return path


@pytest.mark.parametrize("where", ["absolute", "dot_dot", "dot_dot_absolute"])
def test_an_image_outside_the_data_folder_is_used_and_counted(tmp_path, where):
    outside = write_image(tmp_path / "elsewhere" / "out.jpg")
    name = {"absolute": str(outside), "dot_dot": "../elsewhere/out.jpg",
            "dot_dot_absolute": str(tmp_path / "export" / ".." / "elsewhere" / "out.jpg")}[where]
    ds = detection.data.coco(coco_with(tmp_path, ["in.jpg", name]), verbose=False)
    assert ds.num_examples == 2
    assert ds.report.files("outside_data_folder") == [name]
    assert str(outside) in ds.report.details("outside_data_folder")[0]
    assert "no problems found" not in ds.report.summary()
    assert "outside_data_folder: 1" in ds.report.summary()


def test_a_non_image_outside_the_data_folder_is_refused_not_read(tmp_path):
    secret = write_bytes(tmp_path / "secret.jpg", b"password: hunter2\n")
    ds = detection.data.coco(coco_with(tmp_path, ["in.jpg", str(secret)]), verbose=False)
    assert ds.num_examples == 1 and ds.report.count("corrupt_image") == 1
    assert ds.report.count("outside_data_folder") == 0  # not used, so not counted as used
    assert "hunter2" not in ds.report.summary()


def test_a_path_that_climbs_and_comes_back_is_inside(tmp_path):
    ds = detection.data.coco(coco_with(tmp_path, ["sub/../in.jpg", "in.jpg"]), verbose=False)
    assert ds.num_examples == 2 and ds.report.count("outside_data_folder") == 0


def test_a_linked_image_folder_is_inside(tmp_path):
    """A data folder whose images are a link to another disk (common for COCO) is not
    'outside': the rule reads file names, not where links lead."""
    write_image(tmp_path / "disk" / "im.jpg")
    path = coco_with(tmp_path, ["images/im.jpg"])
    (path.parent / "images").symlink_to(tmp_path / "disk")
    ds = detection.data.coco(path, verbose=False)
    assert ds.num_examples == 1 and ds.report.count("outside_data_folder") == 0


def test_a_voc_path_out_of_the_folder_is_not_followed(tmp_path):
    write_image(tmp_path / "elsewhere" / "b.jpg", color=(0, 0, 255))
    data = tmp_path / "voc"
    write_image(data / "a.jpg")
    (data / "a.xml").write_text(
        f"<annotation><filename>../elsewhere/b.jpg</filename><path>{tmp_path}/elsewhere/b.jpg"
        "</path><object><name>cat</name><bndbox><xmin>1</xmin><ymin>1</ymin><xmax>9</xmax>"
        "<ymax>9</ymax></bndbox></object></annotation>")
    ds = detection.data.voc(data, class_names=["cat"], verbose=False)
    (element,) = list(ds)
    assert ds.num_examples == 1 and element["images"].numpy()[0, 0, 2] < 100  # a.jpg's red
