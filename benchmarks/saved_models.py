"""The tiny models the reliability benchmarks run: a shapes-demo detector scaled down to a CPU
minute and resnet20 at 32x32, as configs and as exported SavedModels (`benchmarks.reliability`
and `benchmarks.serving_soak` both use them)."""

from __future__ import annotations

from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
CLASSES = [f"c{i}" for i in range(10)]


def tiny_detector_config(path: Path) -> Path:
    """The shipped shapes demo config scaled down to a CPU minute: 64 px images, 8-64 channels,
    32 training images in batches of 2 (16 steps an epoch), 32 steps, a checkpoint every 8."""
    config = yaml.safe_load((REPO / "detection" / "configs" / "shapes_demo.yaml").read_text())
    config["name"] = "reliability_tiny"
    config["model"].update(
        backbone_kwargs={"depths": [1, 1, 1, 1], "widths": [8, 16, 32, 64], "stem_width": 8},
        image_size=[64, 64], anchor_sizes=[16, 32], rpn_pre_nms_topk=[200, 100],
        rpn_post_nms_topk=[32, 16], rpn_batch_size=64, roi_batch_size=16, roi_pooled_size=6,
        max_detections=10, fc_dims=[32])  # fmt: skip
    for split, n in (("train", 32), ("eval", 4)):
        config["data"][split].update(num_images=n, image_size=64, progress=False)
    config["data"]["max_boxes"] = 4
    config["train"].update(batch_size=2, steps=32, warmup_steps=2, checkpoint_every=8)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(config))
    return path



def export_models(work: Path) -> dict[str, Path]:
    """The tiny detector of `tiny_detector_config` and resnet20 at 32x32, as SavedModels."""
    import keras

    import keras_resnet_suite as krs
    from detection.config import load_config
    from detection.engine.train import build_model
    from detection.export import export_saved_model as export_detector
    from keras_resnet_suite import export

    keras.utils.set_random_seed(0)
    detector = build_model(load_config(tiny_detector_config(work / "detector.yaml")))
    classifier = krs.build("resnet20", input_shape=(32, 32, 3), classes=10)
    return {
        "detector": Path(export_detector(detector, work / "detector")),
        "classifier": Path(export.export_saved_model(classifier, work / "classifier",
                                                     class_names=CLASSES, top_k=3)),
    }  # fmt: skip
