"""`python -m detection train / evaluate / export` end to end on a tiny VOC-layout
set: loss logged, step-exact resume, VOC mAP printed, SavedModel exported."""

import csv
import json
import re

import numpy as np
import pytest
import yaml

pytestmark = pytest.mark.tf_only


def _config(tmp_path, **train):
    from detector_helpers import TINY

    from detection.data.synthetic import CLASS_NAMES, write_voc

    for split, n in (("train", 8), ("val", 3)):
        write_voc(tmp_path / "data" / "VOC2007", n, split, image_size=64, seed=1)
    config = {
        "name": "tiny",
        "model": {"backbone": "resnet18",
                  "backbone_kwargs": {k: list(v) if isinstance(v, tuple) else v
                                      for k, v in TINY.items()},
                  "head": "c4", "image_size": [64, 64], "anchor_sizes": [16, 32],
                  "rpn_pre_nms_topk": [200, 100], "rpn_post_nms_topk": [32, 16],
                  "rpn_batch_size": 64, "roi_batch_size": 16, "roi_pooled_size": 6,
                  "max_detections": 10, "fc_dims": [32], "seed": 0},
        "data": {"num_classes": len(CLASS_NAMES), "class_names": list(CLASS_NAMES),
                 "train": {"loader": "voc", "data_dir": str(tmp_path / "data"), "year": 2007,
                           "split": "train"},
                 "eval": {"loader": "voc", "data_dir": str(tmp_path / "data"), "year": 2007,
                          "split": "val"},
                 "augment": {"flip": True}, "max_boxes": 4, "seed": 0},
        "train": {"batch_size": 2, "optimizer": "sgd", "learning_rate": 0.01,
                  "lr_steps": [3], "warmup_steps": 2, "steps": 4, "checkpoint_every": 2,
                  "distribution": "none", **train},
        "eval": {"metric": "voc", "iou_threshold": 0.5},
    }
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def test_train_resume_evaluate_export(tmp_path, capsys):
    from detection import cli

    config = _config(tmp_path)
    run_dir = tmp_path / "run"
    assert cli.main(["train", "--config", str(config), "--out", str(run_dir)]) == 0
    out = capsys.readouterr().out
    match = re.search(r"^mAP@0\.5 = (\d\.\d{3})$", out, re.MULTILINE)
    assert match, out[-2000:]
    rows = list(csv.DictReader((run_dir / "history.csv").open()))
    assert len(rows) == 1 and np.isfinite(float(rows[0]["loss"]))  # 8 images / 2 = one epoch
    assert {"rpn_cls_loss", "roi_cls_loss"} <= set(rows[0])
    assert not [k for k in rows[0] if k.startswith("val_")]  # no validation in fit: no NA column
    assert [p.name for p in sorted((run_dir / "checkpoints").iterdir())] == [
        "step-00000002", "step-00000004"]
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["steps"] == 4 and metrics["metrics"]["num_positives"]
    # per-class figures by class name, as the table printed them
    assert set(metrics["metrics"]["per_class"]) == {"circle", "square", "triangle"}
    assert set(metrics["metrics"]["num_positives"]) <= {"circle", "square", "triangle"}
    assert metrics["evaluations"] == [{"step": 4, "metric": "mAP",
                                       "value": metrics["metrics"]["mAP"]}]
    curves = run_dir / "training_curves.png"
    assert curves.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    from PIL import Image

    assert Image.open(curves).size == (700, 400)
    # evaluate on the same weights and the same 3 val images prints the score train printed
    # (0.067 here: 4 steps already rank some boxes; 8 steps score 0.000 on these 3 images).
    assert cli.main(["evaluate", "--config", str(config), "--checkpoint",
                     str(run_dir / "final.weights.h5"), "--max-images", "3"]) == 0
    assert re.search(rf"^mAP@0\.5 = {match.group(1)}$", capsys.readouterr().out,
                     re.MULTILINE), match.group(0)

    # the same command with a longer schedule resumes at step 4 instead of starting over
    assert cli.main(["train", "--config", str(config), "--out", str(run_dir),
                     "--steps", "6"]) == 0
    out = capsys.readouterr().out
    assert "resuming from step 4 of 8" in out  # 6 steps are rounded up to 2 epochs of 4
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["steps"] == 8 and [e["step"] for e in metrics["evaluations"]] == [4, 8]
    assert len(list(csv.DictReader((run_dir / "history.csv").open()))) == 2

    weights = run_dir / "final.weights.h5"
    assert cli.main(["evaluate", "--config", str(config), "--checkpoint", str(weights),
                     "--max-images", "1"]) == 0
    assert re.search(r"^mAP@0\.5 = \d\.\d{3}$", capsys.readouterr().out, re.MULTILINE)

    saved = tmp_path / "saved"
    assert cli.main(["export", "--config", str(config), "--checkpoint", str(weights),
                     "--out", str(saved)]) == 0
    assert (saved / "saved_model.pb").is_file()
    # the predict CLI is tested on a SavedModel in export/test_saved_model.py


def test_bad_arguments_are_reported(tmp_path, capsys):
    from detection import cli

    assert cli.main(["train", "--config", str(tmp_path / "none.yaml")]) == 2
    assert "none.yaml" in capsys.readouterr().err
    config = _config(tmp_path)
    assert cli.main(["predict", str(tmp_path / "missing.jpg"), "--model",
                     str(tmp_path / "nothing")]) == 2
    assert "nothing" in capsys.readouterr().err
    assert cli.main(["export", "--config", str(config), "--checkpoint",
                     str(tmp_path / "w.weights.h5"), "--out", str(tmp_path / "o")]) == 2
    assert "w.weights.h5" in capsys.readouterr().err


def test_a_resumed_run_is_the_same_run(tmp_path, capsys):
    """Stopped after 4 steps and resumed to 8, training ends with exactly the weights of 8
    steps in one go: data order, augmentation draws, optimizer, LR schedule and the RPN/RoI
    sampling state all resume."""
    import h5py

    from detection import cli

    config = _config(tmp_path)
    whole, split = tmp_path / "whole", tmp_path / "split"
    common = ["train", "--config", str(config), "--eval-images", "1"]
    assert cli.main([*common, "--out", str(whole), "--steps", "8"]) == 0
    for steps in ("4", "8"):
        assert cli.main([*common, "--out", str(split), "--steps", steps]) == 0
    assert "resuming from step 4 of 8" in capsys.readouterr().out

    def arrays(path):
        out = {}
        with h5py.File(path / "final.weights.h5") as f:
            f.visititems(lambda k, v: out.__setitem__(k, v[()]) if hasattr(v, "shape") else None)
        return out

    a, b = arrays(whole), arrays(split)
    assert a.keys() == b.keys() and len(a) > 20
    for key in a:
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)


def test_a_run_resumed_mid_epoch_gets_the_uninterrupted_batches(tmp_path):
    """Resumed at step 2 of a 4-step epoch, `fit_resumable` asks for the stream twice (the
    epoch's rest from step 2, then the later epochs from step 4); both must continue the
    uninterrupted run's batches, although every new iterator of a reshuffling dataset draws
    the next permutation."""
    from detection.config import load_config
    from detection.data.build import dataset_from_config
    from detection.engine.train import _train_stream

    config = load_config(_config(tmp_path))

    def stream():
        base = dataset_from_config(config.data.train, config.class_names(), shuffle=True,
                                   seed=config.data.seed, verbose=False)
        assert base.num_examples == 8
        return _train_stream(config, base, 2)

    def images(make, start, n):
        return [b["images"].numpy() for b in make(start).take(n)]

    whole = images(stream(), 0, 12)  # 3 epochs of 4
    make = stream()
    resumed = images(make, 2, 2) + images(make, 4, 4) + images(make, 8, 4)
    for step, (a, b) in enumerate(zip(whole[2:], resumed, strict=True), start=2):
        np.testing.assert_array_equal(a, b, err_msg=f"batch of step {step}")


def test_backbone_lr_mult_zero_keeps_the_backbone_while_the_heads_train(tmp_path):
    import keras

    from detection.config import load_config
    from detection.engine.train import build_model, train

    config = load_config(_config(tmp_path, backbone_lr_mult=0.0, steps=2))
    keras.utils.set_random_seed(0)  # train() seeds with data.seed (0) before building
    start = [v.numpy() for v in build_model(config).trainable_variables]  # in model order
    model = train(config, tmp_path / "run", verbose=0, evaluate=False)["model"]
    assert type(model.optimizer).__name__ == "LayerLRMultiplier"
    same = {v.path: np.array_equal(v.numpy(), w)
            for v, w in zip(model.trainable_variables, start, strict=True)}
    backbone = [p for p in same if p.split("/")[0] == "conv1" or p.split("/")[0].endswith("_x")]
    assert len(backbone) > 10 and all(same[p] for p in backbone), backbone
    assert not all(same[p] for p in same if p.startswith("rpn/"))  # the new heads train
