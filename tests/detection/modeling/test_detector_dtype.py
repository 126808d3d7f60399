"""`FasterRCNN(..., dtype=policy)` / `MaskRCNN(...)`: every part built under a Keras dtype policy,
as each Keras layer's `dtype` argument (issue 33), the global policy left as it was."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from tests.detection.detector_helpers import tiny_detector


def test_a_mixed_bfloat16_detector_computes_in_bf16_and_answers_in_float32():
    model = tiny_detector("c4", dtype="mixed_bfloat16")
    assert keras.config.dtype_policy().name == "float32"  # restored
    convs = [layer for layer in model.backbone._flatten_layers()
             if isinstance(layer, keras.layers.Conv2D)]
    assert convs and {c.compute_dtype for c in convs} == {"bfloat16"}
    assert {c.kernel.dtype for c in convs} == {"float32"}
    images = np.random.default_rng(0).uniform(0, 255, (1, 64, 64, 3)).astype("float32")
    out = model.predict(images, verbose=0)
    assert out["boxes"].dtype == np.float32 and np.isfinite(out["boxes"]).all()
    assert out["scores"].dtype == np.float32


def test_a_mask_rcnn_takes_the_policy_too_and_a_bad_one_is_named():
    model = tiny_detector("c4", masks=True, dtype="mixed_bfloat16")
    assert model.mask_head.compute_dtype == "bfloat16"
    assert keras.config.dtype_policy().name == "float32"
    with pytest.raises(ValueError, match="dtype must be a Keras dtype policy.*'float33'"):
        tiny_detector("c4", dtype="float33")
    assert keras.config.dtype_policy().name == "float32"
