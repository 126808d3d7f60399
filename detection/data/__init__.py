"""Detection data: PASCAL VOC, COCO and TFDS loaders, the data report, box-aware augmentation.

`shapes` (synthetic set) and `transforms` come from modules owned by the detector code and are
imported on first use, so importing this package stays light.
"""

import importlib
import sys
import types

from detection.data.build import dataset_from_config
from detection.data.coco import coco, coco_records
from detection.data.report import DataReport
from detection.data.voc import VOC_CLASSES, voc, voc_records

__all__ = [
    "DataReport", "VOC_CLASSES", "coco", "coco_records", "coco_tfds", "dataset_from_config",
    "voc", "voc_records",
    "voc_tfds", "augment", "shapes", "transforms",
]

_LAZY = {
    "shapes": ("detection.data.shapes", "shapes"),
    "transforms": ("detection.data.transforms", None),
    "augment": ("detection.data.augment", None),
    "voc_tfds": ("detection.data.tfds", "voc_tfds"),
    "coco_tfds": ("detection.data.tfds", "coco_tfds"),
}


class _Package(types.ModuleType):
    """Keeps `detection.data.shapes` the function even after `import detection.data.shapes`.

    The import system binds a loaded submodule on its package under the submodule's name,
    which would hide the function of the same name; this swaps the function back in.
    """

    def __setattr__(self, name, value):
        module_name, attribute = _LAZY.get(name, (None, None))
        if attribute and isinstance(value, types.ModuleType) and value.__name__ == module_name:
            value = getattr(value, attribute)
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package


def __getattr__(name: str):
    if name not in _LAZY:
        raise AttributeError(f"module 'detection.data' has no attribute {name!r}")
    module_name, attribute = _LAZY[name]
    module = importlib.import_module(module_name)
    value = getattr(module, attribute) if attribute else module
    # Importing a submodule binds it on the package under its own name (e.g. `shapes` the
    # module); rebind so `detection.data.shapes` stays the function.
    globals()[name] = value
    return value
