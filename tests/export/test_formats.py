"""Keras' own `model.export(path, format=...)` to every CPU runtime a user deploys to: the
TF SavedModel, ONNX (ONNX Runtime), OpenVINO IR and LiteRT (`.tflite`, ai-edge-litert), for
a classifier, a backbone (dict of C2..C5) and the Faster R-CNN detector, each freshly built
(never called) and compared with the Keras model at two batch sizes and two image sizes.

Max abs difference against Keras measured on the CPU (float32; classifier logits and
backbone features on [0, 1] inputs, detector boxes in input pixels and scores in [0, 1]):

| model        | tf_saved_model | onnx    | openvino | litert  |
| ------------ | -------------- | ------- | -------- | ------- |
| classifier   | 4.2e-7         | 3.9e-7  | 4.8e-7   | 7.7e-7  |
| backbone     | 1.4e-6         | 1.5e-6  | 2.1e-6   | 2.3e-6  |
| detector C4  | 3.8e-6         | 1.1e-5  | 1.1e-5   | 1.1e-5  |
| detector FPN | 1.9e-6 (*)     | 3.8e-6 (*) | 7.6e-6 (*) | 3.8e-6 |

(*) measured once, not run here: the FPN detector's exports take ~20-40 s each.
Classes and detection counts match exactly. OpenVINO is compiled with the float32
inference hint: its CPU plugin runs bfloat16 by default on CPUs with AVX512_BF16 or AMX,
which gave errors of ~1 % of the activations' range here (documented, not a parity case).
"""

import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")
keras = pytest.importorskip("keras")
if keras.backend.backend() != "tensorflow":
    pytest.skip("the export parity runs on the TensorFlow backend", allow_module_level=True)

import keras_resnet_suite as krs  # noqa: E402
from keras_resnet_suite import backbones  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "detection"))
from detector_helpers import TINY, tiny_detector  # noqa: E402

FORMATS = {"tf_saved_model": "", "onnx": ".onnx", "openvino": ".xml", "litert": ".tflite"}
# What each format needs beyond TensorFlow, to export and to run (all in the `export` extra).
PACKAGES = {"tf_saved_model": (), "onnx": ("tf2onnx", "onnx", "onnxruntime"),
            "openvino": ("openvino",), "litert": ("ai_edge_litert",)}
# Float outputs: max abs difference allowed against Keras (measured: the module docstring).
TOLERANCE = {"classifier": 1e-5, "backbone": 5e-5, "detector_c4": 1e-4, "detector_fpn": 1e-4}
EXACT = ("classes", "num_detections")
# Dynamic batch (2, then 1) and image size (64 x 64, then 80 x 48), one export.
SHAPES = ((2, 64, 64), (1, 64, 64), (3, 80, 48))


def _build(kind: str) -> keras.Model:
    if kind == "classifier":
        return krs.build("resnet18", depths=(1, 1, 1, 1), widths=(8, 16, 16, 16), classes=5,
                         input_shape=(None, None, 3), classifier_activation=None)
    if kind == "backbone":
        return backbones.ResNet18(**TINY)
    return tiny_detector(kind.split("_")[1], image_size=(64, 64))


def _images(kind: str, shape: tuple[int, int, int], seed: int) -> np.ndarray:
    """Pixels (0-255) for the detector, whose transform normalises; [0, 1] for the others,
    whose untrained activations would otherwise reach the hundreds."""
    scale = 255.0 if kind.startswith("detector") else 1.0
    rng = np.random.default_rng(seed)
    return rng.uniform(0.0, scale, (*shape, 3)).astype("float32")


def _runtimes(fmt: str, path: str) -> dict:
    """`{runtime: function images -> {output name: array}}` running the artifact at `path`,
    fed by the input name `images`. A `.tflite` runs in ai-edge-litert and, while TensorFlow
    still ships it, in its deprecated `tf.lite.Interpreter`, whose kernels take at most 5-D
    tensors (RoIAlign's intermediates are kept so)."""
    if fmt == "tf_saved_model":
        serve = tf.saved_model.load(path).signatures["serving_default"]
        return {fmt: lambda x: {k: v.numpy() for k, v in serve(images=tf.constant(x)).items()}}
    if fmt == "onnx":
        import onnxruntime

        session = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])
        names = [o.name for o in session.get_outputs()]
        return {fmt: lambda x: dict(zip(names, session.run(None, {"images": x}), strict=True))}
    if fmt == "openvino":
        import openvino

        compiled = openvino.Core().compile_model(path, "CPU",
                                                 {"INFERENCE_PRECISION_HINT": "f32"})
        return {fmt: lambda x: {k.get_any_name(): v for k, v in compiled({"images": x}).items()}}
    from ai_edge_litert.interpreter import Interpreter

    interpreters = {"ai_edge_litert": Interpreter}
    if hasattr(tf.lite, "Interpreter"):
        interpreters["tf.lite"] = tf.lite.Interpreter
    runners = {}
    for name, interpreter in interpreters.items():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # tf.lite's deprecation notice
            runners[name] = interpreter(model_path=path).get_signature_runner("serving_default")
    return {name: (lambda x, r=runner: r(images=x)) for name, runner in runners.items()}


# Every format for each model kind; the FPN detector (multi-level RoIAlign) in LiteRT only,
# whose kernels need its intermediates at most 5-D: its exports take 20-40 s each.
CASES = [(kind, fmt) for kind in ("classifier", "backbone", "detector_c4") for fmt in FORMATS]
CASES += [("detector_fpn", "litert")]


@pytest.mark.parametrize(("kind", "fmt"), CASES)
def test_export_matches_keras(kind, fmt, tmp_path):
    for package in PACKAGES[fmt]:
        pytest.importorskip(package)
    model = _build(kind)
    path = str(tmp_path / f"model{FORMATS[fmt]}")
    model.export(path, format=fmt, verbose=False)  # before any call: the fresh model
    runtimes = _runtimes(fmt, path)
    for seed, shape in enumerate(SHAPES):
        images = _images(kind, shape, seed)
        want = model(images, training=False)
        want = {k: keras.ops.convert_to_numpy(v)
                for k, v in (want if isinstance(want, dict) else {"logits": want}).items()}
        if kind.startswith("detector"):  # a real detection result, not an all-padding one
            assert want["num_detections"].min() > 0
        for runtime, run in runtimes.items():
            got = run(images)
            if len(want) == 1:  # one unnamed output: each runtime names it its own way
                assert len(got) == 1, (runtime, sorted(got))
                got = {"logits": next(iter(got.values()))}
            assert sorted(got) == sorted(want), (runtime, shape)
            for name, expected in want.items():
                actual = np.asarray(got[name])
                assert actual.shape == expected.shape, (runtime, shape, name)
                if name in EXACT:
                    np.testing.assert_array_equal(actual.astype(expected.dtype), expected)
                else:
                    diff = float(np.max(np.abs(actual - expected)))
                    assert diff <= TOLERANCE[kind], (runtime, shape, name, diff)
    if kind.startswith("detector"):
        _nan_image_gets_no_detections(model, runtimes)


def _nan_image_gets_no_detections(model, runtimes: dict) -> None:
    """Issue 35: an image with a NaN pixel gets no detections in every format (the exports
    gave NaN boxes and scores), and the other images of its batch are untouched."""
    images = np.repeat(_images("detector", (1, 48, 56), 7), 2, axis=0)
    images[1, 3, 4, 0] = np.nan
    want = {k: keras.ops.convert_to_numpy(v) for k, v in model(images[:1]).items()}
    for runtime, run in runtimes.items():
        got = {k: np.asarray(v) for k, v in run(images).items()}
        assert all(np.isfinite(v).all() for v in got.values()), runtime
        assert got["num_detections"].tolist() == [want["num_detections"][0], 0], runtime
        assert not got["scores"][1].any() and (got["classes"][1] == -1).all(), runtime
        np.testing.assert_allclose(got["boxes"][:1], want["boxes"], atol=1e-3)


def test_detector_exports_a_fixed_signature_to_litert(tmp_path):
    """A static `[1, 64, 64, 3]` signature (mobile graphs): NMS then runs without a loop,
    which LiteRT had mis-sized (`CONCATENATION ... 16 != 10` inside the `WHILE`)."""
    pytest.importorskip("ai_edge_litert")
    model = _build("detector_c4")
    path = str(tmp_path / "model.tflite")
    spec = keras.InputSpec(shape=(1, 64, 64, 3), dtype="float32", name="images")
    model.export(path, format="litert", verbose=False, input_signature=[spec])
    images = _images("detector_c4", (1, 64, 64), 0)
    want = {k: keras.ops.convert_to_numpy(v) for k, v in model(images).items()}
    for runtime, run in _runtimes("litert", path).items():
        got = run(images)
        assert sorted(got) == sorted(want), runtime
        for name in EXACT:
            np.testing.assert_array_equal(got[name].astype(want[name].dtype), want[name])
        for name in ("boxes", "scores"):
            assert np.max(np.abs(got[name] - want[name])) <= TOLERANCE["detector_c4"], name
