"""The main job: train Faster R-CNN on the synthetic shapes set, evaluate, draw, save.

`python -m detection demo [--out DIR]` runs offline on CPU: it renders train and held-out
images, fits a C4 detector with a tiny ResNet (config `detection/configs/shapes_demo.yaml`),
scores VOC mAP@0.5 on the held-out images, prints `mAP@0.5 = 0.xxx` and writes
`detections.png`, the trained weights and (TensorFlow backend) a SavedModel to `DIR`,
checking that the SavedModel's detections equal the Keras model's.
"""

from __future__ import annotations

import copy
import time
from pathlib import Path

import numpy as np
import yaml

CONFIG = Path(__file__).parent / "configs" / "shapes_demo.yaml"


def load_config(path: str | Path = CONFIG, overrides: dict | None = None) -> dict:
    """The demo configuration (YAML), with `overrides` merged section by section."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"demo config {path} does not exist")
    config = yaml.safe_load(path.read_text())
    for section, values in (overrides or {}).items():
        config.setdefault(section, {}).update(values)
    return config


def build_detector(config: dict, backbone=None):
    """`FasterRCNN` from the config's `model` section (`backbone` may be a built model)."""
    from detection.data.synthetic import CLASS_NAMES
    from detection.modeling import FasterRCNN

    model_cfg = copy.deepcopy(config["model"])
    if backbone is not None:
        model_cfg["backbone"] = backbone
        model_cfg.pop("backbone_kwargs", None)
    return FasterRCNN(num_classes=len(CLASS_NAMES), **model_cfg)


def _optimizer(train_cfg: dict, total_steps: int):
    import keras

    warmup = int(train_cfg.get("warmup_steps", 0))
    schedule = keras.optimizers.schedules.CosineDecay(
        0.0 if warmup else train_cfg["learning_rate"], max(total_steps - warmup, 1),
        warmup_target=train_cfg["learning_rate"] if warmup else None, warmup_steps=warmup)
    return keras.optimizers.AdamW(schedule, weight_decay=train_cfg.get("weight_decay", 0.0),
                                  clipnorm=10.0)


def predict_samples(model, items: list[dict], batch_size: int = 16) -> list[dict]:
    """Per-image detections `{"boxes", "scores", "classes"}` (evaluation-list format)."""
    out = []
    for start in range(0, len(items), batch_size):
        images = np.stack([s["image"] for s in items[start:start + batch_size]])
        dets = model.predict(images, batch_size=len(images), verbose=0)
        for b in range(len(images)):
            n = int(dets["num_detections"][b])
            out.append({"boxes": np.asarray(dets["boxes"][b, :n], np.float32),
                        "scores": np.asarray(dets["scores"][b, :n], np.float32),
                        "classes": np.asarray(dets["classes"][b, :n], np.int64)})
    return out


def check_export(model, images: np.ndarray, predictions: list[dict], path: str | Path) -> dict:
    """Export `model` as a SavedModel, run its `serving_default` on `images` (uint8, one size)
    and compare with the Keras `predictions`: `{"path", "max_box_diff", "same_classes"}`.

    Box differences are in pixels of the input images (the SavedModel's boxes are normalised
    yxyx; they are scaled back here)."""
    import tensorflow as tf

    from detection.export import export_saved_model

    path = export_saved_model(model, path)
    serve = tf.saved_model.load(str(path)).signatures["serving_default"]
    out = {k: v.numpy() for k, v in serve(images=tf.constant(images, tf.uint8)).items()}
    h, w = images.shape[1:3]
    worst, same = 0.0, True
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
    return {"path": path, "max_box_diff": worst, "same_classes": same}


def run(out_dir: str | Path = "demo_output", config: dict | None = None, backbone=None,
        verbose: int | str = "auto") -> dict:
    """Train, evaluate, draw and export; returns `{"mAP", "per_class", "seconds", "png",
    "weights", "model", "export"}`."""
    import keras

    from detection.data import synthetic as shapes_mod
    from detection.data.pipeline import training_batches
    from detection.evaluation import voc_ap
    from detection.visualize import draw_detections
    config = config or load_config()
    data_cfg, train_cfg = config["data"], config["train"]
    eval_cfg = config.get("eval", {})
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    start = time.time()
    keras.utils.set_random_seed(int(data_cfg.get("seed", 0)))

    gen_kw = {"image_size": data_cfg["image_size"], "seed": data_cfg.get("seed", 0),
              "min_objects": data_cfg.get("min_objects", 1),
              "max_objects": data_cfg.get("max_objects", 3), "progress": True}
    train_items = shapes_mod.samples(data_cfg["train_images"], "train", **gen_kw)
    test_items = shapes_mod.samples(data_cfg["test_images"], "test", **gen_kw)

    model = build_detector(config, backbone)
    image_size = tuple(config["model"]["image_size"])
    batch = int(train_cfg["batch_size"])
    train_ds = training_batches(
        shapes_mod.from_samples(train_items), image_size, batch,
        max_boxes=int(data_cfg.get("max_boxes", 8)), flip=bool(train_cfg.get("flip", True)),
        shuffle=len(train_items), seed=int(data_cfg.get("seed", 0)))
    epochs = int(train_cfg["epochs"])
    steps = len(train_items) // batch
    model.compile(optimizer=_optimizer(train_cfg, steps * epochs))
    model.fit(train_ds, epochs=epochs, verbose=verbose, shuffle=False)  # tf.data shuffles
    train_seconds = time.time() - start

    predictions = predict_samples(model, test_items)
    truths = shapes_mod.ground_truths(test_items)
    result = voc_ap(predictions, truths, iou_threshold=float(eval_cfg.get("iou_threshold", 0.5)),
                    use_07_metric=bool(eval_cfg.get("use_07_metric", True)))
    names = shapes_mod.CLASS_NAMES
    png = draw_detections([s["image"] for s in test_items[:8]], predictions[:8],
                          out_dir / "detections.png", class_names=names,
                          ground_truths=truths[:8])
    weights = out_dir / "detector.weights.h5"
    model.save_weights(weights)
    exported = None
    if keras.backend.backend() == "tensorflow":  # SavedModel export is TensorFlow-only
        exported = check_export(model, np.stack([s["image"] for s in test_items]).astype(np.uint8),
                                predictions, out_dir / "saved_model")
        print(f"SavedModel {exported['path']}: max box difference vs Keras "
              f"{exported['max_box_diff']:.2e} px over {len(test_items)} images, "
              f"{'same' if exported['same_classes'] else 'DIFFERENT'} detections and classes")
    seconds = time.time() - start
    per_class = {names[int(k)]: float(v) for k, v in result["per_class"].items()}
    print("per-class AP@0.5: " + ", ".join(f"{k} {v:.3f}" for k, v in per_class.items()))
    print(f"trained in {train_seconds:.0f} s, total {seconds:.0f} s; "
          f"detections drawn to {png}")
    print(f"mAP@0.5 = {result['mAP']:.3f}")
    return {"mAP": float(result["mAP"]), "per_class": per_class, "seconds": seconds,
            "png": png, "weights": weights, "model": model, "export": exported}
