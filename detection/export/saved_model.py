"""Export a detector (`python -m detection export`): a SavedModel in the TF Object Detection API
format, servable by TF Serving (C++ only) and loadable with plain `tf.saved_model.load`.

Two signatures, resizing onto the canvas and pixel normalisation inside the graph:
- `serving_default(images)`: uint8 `[batch, height, width, 3]`, any batch and size (one size
  per call, as a tensor has);
- `serving_bytes(image_bytes)`: `[batch]` strings of encoded JPEG/PNG/GIF/BMP images, each its
  own size, turned upright by their EXIF orientation as the Python loaders and `predict` do.
Outputs (as the TF OD API): `detection_boxes` `[batch, N, 4]` normalised (ymin, xmin, ymax,
xmax) in [0, 1] of each input image, `detection_scores` `[batch, N]`, `detection_classes`
`[batch, N]` float32 class ids (the model's label + 1, or the official category id for a model
with `category_ids` such as the COCO checkpoints; 0 on padding rows) and `num_detections`
`[batch]` float32; `N` is the model's `max_detections`. A `MaskRCNN` adds `detection_masks`
`[batch, N, S, S]` float32: each detection's mask probabilities of its class, box-relative
(S = 28 FPN, 14 C4; zero on padding rows), the TF OD API exporter's own form before its
optional reframing to the image: `detection.evaluation.paste.paste_masks(masks[:n],
boxes_in_pixels[:n], height, width)` pastes them into the image (a `FasterRCNN` has no
`detection_masks` key). A model with `class_names` also gets
`assets.extra/label_map.pbtxt`, the TF OD API label map. `serving_bytes` adds `valid` (bool
`[batch]`) and `error` (string `[batch]`, "" when valid).

Bad input: `serving_default` refuses an `images` tensor that is not `[batch, height, width, 3]`
or has an empty side, with one line naming `images` and the shape (a loaded signature checks
dtypes, not shapes). In `serving_bytes` an element that is not a whole JPEG/PNG/GIF/BMP, or
declares more than `max_pixels` pixels, is judged from its header before any decoding and
answered per element: `valid` False, `error` "image_bytes[i]: <what is wrong>" and no
detections; the other elements are detected as if sent alone.
"""

from __future__ import annotations

import os
from pathlib import Path

import keras
import tensorflow as tf

from detection.config import load_config
from detection.engine.evaluate import load_detector
from detection.export.quantize_cli import run_quantized
from detection.modeling.mask_rcnn import detector_from_checkpoint
from detection.modeling.transform import ImageInfo
from keras_resnet_suite.export import (
    call_batched,
    invalid_to_zero,
    map_decoded,
    pixel_limit,
    require_tensorflow_backend,
    write_saved_model,
)
from keras_resnet_suite.metadata import write_asset

SIGNATURES = ("serving_default", "serving_bytes")
OUTPUT_KEYS = ("detection_boxes", "detection_scores", "detection_classes", "num_detections")
MASK_KEY = "detection_masks"  # a MaskRCNN's extra output


def to_od_api(dets: dict, heights, widths, category_ids=None) -> dict:
    """Model detections (pixel xyxy, 0-based labels, -1 padding) -> TF OD API outputs.

    `heights`/`widths` are `[batch]` input image sizes used to normalise the boxes;
    `category_ids[k]` is the id reported for label k (default k + 1); a `MaskRCNN`'s
    box-relative `masks` `[batch, N, S, S]` become `detection_masks` as they are."""
    boxes = tf.cast(dets["boxes"], tf.float32)
    h = tf.cast(tf.reshape(heights, [-1, 1]), tf.float32)
    w = tf.cast(tf.reshape(widths, [-1, 1]), tf.float32)
    x1, y1, x2, y2 = tf.unstack(boxes, axis=-1)
    normalised = tf.stack([y1 / h, x1 / w, y2 / h, x2 / w], axis=-1)
    classes = tf.cast(dets["classes"], tf.int32)
    valid = classes >= 0
    if category_ids is None:
        ids = classes + 1
    else:
        ids = tf.gather(tf.constant(list(category_ids), tf.int32), tf.maximum(classes, 0))
    out = {
        "detection_boxes": tf.where(valid[..., None], normalised, 0.0),
        "detection_scores": tf.where(valid, tf.cast(dets["scores"], tf.float32), 0.0),
        "detection_classes": tf.cast(tf.where(valid, ids, 0), tf.float32),
        "num_detections": tf.cast(dets["num_detections"], tf.float32),
    }
    if "masks" in dets:
        out[MASK_KEY] = tf.where(valid[..., None, None], tf.cast(dets["masks"], tf.float32), 0.0)
    return out


def label_map(class_names, category_ids=None) -> str:
    """The TF OD API `label_map.pbtxt` text: one `item {id, name}` per class."""
    ids = category_ids or range(1, len(class_names) + 1)
    return "".join(f'item {{\n  id: {i}\n  name: "{name}"\n}}\n'
                   for i, name in zip(ids, class_names, strict=True) if name != "N/A")


def export_saved_model(model: keras.Model, path: str | os.PathLike, *,
                       max_pixels: int | None = None, verbose: bool = False) -> Path:
    """Write a `FasterRCNN` (or a `MaskRCNN`, with `detection_masks`) as a SavedModel with the
    signatures in the module docstring; `max_pixels` (default
    `keras_resnet_suite.data.images.MAX_PIXELS`) is the largest image `serving_bytes` decodes
    (a decompression-bomb guard)."""
    require_tensorflow_backend()
    limit = pixel_limit(max_pixels)
    transform = getattr(model, "transform", None)
    canvas = tuple(int(s) for s in getattr(model, "image_size", ()))
    if len(canvas) != 2 or transform is None:
        raise ValueError(f"export_saved_model expects a detection.FasterRCNN (with image_size), "
                         f"got {type(model).__name__}")

    def from_images(images):
        # enforce the declared shape (a loaded signature checks only dtypes; see map_decoded)
        images = tf.ensure_shape(images, [None, None, None, 3])
        shape = tf.shape(images)
        empty = tf.debugging.Assert(
            (shape[0] == 0) | ((shape[1] > 0) & (shape[2] > 0)),
            [tf.strings.format("images: empty image of {}x{} pixels (width x height)",
                               (shape[2], shape[1]))])  # fmt: skip
        with tf.control_dependencies([empty]):
            images = tf.identity(images)
        # The model itself resizes onto its canvas and normalises; the batch shares one size.
        dets = call_batched(lambda x: model(tf.cast(x, tf.float32), training=False), images)
        batch = shape[0]
        return to_od_api(dets, tf.fill([batch], shape[1]), tf.fill([batch], shape[2]), ids)

    def _place(image):
        x, info = transform(image[None])
        return x[0], tuple(v[0] for v in info)

    def from_bytes(image_bytes):
        # Images differ in size, so each goes through the model's own transform first
        # (identical pixels); the batch then takes the model's inference path, each image
        # mapped back with its own ImageInfo.
        pair = tf.TensorSpec([2], tf.float32)
        (placed, info), valid, error = map_decoded(_place, image_bytes, (
            tf.TensorSpec([*canvas, 3], tf.float32), (pair, pair, pair)), limit)
        dets = call_batched(lambda args: model.detect(args[0], ImageInfo(*args[1])),
                            (placed, info))
        sizes = tf.cast(info[2], tf.int32)
        out = invalid_to_zero(to_od_api(dets, sizes[:, 0], sizes[:, 1], ids), valid)
        out["error"] = error
        return out

    names, ids = getattr(model, "class_names", None), getattr(model, "category_ids", None)
    out = write_saved_model(model, path, {
        "serving_default": (from_images, [tf.TensorSpec([None, None, None, 3], tf.uint8,
                                                        name="images")]),
        "serving_bytes": (from_bytes, [tf.TensorSpec([None], tf.string, name="image_bytes")]),
    }, verbose)
    if names:
        (out / "assets.extra").mkdir(exist_ok=True)
        (out / "assets.extra" / "label_map.pbtxt").write_text(label_map(names, ids))
    # Everything the detector knows about itself (architecture, class names and category
    # ids, unlike label_map.pbtxt with the "N/A" slots kept), as in its .keras config.
    write_asset(out, model.get_config().get("metadata", {}))
    return out


def run(args) -> int:
    """`python -m detection export` (arguments in `detection.cli`)."""
    if getattr(args, "weights", None):
        model = detector_from_checkpoint(args.weights, args.image_size)
    else:
        if args.config is None:
            raise ValueError("export --checkpoint needs --config (the model's YAML)")
        model = load_detector(load_config(args.config), args.checkpoint)
    if getattr(args, "precision", None):
        config = load_config(args.config) if args.config else None
        return run_quantized(args, model, config)
    path = export_saved_model(model, args.out)
    print(f"SavedModel written to {path} (signatures: {', '.join(SIGNATURES)})")
    return 0
