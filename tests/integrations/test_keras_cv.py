"""keras-cv's RetinaNet and YOLOV8Detector on our backbone through `integrations.keras_cv`:
one fit step, predict, `.keras` reload in a fresh process with identical outputs and the
backbone's weights in the file. keras-cv runs on TensorFlow only (the module is not marked jax)."""

import keras
import numpy as np
import pytest

keras_cv = pytest.importorskip("keras_cv")

from roundtrip import (  # noqa: E402
    TINY,
    assert_same_outputs,
    boxes_batch,
    converted_shapes,
    count_found,
    reload_in_fresh_process,
)

from keras_resnet_suite.integrations.keras_cv import (  # noqa: E402
    ResNetCVBackbone,
    to_keras_cv,
)

# A fresh process imports only these, in this order (keras_resnet_suite before Keras in one
# test, after it in the other), never the adapter module.
IMPORTS = ("keras_cv", "keras_resnet_suite")
MODULE = "keras_resnet_suite.integrations.keras_cv"


def _fit_predict_reload(detector, backbone, tmp_path, data=None):
    if data is None:
        x, boxes, labels = boxes_batch()
        data = x, {"boxes": boxes, "classes": labels}
    x, y = data
    before = [np.array(w) for w in backbone.weights]
    history = detector.fit(x, y, batch_size=len(x), epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])
    # The step trained the backbone inside the detector, not a copy of it.
    assert any(not np.array_equal(b, np.asarray(w))
               for b, w in zip(before, backbone.weights, strict=True))
    predicted = detector.predict(x, verbose=0)
    assert sorted(predicted) == ["boxes", "classes", "confidence", "num_detections"]
    after, weights, adapters = reload_in_fresh_process(detector, x, tmp_path, MODULE,
                                                       "ResNetCVBackbone", IMPORTS)
    assert adapters == ["ResNetCVBackbone"]
    assert_same_outputs(predicted, after)
    assert count_found(backbone, weights) == len(backbone.weights) == 60


def test_backbone_names_its_level_layers():
    backbone = ResNetCVBackbone("resnet18", options=TINY)
    assert backbone.pyramid_level_inputs == {"P2": "conv2_x", "P3": "conv3_x",
                                             "P4": "conv4_x", "P5": "conv5_x"}
    config = backbone.get_config()
    assert config["architecture"] == "resnet18" and config["load_weights"] is False
    assert config["options"] == {"depths": [1, 1, 1, 1], "widths": [8, 16, 16, 16],
                                 "stem_width": 8}


def test_retinanet_fit_predict_reload(tmp_path):
    backbone = ResNetCVBackbone("resnet18", options=TINY)
    detector = keras_cv.models.RetinaNet(num_classes=3, bounding_box_format="xyxy",
                                         backbone=backbone)
    detector.compile(optimizer=keras.optimizers.SGD(1e-3), classification_loss="focal",
                     box_loss="smoothl1")
    # detection.data's own batches through the documented conversion: "classes", [0, 1].
    x, y = converted_shapes(to_keras_cv)
    assert sorted(y) == ["boxes", "classes"] and 0 <= x.min() and x.max() <= 1
    assert (y["boxes"][y["classes"] < 0] == -1).all() and (y["classes"] >= 0).any()
    _fit_predict_reload(detector, backbone, tmp_path, (x, y))


def test_yolov8_fit_predict_reload(tmp_path):
    backbone = ResNetCVBackbone("resnet18", options=TINY)
    detector = keras_cv.models.YOLOV8Detector(num_classes=3, bounding_box_format="xyxy",
                                              backbone=backbone, fpn_depth=1)
    detector.compile(optimizer=keras.optimizers.SGD(1e-3),
                     classification_loss="binary_crossentropy", box_loss="ciou")
    _fit_predict_reload(detector, backbone, tmp_path)
