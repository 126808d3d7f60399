"""keras-resnet-suite: every ResNet of He et al. (2015) and its family, in Keras 3."""

# ruff: noqa: E402  (the CPU default below must run before these imports load TensorFlow)
from .runtime import default_for_our_commands as _fast_cpu_default

_fast_cpu_default()  # this project's commands run TensorFlow's oneDNN kernels (runtime.py)

# ruff: isort: split
from . import backbones, layers, preprocessing, specs, weights
from .flops import count_macs, count_params
from .models import BUILDERS, build
from .preprocessing import preprocess_input
from .specs import ResNetSpec, available_models, get_spec

globals().update(BUILDERS)

__version__ = "0.1.0"
__all__ = ["available_models", "backbones", "build", "count_macs", "count_params", "get_spec",
           "layers", "preprocess_input", "preprocessing", "specs", "weights", "ResNetSpec",
           *BUILDERS]


def __getattr__(name: str):
    # Heavier sub-packages load on first use: `krs.export`, `krs.analysis`, `krs.data`, ...
    import importlib

    if name in ("export", "analysis", "data", "training", "cli", "demo"):
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
