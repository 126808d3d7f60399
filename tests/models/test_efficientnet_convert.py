"""keras.applications EfficientNet / EfficientNetV2 -> ours: same input (preprocessing
included), same logits, same parameter count; foreign models are refused in one line."""

import keras
import numpy as np
import pytest

import keras_resnet_suite as krs
from keras_resnet_suite import efficientnet_convert

# keras.applications' counts less V1's 7 input-Normalization statistics (all rows:
# test_efficientnet.py); checked live below against the source model.
KERAS_APPLICATIONS_PARAMS = {"efficientnet_b0": 5330564, "efficientnet_b3": 12320528,
                             "efficientnetv2_s": 21612360}

# TensorFlow pass only: the conversion is backend-agnostic (the model tests run under JAX too),
# and three more B0/B3/V2-S compilations would cost the JAX pass ~2 minutes.


def _seeded(ctor, size):
    """A keras.applications model at a small input with seeded weights whose BN statistics are
    those of a calibration batch, so that the logits depend on the image (at random statistics
    they hardly do)."""
    keras.utils.set_random_seed(0)
    model = ctor(weights=None, input_shape=(size, size, 3), classifier_activation=None)
    norms = [la for la in model.layers if isinstance(la, keras.layers.BatchNormalization)]
    for layer in norms:
        layer.momentum = 0.0  # one training pass stores that batch's statistics
        if layer.name.endswith("project_bn"):  # damped residual branches: a stable deep net
            gamma, *rest = layer.get_weights()
            layer.set_weights([gamma * 0.05, *rest])
    calibration = np.random.default_rng(2).uniform(0, 255, (16, size, size, 3)).astype("float32")
    model(calibration, training=True)
    for layer in norms:
        layer.momentum = 0.99
    return model


# Logits within 1e-4 of the largest one. V2-S runs at 64 px: at 32 px its last stage works on
# 1x1 maps and the random 41-block net is chaotic (1e-5 of input noise moved the source's own
# logits by 20 %; float32 rounding grew to 7e-3), at 64 px it agrees to 4e-6 (measured).
@pytest.mark.parametrize("ctor, name, size", [
    (keras.applications.EfficientNetB0, "efficientnet_b0", 32),
    (keras.applications.EfficientNetB3, "efficientnet_b3", 32),
    (keras.applications.EfficientNetV2S, "efficientnetv2_s", 64),
])
def test_logit_parity_with_keras_applications(ctor, name, size):
    source = _seeded(ctor, size)
    ours = krs.convert_keras_applications(source)
    assert ours.spec.name == name and ours.input_shape == source.input_shape
    assert ours.count_params() == KERAS_APPLICATIONS_PARAMS[name] == source.count_params() - \
        sum(la.count_params() for la in source.layers
            if isinstance(la, keras.layers.Normalization))
    x = np.random.default_rng(1).uniform(0, 255, (2, size, size, 3)).astype("float32")
    expected = keras.ops.convert_to_numpy(source(x, training=False))
    got = keras.ops.convert_to_numpy(ours(x, training=False))
    assert np.abs(expected[0] - expected[1]).max() > 1e-2  # the images give other logits
    scale = np.abs(expected).max()
    np.testing.assert_allclose(got / scale, expected / scale, atol=1e-4)


def test_headless_source_gives_a_headless_model():
    source = keras.applications.EfficientNetV2B0(weights=None, include_top=False,
                                                 input_shape=(32, 32, 3))
    ours = krs.convert_keras_applications(source)
    assert "predictions" not in [la.name for la in ours.layers]
    x = np.random.default_rng(1).uniform(0, 255, (1, 32, 32, 3)).astype("float32")
    np.testing.assert_allclose(keras.ops.convert_to_numpy(ours(x)),
                               keras.ops.convert_to_numpy(source(x)), rtol=1e-4, atol=1e-4)


def test_a_foreign_model_is_refused_in_one_line():
    inputs = keras.Input((32, 32, 3))
    x = keras.layers.Conv2D(8, 3, name="stem_conv")(inputs)
    x = keras.layers.Conv2D(8, 1, name="block1a_project_conv")(x)
    fake = keras.Model(inputs, x, name="fake")
    with pytest.raises(ValueError, match="'fake': its blocks and widths match no EfficientNet"):
        krs.convert_keras_applications(fake)
    assert not efficientnet_convert.is_keras_efficientnet("model.h5")
