"""Score a trained detector on a config's evaluation split (VOC mAP or COCO AP).

    python -m detection evaluate --config detection/configs/raccoon_tiny.yaml \
        --checkpoint runs/raccoon_tiny/final.weights.h5
"""

from __future__ import annotations

import json
from pathlib import Path

from detection.checkpoints.pretrained import ReferenceSizes
from detection.config import from_dict, load_config
from detection.data.discover import inspect_data, starting_config
from detection.engine.train import build_model, evaluate_config, print_metrics
from detection.modeling.mask_rcnn import MaskRCNN, detector_from_checkpoint
from keras_resnet_suite.convert import load_model_file, load_weights_file
from keras_resnet_suite.model_kind import DETECTOR, require_kind


def load_detector(config, checkpoint: str | Path):
    """The config's `FasterRCNN` (`MaskRCNN` with `model.masks`) with weights from `checkpoint`
    (`.weights.h5` or `.keras`).

    Neither form fetches backbone weights: a `.keras` file holds the whole model, and a
    `.weights.h5` is loaded over the config's architecture built without them, so this works
    offline with an empty weights cache."""
    checkpoint = Path(checkpoint)
    if not checkpoint.exists():
        raise FileNotFoundError(f"--checkpoint {checkpoint} does not exist")
    require_kind(checkpoint, DETECTOR, "--checkpoint")
    if checkpoint.suffix == ".keras":
        return load_model_file(checkpoint)
    if not checkpoint.name.endswith(".weights.h5"):
        raise ValueError(f"--checkpoint {checkpoint}: expected a .weights.h5 or .keras file")
    model = build_model(config, load_backbone_weights=False)
    load_weights_file(model, checkpoint)
    return model


def _data_config(args, masks: bool = False):
    """The config that says what to score on: `--config`, or one made for `--data` (COCO
    data scored by mask AP, with the box AP beside it, when `masks`: a Mask R-CNN)."""
    if args.config is not None:
        return load_config(args.config)
    if getattr(args, "data", None) is None:
        raise ValueError("evaluate: give --config (a detection YAML) or, with --weights, "
                         "--data (a COCO root/JSON or VOC folder)")
    config = starting_config(inspect_data(args.data), "evaluate")
    if masks and config["eval"]["metric"] == "coco":  # VOC holds boxes only
        config["model"]["masks"], config["eval"]["metric"] = True, "segm"
    return from_dict(config, source=args.data)


def run(args) -> int:
    """`python -m detection evaluate` (arguments in `detection.cli`)."""
    config = _data_config(args)  # the data is checked before any download
    if args.weights is not None:
        detector = detector_from_checkpoint(args.weights)
        if isinstance(detector, MaskRCNN):
            config = _data_config(args, masks=True)
        # Each image at its reference size; classes matched to the data's by name.
        model = ReferenceSizes(detector, class_names=config.class_names())
    else:
        if args.config is None:
            raise ValueError("evaluate --checkpoint needs --config (the model's YAML)")
        model = load_detector(config, args.checkpoint)
    result = evaluate_config(model, config, args.split, max_images=args.max_images)
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2, default=float))
    print_metrics(result, config)
    return 0
