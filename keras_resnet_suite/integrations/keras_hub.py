"""A `keras_resnet_suite` backbone as a keras-hub `FeaturePyramidBackbone`.

    from keras_resnet_suite.integrations.keras_hub import ResNetHubBackbone
    encoder = ResNetHubBackbone("resnet50", weights="imagenet")
    backbone = keras_hub.models.RetinaNetBackbone(image_encoder=encoder, min_level=3,
                                                  max_level=7, use_p5=False)

Its outputs are our dict {"C2": ..., "C5": ...} (so D-FINE takes it with
`out_features=["C4", "C5"]`) and `pyramid_outputs` names the same tensors {"P2": ..., "P5": ...}
(keras-hub's convention, which RetinaNet reads). Registered for Keras serialization: the
config holds the architecture, weights name and options, so a `.keras` file reloads it.
"""

from __future__ import annotations

import keras
import keras_hub

from .common import adapter_config, build_trunk, copy_metadata, host_batches


@keras.saving.register_keras_serializable(package="keras_resnet_suite")
class ResNetHubBackbone(keras_hub.models.FeaturePyramidBackbone):
    """Backbone `architecture` (a `backbones.available_models()` name) for keras-hub detectors.

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
        super().__init__(inputs=trunk.input, outputs=trunk.output, dtype=dtype, **kwargs)
        self.pyramid_outputs = {f"P{level[1:]}": out for level, out in trunk.output.items()}
        copy_metadata(trunk, self)
        self._rebuild = adapter_config(architecture, weights, options, image_shape)

    def get_config(self) -> dict:
        """keras-hub's name/trainable/dtype plus what rebuilds the backbone."""
        return {**super().get_config(), **self._rebuild}


def to_keras_hub(dataset, preprocess=None):
    """`detection.data` training batches as keras-hub's object detectors (RetinaNet, D-FINE)
    fit them: `(images, {"boxes", "labels"})`, boxes xyxy pixels (-1 rows pad), images through
    `preprocess` (the encoder's `preprocess_input` with published weights) or scaled to [0, 1]
    when None (see `common.host_batches`).

        batches = detection.data.pipeline.training_batches(detection.data.voc(...), (512, 512), 2)
        detector.fit(to_keras_hub(batches, encoder.preprocess_input), epochs=...)
    """
    return host_batches(dataset, "labels", preprocess)
