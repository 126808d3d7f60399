"""Score a trained detector on a config's evaluation split (VOC mAP or COCO AP).

    python -m detection evaluate --config detection/configs/raccoon_tiny.yaml \
        --checkpoint runs/raccoon_tiny/final.weights.h5
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def load_detector(config: dict, checkpoint: str | Path):
    """The config's `FasterRCNN` with weights from `checkpoint` (`.weights.h5` or `.keras`)."""
    import keras

    from detection.train import build_model

    checkpoint = Path(checkpoint)
    if not checkpoint.exists():
        raise FileNotFoundError(f"--checkpoint {checkpoint} does not exist")
    if checkpoint.suffix == ".keras":
        return keras.saving.load_model(checkpoint)
    if not checkpoint.name.endswith(".weights.h5"):
        raise ValueError(f"--checkpoint {checkpoint}: expected a .weights.h5 or .keras file")
    model = build_model(config)
    model.load_weights(checkpoint)
    return model


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", required=True, help="detection YAML the model was trained with")
    parser.add_argument("--checkpoint", required=True, help=".weights.h5 or .keras file")
    parser.add_argument("--split", default="eval",
                        help="data section to score (default: eval, i.e. data.eval)")
    parser.add_argument("--max-images", type=int, default=None, help="score only the first N")
    parser.add_argument("--json", default=None, help="also write the figures to this JSON file")


def run(args: argparse.Namespace) -> int:
    """Evaluate a trained detector on data.eval (VOC mAP or COCO AP per the config)."""
    from detection.data.build import dataset_from_config
    from detection.evaluation.dataset import evaluate_dataset
    from detection.train import class_names_of, load_config

    config = load_config(args.config)
    if args.split not in config["data"] or not isinstance(config["data"][args.split], dict):
        raise ValueError(f"{args.config}: no data.{args.split} section to evaluate on")
    names = class_names_of(config)
    model = load_detector(config, args.checkpoint)
    eval_cfg = config.get("eval", {})
    metric = str(eval_cfg.get("metric", "voc"))
    iou = float(eval_cfg.get("iou_threshold", 0.5))
    dataset = dataset_from_config(config["data"][args.split], names)
    result = evaluate_dataset(model, dataset, metric=metric, iou_threshold=iou,
                              use_07_metric=bool(eval_cfg.get("use_07_metric", True)),
                              class_names=names, max_images=args.max_images)
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2, default=float))
    if metric == "voc":
        print(f"mAP@{iou:g} = {result['mAP']:.3f}")
    else:
        print(f"AP = {result['AP']:.3f}, AP50 = {result['AP50']:.3f}, AP75 = {result['AP75']:.3f}")
    return 0
