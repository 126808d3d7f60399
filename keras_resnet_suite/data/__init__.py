"""tf.data input pipelines: CIFAR (paper Sec. 4.2), ImageNet-style (Sec. 3.4), image folders.

from keras_resnet_suite import data
cifar = data.cifar("../shared/data/cifar10-jpeg.tar.gz", batch_size=128, seed=0)
model.fit(cifar.train, steps_per_epoch=cifar.steps_per_epoch, validation_data=cifar.test)
"""

from __future__ import annotations

import importlib
from typing import Any

from keras_resnet_suite.data.cifar import cifar
from keras_resnet_suite.data.cifar import load_arrays as load_cifar_arrays
from keras_resnet_suite.data.folder import extract_archive, scan_image_folder
from keras_resnet_suite.data.imagenet import (
    MULTISCALE_SIZES,
    imagenet,
    predict_multiscale,
    predict_ten_crop,
    topk_error,
)
from keras_resnet_suite.data.report import ClassificationData, DataReport

__all__ = [
    "MULTISCALE_SIZES",
    "ClassificationData",
    "DataReport",
    "cifar",
    "extract_archive",
    "imagenet",
    "load_cifar_arrays",
    "predict_multiscale",
    "predict_ten_crop",
    "scan_image_folder",
    "shapes",
    "topk_error",
]


def __getattr__(name: str) -> Any:
    # The synthetic-shapes generator is the lead's module; import it only when asked for.
    if name == "shapes":
        return importlib.import_module("keras_resnet_suite.data.shapes")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
