"""`model.masks: true` through the CLI end to end: a tiny Mask R-CNN trained on shapes with
masks, stopped after a checkpoint and resumed (nothing written lost), scored with box and mask
AP (`eval.metric: segm`), evaluated, exported with `detection_masks` and run by `predict`."""

import csv
import json
import re

import numpy as np
import pytest
import yaml

pytestmark = pytest.mark.tf_only

BOX_LINE = r"^box AP = (\d\.\d{3}), AP50 = \d\.\d{3}, AP75 = \d\.\d{3}$"
MASK_LINE = r"^mask AP = (\d\.\d{3}), AP50 = \d\.\d{3}, AP75 = \d\.\d{3}$"


def _mask_config(tmp_path, head="c4"):
    """test_train's tiny run (model, schedule, checkpoints every 2 steps) as a Mask R-CNN on
    the shapes loaders (8 train images, 3 held out), scored with `segm`."""
    from test_train import _config

    from detection.data.synthetic import CLASS_NAMES

    raw = yaml.safe_load(_config(tmp_path).read_text())
    raw["model"].update(masks=True, head=head, mask_head_dim=16)
    if head == "fpn":
        raw["model"].update(anchor_sizes=[[8], [16], [32], [64], [128]], fpn_channels=16)
        raw["model"].pop("roi_pooled_size")
    shapes = {"loader": "shapes", "image_size": 64, "min_objects": 1, "max_objects": 2}
    raw["data"]["train"] = {**shapes, "num_images": 8, "split": "train"}
    raw["data"]["eval"] = {**shapes, "num_images": 3, "split": "test"}
    raw["data"]["class_names"] = list(CLASS_NAMES)
    raw["eval"] = {"metric": "segm"}
    path = tmp_path / "masks.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def test_mask_run_trains_resumes_evaluates_exports_and_predicts(tmp_path, capsys):
    import tensorflow as tf
    from PIL import Image

    from detection import cli

    config = _mask_config(tmp_path)
    run_dir = tmp_path / "run"
    assert cli.main(["train", "--config", str(config), "--out", str(run_dir)]) == 0
    out = capsys.readouterr().out
    assert re.search(BOX_LINE, out, re.MULTILINE), out[-2000:]
    mask = re.search(MASK_LINE, out, re.MULTILINE)
    assert mask, out[-2000:]
    rows = list(csv.DictReader((run_dir / "history.csv").open()))
    assert len(rows) == 1 and np.isfinite(float(rows[0]["mask_loss"]))
    first = (run_dir / "history.csv").read_text()
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["steps"] == 4 and set(metrics["metrics"]["bbox"]) >= {"AP", "AP50", "AP75"}
    assert f"{metrics['metrics']['AP']:.3f}" == mask.group(1)

    # evaluate the final weights: the same mask AP line as training printed
    weights = run_dir / "final.weights.h5"
    assert cli.main(["evaluate", "--config", str(config), "--checkpoint", str(weights)]) == 0
    assert re.search(rf"^mask AP = {mask.group(1)}, ", capsys.readouterr().out, re.MULTILINE)

    # stopped at step 4; the same command with a longer schedule resumes there
    assert cli.main(["train", "--config", str(config), "--out", str(run_dir),
                     "--steps", "8"]) == 0
    out = capsys.readouterr().out
    assert "resuming from step 4 of 8" in out and re.search(MASK_LINE, out, re.MULTILINE)
    assert json.loads((run_dir / "metrics.json").read_text())["steps"] == 8
    history = (run_dir / "history.csv").read_text()
    assert history.startswith(first) and len(history.splitlines()) == 3  # epoch 1 kept
    assert [p.name for p in sorted((run_dir / "checkpoints").iterdir())][-1] == "step-00000008"

    saved = tmp_path / "saved"
    assert cli.main(["export", "--config", str(config), "--checkpoint", str(weights),
                     "--out", str(saved)]) == 0
    outputs = tf.saved_model.load(str(saved)).signatures["serving_default"].structured_outputs
    # C4: RoIAlign 6x6 (roi_pooled_size), res5 halves it, the deconv doubles it: 6x6 masks
    assert outputs["detection_masks"].shape.as_list() == [None, 10, 6, 6]

    image = tmp_path / "shape.png"
    Image.fromarray(np.full((64, 64, 3), 90, np.uint8)).save(image)
    preds = tmp_path / "preds"
    assert cli.main(["predict", str(image), "--model", str(weights), "--config", str(config),
                     "--out", str(preds), "--score-threshold", "0"]) == 0
    (entry,) = json.loads((preds / "detections.json").read_text())
    assert entry["detections"]  # score threshold 0: the untrained-ish model still detects
    assert all(d["mask_rle"]["size"] == [64, 64] for d in entry["detections"])


def test_fpn_mask_config_builds_the_28x28_head(tmp_path):
    """`head: fpn` with masks builds FPN's mask head (its training runs in
    tests/detection/modeling/test_mask_rcnn.py; the CLI path is the C4 run above)."""
    from detection.config import load_config
    from detection.engine.train import build_model

    model = build_model(load_config(_mask_config(tmp_path, head="fpn")))
    assert type(model).__name__ == "MaskRCNN" and model.head_type == "fpn"
    assert model.mask_size == 28 and model.mask_head.num_classes == 3


def test_voc_data_with_masks_is_refused_before_anything_is_written(tmp_path, capsys):
    from detection import cli

    config = _mask_config(tmp_path)
    raw = yaml.safe_load(config.read_text())
    raw["data"]["train"] = {"loader": "voc", "data_dir": str(tmp_path / "data"), "year": 2007,
                            "split": "train"}
    config.write_text(yaml.safe_dump(raw))
    assert cli.main(["train", "--config", str(config), "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert "model.masks: true needs instance masks, but data.train.loader 'voc' has none" in err
    assert len(err.strip().splitlines()) == 1 and not (tmp_path / "run").exists()
