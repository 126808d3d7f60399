"""What docs/export.md and docs/models.md say about a classifier's input size: as in
keras.applications, `include_top=True` without `input_shape` fixes the spec's size (224, or 32
for CIFAR), `input_shape=(None, None, 3)` takes any size with the same weights, and
`include_top=False` (like a backbone) takes any size by default."""

import numpy as np
import pytest

import keras_resnet_suite as krs

TINY = {"depths": (1, 1, 1), "widths": (8, 8, 8), "stem_width": 8}


@pytest.mark.jax
def test_classifier_input_size_is_the_specs_unless_asked():
    assert krs.build("resnet20", **TINY).input_shape == (None, 32, 32, 3)
    assert krs.build("resnet18", depths=(1, 1, 1, 1)).input_shape == (None, 224, 224, 3)
    assert krs.build("resnet20", include_top=False, **TINY).input_shape == (None, None, None, 3)
    model = krs.build("resnet20", input_shape=(None, None, 3), classes=3, **TINY)
    for size in (32, 45):
        assert model.predict(np.zeros((1, size, size, 3)), verbose=0).shape == (1, 3)
