"""Adapters that make a `keras_resnet_suite.backbones` model a backbone of another Keras library.

One module per host library, imported only when used, so neither library is a dependency:
`integrations.keras_hub` (a keras-hub `FeaturePyramidBackbone`, for RetinaNet and D-FINE) and
`integrations.keras_cv` (a keras-cv `Backbone`, for RetinaNet and YOLOV8Detector).
Install them with `pip install "keras-resnet-suite[interop]"`.

A `.keras` file of a detector on an adapter reloads after the imports a user writes anyway
(`import keras_hub` or `keras_cv`, and `keras_resnet_suite`): importing `keras_resnet_suite`
registers a light stand-in for each adapter class, which imports the adapter module (and so
its host library) only when a file needs it. This module imports neither Keras nor a host.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys

# Keras' registered name -> (the module that defines the class, the pip package it needs).
ADAPTERS = {
    "keras_resnet_suite>ResNetHubBackbone": (f"{__name__}.keras_hub", "keras-hub"),
    "keras_resnet_suite>ResNetCVBackbone": (f"{__name__}.keras_cv", "keras-cv"),
}


def adapter_class(registered_name: str) -> type:
    """The adapter class Keras saved as `registered_name`, importing its module (and host
    library) now; one line naming the package to install when the host is missing."""
    module_name, package = ADAPTERS[registered_name]
    class_name = registered_name.split(">", 1)[1]
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as error:
        raise ImportError(f"this model holds {class_name}, which needs {package} "
                          f"({error.name} is not installed): pip install {package}") from None
    return getattr(module, class_name)


def _stand_in(registered_name: str) -> type:
    """A class Keras can find under `registered_name` whose `from_config` builds the adapter."""

    class LazyAdapter:
        @classmethod
        def from_config(cls, config: dict, custom_objects: dict | None = None):
            return adapter_class(registered_name).from_config(config)

    LazyAdapter.__name__ = LazyAdapter.__qualname__ = registered_name.split(">", 1)[1]
    return LazyAdapter


def register_adapters() -> None:
    """Put a stand-in for each adapter in Keras' registry (unless its module is imported
    already: it registers the real class); before Keras is imported, right after it is."""
    if "keras" not in sys.modules:
        if not any(isinstance(finder, _AfterKeras) for finder in sys.meta_path):
            sys.meta_path.insert(0, _AfterKeras())
        return
    registry = sys.modules["keras"].saving.get_custom_objects()
    for registered_name, (module_name, _) in ADAPTERS.items():
        if module_name not in sys.modules and registered_name not in registry:
            registry[registered_name] = _stand_in(registered_name)


class _AfterKeras(importlib.abc.MetaPathFinder):
    """Finds nothing itself: on the first `import keras` it wraps Keras' loader so that the
    stand-ins register once Keras' module has run, then leaves `sys.meta_path`."""

    def find_spec(self, name, path=None, target=None):
        if name != "keras":
            return None
        if self in sys.meta_path:
            sys.meta_path.remove(self)
        spec = importlib.util.find_spec(name)
        if spec is None or not hasattr(spec.loader, "exec_module"):
            return spec
        run = spec.loader.exec_module

        def exec_then_register(module):
            run(module)
            register_adapters()

        spec.loader.exec_module = exec_then_register
        return spec
