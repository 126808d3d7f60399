"""Serving: a trained detector as a TF Object Detection API SavedModel for TF Serving."""

from detection.export.saved_model import (
    OUTPUT_KEYS,
    SIGNATURES,
    export_saved_model,
    run,
    to_od_api,
)

__all__ = ["OUTPUT_KEYS", "SIGNATURES", "export_saved_model", "run", "to_od_api"]
