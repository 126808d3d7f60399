"""`export.quantize` and `export.load_predictor` on a tiny seeded CIFAR-shaped ResNet: every
int8 route (OpenVINO+NNCF, ONNX Runtime QDQ, LiteRT full-integer) and OpenVINO bf16 writes a
folder whose predictor agrees with Keras, the accuracy gate refuses a bad quantization and writes
nothing, the predictor's encoded-image path equals the SavedModel's `serving_bytes`, the detector
contract delegates, and bad input is answered in one line. Accuracy on the published CIFAR
ResNet-20/56 over the 10,000 test images is measured in `benchmarks/quantize.py`."""

import importlib.util
import io
import json

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")
keras = pytest.importorskip("keras")
if keras.backend.backend() != "tensorflow":
    pytest.skip("quantized exports are traced from TensorFlow graphs", allow_module_level=True)

import keras_resnet_suite as krs  # noqa: E402
from keras_resnet_suite import cli, export  # noqa: E402

SIZE, CLASSES = 32, 5
NAMES = [f"c{i}" for i in range(CLASSES)]


@pytest.fixture(scope="module")
def model():
    keras.utils.set_random_seed(0)
    return krs.build("resnet18", depths=(1, 1, 1, 1), widths=(8, 16, 16, 16), classes=CLASSES,
                     input_shape=(SIZE, SIZE, 3), classifier_activation=None)


@pytest.fixture(scope="module")
def images():
    """Smooth images (a per-image colour plus noise): activations in a realistic range."""
    rng = np.random.default_rng(0)
    base = rng.normal(0, 1, (48, 1, 1, 3))
    return (base + 0.3 * rng.normal(0, 1, (48, SIZE, SIZE, 3))).astype(np.float32)


def _needs(fmt):
    from keras_resnet_suite.export.runtimes import PACKAGES

    for package in PACKAGES[fmt]:
        if importlib.util.find_spec(package) is None:
            pytest.skip(f"{fmt} needs {package}")


ROUTES = [("openvino", "int8"), ("onnx", "int8"), ("litert", "int8"), ("openvino", "bf16")]


@pytest.mark.parametrize(("fmt", "precision"), ROUTES)
def test_route_writes_a_folder_whose_predictor_agrees_with_keras(model, images, fmt, precision,
                                                                  tmp_path):
    _needs(fmt)
    if precision == "bf16":
        from keras_resnet_suite.export.runtimes import cpu_has_bf16

        if not cpu_has_bf16():
            pytest.skip("this CPU has no bf16")
    logits = model.predict(images, verbose=0)
    labels = logits.argmax(-1)
    path = export.quantize(model, tmp_path / "q", images[:32], format=fmt, precision=precision,
                           validation=(images, labels), max_drop=50.0, num_samples=16,
                           class_names=NAMES, top_k=3)
    meta = json.loads((path / "metadata.json").read_text())
    assert (meta["kind"], meta["format"], meta["precision"]) == ("classifier", fmt, precision)
    assert meta["input_shape"] == [SIZE, SIZE, 3] and meta["class_names"] == NAMES
    assert meta["calibration"] == {"num_samples": 16, "seed": 0}
    assert all((path / f).is_file() for f in meta["files"])
    report = meta["accuracy"]
    assert report["images"] == 48 and report["float32_top1"] == 100.0
    assert report["argmax_agreement"] == report["quantized_top1"] >= 50.0
    out = export.load_predictor(path).predict(images)
    probs = keras.ops.convert_to_numpy(keras.ops.softmax(logits))
    # measured: OpenVINO int8 0.024, ONNX/LiteRT int8 0.008, OpenVINO bf16 0.0006
    assert np.abs(out["probabilities"] - probs).mean() < (0.005 if precision == "bf16" else 0.05)
    assert np.allclose(out["probabilities"].sum(-1), 1.0, atol=1e-4)
    assert out["top_k_classes"].shape == (48, 3) and out["top_k_labels"][0, 0] in NAMES
    agree = np.mean(out["top_k_classes"][:, 0] == labels) * 100
    assert agree == pytest.approx(report["argmax_agreement"], abs=1e-3)


def test_gate_refuses_a_bad_quantization_and_writes_nothing(model, images, tmp_path):
    _needs("onnx")
    labels = model.predict(images, verbose=0).argmax(-1)
    # calibrated on inputs 1000x too small: every activation range clips, the classes move
    with pytest.raises(export.QuantizationRefused, match=r"^quantize: onnx int8 top-1 [\d.]+% "
                       r"vs float32 100\.00% on 48 validation images \(argmax agreement "
                       r"[\d.]+%\): drop [\d.]+ points exceeds max_drop 1\.0; nothing written$"):
        export.quantize(model, tmp_path / "q", images * 1e-3, format="onnx",
                        validation=(images, labels), max_drop=1.0, num_samples=16)
    assert list(tmp_path.iterdir()) == []  # neither the folder nor a temporary one is left


@pytest.mark.parametrize(("name", "options"), [
    ("efficientnet_b0", {"width": 0.25, "depth": 0.25}),
    ("resnetrs50", {"depths": (1, 1, 1, 1), "widths": (8, 16, 16, 16), "stem_width": 8}),
])
def test_the_new_families_quantize_to_openvino_int8(images, name, options, tmp_path):
    """MBConv's depthwise convolutions and squeeze-and-excitation: NNCF's per-channel ranges on
    a depthwise input made a model OpenVINO's CPU plugin refused (activations now per tensor)."""
    _needs("openvino")
    keras.utils.set_random_seed(0)
    net = krs.build(name, classes=CLASSES, input_shape=(SIZE, SIZE, 3),
                    classifier_activation=None, **options)
    # BN statistics of the data (one training pass at momentum 0): at their initial values a
    # random EfficientNet's outputs hardly depend on the image.
    from keras_resnet_suite.compat import flatten_layers

    for layer in flatten_layers(net):
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.momentum = 0.0
    net(images[:16], training=True)
    path = export.quantize(net, tmp_path / "q", images[:16], num_samples=16)
    out = export.load_predictor(path).predict(images[:8])["probabilities"]
    want = keras.ops.convert_to_numpy(keras.ops.softmax(net.predict(images[:8], verbose=0)))
    assert np.ptp(want, axis=0).max() > 0.3  # the images give other classes' scores
    assert np.abs(out - want).mean() < 0.1  # measured 0.046 (EfficientNet), 0.032 (ResNet-RS)


def test_a_model_its_runtime_cannot_run_is_refused_and_nothing_written(model, images, tmp_path,
                                                                        monkeypatch):
    _needs("onnx")
    from keras_resnet_suite.export import runtimes

    def unrunnable(folder, meta):
        raise RuntimeError("Exception from core.cpp:132:\nFakeQuantize node doesn't support it")

    monkeypatch.setattr(runtimes, "open_folder_runner", unrunnable)
    with pytest.raises(RuntimeError, match=r"^quantize: the onnx int8 model does not run in its "
                       r"runtime \(FakeQuantize node doesn't support it\); nothing written$"):
        export.quantize(model, tmp_path / "q", images[:8], format="onnx", num_samples=8)
    assert list(tmp_path.iterdir()) == []


def _jpeg(seed):
    from PIL import Image

    pixels = np.random.default_rng(seed).integers(0, 256, (40, 36, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG")
    return buffer.getvalue()


def test_predictor_bytes_path_equals_the_saved_models(model, tmp_path):
    mean, std = [120.0, 115.0, 100.0], [60.0, 61.0, 62.0]
    served = export.export_saved_model(model, tmp_path / "sm", mean=mean, std=std,
                                       class_names=NAMES, top_k=3)
    model.save(tmp_path / "m.keras")
    uploads = [_jpeg(0), b"not an image", _jpeg(1)]
    want = export.load_predictor(served).predict_bytes(uploads)
    assert list(want["valid"]) == [True, False, True]
    from keras_resnet_suite.export.predictor import Predictor, _keras_predictor

    keras_pred = _keras_predictor(tmp_path / "m.keras")
    assert isinstance(keras_pred, Predictor)
    keras_pred.meta.update(preprocessing={"mean": mean, "std": std, "resize": SIZE},
                           class_names=NAMES, top_k=3)
    got = keras_pred.predict_bytes(uploads)
    assert set(got) == set(want)
    np.testing.assert_allclose(got["probabilities"], want["probabilities"], atol=1e-5)
    for key in ("top_k_classes", "valid", "error", "top_k_labels"):
        assert (got[key] == want[key]).all(), key
    assert got["error"][1] == "image_bytes[1]: not a JPEG/PNG/GIF/BMP image"


CALLS = []


def _detector_quantizer(model, path, calibration, **kwargs):
    CALLS.append((path, calibration, kwargs))
    return path


def test_detectors_write_their_own_folder_through_their_named_quantizer(tmp_path):
    calls = CALLS

    class Detector:
        quantizer = f"{__name__}:_detector_quantizer"

    assert export.quantize(Detector(), tmp_path, "cal", format="onnx", max_drop=0.5,
                           preset="mixed") == tmp_path
    assert calls == [(tmp_path, "cal", {"format": "onnx", "precision": "int8",
                                        "validation": None, "num_samples": 300, "seed": 0,
                                        "max_drop": 0.5, "preset": "mixed"})]
    export.quantize(Detector(), tmp_path, "cal")  # no max_drop: the detector's own default
    assert "max_drop" not in calls[-1][2]


def test_load_predictor_imports_a_named_predictor_lazily(tmp_path):
    (tmp_path / "metadata.json").write_text(json.dumps({
        "format": "openvino", "predictor": "pathlib:PurePosixPath"}))
    assert str(export.load_predictor(tmp_path)) == str(tmp_path)


def _bad(model, images, tmp_path):
    ok = {"format": "onnx", "num_samples": 4}
    return [
        ({**ok, "format": "tensorrt"}, "format must be one of openvino, onnx, litert, got "
         "'tensorrt'"),
        ({**ok, "precision": "int4"}, "precision must be one of int8, bf16, got 'int4'"),
        ({**ok, "precision": "bf16"}, "precision 'bf16' is offered for format 'openvino' only"),
        ({**ok, "max_drop": 1.0}, "max_drop needs validation data"),
        ({**ok, "max_drop": -1}, "max_drop must be a number of top-1 points >= 0, got -1"),
        ({**ok, "num_samples": 0}, "num_samples must be a positive int, got 0"),
        ({**ok, "calibration": images[:, :16]}, r"calibration: expected images of shape "
         r"\[N, 32, 32, 3\] \(the model's input\), got \[48, 16, 32, 3\]"),
        ({**ok, "calibration": images * np.nan}, "calibration: contains NaN or infinite values"),
        ({**ok, "calibration": images[:0]}, "calibration: no images"),
        ({**ok, "validation": (images, np.zeros(3))}, "validation: 48 images but 3 labels"),
        ({**ok, "class_names": ["a"]}, "class_names has 1 names for 5 classes"),
    ]


def test_bad_input_is_one_line(model, images, tmp_path):
    _needs("onnx")
    for kwargs, message in _bad(model, images, tmp_path):
        calibration = kwargs.pop("calibration", images)
        with pytest.raises(ValueError, match=message) as info:
            export.quantize(model, tmp_path / "q", calibration, **kwargs)
        assert "\n" not in str(info.value)
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("")
    with pytest.raises(FileExistsError, match="full: exists and is not an empty folder"):
        export.quantize(model, tmp_path / "full", images, format="onnx")
    with pytest.raises(TypeError, match="quantize takes a built keras.Model, got str"):
        export.quantize("model.keras", tmp_path / "q", images)
    with pytest.raises(FileNotFoundError, match="not a quantize folder \\(no metadata.json\\)"):
        export.load_predictor(tmp_path)
    (tmp_path / "metadata.json").write_text(json.dumps({"format": "onnx"}))
    with pytest.raises(FileNotFoundError, match="names format 'onnx' but model.onnx is missing"):
        export.load_predictor(tmp_path)
    assert not (tmp_path / "q").exists()


def test_cli_export_int8_with_a_gate(model, images, tmp_path, capsys):
    _needs("onnx")
    run = tmp_path / "run"
    run.mkdir()
    (run / "run.json").write_text(json.dumps({"class_names": NAMES}))
    model.save(run / "model.keras")
    np.save(tmp_path / "cal.npy", images[:16])
    labels = model.predict(images, verbose=0).argmax(-1)
    np.savez(tmp_path / "val.npz", x=images, y=labels)
    args = ["export", "--run", str(run), "--out", str(tmp_path / "q"), "--precision", "int8",
            "--format", "onnx", "--calibration", str(tmp_path / "cal.npy"), "--validation",
            str(tmp_path / "val.npz"), "--max-drop", "50"]
    assert cli.main(args) == 0
    assert "int8 onnx model written to" in capsys.readouterr().out
    assert export.load_predictor(tmp_path / "q").meta["class_names"] == NAMES
    args[4] = str(tmp_path / "q2")
    with pytest.raises(SystemExit, match=r"--validation .*cal\.npy: expected a \.npz with x, y"):
        cli.main(args[:-4] + ["--validation", str(tmp_path / "cal.npy")])
    with pytest.raises(SystemExit, match=r"--calibration .*nothing\.npy: no such file"):
        cli.main(args[:9] + ["--calibration", str(tmp_path / "nothing.npy")])
    assert not (tmp_path / "q2").exists()
