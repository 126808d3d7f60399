"""A `keras_resnet_suite` backbone as a keras-cv `Backbone`.

    from keras_resnet_suite.integrations.keras_cv import ResNetCVBackbone
    backbone = ResNetCVBackbone("resnet50", weights="imagenet")
    model = keras_cv.models.RetinaNet(num_classes=20, bounding_box_format="xyxy",
                                      backbone=backbone)

Its outputs are our dict {"C2": ..., "C5": ...}; `pyramid_level_inputs` names the layer of
each level {"P2": "conv2_x", ..., "P5": "conv5_x"} (keras-cv's convention, which RetinaNet
and YOLOV8Detector read). Registered for Keras serialization: the config holds the
architecture, weights name and options, so a `.keras` file reloads it.
"""

from __future__ import annotations

import keras
import keras_cv

from .common import (
    adapter_config,
    build_trunk,
    copy_metadata,
    host_batches,
    level_layer_names,
)


@keras.saving.register_keras_serializable(package="keras_resnet_suite")
class ResNetCVBackbone(keras_cv.models.Backbone):
    """Backbone `architecture` (a `backbones.available_models()` name) for keras-cv detectors.

    Args:
        architecture: a `backbones.available_models()` name, e.g. "resnet50".
        weights: what `backbones.build` takes: None, a checkpoint name ("imagenet", ...) or a file.
        options: other `backbones.build` options (freeze_at, norm, output_stride, depths,
            widths, ...), JSON-ready: they are saved in the config.
        image_shape: the input `(height, width, 3)`; None sizes take any image size.
        load_weights: False builds the architecture `weights` implies without reading them
            (what a reload does: the `.keras` file holds the weights).
        dtype: a Keras dtype policy ("bfloat16", "mixed_float16", ...) every layer takes.
        **kwargs: the host's Backbone arguments (`name`, `trainable`).
    """

    def __init__(self, architecture: str = "resnet50", weights: str | None = None,
                 options: dict | None = None, image_shape: tuple = (None, None, 3),
                 load_weights: bool = True, dtype=None, **kwargs):
        trunk, options = build_trunk(architecture, weights, options, image_shape, load_weights,
                                     dtype)
        kwargs.setdefault("name", trunk.name)
        super().__init__(inputs=trunk.input, outputs=trunk.output, **kwargs)
        if dtype is not None:  # as keras-hub's Backbone does: kept in the config for a reload
            self.dtype_policy = keras.dtype_policies.get(dtype)
        self.pyramid_level_inputs = {f"P{level[1:]}": name
                                     for level, name in level_layer_names(trunk).items()}
        copy_metadata(trunk, self)
        self._rebuild = adapter_config(architecture, weights, options, image_shape)

    def get_config(self) -> dict:
        """keras-cv's name/trainable, the dtype policy, and what rebuilds the backbone."""
        dtype = keras.dtype_policies.serialize(self.dtype_policy)
        return {**super().get_config(), "dtype": dtype, **self._rebuild}


def to_keras_cv(dataset, preprocess=None):
    """`detection.data` training batches as keras-cv's RetinaNet and YOLOV8Detector fit them:
    `(images, {"boxes", "classes"})` (keras-cv's key for labels), boxes xyxy pixels (-1 rows
    pad), images through `preprocess` (the backbone's `preprocess_input` with published
    weights) or scaled to [0, 1] when None (see `common.host_batches`).

        batches = detection.data.pipeline.training_batches(detection.data.voc(...), (512, 512), 2)
        detector.fit(to_keras_cv(batches, backbone.preprocess_input), epochs=...)
    """
    return host_batches(dataset, "classes", preprocess)
