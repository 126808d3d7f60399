"""Checkpoint readers (safetensors, `torch.save` without PyTorch, Keras h5), name mapping and
the published-checkpoint table, used by `keras_resnet_suite.weights`."""

from .formats import (
    TORCH_SUFFIXES,
    is_legacy_keras_h5,
    load_model_file,
    load_weights_file,
    read_keras_h5,
    read_safetensors,
    read_state_dict,
    read_torch,
    write_safetensors,
)
from .mapping import (
    assign,
    canonical_from_keras,
    canonical_from_torch,
    keras_name,
    model_targets,
    torch_layout,
    torch_name,
    torch_state_from_model,
)
from .torch_file import UnsafeCheckpointError, load_torch_file

__all__ = ["TORCH_SUFFIXES", "assign", "canonical_from_keras", "canonical_from_torch",
           "is_legacy_keras_h5", "keras_name", "load_model_file", "load_weights_file", "load_torch_file", "model_targets", "read_keras_h5",
           "read_safetensors", "read_state_dict", "read_torch", "torch_layout", "torch_name",
           "torch_state_from_model", "UnsafeCheckpointError", "write_safetensors"]
