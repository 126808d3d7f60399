"""The shapes detection set and the fixed-canvas training batches (clip, drop, pad, flip)."""

import importlib

import numpy as np
import pytest
import tensorflow as tf

from detection.data import pipeline as transforms

shapes_mod = importlib.import_module("detection.data.synthetic")


def _element(image, boxes, labels):
    return {"images": image, "bounding_boxes": {"boxes": np.asarray(boxes, "float32"),
                                                "labels": np.asarray(labels, "int32")}}


def test_shapes_dataset_is_deterministic_and_splits_differ():
    import detection.data

    ds = detection.data.shapes(4, image_size=48, seed=3)
    a = list(ds.as_numpy_iterator())
    b = list(detection.data.shapes(4, image_size=48, seed=3).as_numpy_iterator())
    test = list(detection.data.shapes(4, split="test", image_size=48, seed=3).as_numpy_iterator())
    assert len(a) == 4 and a[0]["images"].shape == (48, 48, 3) and a[0]["images"].dtype == np.uint8
    for x, y, t in zip(a, b, test, strict=True):
        np.testing.assert_array_equal(x["images"], y["images"])
        assert not np.array_equal(x["images"], t["images"])
        boxes, labels = x["bounding_boxes"]["boxes"], x["bounding_boxes"]["labels"]
        assert boxes.shape == (len(labels), 4) and len(labels) >= 1
        assert ((labels >= 0) & (labels < len(shapes_mod.CLASS_NAMES))).all()
        assert (boxes[:, 2] > boxes[:, 0]).all() and (boxes[:, :] <= 48).all()
    with pytest.raises(ValueError, match="split must be one of"):
        shapes_mod.shapes(2, split="holdout")


def test_write_voc_reads_back_with_the_voc_loader(tmp_path):
    from detection.data import voc

    root = shapes_mod.write_voc(tmp_path / "shapes", num_images=3, image_size=48, seed=1)
    items = shapes_mod.samples(3, image_size=48, seed=1)
    ds = voc(root, year=2007, split="train", class_names=shapes_mod.CLASS_NAMES, verbose=False)
    read = list(ds.as_numpy_iterator())
    assert len(read) == 3
    for got, want in zip(read, items, strict=True):
        np.testing.assert_array_equal(got["bounding_boxes"]["labels"], want["labels"])
        np.testing.assert_allclose(got["bounding_boxes"]["boxes"], want["boxes"], atol=1.0)


def test_canvas_clips_drops_pads_and_counts():
    image = np.full((50, 100, 3), 7, "uint8")  # scaled by 0.64 onto 64 x 64 -> 32 x 64
    boxes = [[-10, 10, 50, 40],  # sticks out left: clipped to x1 = 0
             [20, 20, 20, 30],  # zero width: dropped
             [120, 0, 150, 20],  # entirely outside: empty after clipping, dropped
             [10, 10, 30, 5]]  # inverted: dropped
    ds = tf.data.Dataset.from_tensors(_element(image, boxes, [0, 1, 2, 1]))
    out = next(iter(transforms.to_canvas(ds, (64, 64), max_boxes=3).as_numpy_iterator()))
    assert out["images"].shape == (64, 64, 3)
    assert (out["images"][:32] == 7).all() and (out["images"][32:] == 0).all()
    assert out["num_dropped_boxes"] == 3
    np.testing.assert_array_equal(out["bounding_boxes"]["labels"], [0, -1, -1])
    np.testing.assert_allclose(out["bounding_boxes"]["boxes"][0], [0, 6.4, 32, 25.6], atol=1e-4)
    np.testing.assert_allclose(out["bounding_boxes"]["boxes"][1:], 0)


def test_flip_moves_boxes_with_the_image():
    image = np.zeros((32, 64, 3), "uint8")
    image[4:12, 2:10] = 255  # object at x 2..10 of a 64-wide image
    ds = tf.data.Dataset.from_tensors(_element(image, [[2, 4, 10, 12]], [1])).repeat(16)
    flipped = 0
    for out in transforms.to_canvas(ds, (32, 64), 2, flip=True, seed=5).as_numpy_iterator():
        box = out["bounding_boxes"]["boxes"][0]
        x1, y1, x2, y2 = box.astype(int)
        assert (out["images"][y1:y2, x1:x2] == 255).all()  # the box still covers the object
        flipped += int(x1 == 54)
    assert 0 < flipped < 16  # both outcomes occur


def test_shorter_sides_rescale_within_the_canvas_deterministically():
    image = np.full((100, 200, 3), 9, "uint8")  # fits a 128 x 256 canvas at scale 1.28
    ds = tf.data.Dataset.from_tensors(_element(image, [[10, 20, 50, 60]], [0])).repeat(24)

    def run(sides, seed=3):
        return list(transforms.to_canvas(ds, (128, 256), 2, seed=seed,
                                         shorter_sides=sides).as_numpy_iterator())

    half = run((50,))[0]  # shorter side 100 -> 50: scale 0.5
    np.testing.assert_allclose(half["bounding_boxes"]["boxes"][0], [5, 10, 25, 30], atol=1e-4)
    assert (half["images"][:50, :100] == 9).all() and not half["images"][50:].any()
    assert not half["images"][:, 100:].any()
    capped = run((400,))[0]  # beyond the canvas: capped at the fitting scale 1.28
    np.testing.assert_allclose(capped["bounding_boxes"]["boxes"][0], [12.8, 25.6, 64, 76.8],
                               atol=1e-3)
    widths = [e["bounding_boxes"]["boxes"][0, 2] - e["bounding_boxes"]["boxes"][0, 0]
              for e in run((50, 100))]
    assert sorted(set(np.round(widths, 3))) == [20.0, 40.0]  # both sizes are drawn
    again = [e["bounding_boxes"]["boxes"][0, 2] - e["bounding_boxes"]["boxes"][0, 0]
             for e in run((50, 100))]
    assert widths == again  # same seed, same draws
    with pytest.raises(ValueError, match="shorter_sides"):
        transforms.to_canvas(ds, (128, 256), shorter_sides=(0,))


def test_training_batches_have_static_shapes_and_empty_images_batch():
    elements = [_element(np.zeros((40, 40, 3), "uint8"), np.zeros((0, 4)), []),
                _element(np.zeros((20, 30, 3), "uint8"), [[1, 1, 9, 9]], [2])]
    ds = tf.data.Dataset.from_generator(
        lambda: iter(elements),
        output_signature={"images": tf.TensorSpec((None, None, 3), tf.uint8),
                          "bounding_boxes": {"boxes": tf.TensorSpec((None, 4), tf.float32),
                                             "labels": tf.TensorSpec((None,), tf.int32)}})
    batches = transforms.training_batches(ds, (32, 32), batch_size=2, max_boxes=4, flip=False)
    assert batches.element_spec["images"].shape == (2, 32, 32, 3)
    batch = next(iter(batches.as_numpy_iterator()))
    np.testing.assert_array_equal(batch["bounding_boxes"]["labels"], [[-1] * 4, [2, -1, -1, -1]])


def test_nan_images_raise_a_clear_error():
    image = np.zeros((8, 8, 3), "float32")
    image[1, 1, 1] = np.inf
    ds = tf.data.Dataset.from_tensors(_element(image, [[0, 0, 4, 4]], [0]))
    with pytest.raises(tf.errors.InvalidArgumentError, match="NaN or inf"):
        list(transforms.to_canvas(ds, (16, 16)).as_numpy_iterator())
