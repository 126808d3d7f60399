"""Quantized detector export (`detection.export.quantize`): the OpenVINO int8 folder, its
predictor against the Keras model, the parts kept float32, the accuracy gate and bad input."""

import json

import numpy as np
import pytest

pytestmark = pytest.mark.tf_only

tf = pytest.importorskip("tensorflow")
ov = pytest.importorskip("openvino")
pytest.importorskip("nncf")

from detection.export import quantize as q  # noqa: E402


def _images(count, size=64, seed=0):
    return np.random.default_rng(seed).uniform(0, 255, (count, size, size, 3)).astype("float32")


@pytest.fixture(scope="module")
def model():
    from detector_helpers import tiny_detector

    return tiny_detector("c4", image_size=(64, 64))


@pytest.fixture(scope="module")
def int8_folder(model, tmp_path_factory):
    from detection.data import synthetic

    # Through the library's one entry point, which hands a detector to its named `quantizer`
    # (random weights: a wide gate).
    from keras_resnet_suite.export import quantize

    validation = synthetic.shapes(3, split="test", image_size=64, progress=False)
    return quantize(model, tmp_path_factory.mktemp("q") / "int8", _images(6),
                    validation=validation, max_drop=100.0, num_samples=4)


def test_int8_folder_metadata_and_quantized_parts(int8_folder, model):
    meta = json.loads((int8_folder / "metadata.json").read_text())
    assert meta["kind"] == "detector" and meta["precision"] == "int8"
    assert meta["predictor"] == "detection.export.quantize:DetectorPredictor"
    assert sorted(meta["output_names"]) == sorted(q.OUTPUTS)
    assert meta["image_size"] == [64, 64] and meta["num_classes"] == 3
    assert meta["quantization"]["keep_float"] == ["rpn", "roi_heads"]
    assert meta["quantization"]["calibration_images"] == 4  # sampled from 6
    assert meta["quantization"]["bias_correction"] == "full"
    acc = meta["accuracy"]
    assert set(acc["float32"]) == {"mAP"} and acc["drop_points"]["mAP"] == pytest.approx(
        100 * (acc["float32"]["mAP"] - acc["int8"]["mAP"]), abs=1e-3)
    # Only backbone convolutions are quantized: every FakeQuantize feeds one (directly, or
    # through the weights' Convert), none feeds the RPN, the RoI heads or element-wise ops.
    quantized = ov.Core().read_model(str(int8_folder / "model.xml"))
    fq = [op for op in quantized.get_ops() if op.get_type_name() == "FakeQuantize"]
    assert fq, "no FakeQuantize: nothing was quantized"
    float_parts = q.part_of_ops(quantized)
    assert {"backbone", "rpn", "roi_heads"} <= set(float_parts.values())
    for op in fq:
        for target in op.output(0).get_target_inputs():
            node = target.get_node()
            while node.get_type_name() in ("Convert", "Multiply", "Subtract", "Transpose"):
                node = next(iter(node.output(0).get_target_inputs())).get_node()
            assert node.get_type_name() == "Convolution", node.get_type_name()
            assert float_parts[node.get_friendly_name()] == "backbone"


def test_int8_predictor_close_to_keras(int8_folder, model):
    from keras_resnet_suite.export import load_predictor

    predictor = load_predictor(int8_folder)  # the metadata names the detector's predictor
    assert isinstance(predictor, q.DetectorPredictor)
    images = _images(2, seed=1)
    got, want = predictor.predict(images), model.predict(images, verbose=0)
    assert got["boxes"].shape == tuple(want["boxes"].shape)
    # Random weights: scores near the threshold; the int8 backbone moves them a little.
    assert np.abs(got["scores"].max() - np.asarray(want["scores"]).max()) < 0.1
    served = predictor(images.astype("uint8"))
    assert set(served) == {"detection_boxes", "detection_scores", "detection_classes",
                           "num_detections"}
    assert served["detection_boxes"].max() <= 1.0


def test_float32_folder_matches_keras(model, tmp_path):
    folder = q.quantize_detector(model, tmp_path / "f32", None, precision="float32")
    images = _images(2, seed=2)
    got, want = q.DetectorPredictor(folder).predict(images), model.predict(images, verbose=0)
    np.testing.assert_array_equal(got["classes"], want["classes"])
    np.testing.assert_allclose(got["boxes"], want["boxes"], atol=1e-3)
    np.testing.assert_allclose(got["scores"], want["scores"], atol=1e-5)


def test_gate_refuses_with_the_figures():
    report = {"float32": {"mAP": 0.8}, "int8": {"mAP": 0.77}}
    with pytest.raises(ValueError, match=r"int8 mAP 0.7700 vs float32 0.8000 drops 3.00 "
                                         r"points > max_drop 1.0; nothing written"):
        q._gate(report, "int8", 1.0)
    report = {"float32": {"mAP": 0.8, "mask_AP": 0.5}, "int8": {"mAP": 0.8, "mask_AP": 0.495}}
    q._gate(report, "int8", 1.0)
    assert report["drop_points"] == {"mAP": 0.0, "mask_AP": 0.5}


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"format": "onnx"}, "format 'onnx' is not supported for detectors"),
    ({"precision": "int4"}, "precision must be one of"),
    ({"keep_float": ("rpn", "neck")}, r"keep_float names unknown parts \['neck'\]"),
    ({"max_drop": -1}, "max_drop must be a number >= 0"),
])
def test_bad_options(model, tmp_path, kwargs, message):
    with pytest.raises(ValueError, match=message):
        q.quantize_detector(model, tmp_path, _images(1), **kwargs)
    assert not (tmp_path / "metadata.json").exists()


def test_bad_calibration_and_folders(tmp_path):
    with pytest.raises(ValueError, match=r"calibration\[0\]: images must be .* shape \(4, 4\)"):
        q.calibration_images(np.zeros((4, 4)))
    with pytest.raises(ValueError, match=r"calibration\[1\]: expected a dict with 'images'"):
        q.calibration_images([{"images": _images(1)}, {"pixels": 1}])
    with pytest.raises(ValueError, match="calibration: no images"):
        q.calibration_images([])
    picked = q.calibration_images(_images(10), num_samples=3, seed=0)
    again = q.calibration_images(_images(10), num_samples=3, seed=0)
    assert len(picked) == 3 and all(np.array_equal(a, b) for a, b in zip(picked, again, strict=True))
    with pytest.raises(ValueError, match="no metadata.json"):
        q.DetectorPredictor(tmp_path)
    with pytest.raises(ValueError, match="expects a detection.FasterRCNN or MaskRCNN, got object"):
        q.quantize_detector(object(), tmp_path, _images(1))


def test_cli_calibration_sources(tmp_path, capsys):
    from detection import cli
    from detection.export.quantize_cli import calibration_source

    with pytest.raises(ValueError, match=r"--calibration .*none.npy: no such file"):
        calibration_source(str(tmp_path / "none.npy"), None, 4)
    with pytest.raises(ValueError, match="--calibration train: a data split needs --config"):
        calibration_source("train", None, 4)
    np.save(tmp_path / "c.npy", _images(2))
    assert calibration_source(str(tmp_path / "c.npy"), None, 4).shape == (2, 64, 64, 3)
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["export", "--weights", "w.pth", "--out", "o", "--precision", "int4"])
    assert exit_info.value.code == 2
    assert "--precision: invalid choice: 'int4'" in capsys.readouterr().err
