"""The classification TFDS path (`cifar10`) end to end through the real `tfds.load` machinery on
`tfds.testing.mock_data` (code-only builders, no download), and its failure when the set is
unavailable."""

import keras
import numpy as np
import pytest

import keras_resnet_suite as krs
from keras_resnet_suite.data.cifar import cifar
from keras_resnet_suite.data.cifar import load_arrays as load_cifar_arrays
from keras_resnet_suite.data.tfds import DatasetUnavailable, builder

tfds = pytest.importorskip("tensorflow_datasets")

N = 4  # mock examples per split


@pytest.fixture
def mocked():
    """TFDS mocked from the builders' code alone: no metadata from GCS, no download."""
    with tfds.testing.mock_data(num_examples=N, policy=tfds.testing.MockPolicy.USE_CODE):
        yield


def test_cifar10_arrays_are_the_tfds_examples(mocked, tmp_path):
    xtr, ytr, xte, yte, names, report = load_cifar_arrays("tfds", cache=tmp_path)
    assert xtr.shape == xte.shape == (N, 32, 32, 3) and xtr.dtype == np.uint8
    assert ytr.shape == yte.shape == (N,) and ytr.dtype == np.int64
    assert report.loaded == {"train": N, "test": N} and not report.counts
    # the names are the builder's label feature (10 classes), in label order
    assert names == list(tfds.builder("cifar10").info.features["label"].names)
    assert len(names) == 10
    raw = list(tfds.load("cifar10", split="train", data_dir=tmp_path).as_numpy_iterator())
    np.testing.assert_array_equal(xtr, np.stack([e["image"] for e in raw]))
    np.testing.assert_array_equal(ytr, [e["label"] for e in raw])


def test_classifier_trains_two_steps_from_the_tfds_stream(mocked, tmp_path):
    data = cifar("tfds", batch_size=2, seed=0, cache=tmp_path)
    assert data.num_train == N and data.num_classes == 10 and len(data.class_names) == 10
    x, y = next(iter(data.train))
    assert x.shape == (2, 32, 32, 3) and x.dtype == "float32" and y.shape == (2,)
    keras.utils.set_random_seed(0)
    model = krs.build("resnet20", classes=10)
    model.compile(optimizer=keras.optimizers.SGD(0.01),
                  loss="sparse_categorical_crossentropy")
    before = [w.numpy().copy() for w in model.trainable_weights]
    history = model.fit(data.train, steps_per_epoch=2, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])
    assert int(model.optimizer.iterations.numpy()) == 2
    assert any(not np.array_equal(b, w.numpy()) for b, w in zip(before, model.trainable_weights, strict=True))


def test_unprepared_set_without_download_is_one_clear_line(tmp_path):
    with pytest.raises(DatasetUnavailable) as err:
        builder("cifar10", tmp_path, download=False)
    message = str(err.value)
    assert "\n" not in message
    assert message.startswith("TFDS dataset 'cifar10' is unavailable (FileNotFoundError: "
                              f"cifar10 is not prepared in {tmp_path}")
    assert f"prepared by hand in {tmp_path}" in message


def test_failed_download_is_one_clear_line(monkeypatch, tmp_path):
    # Offline, requests raises ConnectionError from download_and_prepare; simulated here so the
    # test neither waits on a blackholed network nor downloads CIFAR-10 where it can.
    def offline(self, *args, **kwargs):
        raise ConnectionError("Failed to resolve 'www.cs.toronto.edu'")

    monkeypatch.setattr(tfds.core.DatasetBuilder, "download_and_prepare", offline)
    with pytest.raises(DatasetUnavailable) as err:
        load_cifar_arrays("tfds", cache=tmp_path)
    message = str(err.value)
    assert "\n" not in message
    assert message.startswith("TFDS dataset 'cifar10' is unavailable (ConnectionError: "
                              "Failed to resolve 'www.cs.toronto.edu'). It must be downloaded "
                              f"once with network access, or prepared by hand in {tmp_path}")
    assert message.endswith("alternatively pass the path of an image-folder tree or archive.")
