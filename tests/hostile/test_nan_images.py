"""A NaN or infinite image given to a detector (issue 35): Keras' exports (ONNX, OpenVINO,
LiteRT) returned NaN boxes and scores without a word. The detector's own graph now answers it
with no detections, the rule our SavedModels follow for an unusable image, so every export
carries it (checked per format in tests/export/test_formats.py); `model.predict` refuses it."""

import numpy as np
import pytest

keras = pytest.importorskip("keras")

from tests.detection.detector_helpers import tiny_detector  # noqa: E402


@pytest.fixture(scope="module")
def model():
    keras.utils.set_random_seed(0)
    return tiny_detector(score_threshold=0.0)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_a_non_finite_image_gets_no_detections_and_leaves_the_others(model, bad):
    images = np.random.default_rng(0).uniform(0, 255, (3, 48, 56, 3)).astype("float32")
    alone = {k: keras.ops.convert_to_numpy(v) for k, v in model(images[:1]).items()}
    images[1, 5, 7, 2] = bad
    out = {k: keras.ops.convert_to_numpy(v) for k, v in model(images).items()}
    assert all(np.isfinite(v).all() for v in out.values())
    assert out["num_detections"][1] == 0 and (out["classes"][1] == -1).all()
    assert not out["boxes"][1].any() and not out["scores"][1].any()
    assert out["num_detections"][0] == alone["num_detections"][0] > 0
    np.testing.assert_allclose(out["boxes"][0], alone["boxes"][0], atol=1e-4)
    with pytest.raises(ValueError, match="NaN or inf"):
        model.predict(images, verbose=0)
