"""Faster R-CNN as a composition (torchvision's `GeneralizedRCNN`): images -> `transform`
(canvas + normalisation) -> `backbone` (feature maps) -> `rpn` (proposals) -> `roi_heads`
(boxes, classes) -> the transform maps detections back to the input's pixels.

Each part is a serializable Keras layer whose call returns `(outputs, losses)` (its losses `{}`
without targets); the per-image geometry travels as the transform's `ImageInfo`. This file
only wires the parts and hands their losses to Keras (`add_loss`). `fit` takes
`{"images": [B, H, W, 3], "bounding_boxes": {"boxes": [B, M, 4] xyxy pixels, "labels":
[B, M]}}` with ground truth padded by label -1; `call`/`predict` return padded
`{"boxes", "scores", "classes", "num_detections"}` in the input's pixels.
"""

from __future__ import annotations

from collections.abc import Sequence

import keras
from keras import ops

from detection.checkpoints import presets, pretrained
from detection.data.checks import TrainingDataChecks
from detection.modeling import builder
from detection.modeling.options import DetectorOptions
from detection.modeling.roi_heads import ROIHeads
from detection.modeling.rpn import RPN
from detection.modeling.transform import ImageInfo, ImageTransform
from keras_resnet_suite.metadata import jsonable

LOSS_KEYS = ("rpn_cls_loss", "rpn_box_loss", "roi_cls_loss", "roi_box_loss")
PARTS = ("backbone", "rpn", "roi_heads", "transform")
# What a detector knows about itself (set by `detection.checkpoints.pretrained`), kept in its
# config so `.keras` save/load keeps naming its classes.
METADATA = ("architecture", "build_overrides", "class_names", "category_ids")


def finite_images_only(detections: dict, images) -> dict:
    """`detections` with none (zero boxes, scores and masks, classes -1) for each image that
    holds a NaN or infinite pixel: what our SavedModels answer for an unusable image, kept in
    the graph Keras' exports (ONNX, OpenVINO, LiteRT) take, which gave NaN boxes instead."""
    finite = ops.all(ops.isfinite(ops.cast(images, "float32")), axis=(1, 2, 3))
    rows = ops.arange(ops.shape(finite)[0])
    # A gather, not a float select: tf2onnx writes tf.where as c * x + (1 - c) * y, and
    # 0 * NaN is NaN; on integers (the row index) that form is exact.
    index = ops.where(finite, rows, rows + ops.shape(finite)[0])
    out = {}
    for key, value in detections.items():
        fill = ops.full_like(value, -1 if key == "classes" else 0)
        out[key] = ops.take(ops.concatenate([value, fill], axis=0), index, axis=0)
    return out


def _feature_list(out) -> list:
    """A backbone's maps as a list, whether it returns a dict, a list or (one output) a tensor."""
    if isinstance(out, dict):
        return list(out.values())
    return list(out) if isinstance(out, (list, tuple)) else [out]


@keras.saving.register_keras_serializable(package="detection")
class GeneralizedRCNN(TrainingDataChecks, keras.Model):
    """A two-stage detector from its four parts.

    Args:
        backbone: a `keras.Model` from normalised canvas images to the list of feature maps
            the RPN runs on (C4: `[C4]`; FPN: `[P2, ..., P6]`, the neck included).
        rpn: a `detection.modeling.rpn.RPN`.
        roi_heads: a `detection.modeling.roi_heads.ROIHeads` (C4 or FPN).
        transform: a `detection.modeling.transform.ImageTransform`.

    `fit` and `predict` check their data (`detection.data.checks.TrainingDataChecks`).
    """

    parts = PARTS  # what `get_config` saves and `compose` takes (a subclass may add parts)
    loss_keys = LOSS_KEYS  # the stage losses `call` returns in training
    # What `keras_resnet_suite.export.quantize` calls for an int8/bf16 folder (named, not
    # imported: export sits above the model).
    quantizer = "detection.export.quantize:quantize_detector"

    def __init__(self, backbone: keras.Model, rpn: RPN, roi_heads: ROIHeads,
                 transform: ImageTransform, **kwargs):
        super().__init__(**kwargs)
        self.backbone, self.rpn, self.roi_heads = backbone, rpn, roi_heads
        self.transform = transform
        self.loss_trackers = {k: keras.metrics.Mean(name=k) for k in self.loss_keys}
        self._build_parts()

    @classmethod
    def compose(cls, backbone, rpn, roi_heads, transform, name: str | None = None):
        """The detector of given parts (`.keras` loading calls it; a subclass that builds its
        own parts composes them without building)."""
        return cls(backbone, rpn, roi_heads, transform, name=name)

    def _build_parts(self):
        """Create every weight now, so `fit`/`predict`/`summary`/loading work without a run."""
        shapes = [tuple(o.shape) for o in _feature_list(self.backbone.outputs)]
        if any(s is None for shape in shapes for s in shape[1:]):
            raise ValueError("backbone feature maps need static sizes; build it on the canvas "
                             f"{self.image_size}, got {shapes}")
        self.rpn.build(shapes)
        self.roi_heads.build(shapes)
        self.built = True

    @property
    def num_classes(self) -> int:
        return self.roi_heads.num_classes

    @property
    def image_size(self) -> tuple[int, int]:
        """The canvas `(height, width)`: the transform's, its one home."""
        return self.transform.image_size

    @property
    def head_type(self) -> str:
        """`"c4"` or `"fpn"`: the second stage's design."""
        return self.roi_heads.head_type

    def get_config(self) -> dict:
        config = {"name": self.name, **{k: keras.saving.serialize_keras_object(getattr(self, k))
                                        for k in self.parts}}
        metadata = {k: jsonable(getattr(self, k)) for k in METADATA if hasattr(self, k)}
        if metadata:
            config["metadata"] = metadata
        return config

    @classmethod
    def from_config(cls, config: dict, custom_objects=None):
        config = dict(config)
        metadata = config.pop("metadata", None) or {}
        for key in cls.parts:
            config[key] = keras.saving.deserialize_keras_object(config[key], custom_objects)
        model = cls.compose(**config)
        unknown = sorted(set(metadata) - set(METADATA)) if isinstance(metadata, dict) else None
        if unknown is None or unknown:
            raise ValueError(f"{model.name}: metadata must be a dict with keys among "
                             f"{list(METADATA)}, got {unknown if unknown else metadata!r}")
        if "architecture" in metadata:
            try:
                metadata["architecture"] = pretrained.Architecture(**metadata["architecture"])
            except TypeError as err:
                raise ValueError(f"{model.name}: metadata 'architecture' is not a valid "
                                 f"Architecture: {err}") from err
        for key, value in metadata.items():
            setattr(model, key, value)
        return model

    # ----------------------------------------------------------------------------- forward
    def _features(self, images, training):
        return _feature_list(self.backbone(images, training=training))

    def call(self, inputs, training=False):
        if isinstance(inputs, dict):
            if "images" not in inputs:
                raise ValueError(f"{type(self).__name__} inputs: expected a dict with 'images', "
                                 f"got keys {sorted(inputs)}")
            images, truth = inputs["images"], inputs.get("bounding_boxes")
        else:
            images, truth = inputs, None
        x, info = self.transform(images)
        if training and truth is not None:
            return self.training_losses(x, info, self.transform.targets_to_canvas(truth, info))
        return finite_images_only(self.detect(x, info), images)

    def training_losses(self, x, info: ImageInfo, targets: dict) -> dict:
        """The stage losses (`stage_losses`), each handed to Keras (`add_loss`)."""
        losses = self.stage_losses(x, info, targets)
        for key in self.loss_keys:
            self.add_loss(losses[key])
        return losses

    def stage_losses(self, x, info: ImageInfo, targets: dict) -> dict:
        """The four losses of normalised canvas images `x` against canvas `targets`: each
        stage returns its own; the composer only gathers them."""
        features = self._features(x, training=True)
        proposals, rpn_losses = self.rpn(features, info, targets, training=True)
        _, roi_losses = self.roi_heads(features, proposals, info, targets, training=True)
        return {**rpn_losses, **roi_losses}

    def detect(self, x, info: ImageInfo) -> dict:
        """The one inference path (`call` and the SavedModel export use it): normalised canvas
        images `x` and their `ImageInfo` -> padded detections in the input images' pixels."""
        features = self._features(x, training=False)
        proposals, _ = self.rpn(features, info, training=False)
        detections, _ = self.roi_heads(features, proposals, info, training=False)
        return self.transform.detections_to_input(detections, info)

    # ----------------------------------------------------------------------------- export
    def export(self, filepath, format: str = "tf_saved_model", verbose: bool | None = None,
               input_signature=None, **kwargs):
        """`keras.Model.export` (`tf_saved_model`, `onnx`, `openvino`, `litert`) with the
        detector's own input signature as default: float `images [batch, height, width, 3]`,
        any batch and size (the transform resizes onto the canvas). Keras infers a subclassed
        model's signature only from a first call, and would then fix the image size."""
        if input_signature is None:
            input_signature = [keras.InputSpec(shape=(None, None, None, 3), dtype="float32",
                                               name="images")]
        return super().export(filepath, format=format, verbose=verbose,
                              input_signature=input_signature, **kwargs)

    # ----------------------------------------------------------------------------- training
    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        """Keras' sum of the model's losses: the four stage losses (`add_loss`d by `call`)
        and the regularisers, each scaled by Keras for the replicas of a tf.distribute run."""
        if not isinstance(y_pred, dict) or not set(self.loss_keys) <= set(y_pred):
            raise ValueError("FasterRCNN trains on elements {'images', 'bounding_boxes': "
                             "{'boxes', 'labels'}} (see detection.data); got inputs without "
                             "'bounding_boxes'")
        return super().compute_loss(x, y, y_pred, sample_weight, training=training)

    def compute_metrics(self, x, y, y_pred, sample_weight=None):
        logs = super().compute_metrics(x, y, y_pred, sample_weight)
        if isinstance(y_pred, dict) and set(self.loss_keys) <= set(y_pred):
            for k, tracker in self.loss_trackers.items():
                tracker.update_state(y_pred[k])
                logs[k] = tracker.result()
        return logs

    @property
    def metrics(self):
        return super().metrics + list(self.loss_trackers.values())


@keras.saving.register_keras_serializable(package="detection")
class FasterRCNN(GeneralizedRCNN):
    """Faster R-CNN (Ren et al. 2015) with a ResNet backbone, C4 (paper App. A) or FPN head.

    `FasterRCNN(num_classes, backbone="resnet101", head="c4", image_size=..., options=...,
    **keywords)` builds the four parts with `detection.modeling.builder.build_parts`:
    `options` (`detection.modeling.options.DetectorOptions`, e.g. a preset of
    `detection.checkpoints.presets`) with the flat `keywords` (`options.KEYWORDS`: `score_
    threshold`, `rpn_nms_threshold`, ...) applied; `dtype` a Keras dtype policy for every part
    (e.g. `"mixed_bfloat16"`: bf16 convolutions, float32 variables and outputs). To compose
    given parts, use
    `GeneralizedRCNN(backbone, rpn, roi_heads, transform)`.
    """

    def __init__(self, num_classes: int, backbone: str | keras.Model = "resnet101",
                 head: str = "c4", image_size: Sequence[int] = (608, 1024), *,
                 options: DetectorOptions | None = None, name: str = "faster_rcnn",
                 dtype: str | keras.DTypePolicy | None = None, **keywords):
        with builder.dtype_policy(dtype):  # every part and the model under one policy
            super().__init__(name=name, **builder.build_parts(num_classes, backbone, head,
                                                              image_size, options, **keywords))

    @classmethod
    def compose(cls, backbone, rpn, roi_heads, transform, name: str = "faster_rcnn"):
        """A `FasterRCNN` of given parts (what `.keras` loading does: a saved detector is
        its parts, built already)."""
        model = cls.__new__(cls)
        GeneralizedRCNN.__init__(model, backbone, rpn, roi_heads, transform, name=name)
        return model

    @classmethod
    def from_architecture(cls, arch: pretrained.Architecture, image_size: Sequence[int] | None = None,
                          **overrides) -> FasterRCNN:
        """The preset's detector for a checkpoint's `arch` (random weights) on `image_size`
        (default: the preset's canvas); `overrides` replace preset options (e.g.
        `score_threshold`) and are kept in `build_overrides`."""
        size = tuple(image_size or presets.default_canvas(arch.preset, arch.head))
        model = cls(arch.num_classes, arch.backbone, arch.head, size,
                    options=presets.options(arch.preset, arch.head), **overrides)
        pretrained.describe(model, arch, overrides)
        return model

    @classmethod
    def from_checkpoint(cls, name_or_path, image_size: Sequence[int] | None = None,
                        **overrides) -> FasterRCNN:
        """A detector with a library's published COCO weights: a registry name
        (`detection.checkpoints.names()`, e.g. "torchvision/fasterrcnn_resnet50_fpn") or a
        torchvision `.pth` / detectron2 `.pkl` file; see `detection.checkpoints.pretrained`."""
        arch, state, source = pretrained.read(name_or_path)
        model = cls.from_architecture(arch, image_size, **overrides)
        pretrained.load_state(model, state, arch, source=source)
        return model
