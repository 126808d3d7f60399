"""ImageNet-style pipeline: scale augmentation, 10-crop, multi-scale testing, colour noise."""

import keras
import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from keras_resnet_suite.data import (
    augment,
    imagenet,
    predict_multiscale,
    predict_ten_crop,
    topk_error,
)


@pytest.fixture
def tree(tmp_path):
    rng = np.random.default_rng(0)
    root = tmp_path / "imnet"
    for split, n in (("train", 4), ("val", 2)):
        for c in ("n01", "n02", "n03"):
            (root / split / c).mkdir(parents=True)
            for i in range(n):
                h, w = rng.integers(40, 56), rng.integers(40, 70)
                arr = rng.integers(0, 256, (h, w, 3), np.uint8)
                fmt = "PNG" if i % 2 else "JPEG"
                Image.fromarray(arr).save(root / split / c / f"{i}.{fmt.lower()}", format=fmt)
    (root / "train" / "n02" / "README.txt").write_text("not an image")
    return root


SMALL = dict(image_size=32, scale_range=(36, 48), eval_resize=36, mean_samples=6)


def test_folder_pipeline_shapes_report_and_mean(tree, tmp_path):
    d = imagenet(tree, batch_size=4, cache=tmp_path / "c", **SMALL)
    assert d.class_names == ["n01", "n02", "n03"] and d.num_train == 12 and d.num_test == 6
    assert d.report.num_skipped == 1 and d.report.skipped[0][0].endswith("README.txt")
    assert d.mean.shape == (32, 32, 3) and 0 < d.mean.mean() < 255
    x, y = next(iter(d.train))
    assert x.shape == (4, 32, 32, 3) and y.shape == (4,)
    x, y = next(iter(d.test))
    assert x.shape == (4, 32, 32, 3)
    tc = imagenet(tree, batch_size=4, eval_mode="ten_crop", cache=tmp_path / "c", **SMALL)
    x, _ = next(iter(tc.test))
    assert x.shape == (4, 10, 32, 32, 3)
    # identical seeds give identical streams (parallel decode is order-free)
    again = imagenet(tree, batch_size=4, cache=tmp_path / "c", **SMALL)
    np.testing.assert_array_equal(next(iter(d.train))[0], next(iter(again.train))[0])


def test_resize_shorter_side_keeps_aspect():
    out = augment.resize_shorter_side(tf.zeros([40, 60, 3], tf.uint8), 32)
    assert tuple(out.shape) == (32, 48, 3)
    out = augment.resize_shorter_side(tf.zeros([90, 30, 3], tf.uint8), 224)
    assert tuple(out.shape) == (672, 224, 3)


def test_scale_crop_flip_draws_scales_in_range():
    image = tf.reshape(tf.range(50 * 80 * 3, dtype=tf.float32), [50, 80, 3])
    out = augment.scale_crop_flip(image, tf.constant([1, 2], tf.int64), (36, 48), 32)
    assert tuple(out.shape) == (32, 32, 3)


def test_ten_crop_corners_centre_and_mirrors():
    image = tf.reshape(tf.range(6 * 8, dtype=tf.float32), [6, 8, 1])
    crops = augment.ten_crop(image, 4).numpy()
    img = image.numpy()
    np.testing.assert_array_equal(crops[0], img[:4, :4])
    np.testing.assert_array_equal(crops[1], img[:4, 4:])
    np.testing.assert_array_equal(crops[2], img[2:, :4])
    np.testing.assert_array_equal(crops[3], img[2:, 4:])
    np.testing.assert_array_equal(crops[4], img[1:5, 2:6])
    np.testing.assert_array_equal(crops[5:], crops[:5, :, ::-1])


def test_pca_lighting_shifts_every_pixel_by_one_colour():
    image = tf.fill([5, 5, 3], 100.0)
    out = augment.pca_lighting(image, tf.constant([3, 4], tf.int64)).numpy()
    shift = out - 100.0
    np.testing.assert_allclose(shift, np.broadcast_to(shift[0, 0], shift.shape), atol=1e-4)
    alpha = tf.random.stateless_normal([3], tf.constant([3, 4], tf.int64), stddev=0.1).numpy()
    expect = augment._PCA_EIGVEC @ (alpha * augment._PCA_EIGVAL) * 255.0
    np.testing.assert_allclose(shift[0, 0], expect, atol=2e-5)


def _fcn(classes=3):
    inputs = keras.Input((None, None, 3))
    x = keras.layers.Conv2D(4, 3, padding="same")(inputs)
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, keras.layers.Dense(classes, activation="softmax")(x))


def test_multiscale_and_ten_crop_average_model_scores():
    model = _fcn()
    image = np.random.default_rng(0).integers(0, 256, (30, 45, 3), np.uint8)
    got = predict_multiscale(model, image, sizes=(16, 24), flip=True)
    expect = []
    for s in (16, 24):
        x = augment.resize_shorter_side(tf.constant(image), s)[None]
        expect += [model(x).numpy()[0], model(x[:, :, ::-1]).numpy()[0]]
    np.testing.assert_allclose(got, np.mean(expect, 0), atol=1e-6)
    crops = np.random.default_rng(1).random((2, 10, 8, 8, 3)).astype("float32")
    got = predict_ten_crop(model, crops)
    expect = model(crops.reshape(20, 8, 8, 3)).numpy().reshape(2, 10, 3).mean(1)
    np.testing.assert_allclose(got, expect, atol=1e-6)


def test_topk_error_by_hand():
    scores = np.array([[0.1, 0.7, 0.2], [0.5, 0.3, 0.2], [0.2, 0.3, 0.5]])
    labels = np.array([1, 1, 0])
    assert topk_error(scores, labels, 1) == pytest.approx(2 / 3)
    assert topk_error(scores, labels, 2) == pytest.approx(1 / 3)


def test_bad_arguments(tree, tmp_path):
    with pytest.raises(ValueError, match="eval_mode"):
        imagenet(tree, eval_mode="five_crop", cache=tmp_path)
    with pytest.raises(FileNotFoundError, match="no 'train/' folder"):
        imagenet(tree / "train" / "n01", cache=tmp_path)
