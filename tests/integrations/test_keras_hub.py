"""keras-hub's RetinaNet and D-FINE on our backbone through `integrations.keras_hub`: one fit
step, predict, `.keras` reload in a fresh process with identical outputs and the backbone's
weights in the file. TensorFlow only (not marked jax), like the rest of the interop tests."""

import keras
import numpy as np
import pytest

keras_hub = pytest.importorskip("keras_hub")

from roundtrip import (  # noqa: E402
    TINY,
    assert_same_outputs,
    boxes_batch,
    converted_shapes,
    count_found,
    reload_in_fresh_process,
)

from keras_resnet_suite.integrations.keras_hub import (  # noqa: E402
    ResNetHubBackbone,
    to_keras_hub,
)

# A fresh process imports only these, in this order (keras_resnet_suite before Keras in one
# test, after it in the other), never the adapter module.
IMPORTS = ("keras_resnet_suite", "keras_hub")
MODULE = "keras_resnet_suite.integrations.keras_hub"


def _fit_predict_reload(detector, encoder, y, x, tmp_path):
    detector.compile(optimizer=keras.optimizers.SGD(1e-3))
    before = [np.array(w) for w in encoder.weights]
    history = detector.fit(x, y, batch_size=len(x), epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])
    # The step trained the backbone inside the detector, not a copy of it.
    assert any(not np.array_equal(b, np.asarray(w)) for b, w in zip(before, encoder.weights, strict=True))
    predicted = detector.predict(x, verbose=0)
    after, weights, adapters = reload_in_fresh_process(detector, x, tmp_path, MODULE,
                                                       "ResNetHubBackbone", IMPORTS)
    assert adapters == ["ResNetHubBackbone"]
    assert_same_outputs(predicted, after)
    assert count_found(encoder, weights) == len(encoder.weights) == 60
    return predicted


def test_retinanet_fit_predict_reload(tmp_path):
    encoder = ResNetHubBackbone("resnet18", options=TINY)
    assert sorted(encoder.pyramid_outputs) == ["P2", "P3", "P4", "P5"]
    backbone = keras_hub.models.RetinaNetBackbone(image_encoder=encoder, min_level=3,
                                                  max_level=5, use_p5=False)
    detector = keras_hub.models.RetinaNetObjectDetector(
        backbone=backbone, num_classes=3, bounding_box_format="xyxy",
        pre_logits_num_conv_layers=1)
    # detection.data's own batches through the documented conversion, in [0, 1].
    x, y = converted_shapes(to_keras_hub)
    assert sorted(y) == ["boxes", "labels"] and 0 <= x.min() and x.max() <= 1
    assert (y["boxes"][y["labels"] < 0] == -1).all() and (y["labels"] >= 0).any()
    predicted = _fit_predict_reload(detector, encoder, y, x, tmp_path)
    assert sorted(predicted) == ["boxes", "confidence", "labels", "num_detections"]


def test_dfine_takes_the_backbone_with_out_features(tmp_path):
    encoder = ResNetHubBackbone("resnet18", options=TINY)
    backbone = keras_hub.models.DFineBackbone(
        backbone=encoder, out_features=["C4", "C5"], encoder_in_channels=[16, 16],
        feat_strides=[16, 32], num_feature_levels=2, decoder_in_channels=[16, 16],
        anchor_image_size=(64, 64), image_shape=(64, 64, 3), encoder_hidden_dim=16,
        hidden_dim=16, num_labels=3, num_denoising=0, learn_initial_query=False,
        num_queries=10, encode_proj_layers=[1], num_attention_heads=2, encoder_ffn_dim=16,
        num_encoder_layers=1, hidden_expansion=0.34, depth_multiplier=0.5, eval_idx=-1,
        num_decoder_layers=1, decoder_attention_heads=2, decoder_ffn_dim=16,
        decoder_n_points=[2, 2], lqe_hidden_dim=8, num_lqe_layers=1, seed=0)
    detector = keras_hub.models.DFineObjectDetector(backbone=backbone, num_classes=3,
                                                    bounding_box_format="xyxy")
    x, boxes, labels = boxes_batch()
    _fit_predict_reload(detector, encoder, {"boxes": boxes, "labels": labels}, x, tmp_path)


def test_readme_snippet_resnet50_retinanet():
    # docs/interop.md: the keras-hub RetinaNet snippet as printed, except load_weights=False
    # (the architecture and preprocessing "imagenet" implies, without the download), and one
    # batch of two 64x64 shapes images as its `batches` (the page's data block).
    import detection.data

    batches = detection.data.pipeline.training_batches(
        detection.data.shapes(2, image_size=64), image_size=(64, 64), batch_size=2, max_boxes=4)
    encoder = ResNetHubBackbone("resnet50", weights="imagenet", options={"freeze_at": 2},
                                load_weights=False)
    backbone = keras_hub.models.RetinaNetBackbone(image_encoder=encoder, min_level=3,
                                                  max_level=7, use_p5=False)
    model = keras_hub.models.RetinaNetObjectDetector(backbone=backbone, num_classes=20,
                                                     bounding_box_format="xyxy")
    history = model.fit(to_keras_hub(batches, encoder.preprocess_input), epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])  # (its model.save: the reload tests above)
    assert encoder.checkpoint.name == "resnet50:torchvision-v1" and encoder.preprocessing == "torch"
    assert [encoder.get_layer(n).trainable for n in ("conv1", "conv2_x", "conv3_x")] == [
        False, False, True]
    assert encoder.feature_info["C5"] == {"channels": 2048, "stride": 32}


def test_config_rebuilds_architecture_and_preprocessing_without_weights():
    encoder = ResNetHubBackbone("resnet18", weights="imagenet", load_weights=False,
                                options={"return_levels": ("C3", "C4", "C5")})
    assert sorted(encoder.pyramid_outputs) == ["P3", "P4", "P5"]
    config = encoder.get_config()
    assert {k: config[k] for k in ("architecture", "weights", "options", "load_weights")} == {
        "architecture": "resnet18", "weights": "imagenet", "load_weights": False,
        "options": {"return_levels": ["C3", "C4", "C5"]}}
    clone = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(encoder))
    assert type(clone) is ResNetHubBackbone and clone.name == "resnet18_backbone"
    assert clone.checkpoint == encoder.checkpoint
    assert len(clone.weights) == len(encoder.weights)


@pytest.mark.parametrize("kwargs, error, message", [
    ({"architecture": 18}, TypeError,
     "architecture must be a backbone name such as 'resnet50' (a string, so it can be saved "
     "in the model's config), got int"),
    ({"options": {"weights": "imagenet"}}, ValueError,
     "options must not set ['weights']: pass weights= and image_shape= to the adapter itself"),
    ({"options": {"depth": 3}}, TypeError, "build() got unexpected keyword argument(s) ['depth']"),
])
def test_bad_arguments_are_one_line(kwargs, error, message):
    with pytest.raises(error) as info:
        ResNetHubBackbone(**{"architecture": "resnet18", **kwargs})
    assert str(info.value) == message
