"""Run a detector on image files; write `detections.json` and one PNG per image with boxes.

    python -m detection predict a.jpg b.png --model runs/raccoon_tiny/saved_model --out preds

`--model` is a SavedModel folder (from `python -m detection export`; its `serving_default`
signature is used, so nothing of this project is needed to run it), a `.keras` file, or a
`.weights.h5` file together with `--config`. Photos are turned upright by their EXIF
orientation first. An image that cannot be read (missing, truncated, not JPEG/PNG, over the
pixel limit) is named on stderr and in `failed.json`, the others are still predicted, and the
exit code is 1. Boxes in the JSON are pixel xyxy of each (upright) image, classes 0-based
with their names when known. A Mask R-CNN model (`.keras`, weights + config with `masks: true`, a
SavedModel with `detection_masks`, or a Mask R-CNN `--weights`) also gets each detection's mask
pasted into the image (`paste_masks`, torchvision's rule, probability > 0.5), drawn filled and
outlined, and written in the JSON as `"mask_rle"`: COCO compressed RLE `{"size": [h, w],
"counts": str}` (`pycocotools.mask.decode` reads it back).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm.auto import tqdm

from detection.checkpoints.pretrained import ReferenceSizes
from detection.config import load_config
from detection.engine.evaluate import load_detector
from detection.engine.visualize import draw_detections
from detection.evaluation.coco_masks import encode_masks
from detection.evaluation.paste import paste_masks
from detection.modeling.mask_rcnn import detector_from_checkpoint
from keras_resnet_suite.convert import load_model_file
from keras_resnet_suite.data.images import DECODER_MAX_PIXELS, check_pixels, decode_checked
from keras_resnet_suite.errors import one_line
from keras_resnet_suite.model_kind import DETECTOR, WrongModelKind, require_kind

PARTIAL_FAILURE_EXIT = 1  # some images could not be read; the others were predicted


def _read_image(path: Path, max_pixels: int | None = None) -> np.ndarray:
    """RGB pixels of a JPEG/PNG file, turned upright by its EXIF orientation as viewers show it,
    decoded by the one rule of the loaders and the SavedModels (`data.images.decode_checked`),
    so `predict` sees the pixels training and serving see. An image over the pixel limit is
    refused from its header; every failure is a ValueError (or FileNotFoundError) naming it."""
    import tensorflow as tf

    if not path.is_file():
        raise FileNotFoundError(f"image {path} does not exist")
    try:
        with Image.open(path) as image:  # reads the header only
            if image.format not in {"JPEG", "PNG"}:
                raise ValueError(f"image {path}: {image.format} is not JPEG or PNG")
            check_pixels(*image.size, str(path), max_pixels)
    except ValueError:
        raise
    except Exception as err:  # PIL raises many types for bad data (OSError for truncation)
        raise ValueError(f"image {path} cannot be decoded ({type(err).__name__}: "
                         f"{one_line(err)})") from err
    try:
        pixels, valid, problem = decode_checked(tf.constant(path.read_bytes()),
                                                DECODER_MAX_PIXELS)
    except tf.errors.InvalidArgumentError as err:  # damaged compressed data behind a good header
        raise ValueError(f"image {path} cannot be decoded ({one_line(err.message)})") from err
    if not bool(valid):
        raise ValueError(f"image {path} cannot be decoded ({problem.numpy().decode()})")
    return pixels.numpy()


def saved_model_predictor(path: str | Path):
    """`predict(pixels, height, width) -> {"boxes" xyxy px, "scores", "classes"}` (and box-
    relative `"masks"` when it serves `detection_masks`) of a SavedModel, through its
    `serving_default` (uint8 images)."""
    import tensorflow as tf

    signatures = tf.saved_model.load(str(path)).signatures
    outputs = sorted(signatures["serving_default"].structured_outputs) if (
        "serving_default" in signatures) else []
    if "detection_boxes" not in outputs:  # a SavedModel of another exporter keeps no metadata
        raise WrongModelKind(f"--model {path} is a SavedModel whose serving_default gives "
                             f"{outputs or 'nothing'}: expected a detector exported by `python -m "
                             "detection export` (detection_boxes, detection_scores, ...)")
    signature = signatures["serving_default"]

    def predict(pixels: np.ndarray, height: int, width: int) -> dict:
        out = {k: v.numpy()[0] for k, v in
               signature(images=tf.constant(pixels[None], tf.uint8)).items()}
        n = int(out["num_detections"])
        y1, x1, y2, x2 = out["detection_boxes"][:n].T
        boxes = np.stack([x1 * width, y1 * height, x2 * width, y2 * height], -1)
        pred = {"boxes": boxes, "scores": out["detection_scores"][:n],
                "classes": out["detection_classes"][:n].astype(np.int64) - 1}
        if "detection_masks" in out:
            pred["masks"] = out["detection_masks"][:n]
        return pred

    return predict


def keras_predictor(model):
    """The same interface over a Keras `FasterRCNN` or `MaskRCNN` (one image per call: sizes
    differ)."""

    def predict(pixels: np.ndarray, height: int, width: int) -> dict:
        dets = model.predict(pixels[None].astype("float32"), verbose=0)
        n = int(dets["num_detections"][0])
        pred = {"boxes": np.asarray(dets["boxes"][0, :n]), "scores": np.asarray(
            dets["scores"][0, :n]), "classes": np.asarray(dets["classes"][0, :n], np.int64)}
        if "masks" in dets:
            pred["masks"] = np.asarray(dets["masks"][0, :n])
        return pred

    return predict


def load_predictor(model_path: str | Path, config: str | None = None):
    """`(predict, class_names)` for a SavedModel folder, `.keras` or `.weights.h5`."""
    path = Path(model_path)
    names = None
    if config is not None:
        cfg = load_config(config)
        names = cfg.class_names()
    if path.is_dir():
        if not (path / "saved_model.pb").is_file():
            raise ValueError(f"--model {path} is a folder without saved_model.pb")
        require_kind(path, DETECTOR, "--model")
        return saved_model_predictor(path), names
    if not path.is_file():
        raise FileNotFoundError(f"--model {path} does not exist")
    require_kind(path, DETECTOR, "--model")
    if path.suffix == ".keras":
        return keras_predictor(load_model_file(path)), names
    if path.name.endswith(".weights.h5"):
        if config is None:
            raise ValueError(f"--model {path} holds weights only: pass --config to build the model")

        return keras_predictor(load_detector(cfg, path)), names
    raise ValueError(f"--model {path}: expected a SavedModel folder, .keras or .weights.h5")


def checkpoint_predictor(weights: str):
    """`(predict, class_names, category_ids)` for published weights: each image runs on the
    canvas its library would use (`detection.checkpoints.pretrained.ReferenceSizes`)."""
    detector = ReferenceSizes(detector_from_checkpoint(weights))
    return ((lambda pixels, height, width: detector(pixels)), detector.model.class_names,
            detector.model.category_ids)


def run(args) -> int:
    """Detect objects in image files; write detections.json and PNGs with drawn boxes."""
    ids = None
    if getattr(args, "weights", None):
        predict, names, ids = checkpoint_predictor(args.weights)
    else:
        predict, names = load_predictor(args.model, args.config)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    results, failed = [], []
    try:  # what was predicted is written even if a later image stops the run
        for name in tqdm(args.images, desc="predicting", unit="img", leave=False,
                         disable=len(args.images) < 2):  # total and ETA over many files
            path = Path(name)
            try:
                pixels = _read_image(path, getattr(args, "max_pixels", None))
            except (ValueError, OSError) as err:  # one bad file must not cost the others
                failed.append({"image": str(path), "error": one_line(err)})
                print(f"skipped {path}: {one_line(err)}", file=sys.stderr)
                continue
            h, w = pixels.shape[:2]
            pred = predict(pixels, h, w)
            keep = pred["scores"] >= args.score_threshold
            pred = {k: np.asarray(v)[keep] for k, v in pred.items()}
            if "masks" in pred:  # box-relative probabilities -> binary masks in the image
                pred["masks"] = paste_masks(pred["masks"], pred["boxes"], h, w)
            png = draw_detections([pixels], [pred], out / f"{path.stem}.png", class_names=names,
                                  score_threshold=args.score_threshold, columns=1)
            detections = [{"box_xyxy": [round(float(v), 2) for v in box], "score": float(score),
                           "class": int(cls),
                           **({"name": names[int(cls)]} if names else {}),
                           **({"category_id": ids[int(cls)]} if ids else {})}
                          for box, score, cls in zip(pred["boxes"], pred["scores"], pred["classes"],
                                                     strict=True)]
            if "masks" in pred:
                for det, rle in zip(detections, encode_masks(pred["masks"]), strict=True):
                    det["mask_rle"] = {"size": [int(v) for v in rle["size"]],
                                       "counts": rle["counts"].decode("ascii")}
            results.append({"image": str(path), "height": h, "width": w, "png": str(png),
                            "detections": detections})
            tqdm.write(f"{path}: {len(detections)} detection(s) -> {png}")  # above the bar
    finally:
        (out / "detections.json").write_text(json.dumps(results, indent=2))
        if failed:
            (out / "failed.json").write_text(json.dumps(failed, indent=2))
        else:  # a failed.json of an earlier run in this folder is not about this one
            (out / "failed.json").unlink(missing_ok=True)
    print(f"wrote {out / 'detections.json'} ({len(results)} image(s))")
    if failed:
        print(f"error: {len(failed)} of {len(args.images)} image(s) failed (listed above and in "
              f"{out / 'failed.json'})", file=sys.stderr)
        return PARTIAL_FAILURE_EXIT
    return 0
