"""Run a detector on image files; write `detections.json` and one PNG per image with boxes.

    python -m detection predict a.jpg b.png --model runs/raccoon_tiny/saved_model --out preds

`--model` is a SavedModel folder (from `python -m detection export`; its `serving_default`
signature is used, so nothing of this project is needed to run it), a `.keras` file, or a
`.weights.h5` file together with `--config`. Photos are turned upright by their EXIF
orientation first. Boxes in the JSON are pixel xyxy of each (upright) image, classes 0-based
with their names when known.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np


def _read_image(path: Path) -> np.ndarray:
    """RGB pixels of a JPEG/PNG file, turned upright by its EXIF orientation as viewers show it
    (TensorFlow's decoders ignore EXIF, so a phone photo would be detected on its side)."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    if not path.is_file():
        raise FileNotFoundError(f"image {path} does not exist")
    try:
        with Image.open(path) as image:
            if image.format not in {"JPEG", "PNG"}:
                raise ValueError(f"image {path}: {image.format} is not JPEG or PNG")
            return np.asarray(ImageOps.exif_transpose(image).convert("RGB"))
    except UnidentifiedImageError as err:
        raise ValueError(f"image {path} cannot be decoded: {err}") from err


def saved_model_predictor(path: str | Path):
    """`predict(pixels, height, width) -> {"boxes" xyxy px, "scores", "classes"}` of a
    SavedModel, through its `serving_default` (uint8 images)."""
    import tensorflow as tf

    signature = tf.saved_model.load(str(path)).signatures["serving_default"]

    def predict(pixels: np.ndarray, height: int, width: int) -> dict:
        out = {k: v.numpy()[0] for k, v in
               signature(images=tf.constant(pixels[None], tf.uint8)).items()}
        n = int(out["num_detections"])
        y1, x1, y2, x2 = out["detection_boxes"][:n].T
        boxes = np.stack([x1 * width, y1 * height, x2 * width, y2 * height], -1)
        return {"boxes": boxes, "scores": out["detection_scores"][:n],
                "classes": out["detection_classes"][:n].astype(np.int64) - 1}

    return predict


def keras_predictor(model):
    """The same interface over a Keras `FasterRCNN` (one image per call: sizes differ)."""

    def predict(pixels: np.ndarray, height: int, width: int) -> dict:
        dets = model.predict(pixels[None].astype("float32"), verbose=0)
        n = int(dets["num_detections"][0])
        return {"boxes": np.asarray(dets["boxes"][0, :n]), "scores": np.asarray(
            dets["scores"][0, :n]), "classes": np.asarray(dets["classes"][0, :n], np.int64)}

    return predict


def load_predictor(model_path: str | Path, config: str | None = None):
    """`(predict, class_names)` for a SavedModel folder, `.keras` or `.weights.h5`."""
    import keras

    path = Path(model_path)
    names = None
    if config is not None:
        from detection.config import load_config

        cfg = load_config(config)
        names = cfg.class_names()
    if path.is_dir():
        if not (path / "saved_model.pb").is_file():
            raise ValueError(f"--model {path} is a folder without saved_model.pb")
        return saved_model_predictor(path), names
    if not path.is_file():
        raise FileNotFoundError(f"--model {path} does not exist")
    if path.suffix == ".keras":
        return keras_predictor(keras.saving.load_model(path)), names
    if path.name.endswith(".weights.h5"):
        if config is None:
            raise ValueError(f"--model {path} holds weights only: pass --config to build the model")
        from detection.engine.evaluate import load_detector

        return keras_predictor(load_detector(cfg, path)), names
    raise ValueError(f"--model {path}: expected a SavedModel folder, .keras or .weights.h5")


def checkpoint_predictor(weights: str):
    """`(predict, class_names, category_ids)` for published weights: each image runs on the
    canvas its library would use (`detection.checkpoints.pretrained.ReferenceSizes`)."""
    from detection.checkpoints.pretrained import ReferenceSizes, from_checkpoint

    detector = ReferenceSizes(from_checkpoint(weights))
    return ((lambda pixels, height, width: detector(pixels)), detector.model.class_names,
            detector.model.category_ids)


def run(args) -> int:
    """Detect objects in image files; write detections.json and PNGs with drawn boxes."""
    from detection.engine.visualize import draw_detections

    ids = None
    if getattr(args, "weights", None):
        predict, names, ids = checkpoint_predictor(args.weights)
    else:
        predict, names = load_predictor(args.model, args.config)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    results = []
    for name in args.images:
        path = Path(name)
        pixels = _read_image(path)
        h, w = pixels.shape[:2]
        pred = predict(pixels, h, w)
        keep = pred["scores"] >= args.score_threshold
        pred = {k: np.asarray(v)[keep] for k, v in pred.items()}
        png = draw_detections([pixels], [pred], out / f"{path.stem}.png", class_names=names,
                              score_threshold=args.score_threshold, columns=1)
        detections = [{"box_xyxy": [round(float(v), 2) for v in box], "score": float(score),
                       "class": int(cls),
                       **({"name": names[int(cls)]} if names else {}),
                       **({"category_id": ids[int(cls)]} if ids else {})}
                      for box, score, cls in zip(pred["boxes"], pred["scores"], pred["classes"],
                                                 strict=True)]
        results.append({"image": str(path), "height": h, "width": w, "png": str(png),
                        "detections": detections})
        print(f"{path}: {len(detections)} detection(s) -> {png}")
    (out / "detections.json").write_text(json.dumps(results, indent=2))
    print(f"wrote {out / 'detections.json'}")
    return 0
