"""COCO loader on coco-mini, category-id mapping, bad-input reporting, TFDS mapping."""

import json

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

import detection.data
from detection.data.tfds import COCO_CATEGORY_IDS, from_tfds_coco


@pytest.mark.parametrize("split, images, objects, crowd", [("train2017", 80, 739, 8),
                                                          ("val2017", 79, 624, 5)])
def test_coco_mini_counts_and_mapping(shared_data, split, images, objects, crowd):
    ds = detection.data.coco(shared_data / "coco-mini", split, verbose=False)
    elements = list(ds.as_numpy_iterator())
    assert len(elements) == ds.num_examples == images
    assert sum(len(e["bounding_boxes"]["labels"]) for e in elements) == objects
    assert sum(int(e["iscrowd"].sum()) for e in elements) == crowd
    assert not ds.report  # the official files are clean
    # 80 categories with sparse ids 1..90 <-> contiguous labels 0..79, both ways
    assert len(ds.class_names) == 80 and ds.class_names[0] == "person"
    assert tuple(ds.category_ids) == COCO_CATEGORY_IDS
    assert ds.label_to_category[79] == 90 and ds.category_to_label[90] == 79
    assert all(ds.category_to_label[ds.label_to_category[k]] == k for k in range(80))

    raw = json.loads((shared_data / f"coco-mini/annotations/instances_{split}.json").read_text())
    first = elements[0]
    anns = [a for a in raw["annotations"] if str(a["image_id"]) == first["image_id"].decode()]
    x, y, w, h = np.array([a["bbox"] for a in anns], np.float32).T
    np.testing.assert_allclose(first["bounding_boxes"]["boxes"],
                               np.stack([x, y, x + w, y + h], 1), rtol=1e-6)
    np.testing.assert_allclose(first["area"], [a["area"] for a in anns], rtol=1e-6)
    assert [ds.label_to_category[int(k)] for k in first["bounding_boxes"]["labels"]] == [
        a["category_id"] for a in anns]


def write_bad_coco(root):
    (root / "annotations").mkdir(parents=True)
    (root / "train2017").mkdir()
    rgb = (np.arange(30 * 50 * 3) % 253).reshape(30, 50, 3).astype(np.uint8)
    for name in ("a.jpg", "b.jpg", "empty.jpg"):
        Image.fromarray(rgb).save(root / "train2017" / name)
    Image.fromarray(rgb).convert("L").save(root / "train2017" / "gray.jpg")
    Image.fromarray(rgb).convert("CMYK").save(root / "train2017" / "cmyk.jpg")
    (root / "train2017" / "broken.jpg").write_bytes(b"\xff\xd8 not really")
    files = ["a.jpg", "b.jpg", "empty.jpg", "gray.jpg", "cmyk.jpg", "broken.jpg", "gone.jpg"]
    images = [{"id": i + 1, "file_name": f, "width": 50, "height": 30}
              for i, f in enumerate(files)]
    images.append({"file_name": "no_id.jpg"})

    def ann(k, image_id, bbox, category_id=18, **extra):
        return {"id": k, "image_id": image_id, "bbox": bbox, "category_id": category_id,
                "area": 50.0, "iscrowd": 0, **extra}

    annotations = [
        ann(1, 1, [1, 2, 10, 5]),
        ann(2, 1, [40, 20, 20, 20], category_id=1),  # beyond the right/bottom edge: clipped
        ann(3, 2, [5, 5, 0, 7]),  # zero width: degenerate
        ann(4, 2, [5, 5, 8, 8], iscrowd=1),
        ann(5, 2, [5, 5, 8]),  # malformed bbox
        ann(6, 99, [5, 5, 8, 8]),  # unknown image
        ann(7, 2, [5, 5, 8, 8], category_id=7),  # unknown category
        ann(8, 4, [1, 1, 4, 4]), ann(9, 5, [1, 1, 4, 4]), ann(10, 6, [1, 1, 4, 4]),
        ann(11, 7, [1, 1, 4, 4]),
    ]
    categories = [{"id": 1, "name": "person"}, {"id": 18, "name": "dog"}]
    data = {"images": images, "annotations": annotations, "categories": categories}
    (root / "annotations" / "instances_train2017.json").write_text(json.dumps(data))


def test_bad_records_are_skipped_counted_and_named(tmp_path):
    write_bad_coco(tmp_path)
    ds = detection.data.coco(tmp_path, "train2017", verbose=False)
    report = ds.report
    assert report.counts == {"malformed_annotation": 3, "unknown_class": 1, "missing_image": 1,
                             "corrupt_image": 1, "degenerate_box": 1, "box_clipped": 1,
                             "grayscale_image": 1, "cmyk_image": 1}
    details = report.details("malformed_annotation")
    assert details[0] == "instances_train2017.json: images[7]: needs 'id' and 'file_name'"
    assert "annotations[4].bbox (id 5): bbox must be 4 finite numbers" in details[1]
    assert "annotations[5].image_id (id 6): unknown image_id 99" in details[2]
    assert "category_id 7" in report.details("unknown_class")[0]
    assert report.files("corrupt_image") == ["broken.jpg"]
    assert report.files("missing_image") == ["gone.jpg"]
    assert "dog" in report.summary() and "person" in report.summary()

    elements = {e["image_id"].decode(): e for e in ds.as_numpy_iterator()}
    assert sorted(elements) == ["1", "2", "3", "4", "5"]  # image 3 has no objects: kept
    a = elements["1"]
    np.testing.assert_array_equal(a["bounding_boxes"]["boxes"], [[1, 2, 11, 7], [40, 20, 50, 30]])
    np.testing.assert_array_equal(a["bounding_boxes"]["labels"], [1, 0])  # dog=1, person=0
    b = elements["2"]
    assert b["iscrowd"].tolist() == [True] and len(b["bounding_boxes"]["labels"]) == 1
    assert elements["3"]["bounding_boxes"]["boxes"].shape == (0, 4)
    assert all(e["images"].shape == (30, 50, 3) for e in elements.values())

    no_empty = detection.data.coco(tmp_path, "train2017", skip_empty=True, skip_crowd=True,
                                   verbose=False)
    kept = sorted(e["image_id"].decode() for e in no_empty.as_numpy_iterator())
    assert kept == ["1", "4", "5"]  # image 2 only had its crowd box left


def test_malformed_json_names_file_and_line(tmp_path):
    (tmp_path / "annotations").mkdir()
    (tmp_path / "val2017").mkdir()
    path = tmp_path / "annotations" / "instances_val2017.json"
    path.write_text('{"images": [],\n "annotations": [\n  {"id": 1,}\n ]}')
    with pytest.raises(ValueError, match=r"instances_val2017.json: malformed JSON at line 3"):
        detection.data.coco(tmp_path, "val2017")
    path.write_text('{"images": []}')
    with pytest.raises(ValueError, match=r"missing key\(s\) \['annotations', 'categories'\]"):
        detection.data.coco(tmp_path, "val2017")


def test_tfds_coco_element_maps_labels_area_and_crowd():
    element = {
        "image": tf.zeros([40, 80, 3], tf.uint8), "image/id": tf.constant(139, tf.int64),
        "objects": {"bbox": tf.constant([[0.5, 0.5, 1.0, 0.75], [0.0, 0.0, 0.25, 0.25]]),
                    "label": tf.constant([0, 79], tf.int64),
                    "area": tf.constant([321, 12], tf.int64),
                    "is_crowd": tf.constant([False, True])},
    }
    out = from_tfds_coco(element)
    np.testing.assert_allclose(out["bounding_boxes"]["boxes"], [[40, 20, 60, 40], [0, 0, 20, 10]])
    np.testing.assert_allclose(out["area"], [321, 12])  # COCO's area, not the box's
    assert out["iscrowd"].numpy().tolist() == [False, True] and out["image_id"] == b"139"
    assert [COCO_CATEGORY_IDS[k] for k in out["bounding_boxes"]["labels"].numpy()] == [1, 90]
