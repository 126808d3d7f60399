"""The sections of `python -m benchmarks`, by name, in priority order: when the time budget
runs out, the last ones are skipped. "gpu" is opt-in (`--gpu`) and never in the default run.

Each is imported only when it runs: they load Keras and a backend, which must come after
the command has set the environment (the oneDNN setting, JAX's memory preallocation).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable

from benchmarks.suite import Suite

SECTIONS: dict[str, tuple[str, str]] = {  # name -> (module, function)
    "resnet50": ("benchmarks.sections.classification", "resnet50"),
    "serving": ("benchmarks.sections.saved_model", "serving"),
    "pipelines": ("benchmarks.sections.input_pipelines", "cifar"),
    "resnet101": ("benchmarks.sections.classification", "resnet101"),
    "detection": ("benchmarks.sections.faster_rcnn", "detection"),
    "mask_rcnn": ("benchmarks.sections.mask_rcnn", "mask_rcnn"),
    "gpu": ("benchmarks.gpu", "section"),
}
CPU_SECTIONS = [name for name in SECTIONS if name != "gpu"]
QUICK_SECTIONS = ["resnet50", "serving", "pipelines"]


def runner(name: str) -> Callable[[Suite], None]:
    """The function that runs section `name` on a suite."""
    module, function = SECTIONS[name]
    return getattr(importlib.import_module(module), function)
