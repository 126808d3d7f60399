"""The main job: train Faster R-CNN on the synthetic shapes set, evaluate, draw, save.

`python -m detection demo [--out DIR]` runs offline on CPU: the config
`detection/configs/shapes_demo.yaml` goes through `detection.engine.train` like any other
(so `DIR` is a resumable run folder), then the held-out images are scored (VOC mAP@0.5,
printed as `mAP@0.5 = 0.xxx`), drawn to `detections.png` and, under TensorFlow, exported as a
SavedModel whose detections are checked against the Keras model's.

With a config of `model.masks: true` (`--masks`: `detection/configs/shapes_demo_masks.yaml`) the
same job trains a Mask R-CNN on the shapes' exact masks: it also prints COCO box and mask AP of
the held-out images (`box AP = ...`, `mask AP = ...`), draws the masks and checks the exported
`detection_masks` against Keras'; the last line is still `mAP@0.5 = 0.xxx` (boxes).
"""

from __future__ import annotations

import time
from pathlib import Path

import keras
import numpy as np

from detection.config import load_config
from detection.data import synthetic
from detection.engine.train import train
from detection.engine.visualize import draw_detections
from detection.evaluation import coco_ap, voc_ap
from detection.evaluation.paste import paste_masks
from detection.export import export_saved_model

CONFIG = Path(__file__).resolve().parents[1] / "configs" / "shapes_demo.yaml"
MASKS_CONFIG = CONFIG.with_name("shapes_demo_masks.yaml")


def predict_samples(model, items: list[dict], batch_size: int = 16) -> list[dict]:
    """Per-image detections `{"boxes", "scores", "classes"}` (evaluation-list format); a
    `MaskRCNN`'s also `"masks"` pasted into the image (binary `[N, H, W]`) and
    `"box_masks"`, the box-relative probabilities as predicted."""
    out = []
    for start in range(0, len(items), batch_size):
        images = np.stack([s["image"] for s in items[start:start + batch_size]])
        dets = model.predict(images, batch_size=len(images), verbose=0)
        for b in range(len(images)):
            n = int(dets["num_detections"][b])
            out.append({"boxes": np.asarray(dets["boxes"][b, :n], np.float32),
                        "scores": np.asarray(dets["scores"][b, :n], np.float32),
                        "classes": np.asarray(dets["classes"][b, :n], np.int64)})
            if "masks" in dets:
                out[-1]["box_masks"] = np.asarray(dets["masks"][b, :n], np.float32)
                out[-1]["masks"] = paste_masks(out[-1]["box_masks"], out[-1]["boxes"],
                                               *images.shape[1:3])
    return out


def check_export(model, images: np.ndarray, predictions: list[dict], path: str | Path) -> dict:
    """Export `model` as a SavedModel, run its `serving_default` on `images` (uint8, one size)
    and compare with the Keras `predictions`: `{"path", "max_box_diff", "same_classes"}`, and
    `"max_mask_diff"` (largest difference of `detection_masks` probabilities) for a `MaskRCNN`.

    Box differences are in pixels of the input images (the SavedModel's boxes are normalised
    yxyx; they are scaled back here)."""
    import tensorflow as tf

    path = export_saved_model(model, path)
    serve = tf.saved_model.load(str(path)).signatures["serving_default"]
    out = {k: v.numpy() for k, v in serve(images=tf.constant(images, tf.uint8)).items()}
    h, w = images.shape[1:3]
    worst, same, mask_worst = 0.0, True, 0.0
    for b, pred in enumerate(predictions):
        n = int(out["num_detections"][b])
        y1, x1, y2, x2 = out["detection_boxes"][b, :n].T
        boxes = np.stack([x1 * w, y1 * h, x2 * w, y2 * h], -1)
        if n != len(pred["boxes"]):
            same = False
            continue
        if n:
            worst = max(worst, float(np.abs(boxes - pred["boxes"]).max()))
            same &= bool(np.array_equal(out["detection_classes"][b, :n] - 1, pred["classes"]))
            if "box_masks" in pred:
                mask_worst = max(mask_worst, float(np.abs(
                    out["detection_masks"][b, :n] - pred["box_masks"]).max()))
    result = {"path": path, "max_box_diff": worst, "same_classes": same}
    if "detection_masks" in out:
        result["max_mask_diff"] = mask_worst
    return result


def load_demo_config(path: str | Path | None = None, train_images: int | None = None,
                     test_images: int | None = None, epochs: int | None = None):
    """The demo `Config`, with the command line's sizes applied (`epochs` sets train.steps)."""
    overrides: dict = {}
    config = load_config(path or CONFIG)
    data = {"train": dict(config.data.train), "eval": dict(config.data.eval or {})}
    for split, count in (("train", train_images), ("eval", test_images)):
        if count is not None:
            data[split]["num_images"] = int(count)
            overrides["data"] = data
    if epochs is not None:
        per_epoch = max(1, int(data["train"].get("num_images", 512)) // config.train.batch_size)
        overrides["train"] = {"steps": int(epochs) * per_epoch}
    return load_config(path or CONFIG, overrides) if overrides else config


def demo(out_dir: str | Path = "demo_output", config=None, verbose: int | str = "auto") -> dict:
    """Train (the `train` loop, resumable in `out_dir`), evaluate, draw and export; returns
    `{"mAP", "per_class", "seconds", "png", "weights", "model", "export"}`, and for a mask
    config `"box_AP"` and `"mask_AP"` (COCO AP of boxes and masks)."""
    config = config or load_demo_config()
    out_dir = Path(out_dir)
    start = time.time()
    result = train(config, out_dir, verbose=verbose, evaluate=False)  # scored below
    model = result["model"]
    spec = {k: v for k, v in config.data.eval.items() if k not in ("loader", "num_images")}
    test_items = synthetic.samples(int(config.data.eval.get("num_images", 512)), **spec)
    predictions = predict_samples(model, test_items)
    truths = synthetic.ground_truths(test_items)
    names = config.class_names()
    png = draw_detections([s["image"] for s in test_items[:8]], predictions[:8],
                          out_dir / "detections.png", class_names=names,
                          ground_truths=truths[:8], min_side=256)  # 128 px: labels fit
    exported = None
    if keras.backend.backend() == "tensorflow":  # SavedModel export is TensorFlow-only
        exported = check_export(model, np.stack([s["image"] for s in test_items]).astype(np.uint8),
                                predictions, out_dir / "saved_model")
        masks = (f", max mask difference {exported['max_mask_diff']:.2e}"
                 if "max_mask_diff" in exported else "")
        print(f"SavedModel {exported['path']}: max box difference vs Keras "
              f"{exported['max_box_diff']:.2e} px{masks} over {len(test_items)} images, "
              f"{'same' if exported['same_classes'] else 'DIFFERENT'} detections and classes")
    scores = voc_ap(predictions, truths, iou_threshold=config.eval.iou_threshold,
                    use_07_metric=config.eval.use_07_metric)
    per_class = {names[int(k)]: float(v) for k, v in scores["per_class"].items()}
    coco = {}
    if config.masks:  # COCO AP of the boxes and of the masks, as Mask R-CNN reports them
        for kind, iou_type in (("box", "bbox"), ("mask", "segm")):
            coco[f"{kind}_AP"] = float(coco_ap(predictions, truths, iou_type=iou_type)["AP"])
            print(f"{kind} AP = {coco[f'{kind}_AP']:.3f} (COCO AP@[.5:.95], "
                  f"{len(test_items)} held-out images)")
    seconds = time.time() - start
    print("per-class AP@0.5: " + ", ".join(f"{k} {v:.3f}" for k, v in per_class.items()))
    print(f"trained in {result['seconds']:.0f} s, total {seconds:.0f} s; "
          f"detections drawn to {png}")
    print(f"mAP@0.5 = {scores['mAP']:.3f}")
    return {"mAP": float(scores["mAP"]), "per_class": per_class, "seconds": seconds,
            "png": png, "weights": result["weights"], "model": model, "export": exported,
            **coco}


def run(args) -> int:
    """`python -m detection demo` (see `detection.cli`)."""
    if getattr(args, "masks", False) and args.config is not None:
        raise ValueError("demo: give --masks (the shipped shapes_demo_masks.yaml) or --config, "
                         "not both")
    path = MASKS_CONFIG if getattr(args, "masks", False) else args.config
    config = load_demo_config(path, args.train_images, args.test_images, args.epochs)
    demo(args.out, config)
    return 0
