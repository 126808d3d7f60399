"""keras_resnet_suite.compat: version guard and the class-wide call wrapper restoring state."""

import keras
import pytest

from keras_resnet_suite import compat


def test_private_api_outside_the_checked_versions_warns_once(monkeypatch):
    monkeypatch.setattr(compat, "KERAS_CHECKED", ((9, 0), (9, 1)))
    compat._check.cache_clear()
    layer = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    try:
        with pytest.warns(RuntimeWarning, match="private keras API checked on keras 9.0 to 9.1"):
            compat.flatten_layers(layer)
    finally:
        compat._check.cache_clear()


def test_wrapped_calls_restore_inherited_and_own_calls():
    assert "call" not in keras.layers.Conv2D.__dict__  # inherited from the base convolution
    seen = []

    def wrap(call):
        def wrapped(self, inputs, *args, **kwargs):
            seen.append(self.name)
            return call(self, inputs, *args, **kwargs)
        return wrapped

    conv = keras.layers.Conv2D(2, 1, name="c")
    with compat.wrapped_calls({keras.layers.Conv2D: wrap}):
        conv(keras.ops.zeros((1, 4, 4, 3)))
    conv(keras.ops.zeros((1, 4, 4, 3)))
    assert seen == ["c"] and "call" not in keras.layers.Conv2D.__dict__
