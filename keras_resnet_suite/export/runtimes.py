"""The CPU runtimes a quantized model is written for and run in, one writer and one runner per
format, each runtime imported only when used:

- `openvino`: int8 by NNCF post-training quantization of the OpenVINO IR; bf16 as the float32
  IR compiled with OpenVINO's `INFERENCE_PRECISION_HINT` bf16 (where the CPU has bf16);
- `onnx`: int8 as ONNX Runtime QDQ (per-channel int8 weights, uint8 activations), after
  `quant_pre_process` (which needs sympy, and `skip_symbolic_shape=True` on Keras' graphs);
- `litert`: full-integer int8 `.tflite` (int8 kernels inside, float32 input and output).
"""

from __future__ import annotations

import importlib
import importlib.util
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

import keras
import numpy as np

from keras_resnet_suite import compat

FORMATS = ("openvino", "onnx", "litert")
PRECISIONS = ("int8", "bf16")
MODEL_FILES = {"openvino": "model.xml", "onnx": "model.onnx", "litert": "model.tflite"}
PACKAGES = {"openvino": ("openvino", "nncf"), "onnx": ("tf2onnx", "onnx", "onnxruntime", "sympy"),
            "litert": ("ai_edge_litert",)}
Runner = Callable[[np.ndarray], list[np.ndarray]]


def cpu_has_bf16() -> bool:
    """Whether OpenVINO's CPU plugin offers bf16 inference on this CPU (AVX512_BF16 or AMX)."""
    import openvino

    return "BF16" in openvino.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")


def check_supported(fmt: str, precision: str) -> None:
    """Refuse, in one line, a format/precision this module cannot write here."""
    if fmt not in FORMATS:
        raise ValueError(f"format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    missing = [p for p in PACKAGES[fmt] if importlib.util.find_spec(p) is None]
    if missing:
        raise ImportError(f"format {fmt!r} needs {', '.join(missing)}: pip install "
                          "'keras-resnet-suite[export]'")
    if precision == "bf16" and fmt != "openvino":
        raise ValueError(f"precision 'bf16' is offered for format 'openvino' only ({fmt}'s CPU "
                         "kernels have no bf16 convolutions); use int8 or format='openvino'")
    if precision == "bf16" and not cpu_has_bf16():
        raise ValueError("precision 'bf16': this CPU has no bf16 instructions (AVX512_BF16 or "
                         "AMX); use int8")


def _export_float(model: keras.Model, path: Path, fmt: str) -> Path:
    compat.mark_called(model)
    model.export(str(path), format=fmt, verbose=False)
    return path


def by_reference(reference: str):
    """The object a "module:attribute" string names, imported on use: how a model or a folder
    names code of a package above this one (a detector's quantizer or predictor)."""
    module, _, name = str(reference).partition(":")
    return getattr(importlib.import_module(module), name)


def nncf_per_tensor_activations():
    """NNCF's advanced parameters with activations quantized per tensor. NNCF quantizes a
    depthwise convolution's input per channel and, behind the transposes of Keras' NHWC graph,
    took the height axis for the channels (ranges per row), which OpenVINO's CPU plugin then
    refused for every EfficientNet."""
    from nncf.quantization.advanced_parameters import (
        AdvancedQuantizationParameters,
        QuantizationParameters,
    )

    return AdvancedQuantizationParameters(
        activations_quantization_params=QuantizationParameters(per_channel=False))


def _openvino(model, folder: Path, tmp: Path, precision: str, samples, options) -> dict:
    import openvino

    ov_model = openvino.Core().read_model(str(_export_float(model, tmp / "float.xml",
                                                            "openvino")))
    if precision == "int8":
        import nncf

        options = {"preset": nncf.QuantizationPreset.PERFORMANCE,
                   "advanced_parameters": nncf_per_tensor_activations(), **options}
        data = nncf.Dataset([samples[i : i + 1] for i in range(len(samples))])
        ov_model = nncf.quantize(ov_model, data, subset_size=len(samples), **options)
    openvino.save_model(ov_model, str(folder / MODEL_FILES["openvino"]), compress_to_fp16=False)
    return {"files": ["model.xml", "model.bin"],
            "inference_precision": "bf16" if precision == "bf16" else None}


def _onnx(model, folder: Path, tmp: Path, samples, options, batch: int = 16) -> dict:
    from onnxruntime.quantization import (
        CalibrationDataReader,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    float_path = _export_float(model, tmp / "float.onnx", "onnx")
    prepared = tmp / "prepared.onnx"
    quant_pre_process(str(float_path), str(prepared), skip_symbolic_shape=True)
    import onnx

    name = onnx.load(str(prepared), load_external_data=False).graph.input[0].name

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.batches = iter([samples[i : i + batch] for i in range(0, len(samples), batch)])

        def get_next(self):
            x = next(self.batches, None)
            return None if x is None else {name: x}

    settings = {"quant_format": QuantFormat.QDQ, "per_channel": True,
                "activation_type": QuantType.QUInt8, "weight_type": QuantType.QInt8, **options}
    quantize_static(str(prepared), str(folder / MODEL_FILES["onnx"]), Reader(), **settings)
    return {"files": ["model.onnx"]}


def _litert(model, folder: Path, tmp: Path, samples, options) -> dict:
    import tensorflow as tf

    saved = _export_float(model, tmp / "float_saved_model", "tf_saved_model")
    converter = tf.lite.TFLiteConverter.from_saved_model(str(saved))
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = lambda: ([samples[i : i + 1]] for i in range(len(samples)))
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    for key, value in options.items():
        setattr(converter, key, value)
    (folder / MODEL_FILES["litert"]).write_bytes(converter.convert())
    return {"files": ["model.tflite"]}


def write(model: keras.Model, folder: Path, fmt: str, precision: str, samples: np.ndarray,
          options: dict) -> dict:
    """Write `model` quantized as `fmt`/`precision` into `folder`, calibrated on `samples` (model
    inputs); returns what the metadata records about the files."""
    with tempfile.TemporaryDirectory(prefix="krs-quantize-") as tmp:
        if fmt == "openvino":
            return _openvino(model, folder, Path(tmp), precision, samples, options)
        if fmt == "onnx":
            return _onnx(model, folder, Path(tmp), samples, options)
        return _litert(model, folder, Path(tmp), samples, options)


def open_runner(folder: Path, fmt: str, inference_precision: str | None = None
                ) -> tuple[Runner, list[str]]:
    """`(run, output_names)`: `run(images)` gives the outputs of the model file in `folder` in
    its runtime, in the runtime's output order."""
    path = folder / MODEL_FILES[fmt]
    if fmt == "openvino":
        import openvino

        config = {"INFERENCE_PRECISION_HINT": inference_precision} if inference_precision else {}
        compiled = openvino.Core().compile_model(str(path), "CPU", config)
        request = compiled.create_infer_request()
        names = [o.get_any_name() for o in compiled.outputs]
        return (lambda x: [np.asarray(v) for v in request.infer([x]).values()]), names
    if fmt == "onnx":
        import onnxruntime

        session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        feed = session.get_inputs()[0].name
        return (lambda x: session.run(None, {feed: x})), [o.name for o in session.get_outputs()]
    from ai_edge_litert.interpreter import Interpreter

    runner = Interpreter(model_path=str(path)).get_signature_runner()
    feed = next(iter(runner.get_input_details()))
    names = list(runner.get_output_details())

    def run(x):
        out = runner(**{feed: x})
        return [np.asarray(out[n]) for n in names]

    return run, names


def in_batches(run: Runner, images: np.ndarray, batch: int = 64) -> list[np.ndarray]:
    """`run` over `images` in batches, outputs concatenated."""
    parts: list[Sequence[np.ndarray]] = [run(np.ascontiguousarray(images[i : i + batch]))
                                         for i in range(0, len(images), batch)]
    return [np.concatenate([p[k] for p in parts]) for k in range(len(parts[0]))]


def open_folder_runner(folder: Path, meta: dict) -> Runner:
    """The runtime of a `quantize` folder, outputs ordered as `meta["output_names"]` (by name
    where the runtime kept them, else in its order)."""
    run, names = open_runner(folder, meta["format"], meta.get("inference_precision"))
    wanted = meta["output_names"]
    order = ([names.index(n) for n in wanted] if set(wanted) <= set(names)
             else list(range(len(names))))

    def ordered(x):
        out = run(x)
        return [out[i] for i in order]

    return ordered
