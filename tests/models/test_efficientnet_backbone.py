"""EfficientNet C2..C5 backbones: levels, frozen BN, `freeze_at`, bad input; a tiny FPN Faster
R-CNN on an EfficientNet-B0 layout trains two steps, exports, and its SavedModel equals Keras."""

import sys
from pathlib import Path

import keras
import numpy as np
import pytest

from keras_resnet_suite import backbones

pytestmark = pytest.mark.tf_only
tf = pytest.importorskip("tensorflow")
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "detection"))

SMALL = {"width": 0.25, "depth": 0.25}  # B0's rows at a quarter of its width and depth


def test_backbone_levels_feature_info_and_freezing():
    net = backbones.build("efficientnet_b0", input_shape=(64, 64, 3), norm="frozen",
                          freeze_at=3)
    assert net.feature_info == {"C2": {"channels": 24, "stride": 4},
                                "C3": {"channels": 40, "stride": 8},
                                "C4": {"channels": 112, "stride": 16},
                                "C5": {"channels": 320, "stride": 32}}
    out = net(np.zeros((1, 64, 64, 3), "float32"))
    assert {k: tuple(v.shape) for k, v in out.items()} == {
        "C2": (1, 16, 16, 24), "C3": (1, 8, 8, 40), "C4": (1, 4, 4, 112), "C5": (1, 2, 2, 320)}
    frozen = [la.name for la in net.layers if not la.trainable and la.weights]
    assert frozen == ["stem_conv", "stem_bn", "block1a", "block2a", "block2b", "block3a",
                      "block3b"]
    assert "FrozenBatchNormalization" in {type(w).__name__ for w in
                                          net.get_layer("block4a").chain}
    assert backbones.EfficientNetV2S(input_shape=(64, 64, 3)).feature_info["C5"]["channels"] == 256


@pytest.mark.parametrize("kwargs, message", [
    ({"freeze_at": 6}, "freeze_at must be an integer in"),
    ({"return_levels": ("C6",)}, "return_levels must be a non-empty subset"),
    ({"output_stride": 16}, "EfficientNet backbones take output_stride=32"),
])
def test_backbone_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        backbones.build("efficientnet_b0", **kwargs)


def test_detector_trains_exports_and_serves_the_same(tmp_path):
    from detector_helpers import tiny_detector, toy_batch

    from detection.export import export_saved_model

    keras.utils.set_random_seed(0)
    model = tiny_detector("fpn", backbone="efficientnet_b0", backbone_kwargs=dict(SMALL),
                          norm="frozen", score_threshold=0.0)
    model.compile(optimizer=keras.optimizers.SGD(0.01))
    batch = toy_batch(batch=2)
    before = [w.numpy().copy() for w in model.trainable_weights]
    history = model.fit(tf.data.Dataset.from_tensors(batch).repeat(2), epochs=1, verbose=0)
    assert all(np.isfinite(v[-1]) for v in history.history.values())
    assert any(not np.allclose(w.numpy(), b)
               for w, b in zip(model.trainable_weights, before, strict=True))

    path = export_saved_model(model, tmp_path / "saved")
    image = batch["images"][:1]
    dets = model.predict(image, verbose=0)
    served = tf.saved_model.load(str(path)).signatures["serving_default"](
        images=tf.constant(image.astype("uint8")))
    n = int(dets["num_detections"][0])
    assert n > 0 and int(served["num_detections"][0]) == n
    x1, y1, x2, y2 = np.asarray(dets["boxes"][0, :n]).T
    expected = np.concatenate([np.stack([y1, x1, y2, x2], -1) / 64,
                               np.asarray(dets["scores"][0, :n])[:, None]], -1)
    got = np.concatenate([served["detection_boxes"][0, :n].numpy(),
                          served["detection_scores"][0, :n].numpy()[:, None]], -1)
    # Untrained scores tie to ~1e-6, so equal detections may swap places: match each row.
    distance = np.abs(got[:, None] - expected[None]).max(-1)
    assert distance.min(1).max() < 1e-3 and distance.min(0).max() < 1e-3
