"""SqueezeExcite: the gate equals the formula in NumPy, serialises, refuses a zero width."""

import keras
import numpy as np
import pytest

from keras_resnet_suite.squeeze_excite import SqueezeExcite

pytestmark = pytest.mark.jax


def test_gate_equals_the_formula_in_numpy():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2, 5, 4, 8)).astype("float32")
    se = SqueezeExcite(2, activation="swish")
    y = keras.ops.convert_to_numpy(se(x))
    w1, b1 = (keras.ops.convert_to_numpy(v) for v in se.reduce.weights)
    w2, b2 = (keras.ops.convert_to_numpy(v) for v in se.expand.weights)
    s = x.mean(axis=(1, 2)) @ w1[0, 0] + b1
    s = s / (1 + np.exp(-s))
    gate = 1 / (1 + np.exp(-(s @ w2[0, 0] + b2)))
    np.testing.assert_allclose(y, x * gate[:, None, None, :], rtol=1e-5, atol=1e-6)
    assert len(se.weights) == 4 and se.weights[0].shape == (1, 1, 8, 2)


def test_round_trips_through_its_config():
    se = SqueezeExcite(3, name="se")
    se.build((None, 7, 7, 12))
    again = SqueezeExcite.from_config(se.get_config())
    assert (again.squeeze_channels, again.activation) == (3, "relu")


def test_a_zero_width_is_refused_in_one_line():
    with pytest.raises(ValueError, match="squeeze_channels must be >= 1, got 0"):
        SqueezeExcite(0)
