"""keras.applications ResNet/ResNetV2 (random weights, random BN statistics) converted into
this library's models give the same logits (float32, max abs diff <= 1e-4)."""

import keras
import numpy as np
import pytest
from conftest import randomise, write_legacy_h5

import keras_resnet_suite as krs
from keras_resnet_suite import models

SIZE = 64


def _np(x):
    return keras.ops.convert_to_numpy(x)


@pytest.fixture(scope="module")
def keras_resnet50():
    return randomise(keras.applications.ResNet50(weights=None, input_shape=(SIZE, SIZE, 3),
                                                 classifier_activation=None), seed=1)


def _parity(source, ours, rng):
    x = rng.uniform(-1, 1, (2, SIZE, SIZE, 3)).astype("float32")
    expected, got = _np(source(x)), _np(ours(x))
    assert np.abs(expected).max() > 0.1  # the comparison is not between two near-zero outputs
    return float(np.abs(expected - got).max())


@pytest.mark.parametrize("name", ["ResNet50", "ResNet101", "ResNet152", "ResNet50V2"])
def test_keras_applications_parity(name, rng, keras_resnet50):
    if name == "ResNet50":
        source = keras_resnet50
    else:
        source = getattr(keras.applications, name)(weights=None, input_shape=(SIZE, SIZE, 3),
                                                   classifier_activation=None)
        randomise(source)
    ours = models.convert_keras_applications(source, classifier_activation=None)
    assert _parity(source, ours, rng) <= 1e-4
    v2 = name.endswith("V2")
    assert ours.get_layer("conv2_x").downsample == ("last" if v2 else "first")
    assert ours.get_layer("conv3_x").blocks[0].stride_in_1x1 is not v2


def test_keras_h5_file_builds_with_the_right_options(tmp_path, rng, keras_resnet50):
    path = write_legacy_h5(keras_resnet50,
                           tmp_path / "resnet50_weights_tf_dim_ordering_tf_kernels.h5")
    # build() reads the file's layout and picks keras.applications' options by itself.
    model = krs.build("resnet50", weights=str(path), input_shape=(SIZE, SIZE, 3),
                      classifier_activation=None)
    assert model.get_layer("conv2_x").blocks[0].bn_epsilon == pytest.approx(1.001e-5)
    assert _parity(keras_resnet50, model, rng) <= 1e-4
    with pytest.raises(ValueError, match="stride_in_1x1=False contradicts"):
        krs.build("resnet50", weights=str(path), stride_in_1x1=False)
