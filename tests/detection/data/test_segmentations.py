"""Instance masks in the data: COCO polygons/RLE/crowd RLE decoded per box, broken segmentations
counted, EXIF turns, VOC refusing masks."""

import json
import re

import numpy as np
import pytest
from PIL import Image

import detection.data
from detection.data.records import upright_boxes
from detection.data.segmentations import encode_segmentation, upright_mask

pytest.importorskip("pycocotools")


def test_coco_mini_masks_are_pycocotools_own(shared_data):
    """Every object's mask equals pycocotools' `annToMask` of its annotation; non-crowd areas
    equal the JSON's `area` (the polygon's own area) within half the polygon's perimeter, the
    most rasterising can gain or lose along the outline."""
    from pycocotools.coco import COCO

    path = shared_data / "coco-mini/annotations/instances_val2017.json"
    api = COCO(str(path))
    ds = detection.data.coco(shared_data / "coco-mini", "val2017", masks=True, verbose=False)
    assert not ds.report
    count = 0
    for e in ds.as_numpy_iterator():
        anns = api.loadAnns(api.getAnnIds(imgIds=[int(e["image_id"])]))
        masks = e["masks"]
        assert masks.dtype == np.uint8 and masks.shape == (len(anns), *e["images"].shape[:2])
        for mask, ann in zip(masks, anns, strict=True):
            np.testing.assert_array_equal(mask, api.annToMask(ann))
            if not ann["iscrowd"]:
                perimeter = sum(np.hypot(*np.diff(np.reshape(p + p[:2], (-1, 2)), axis=0).T).sum()
                                for p in ann["segmentation"])
                assert abs(int(mask.sum()) - ann["area"]) <= perimeter / 2
            count += 1
    assert count == 624


def _write_coco(root, segmentations, size=(30, 40), orientation=1):
    """A one-image exported COCO JSON (image `size` = (height, width), stored frame) whose
    annotation k has box [1, 1, 8, 8] and `segmentations[k]`."""
    h, w = size
    photo = Image.fromarray(np.full((h, w, 3), 90, np.uint8))
    exif = photo.getexif()
    exif[0x0112] = orientation
    photo.save(root / "img.jpg", exif=exif, quality=95)
    anns = [{"id": 100 + k, "image_id": 1, "bbox": [1, 1, 8, 8], "category_id": 3, "area": 64.0,
             "iscrowd": int(isinstance(s, dict)),
             **({} if s == "absent" else {"segmentation": s})}
            for k, s in enumerate(segmentations)]
    data = {"images": [{"id": 1, "file_name": "img.jpg", "width": w, "height": h}],
            "annotations": anns, "categories": [{"id": 3, "name": "thing"}]}
    (root / "data.json").write_text(json.dumps(data))
    return root / "data.json"


def _rle_string(mask):
    from pycocotools import mask as mask_utils

    return mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))["counts"].decode()


def test_polygon_rle_and_crowd_rle_decode_and_broken_ones_are_counted(tmp_path):
    square = np.zeros((30, 40), np.uint8)
    square[2:6, 3:9] = 1
    # column-major runs: 152 background pixels, then rows 2..5 of columns 5 and 6
    crowd = {"size": [30, 40], "counts": [30 * 5 + 2, 4, 26, 4, 30 * 40 - (30 * 5 + 2 + 34)]}
    segmentations = [
        [[1, 1, 9, 1, 9, 9, 1, 9]],  # polygon: a square
        crowd,  # uncompressed (crowd) RLE
        {"size": [30, 40], "counts": _rle_string(square)},  # compressed RLE
        [[1, 1, 9, 1, 9]],  # odd number of coordinates
        [[1, 1, 9, 9]],  # 4 coordinates: pycocotools would read a box
        {"size": [40, 30], "counts": _rle_string(square)},  # RLE of another size
        {"size": [30, 40], "counts": [10, 5]},  # runs not covering the image
        {"size": [30, 40], "counts": "not~rle\x7f"},  # garbage string
        [],  # export without a segmentation
        "absent",  # no key at all
    ]
    path = _write_coco(tmp_path, segmentations)
    ds = detection.data.coco(path, masks=True, verbose=False)
    assert ds.report.counts == {"bad_segmentation": 7}
    details = ds.report.details("bad_segmentation")
    assert all(d.startswith("img.jpg: annotation id ") for d in details)
    details = [d.removeprefix("img.jpg: ") for d in details]
    assert [d.split(":")[0] for d in details] == [f"annotation id {k}" for k in range(103, 110)]
    assert "5 coordinates" in details[0] and "4 coordinates" in details[1]
    assert "RLE size 40x30 (h x w) is not the image's 30x40" in details[2]
    assert "cover 15 pixels" in details[3] and "not a compressed RLE string" in details[4]
    assert "no segmentation (empty list)" in details[5] and details[6].endswith("no segmentation")
    (element,) = list(ds.as_numpy_iterator())
    masks = element["masks"]
    assert masks.shape == (3, 30, 40) and len(element["bounding_boxes"]["labels"]) == 3
    np.testing.assert_array_equal(element["iscrowd"], [False, True, True])
    ys, xs = np.nonzero(masks[0])  # pycocotools' polygon rasterisation: pixels 1..8
    assert (xs.min(), ys.min(), xs.max(), ys.max()) == (1, 1, 8, 8)
    expected_crowd = np.zeros((30, 40), np.uint8)
    expected_crowd[2:6, 5:7] = 1
    np.testing.assert_array_equal(masks[1], expected_crowd)
    np.testing.assert_array_equal(masks[2], square)


def test_masks_only_when_asked_and_voc_refuses_them(tmp_path):
    path = _write_coco(tmp_path, [[[1, 1, 9, 1, 9, 9, 1, 9]]])
    assert "masks" not in detection.data.coco(path, verbose=False).element_spec
    with pytest.raises(ValueError, match=r"PASCAL VOC XML annotations hold boxes only"):
        detection.data.voc(tmp_path, masks=True)


@pytest.mark.parametrize("orientation", range(1, 9))
def test_upright_mask_turns_as_the_boxes_do(orientation):
    mask = np.zeros((40, 60), np.uint8)
    mask[5:15, 10:25] = 1  # the box (10, 5, 25, 15) on the stored pixels
    ys, xs = np.nonzero(upright_mask(mask, orientation))
    np.testing.assert_array_equal(upright_boxes([[10, 5, 25, 15]], orientation, 60, 40),
                                  [[xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]])


@pytest.mark.parametrize("frame", ["stored", "upright"])
def test_exif_turned_photo_masks_follow_the_boxes_frame(tmp_path, frame):
    """Orientation 6: drawn on the stored pixels (declared size = stored), masks turn with the
    image and its boxes; drawn on the upright photo (declared size = upright), they are kept."""
    from pycocotools import mask as mask_utils

    polygon = [[1, 1, 9, 1, 9, 9, 1, 9]]
    path = _write_coco(tmp_path, [polygon], orientation=6)
    if frame == "upright":
        data = json.loads(path.read_text())
        data["images"][0].update(width=30, height=40)
        path.write_text(json.dumps(data))
    ds = detection.data.coco(path, masks=True, verbose=False)
    (element,) = list(ds.as_numpy_iterator())
    assert element["images"].shape[:2] == (40, 30) and element["masks"].shape == (1, 40, 30)
    if frame == "stored":
        expected = upright_mask(mask_utils.decode(encode_segmentation(polygon, 30, 40)[0]), 6)
    else:
        expected = mask_utils.decode(encode_segmentation(polygon, 40, 30)[0])
    np.testing.assert_array_equal(element["masks"][0], expected)
    np.testing.assert_allclose(_mask_box(element["masks"][0]),
                               element["bounding_boxes"]["boxes"][0], atol=1)


def _mask_box(mask):
    ys, xs = np.nonzero(mask)
    return np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], np.float32)


def _masked_elements(count=6):
    """Elements of a 50x70 image with a rectangle, a triangle and an object labelled -1."""
    import tensorflow as tf

    masks = np.zeros((3, 50, 70), np.uint8)
    masks[0, 4:20, 6:30] = 1
    for row in range(25, 45):  # a triangle widening downwards
        masks[1, row, 40:40 + (row - 24) + 5] = 1
    masks[2, 1:3, 1:3] = 1
    boxes = np.stack([_mask_box(m) for m in masks])
    element = {"images": np.full((50, 70, 3), 100, np.uint8),
               "bounding_boxes": {"boxes": boxes, "labels": np.array([0, 2, -1], np.int32)},
               "masks": masks}
    return tf.data.Dataset.from_tensors(element).repeat(count), masks


def test_canvas_moves_masks_with_boxes_flip_resize_and_pads_zeros():
    """Nearest-neighbour resize and flip: each kept mask's box equals its transformed box within
    1 px; the label -1 object goes with its mask; padding objects have all-zero masks."""
    from detection.data.pipeline import to_canvas, training_batches

    ds, masks = _masked_elements()
    out = list(to_canvas(ds, (64, 64), max_boxes=4, flip=True, seed=3,
                         shorter_sides=(32, 40)).as_numpy_iterator())
    flips = set()
    for e in out:
        boxes, labels, canvas_masks = (e["bounding_boxes"]["boxes"], e["bounding_boxes"]["labels"],
                                       e["masks"])
        assert canvas_masks.shape == (4, 64, 64) and canvas_masks.dtype == np.uint8
        np.testing.assert_array_equal(labels, [0, 2, -1, -1])
        assert not canvas_masks[2:].any()
        for k in range(2):
            np.testing.assert_allclose(_mask_box(canvas_masks[k]), boxes[k], atol=1)
        flips.add(bool(boxes[0, 0] > boxes[1, 0]))  # the rectangle is on the left unflipped
    assert flips == {True, False}
    batch = next(iter(training_batches(ds, (64, 64), batch_size=2, max_boxes=4, seed=3,
                                       mask_crop_size=None)))
    assert sorted(batch) == ["bounding_boxes", "images", "masks"]
    assert batch["masks"].shape == (2, 4, 64, 64)


def test_augment_flips_masks_with_the_image():
    from detection.data.augment import augment

    ds, masks = _masked_elements()
    out = list(augment(ds, brightness=0, contrast=0, saturation=None,
                       seed=1).as_numpy_iterator())
    flipped = 0
    for e in out:
        assert e["masks"].dtype == np.uint8 and e["masks"].shape == masks.shape
        is_flipped = not np.array_equal(e["masks"], masks)
        if is_flipped:
            np.testing.assert_array_equal(e["masks"], masks[:, :, ::-1])
            flipped += 1
        for k in range(3):
            np.testing.assert_allclose(_mask_box(e["masks"][k]), e["bounding_boxes"]["boxes"][k],
                                       atol=1)
    assert 0 < flipped < len(out)


def test_shapes_masks_are_the_shapes_own_pixels():
    """Exact masks: each mask's bounding box is its box; the images and boxes are those of
    `masks=False` (asking for masks draws nothing more); a shape's pixels carry its colour."""
    from detection.data.synthetic import ground_truths, samples, shapes

    plain = list(shapes(6, image_size=48, max_objects=4).as_numpy_iterator())
    ds = shapes(6, image_size=48, max_objects=4, masks=True)
    assert "masks" not in shapes(1, image_size=48).element_spec
    count = 0
    for e, p in zip(ds.as_numpy_iterator(), plain, strict=True):
        np.testing.assert_array_equal(e["images"], p["images"])
        np.testing.assert_array_equal(e["bounding_boxes"]["boxes"], p["bounding_boxes"]["boxes"])
        assert e["masks"].dtype == np.uint8 and set(np.unique(e["masks"])) <= {0, 1}
        assert e["masks"].shape == (len(e["bounding_boxes"]["labels"]), 48, 48)
        for mask, box in zip(e["masks"], e["bounding_boxes"]["boxes"], strict=True):
            np.testing.assert_array_equal(_mask_box(mask), box)
            count += 1
    assert count > 6
    (truth,) = ground_truths(samples(1, image_size=48, masks=True))
    assert truth["masks"].shape == (len(truth["labels"]), 48, 48)


@pytest.mark.parametrize("shape", [(2, 50, 70), (3, 50, 60)])
def test_masks_not_one_per_box_at_the_image_size_are_named(shape):
    """Known shapes are refused when the map is built; shapes known only per element fail
    with a ValueError (through `data_error`) naming the element."""
    import tensorflow as tf

    from detection.data.pipeline import data_error, to_canvas

    ds, _ = _masked_elements(1)
    bad = ds.map(lambda e: {**e, "masks": tf.zeros(shape, tf.uint8)})
    listed = ", ".join(map(str, shape))
    with pytest.raises(ValueError, match=re.escape(
            f"the dataset's masks have shape [{listed}], expected one mask per box at the "
            "image's size [3, 50, 70]")):
        to_canvas(bad, (64, 64))
    hidden = ds.map(lambda e: {**e, "masks": tf.raw_ops.PlaceholderWithDefault(
        input=tf.zeros(shape, tf.uint8), shape=[None, None, None])})  # shape unknown to tracing
    with pytest.raises(tf.errors.InvalidArgumentError) as caught:
        list(to_canvas(hidden, (64, 64)).as_numpy_iterator())
    assert str(data_error(caught.value)) == (
        f"element 0 of the stream: masks have shape [{listed}], expected one mask per box at "
        "the image's size [3, 50, 70]")


def test_config_masks_reach_the_loader_or_are_refused_by_name():
    from detection.data import dataset_from_config

    ds = dataset_from_config({"loader": "shapes", "num_images": 2, "image_size": 32,
                              "masks": True})
    assert ds.element_spec["masks"].shape.as_list() == [None, 32, 32]
    for loader in ("voc", "voc_tfds", "coco_tfds"):
        with pytest.raises(ValueError, match=f"^data loader '{loader}' has no instance masks"):
            dataset_from_config({"loader": loader, "data_dir": "unused", "masks": True})


@pytest.mark.parametrize("segmentation, problem", [
    ({"size": [30, 40]}, "RLE 'counts' is neither a list of integers nor a compressed string"),
    ({"counts": [1200]}, "RLE 'size' None is not [height, width]"),
    ({"size": "30x40", "counts": [1200]}, "RLE 'size' '30x40' is not [height, width]"),
    ({"size": [30, 40], "counts": [1300, -100]}, "RLE 'counts' has a negative run length"),
    ({"size": [30, 40], "counts": "0"}, "RLE 'counts' cover 0 pixels, not the image's 1200"),
    ([[1, "a", 9, 1, 9, 9]], "polygon 0 is not a list of finite numbers"),
    ([[1, 1, 9, 1, 9, 9], [1, 1, float("nan"), 1, 9, 9]], "polygon 1 is not a list of finite"),
    ([[1, 1, 9, 1, True, 9]], "polygon 0 is not a list of finite numbers"),
    ([5, 6, 7, 8, 9, 10], "polygon 0 is not a list of finite numbers"),
    (7, "segmentation is a int, not polygons or an RLE"),
])
def test_broken_segmentations_say_what_is_wrong(segmentation, problem):
    rle, found = encode_segmentation(segmentation, 30, 40)
    assert rle is None and found.startswith(problem)
