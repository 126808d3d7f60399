"""Serving: a trained detector as a TF Object Detection API SavedModel for TF Serving
(`detection.export.saved_model`), or quantized for OpenVINO (`detection.export.quantize`).

The names load on first use, so the model classes can import `detection.export.quantize`
without loading the SavedModel writer (and the training engine it reads models with)."""

import importlib

__all__ = ["MASK_KEY", "OUTPUT_KEYS", "SIGNATURES", "export_saved_model", "run", "to_od_api"]


def __getattr__(name: str):
    if name in __all__:
        return getattr(importlib.import_module("detection.export.saved_model"), name)
    raise AttributeError(f"module 'detection.export' has no attribute {name!r}")
