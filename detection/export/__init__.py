"""Serving: a trained detector as a TF Object Detection API SavedModel for TF Serving."""

from detection.export.saved_model import (
    MASK_KEY,
    OUTPUT_KEYS,
    SIGNATURES,
    export_saved_model,
    run,
    to_od_api,
)

__all__ = ["MASK_KEY", "OUTPUT_KEYS", "SIGNATURES", "export_saved_model", "run", "to_od_api"]
