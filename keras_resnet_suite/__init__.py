"""keras-resnet-suite: every ResNet of He et al. (2015) and its family, in Keras 3.

Importing the package changes no environment variable and, unless Keras is imported already,
loads neither Keras nor TensorFlow: `build`, the builders (`ResNet50`, ...) and the
sub-modules load on first use (PEP 562), so a script can still choose `TF_ENABLE_ONEDNN_OPTS`
or `KERAS_BACKEND` after `import keras_resnet_suite`, and the commands choose TensorFlow's CPU
kernels in their entry points (runtime.py). Where Keras is loaded first, the layers register
at once, so `keras.saving.load_model` reads this library's `.keras` files.
"""

from __future__ import annotations

import importlib
import sys
from typing import TYPE_CHECKING

from . import integrations
from .specs import ResNetSpec, available_models, camel_name, get_spec

if TYPE_CHECKING:  # what the lazy names below resolve to, for type checkers and IDEs
    from . import backbones, layers, preprocessing, specs, weights
    from .flops import count_macs, count_params
    from .models import build
    from .preprocessing import preprocess_input

if "keras" in sys.modules:  # the backend is chosen already: register the serializable layers
    from . import layers, metadata  # noqa: F401
# The keras-hub/keras-cv adapters' stand-ins: now, or right after Keras loads (imports no host).
integrations.register_adapters()

__version__ = "0.1.0"

# name -> the module that defines it; the builders are `build` of their model name
_ATTRIBUTES = {"build": "models", "count_macs": "flops", "count_params": "flops",
               "preprocess_input": "preprocessing", "convert_keras_applications": "models"}
_BUILDERS = {camel_name(name): name for name in available_models()}
_SUBMODULES = ("analysis", "backbones", "cli", "compat", "convert", "data", "demo", "export",
               "flops", "integrations", "layers", "metadata", "models", "preprocessing",
               "runtime", "specs", "training", "weights")

__all__ = ["available_models", "backbones", "build", "count_macs", "count_params", "get_spec",
           "layers", "preprocess_input", "preprocessing", "specs", "weights", "ResNetSpec",
           *_BUILDERS]


def __getattr__(name: str):
    if name in _ATTRIBUTES:
        return getattr(importlib.import_module(f"{__name__}.{_ATTRIBUTES[name]}"), name)
    if name in _BUILDERS:
        return importlib.import_module(f"{__name__}.models").BUILDERS[name]
    if name in _SUBMODULES:
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__, *_SUBMODULES})
