"""COCO JSON with wrong types, missing or repeated ids: a structural problem is refused before
any work starts, naming the entry (`categories[3].id`); a bad image or annotation entry is
counted and skipped in the data report, naming its field (`annotations[12].area`), and every
other record still loads."""

from __future__ import annotations

import copy
import json

import pytest

import detection
from detection import cli as detection_cli
from detection.data.discover import inspect_data
from tests.hostile.inputs import write_image


def base() -> dict:
    """Three images, three categories, four annotations: a valid exported COCO JSON."""
    return {
        "images": [{"id": i, "file_name": f"im{i}.jpg", "width": 40, "height": 30}
                   for i in (1, 2, 3)],
        "categories": [{"id": 1, "name": "cat"}, {"id": 2, "name": "dog"},
                       {"id": 5, "name": "fox"}],
        "annotations": [
            {"id": 10, "image_id": 1, "category_id": 1, "bbox": [1, 2, 10, 5], "area": 50,
             "iscrowd": 0},
            {"id": 11, "image_id": 1, "category_id": 2, "bbox": [20, 10, 10, 10], "area": 100,
             "iscrowd": 0},
            {"id": 12, "image_id": 2, "category_id": 5, "bbox": [0, 0, 8, 8], "area": 64},
            {"id": 13, "image_id": 3, "category_id": 1, "bbox": [5, 5, 6, 6]},
        ],
    }


def write(tmp_path, data: dict):
    for i in (1, 2, 3):
        write_image(tmp_path / f"im{i}.jpg")
    path = tmp_path / "export.json"
    path.write_text(json.dumps(data))
    return path


def edited(change) -> dict:
    data = copy.deepcopy(base())
    change(data)
    return data


def _set(section, index, key, value):
    def change(data):
        data[section][index][key] = value
    return change


def _delete(section, index, key):
    def change(data):
        del data[section][index][key]
    return change


def _append(section, entry):
    def change(data):
        data[section].append(entry)
    return change


STRUCTURAL = {
    # name -> (change, the exact refusal after "<file>: ")
    "category_without_id": (_delete("categories", 2, "id"),
                            "categories[2].id: missing (every category needs an integer id)"),
    "category_id_string": (_set("categories", 1, "id", "2"),
                           "categories[1].id: expected an integer, got '2'"),
    "category_id_bool": (_set("categories", 0, "id", True),
                         "categories[0].id: expected an integer, got True"),
    "category_id_repeated": (_set("categories", 2, "id", 1),
                             "categories[2].id: 1 is also categories[0].id"),
    "category_name_repeated": (_set("categories", 1, "name", "cat"),
                               "categories[1].name: 'cat' is also categories[0].name (two "
                               "categories, one class name)"),
    "category_name_blank": (_set("categories", 1, "name", ""),
                            "categories[1].name: expected a non-empty string, got ''"),
    "category_not_object": (_append("categories", "bird"),
                            "categories[3]: expected an object, got 'bird'"),
    "image_id_repeated": (_set("images", 2, "id", 1),
                          "images[2].id: 1 is also images[0].id (which one do its annotations "
                          "mean?)"),
    "annotations_not_list": (lambda d: d.update(annotations={"a": 1}),
                             "'annotations' must be a list, got a dict"),
}


@pytest.mark.parametrize("case", sorted(STRUCTURAL))
def test_structural_problems_are_refused_before_any_work(case, tmp_path, capsys):
    change, message = STRUCTURAL[case]
    path = write(tmp_path, edited(change))
    with pytest.raises(ValueError) as info:
        detection.data.coco(path, verbose=False)
    assert str(info.value) == f"{path}: {message}"
    with pytest.raises(ValueError) as info:  # train --data / init-config read it the same way
        inspect_data(path)
    assert str(info.value) == f"{path}: {message}"
    out = tmp_path / "cfg.yaml"
    assert detection_cli.main(["init-config", str(path), "--out", str(out)]) == 2
    assert capsys.readouterr().err == f"error: {path}: {message}\n" and not out.exists()


def test_a_top_level_list_is_refused(tmp_path):
    path = tmp_path / "list.json"
    path.write_text("[1, 2]")
    with pytest.raises(ValueError, match=r"list.json: not a COCO instances file \(the top level "
                                         r"is a list, not an object\)"):
        detection.data.coco(path, verbose=False)


RECORD_PROBLEMS = {
    # name -> (change, report detail after "export.json: ", objects kept, images kept)
    "area_string": (_set("annotations", 1, "area", "big"),
                    "annotations[1].area (id 11): expected a finite number >= 0, got 'big'", 3, 3),
    "area_nan": (_set("annotations", 0, "area", float("nan")),
                 "annotations[0].area (id 10): expected a finite number >= 0, got nan", 3, 3),
    "area_negative": (_set("annotations", 2, "area", -4),
                      "annotations[2].area (id 12): expected a finite number >= 0, got -4", 3, 3),
    "iscrowd_two": (_set("annotations", 0, "iscrowd", 2),
                    "annotations[0].iscrowd (id 10): expected 0 or 1, got 2", 3, 3),
    "bbox_three": (_set("annotations", 1, "bbox", [1, 2, 3]),
                   "annotations[1].bbox (id 11): bbox must be 4 finite numbers, got [1, 2, 3]",
                   3, 3),
    "bbox_strings": (_set("annotations", 1, "bbox", ["1", "2", "3", "4"]),
                     "annotations[1].bbox (id 11): bbox must be 4 finite numbers, got ['1', "
                     "'2', '3', '4']", 3, 3),
    "bbox_infinite": (_set("annotations", 3, "bbox", [1, 2, float("inf"), 4]),
                      "annotations[3].bbox (id 13): bbox must be 4 finite numbers, got [1, 2, "
                      "inf, 4]", 3, 3),
    "image_id_list": (_set("annotations", 2, "image_id", [2]),
                      "annotations[2].image_id (id 12): expected an integer or a string, got "
                      "[2]", 3, 3),
    "image_id_unknown": (_set("annotations", 2, "image_id", 99),
                         "annotations[2].image_id (id 12): unknown image_id 99", 3, 3),
    "category_id_null": (_set("annotations", 0, "category_id", None),
                         "annotations[0].category_id (id 10): expected an integer or a string, "
                         "got None", 3, 3),
    "annotation_not_object": (_append("annotations", [1, 2, 3, 4]),
                              "annotations[4]: expected an object, got [1, 2, 3, 4]", 4, 3),
    "annotation_id_repeated": (_set("annotations", 3, "id", 10),
                               "annotations[3].id: 10 is also annotations[0].id (skipped)", 3, 3),
    "image_width_string": (_set("images", 0, "width", "wide"),
                           "images[0].width: expected a number of pixels, got 'wide'", 2, 2),
    "image_height_negative": (_set("images", 1, "height", -30),
                              "images[1].height: expected a number of pixels, got -30", 3, 2),
    "image_file_name_number": (_set("images", 2, "file_name", 7),
                               "images[2].file_name: expected a file name, got 7", 3, 2),
    "image_not_object": (_append("images", "im4.jpg"),
                         "images[3]: expected an object, got 'im4.jpg'", 4, 3),
}


@pytest.mark.parametrize("case", sorted(RECORD_PROBLEMS))
def test_a_bad_entry_is_counted_skipped_and_named(case, tmp_path):
    change, detail, objects, images = RECORD_PROBLEMS[case]
    path = write(tmp_path, edited(change))
    ds = detection.data.coco(path, verbose=False)
    report = ds.report
    assert report.details("malformed_annotation") == [f"export.json: {detail}"]
    assert report.count("malformed_annotation") == 1
    assert (report.num_images, report.num_objects) == (images, objects)
    assert ds.num_examples == images and ds.class_names == ["cat", "dog", "fox"]
    assert "malformed_annotation: 1" in report.summary()


def test_unhashable_ids_do_not_break_class_discovery(tmp_path):
    data = edited(_set("annotations", 0, "category_id", {"id": 1}))
    info = inspect_data(write(tmp_path, data))
    assert info.class_names == ["cat", "dog", "fox"]
    assert info.objects_per_class == {"cat": 1, "dog": 1, "fox": 1}


def test_a_broken_eval_json_is_refused_before_training(tmp_path, capsys):
    import yaml

    from tests.detection.detector_helpers import TINY

    broken = write(tmp_path, edited(_delete("categories", 0, "id")))
    config = {
        "name": "tiny",
        "model": {"backbone": "resnet18", "backbone_kwargs": {
            k: list(v) if isinstance(v, tuple) else v for k, v in TINY.items()},
            "head": "c4", "image_size": [64, 64], "anchor_sizes": [16, 32]},
        "data": {"num_classes": 3, "class_names": ["circle", "square", "triangle"],
                 "train": {"loader": "shapes", "num_images": 4, "image_size": 64},
                 "eval": {"loader": "coco", "data_dir": str(broken)}},
        "train": {"batch_size": 2, "steps": 2, "distribution": "none", "optimizer": "sgd",
                  "learning_rate": 0.01},
        "eval": {"metric": "coco"},
    }
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(config))
    run = tmp_path / "run"
    assert detection_cli.main(["train", "--config", str(path), "--out", str(run)]) == 2
    assert capsys.readouterr().err == (f"error: {broken}: categories[0].id: missing (every "
                                       "category needs an integer id)\n")
    assert not (run / "checkpoints").exists() and not (run / "history.csv").exists()
