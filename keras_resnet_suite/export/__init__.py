"""Exports for serving: the float32 SavedModel (`export_saved_model`, BN folding), quantized
int8/bf16 models for OpenVINO, ONNX Runtime and LiteRT (`quantize`), and one predictor over all
of them (`load_predictor`).

    from keras_resnet_suite import export
    export.export_saved_model(model, "served/resnet20", mean=data.mean, class_names=data.class_names)
    export.quantize(model, "served/resnet20-int8", calibration=x_train, validation=(x_test, y_test))
    export.load_predictor("served/resnet20-int8").predict_bytes([open("cat.jpg", "rb").read()])

See `saved_model`, `quantize` and `predictor` for the details of each.
"""

from keras_resnet_suite.export.predictor import Predictor, SavedModelPredictor, load_predictor
from keras_resnet_suite.export.quantize import QuantizationRefused, quantize
from keras_resnet_suite.export.saved_model import (
    SIGNATURES,
    NothingToFold,
    _preprocess,  # noqa: F401 (tests call the encoded-image preprocessing directly)
    call_batched,
    export_saved_model,
    fold_batchnorm,
    invalid_to_zero,
    map_decoded,
    pixel_limit,
    require_tensorflow_backend,
    write_saved_model,
)

__all__ = ["SIGNATURES", "NothingToFold", "Predictor", "QuantizationRefused",
           "SavedModelPredictor", "call_batched", "export_saved_model", "fold_batchnorm",
           "invalid_to_zero", "load_predictor", "map_decoded", "pixel_limit", "quantize",
           "require_tensorflow_backend", "write_saved_model"]
