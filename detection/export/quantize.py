"""Quantized detector export: a `FasterRCNN` / `MaskRCNN` as an OpenVINO int8 (NNCF) or bf16
model, gated on validation mAP, with one predictor that runs it like our SavedModels.

`quantize_detector(model, path, calibration, ...)` writes a folder:
- `model.xml` / `model.bin`: the detector's whole graph as Keras exports it (resizing onto
  the canvas and pixel normalisation in front, RPN, RoI heads and NMS behind), float32 images
  `[batch, height, width, 3]` in, `boxes` (input pixels, xyxy), `scores`, `classes` (0-based,
  -1 padding), `num_detections` (and a `MaskRCNN`'s box-relative `masks`) out;
- `metadata.json`: kind "detector", format, precision, canvas, preprocessing, class names,
  category ids, output names, the parts kept in float32, the accuracy report and
  `"predictor": "detection.export.quantize:DetectorPredictor"`.

int8 quantizes the convolutions and matrix products of the parts not named in `keep_float`
(default: the backbone only; the RPN's and RoI heads' layers stay float32, which kept the
trained shapes demo within 1 point of float32 mAP@0.5, see docs/export-serving.md) with NNCF's
mixed preset (symmetric per-channel weights, asymmetric activations) and NNCF's full bias
correction. `bf16` keeps the float32 file and runs it with OpenVINO's bf16 inference hint.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from collections.abc import Iterable, Mapping
from pathlib import Path

import numpy as np

from detection.evaluation import coco_ap, voc_ap
from detection.evaluation.dataset import predict_dataset
from keras_resnet_suite.export import runtimes

FORMATS = ("openvino",)
PRECISIONS = ("int8", "bf16", "float32")
PARTS = ("backbone", "rpn", "roi_heads")  # roi_heads: the second stage, mask head included
WEIGHTED = ("Convolution", "GroupConvolution", "ConvolutionBackpropData", "MatMul")
KEEP_FLOAT = ("rpn", "roi_heads")  # measured default: see the module docstring
PREDICTOR = "detection.export.quantize:DetectorPredictor"
OUTPUTS = ("boxes", "scores", "classes", "num_detections")
HINTS = {"int8": "f32", "float32": "f32", "bf16": "bf16"}  # OpenVINO inference precision
_PART = re.compile(r"/(rpn|roi_heads)(?:_\d+)?/")


def _check_options(format: str, precision: str, keep_float, max_drop) -> tuple[str, ...]:
    if format not in FORMATS:
        raise ValueError(f"quantize_detector: format {format!r} is not supported for detectors "
                         f"(supported: {', '.join(FORMATS)})")
    if precision not in PRECISIONS:
        raise ValueError(f"quantize_detector: precision must be one of {PRECISIONS}, "
                         f"got {precision!r}")
    keep = (keep_float,) if isinstance(keep_float, str) else tuple(keep_float)
    unknown = sorted(set(keep) - set(PARTS))
    if unknown:
        raise ValueError(f"quantize_detector: keep_float names unknown parts {unknown}; "
                         f"choose among {list(PARTS)}")
    if max_drop is not None and not (isinstance(max_drop, (int, float)) and max_drop >= 0):
        raise ValueError(f"quantize_detector: max_drop must be a number >= 0 (mAP points), "
                         f"got {max_drop!r}")
    return keep


def calibration_images(calibration, num_samples: int = 300, seed: int = 0) -> list[np.ndarray]:
    """Up to `num_samples` images `[1, H, W, 3]` float32 from what `model.predict` takes: an
    array `[N, H, W, 3]`, a list of `[H, W, 3]` arrays, or a (tf.data) iterable of image
    batches or of `{"images": ...}` elements; drawn without replacement with `seed` when
    there are more (the same set on every run)."""
    if isinstance(calibration, np.ndarray):
        calibration = [calibration]
    elif isinstance(calibration, Mapping):
        calibration = [calibration]
    images: list[np.ndarray] = []
    for k, item in enumerate(calibration if isinstance(calibration, Iterable) else ()):
        if isinstance(item, Mapping):
            if "images" not in item:
                raise ValueError(f"calibration[{k}]: expected a dict with 'images', got keys "
                                 f"{sorted(item)}")
            item = item["images"]
        array = np.asarray(item.numpy() if hasattr(item, "numpy") else item, np.float32)
        if array.ndim == 3:
            array = array[None]
        if array.ndim != 4 or array.shape[-1] != 3 or 0 in array.shape:
            raise ValueError(f"calibration[{k}]: images must be [batch, height, width, 3] or "
                             f"[height, width, 3], got shape {array.shape}")
        images.extend(array[i:i + 1] for i in range(len(array)))
    if not images:
        raise ValueError("calibration: no images (give an array [N, H, W, 3] or a dataset of "
                         "images)")
    if len(images) > num_samples:
        keep = np.sort(np.random.default_rng(seed).choice(len(images), num_samples, False))
        images = [images[i] for i in keep]
    return images


def _first_named_part(op) -> str | None:
    """The part (rpn, roi_heads) named by the first op downstream of `op` whose name carries
    a Keras layer path (OpenVINO renames convolutions after the transposes it folds)."""
    frontier, seen = [op], set()
    while frontier:
        node = frontier.pop(0)
        for name in (node.get_friendly_name(), *node.output(0).get_names()):
            if match := _PART.search(name):
                return match.group(1)
        for out in node.outputs():
            for target in out.get_target_inputs():
                nxt = target.get_node()
                if id(nxt) not in seen:
                    seen.add(id(nxt))
                    frontier.append(nxt)
    return None


def _backbone_ops(ov_model) -> set[str]:
    """Friendly names of every op upstream of the backbone's outputs (the ops named after
    the backbone: its output layers keep their Keras names)."""
    stack = [op for op in ov_model.get_ops() if "backbone" in op.get_friendly_name()]
    names: set[str] = set()
    while stack:
        node = stack.pop()
        if node.get_friendly_name() in names:
            continue
        names.add(node.get_friendly_name())
        stack.extend(value.get_node() for value in node.input_values())
    return names


def part_of_ops(ov_model) -> dict[str, str]:
    """`{friendly name: part}` (backbone, rpn, roi_heads) for each Convolution/MatMul of an
    exported detector: backbone upstream of its named outputs, the others by the part named
    first downstream (roi_heads when none is: a mask head)."""
    backbone = _backbone_ops(ov_model)
    parts = {}
    for op in ov_model.get_ops():
        if op.get_type_name() in WEIGHTED:
            name = op.get_friendly_name()
            # Unnamed all the way down (a Mask R-CNN's mask head, ending at `masks`): the
            # second stage, whose convolutions run on RoIs.
            found = "backbone" if name in backbone else _first_named_part(op)
            parts[name] = found or "roi_heads"
    return parts


def _export_float(model, folder: Path):
    """The detector as an OpenVINO model (Keras' own export, read back)."""
    import openvino as ov

    xml = folder / "float32.xml"
    model.export(str(xml), format="openvino", verbose=False)
    return ov.Core().read_model(str(xml))


def _quantize(ov_model, images: list[np.ndarray], keep: tuple[str, ...], preset: str,
              options: dict):
    import nncf

    # Only the convolutions and matrix products of the quantized parts: NNCF would also
    # quantize element-wise ops, among them the box decoding (anchors * deltas) and the
    # normalisation, which cost the trained shapes demo ~17 points of mAP@0.5 by themselves.
    parts = part_of_ops(ov_model)
    ignored = sorted({name for name, part in parts.items() if part in keep}
                     | {op.get_friendly_name() for op in ov_model.get_ops()
                        if op.get_friendly_name() not in parts})
    # Full bias correction (not NNCF's fast one): 0.53 vs 1.06 points of mAP@0.5 lost on the
    # trained shapes demo, the difference that keeps it within 1 point.
    kwargs = {"preset": nncf.QuantizationPreset(preset), "subset_size": len(images),
              "fast_bias_correction": False,
              "advanced_parameters": runtimes.nncf_per_tensor_activations()}
    if ignored:
        kwargs["ignored_scope"] = nncf.IgnoredScope(names=ignored, validate=False)
    kwargs.update(options)
    return nncf.quantize(ov_model, nncf.Dataset(images), **kwargs)


def _compile(ov_model, precision: str):
    import openvino as ov

    return ov.Core().compile_model(ov_model, "CPU",
                                   {"INFERENCE_PRECISION_HINT": HINTS[precision]})


class DetectorPredictor:
    """Runs a folder written by `quantize_detector` (any precision) in OpenVINO: `predict`
    returns the detector's own `{"boxes", "scores", "classes", "num_detections"[, "masks"]}`
    (input pixels, as `model.predict`), calling it the TF OD API outputs of our SavedModel's
    `serving_default` (`detection.export.to_od_api`)."""

    def __init__(self, path: str | os.PathLike, compiled=None):
        self.path = Path(path)
        meta_file = self.path / "metadata.json"
        if not meta_file.is_file():
            raise ValueError(f"{self.path}: no metadata.json (not a quantize_detector folder)")
        self.metadata = json.loads(meta_file.read_text())
        if compiled is None:
            import openvino as ov

            xml = self.path / self.metadata.get("model_file", "model.xml")
            compiled = _compile(ov.Core().read_model(str(xml)), self.metadata["precision"])
        self._compiled = compiled
        self.class_names = self.metadata.get("class_names")

    def predict(self, images, verbose: int = 0) -> dict:
        """Detections of `images` `[batch, height, width, 3]` (0-255 pixels, one size)."""
        array = np.asarray(images, np.float32)
        if array.ndim != 4 or array.shape[-1] != 3 or 0 in array.shape[1:3]:
            raise ValueError(f"images: expected [batch, height, width, 3] with non-empty sides, "
                             f"got shape {array.shape}")
        out = self._compiled({"images": array})
        return {k.get_any_name(): np.asarray(v) for k, v in out.items()}

    def __call__(self, images) -> dict:
        """The TF OD API outputs (`detection_boxes` normalised yxyx, ...), as our SavedModels."""
        array = np.asarray(images)
        dets = self.predict(array)
        return od_api(dets, array.shape[1], array.shape[2], self.metadata.get("category_ids"))


def od_api(dets: Mapping, height: int, width: int, category_ids=None) -> dict:
    """`detection.export.to_od_api` in NumPy for one image size: normalised yxyx boxes, class
    ids (label + 1 or `category_ids[label]`, 0 on padding), float counts."""
    classes = np.asarray(dets["classes"]).astype(np.int64)
    valid = classes >= 0
    x1, y1, x2, y2 = np.moveaxis(np.asarray(dets["boxes"], np.float32), -1, 0)
    boxes = np.stack([y1 / height, x1 / width, y2 / height, x2 / width], -1)
    ids = (classes + 1 if category_ids is None
           else np.asarray(category_ids, np.int64)[np.maximum(classes, 0)])
    out = {"detection_boxes": np.where(valid[..., None], boxes, 0.0).astype(np.float32),
           "detection_scores": np.where(valid, dets["scores"], 0.0).astype(np.float32),
           "detection_classes": np.where(valid, ids, 0).astype(np.float32),
           "num_detections": np.asarray(dets["num_detections"], np.float32)}
    if "masks" in dets:
        out["detection_masks"] = np.where(valid[..., None, None], dets["masks"], 0.0)
    return out


def accuracy(predictor, validation, masks: bool, max_images: int | None = None) -> dict:
    """Box mAP@0.5 (VOC, all points) of `predictor` on an unbatched `validation` dataset, and
    for a Mask R-CNN the COCO mask AP: `{"mAP": ..., ["mask_AP": ...]}`."""
    predictions, truths, _ = predict_dataset(predictor, validation, batch_size=1,
                                             max_images=max_images, progress=True)
    out = {"mAP": float(voc_ap(predictions, truths, 0.5, use_07_metric=False)["mAP"])}
    if masks:
        out["mask_AP"] = float(coco_ap(predictions, truths, iou_type="segm")["AP"])
    return out


def _gate(report: dict, precision: str, max_drop: float | None) -> None:
    """Refuse (one line naming the figures) when a metric drops more than `max_drop` points."""
    for key, value in report[precision].items():
        drop = 100.0 * (report["float32"][key] - value)
        report.setdefault("drop_points", {})[key] = round(drop, 3)
        if max_drop is not None and drop > max_drop:
            raise ValueError(f"quantize_detector: {precision} {key} {value:.4f} vs float32 "
                             f"{report['float32'][key]:.4f} drops {drop:.2f} points > max_drop "
                             f"{max_drop}; nothing written")


def _metadata(model, precision: str, keep: tuple[str, ...], preset: str, count: int,
              report: dict | None, outputs: list[str]) -> dict:
    meta = model.get_config().get("metadata", {})
    return {
        "kind": "detector", "format": "openvino", "precision": precision,
        "model_file": "model.xml", "input_names": ["images"], "output_names": outputs,
        "image_size": list(model.image_size), "num_classes": int(model.num_classes),
        "class_names": meta.get("class_names", getattr(model, "class_names", None)),
        "category_ids": meta.get("category_ids", getattr(model, "category_ids", None)),
        "preprocessing": "in the graph: float 0-255 RGB images [batch, height, width, 3], "
                         "resized onto the canvas and normalised by the model's transform",
        "postprocessing": "in the graph: RPN proposals, RoI heads, per-class NMS; boxes in "
                          "input pixels (xyxy), classes 0-based with -1 padding",
        "quantization": ({"tool": "nncf", "preset": preset, "keep_float": list(keep),
                          "calibration_images": count} if precision == "int8" else None),
        "accuracy": report, "predictor": PREDICTOR,
    }


def quantize_detector(model, path: str | os.PathLike, calibration, *, format: str = "openvino",
                      precision: str = "int8", validation=None, max_drop: float | None = 1.0,
                      num_samples: int = 300, seed: int = 0, keep_float=KEEP_FLOAT,
                      preset: str = "mixed", max_images: int | None = None,
                      **options) -> Path:
    """Write `model` (a FasterRCNN / MaskRCNN) quantized to `path` (the module docstring) and
    return the folder. With `validation` (an unbatched detection dataset), float32 and
    quantized box mAP@0.5 (and mask AP) are measured in OpenVINO and nothing is written when
    one drops more than `max_drop` points; `options` go to `nncf.quantize`."""
    keep = _check_options(format, precision, keep_float, max_drop)
    if not hasattr(model, "transform") or not hasattr(model, "image_size"):
        raise ValueError(f"quantize_detector expects a detection.FasterRCNN or MaskRCNN, got "
                         f"{type(model).__name__}")
    images = calibration_images(calibration, num_samples, seed) if precision == "int8" else []
    out = Path(path)
    with tempfile.TemporaryDirectory() as tmp:
        float_model = _export_float(model, Path(tmp))
        quantized = (_quantize(float_model, images, keep, preset, options)
                     if precision == "int8" else float_model)
        outputs = [o.get_any_name() for o in quantized.outputs]
        report = None
        if validation is not None:
            masks = "masks" in outputs
            report = {"metric": "box mAP@0.5 (VOC all-point)" + (", COCO mask AP" if masks
                                                                 else ""),
                      "float32": accuracy(_Runner(_compile(float_model, "float32")),
                                          validation, masks, max_images),
                      precision: accuracy(_Runner(_compile(quantized, precision)),
                                          validation, masks, max_images)}
            _gate(report, precision, max_drop)
        import openvino as ov

        out.mkdir(parents=True, exist_ok=True)
        for stale in ("model.xml", "model.bin"):
            (out / stale).unlink(missing_ok=True)
        ov.save_model(quantized, str(out / "model.xml"), compress_to_fp16=False)
    meta = _metadata(model, precision, keep, preset, len(images), report, outputs)
    if meta["quantization"]:
        meta["quantization"]["bias_correction"] = ("fast" if options.get("fast_bias_correction")
                                                   else "full")
    (out / "metadata.json").write_text(json.dumps(meta, indent=2) + "\n")
    return out


class _Runner:
    """A compiled OpenVINO detector with `predict(images)` (for the accuracy pass)."""

    def __init__(self, compiled):
        self._compiled = compiled

    def predict(self, images) -> dict:
        out = self._compiled({"images": np.asarray(images, np.float32)})
        return {k.get_any_name(): np.asarray(v) for k, v in out.items()}


__all__ = ["DetectorPredictor", "calibration_images", "part_of_ops", "quantize_detector",
           "accuracy"]
