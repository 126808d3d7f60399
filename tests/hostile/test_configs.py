"""Hostile configuration values: every key of the detector YAML, the training recipes and both
training CLIs' flags is checked at load (type, range, allowed values, finiteness); a bad one is
one line naming the file and the dotted key, before any data is read or any folder written."""

import json
import math

import numpy as np
import pytest
import yaml
from train_helpers import tiny_config, write_config

from detection.config import load_config

# (section path, key, bad value, the exact message after "<file>: ")
BAD_DETECTION_VALUES = [
    (("train",), "batch_size", "four", "train.batch_size must be an integer >= 1, got 'four'"),
    (("data",), "max_boxes", -3, "data.max_boxes must be an integer >= 1, got -3"),
    (("train",), "learning_rate", -0.1,
     "train.learning_rate must be a finite number > 0, got -0.1"),
    (("train",), "learning_rate", float("nan"),
     "train.learning_rate must be a finite number > 0, got nan"),
    (("train",), "learning_rate", "inf", "train.learning_rate must be a finite number > 0, got inf"),
    (("train",), "learning_rate", 0, "train.learning_rate must be a finite number > 0, got 0.0"),
    (("train",), "steps", 0, "train.steps must be an integer >= 1, got 0"),
    (("train",), "steps", 2.5, "train.steps must be an integer >= 1, got 2.5"),
    (("train",), "steps", True, "train.steps must be an integer >= 1, got True"),
    (("train",), "momentum", 1.5, "train.momentum must be a finite number >= 0 and < 1, got 1.5"),
    (("train",), "clipnorm", -1, "train.clipnorm must be a finite number > 0 (or null), got -1.0"),
    (("train",), "weight_decay", float("inf"),
     "train.weight_decay must be a finite number >= 0, got inf"),
    (("train",), "lr_steps", [3, 1], "train.lr_steps must be a list of strictly increasing "
                                     "values, each an integer >= 1, got [3, 1]"),
    (("train",), "mixed_precision", "yes", "train.mixed_precision must be true or false, got 'yes'"),
    (("train",), "optimizer", "adam", "train.optimizer must be one of sgd, adamw, got 'adam'"),
    (("train",), "checkpoint_every", 0,
     "train.checkpoint_every must be an integer >= 1 (or null), got 0"),
    (("data", "augment"), "brightness", 2,
     "data.augment.brightness must be a finite number >= 0 and <= 1, got 2.0"),
    (("data", "augment"), "sizes", [0], "data.augment.sizes[0] must be an integer >= 1, got 0"),
    (("data",), "seed", -1, "data.seed must be an integer >= 0, got -1"),
    (("data",), "class_names", ["circle", "circle"],
     "data.class_names must be a list of at least 1 values, each a non-empty string or one of "
     "auto, got ['circle', 'circle']"),
    (("eval",), "iou_threshold", 1.5,
     "eval.iou_threshold must be a finite number > 0 and < 1, got 1.5"),
    (("model",), "image_size", [64],
     "model.image_size must be a list of 2 values, each an integer >= 1, got [64]"),
    (("model",), "roi_batch_size", 0, "model.roi_batch_size must be an integer >= 1, got 0"),
    (("model",), "nms_threshold", "half",
     "model.nms_threshold must be a finite number >= 0 and <= 1, got 'half'"),
    (("data", "train"), "val_fraction", 1.5,
     "data.train.val_fraction must be a finite number >= 0 and < 1, got 1.5"),
    (("data", "eval"), "verify_images", "no",
     "data.eval.verify_images must be true or false, got 'no'"),
    (("data", "train"), "split", 5, "data.train.split must be a non-empty string, got 5"),
    (("data", "train"), "year", 7, "data.train.year must be an integer >= 2000 or a list of at "
                                   "least 1 values, each an integer >= 2000, got 7"),
]


def _set(raw, path, key, value):
    section = raw
    for name in path:
        section = section.setdefault(name, {})
    section[key] = value
    return raw


@pytest.mark.parametrize("path, key, value, message", BAD_DETECTION_VALUES,
                         ids=[f"{'.'.join(p)}.{k}={v!r}" for p, k, v, _ in BAD_DETECTION_VALUES])
def test_a_bad_value_is_refused_naming_file_and_key(tmp_path, path, key, value, message):
    config = write_config(tmp_path, _set(tiny_config(tmp_path), path, key, value))
    with pytest.raises(ValueError) as err:
        load_config(config)
    assert str(err.value) == f"{config}: {message}"
    assert "\n" not in str(err.value)


def test_a_loader_without_its_required_argument_is_refused(tmp_path):
    raw = tiny_config(tmp_path)
    del raw["data"]["train"]["data_dir"]
    config = write_config(tmp_path, raw)
    with pytest.raises(ValueError) as err:
        load_config(config)
    assert str(err.value) == (f"{config}: config data.train: missing required key(s) "
                              "data.train.data_dir (voc loader)")


def test_yaml_exponent_without_a_dot_is_read_as_a_number(tmp_path):
    # YAML 1.1 reads `1e-3` as text; the schema takes it as the number it plainly is
    path = tmp_path / "lr.yaml"
    raw = tiny_config(tmp_path)
    path.write_text(yaml.safe_dump(raw).replace("learning_rate: 0.01", "learning_rate: 1e-3"))
    assert load_config(path).train.learning_rate == 0.001


@pytest.mark.parametrize("text, message", [
    ("train: 5\ndata: {train: {loader: shapes}}\n", "config train must be a mapping, got int"),
    ("data: {train: {loader: shapes}}\ntrain:\n", "config: the 'train' section is missing"),
    ("train: {steps: 1, learning_rate: 0.1}\ntrain: {steps: 2, learning_rate: 0.1}\n",
     "key 'train' appears twice in one mapping"),
    ("data: {train: {loader: shapes}, class_names: [a, b], num_classes: 3}\n"
     "train: {steps: 1, learning_rate: 0.1}\n",
     "config data.num_classes = 3 but data.class_names has 2 names"),
])
def test_a_malformed_file_is_refused_naming_it(tmp_path, text, message):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ValueError) as err:
        load_config(path)
    assert str(err.value).startswith(f"{path}: ") and message in str(err.value)
    assert "\n" not in str(err.value)


def test_a_binary_file_is_refused_naming_it(tmp_path):
    path = tmp_path / "weights.yaml"
    path.write_bytes(b"\x89HDF\r\n\x1a\n\xff\xfe\x00")
    with pytest.raises(ValueError, match=r"weights\.yaml: not a UTF-8 text file"):
        load_config(path)


@pytest.mark.parametrize("override, message", [
    ({"learning_rate": -0.1}, "train.learning_rate must be a finite number > 0, got -0.1"),
    ({"learning_rate": "nan"}, "train.learning_rate must be a finite number > 0, got nan"),
    ({"batch_size": "four"}, "train.batch_size must be an integer >= 1, got 'four'"),
])
def test_detection_train_refuses_a_bad_config_before_any_work(tmp_path, capsys, override,
                                                              message):
    from detection import cli

    config = write_config(tmp_path, tiny_config(tmp_path, **override))
    out = tmp_path / "run"
    assert cli.main(["train", "--config", str(config), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err == f"error: {config}: {message}\n"
    assert not out.exists()


@pytest.mark.parametrize("flag, value, message", [
    ("--steps", "0", "--steps must be an integer >= 1, got 0"),
    ("--steps", "nan", "--steps must be an integer >= 1, got 'nan'"),
    ("--batch-size", "four", "--batch-size must be an integer >= 1, got 'four'"),
    ("--eval-images", "-1", "--eval-images must be an integer >= 1, got -1"),
])
def test_detection_train_flags_are_checked(tmp_path, capsys, flag, value, message):
    """`train` flags (and `demo`'s, below) are parsed by the same rules as the YAML keys."""
    from detection import cli

    config = write_config(tmp_path, tiny_config(tmp_path))
    out = tmp_path / "run"
    with pytest.raises(SystemExit) as exit_:
        cli.main(["train", "--config", str(config), "--out", str(out), flag, value])
    assert exit_.value.code == 2
    assert f"error: argument {flag}: {message}" in capsys.readouterr().err
    assert not out.exists()


@pytest.mark.parametrize("flag", ["--epochs", "--train-images", "--test-images"])
def test_detection_demo_flags_are_checked(tmp_path, capsys, flag):
    from detection import cli

    with pytest.raises(SystemExit) as exit_:
        cli.main(["demo", "--out", str(tmp_path / "demo"), flag, "0"])
    assert exit_.value.code == 2
    assert f"error: argument {flag}: {flag} must be an integer >= 1, got 0" in \
        capsys.readouterr().err
    assert not (tmp_path / "demo").exists()


@pytest.mark.parametrize("override, message", [
    ({"base_lr": -0.1}, "recipe.base_lr must be a finite number > 0, got -0.1"),
    ({"base_lr": float("nan")}, "recipe.base_lr must be a finite number > 0, got nan"),
    ({"base_lr": float("inf")}, "recipe.base_lr must be a finite number > 0, got inf"),
    ({"momentum": 1.0}, "recipe.momentum must be a finite number >= 0 and < 1, got 1.0"),
    ({"label_smoothing": -0.1},
     "recipe.label_smoothing must be a finite number >= 0 and < 1, got -0.1"),
    ({"l2": "big"}, "recipe.l2 must be a finite number >= 0, got 'big'"),
    ({"warmup_steps": -5}, "recipe.warmup_steps must be an integer >= 0, got -5"),
    ({"ema_momentum": 2.0}, "recipe.ema_momentum must be a finite number >= 0 and < 1 (or null), "
                            "got 2.0"),
])
def test_a_recipe_refuses_bad_values(override, message):
    from keras_resnet_suite import training

    with pytest.raises(ValueError) as err:
        training.get_recipe("modern", steps_per_epoch=10, **override)
    assert str(err.value) == message


@pytest.mark.parametrize("flag, value, message", [
    ("--steps", "0", "--steps must be an integer >= 1, got 0"),
    ("--batch-size", "-4", "--batch-size must be an integer >= 1, got -4"),
    ("--save-every", "0", "--save-every must be an integer >= 1, got 0"),
    ("--num-classes", "0", "--num-classes must be an integer >= 1, got 0"),
    ("--seed", "-1", "--seed must be an integer >= 0, got -1"),
])
def test_classification_train_flags_are_checked_before_any_work(tmp_path, capsys, flag, value,
                                                                message):
    from keras_resnet_suite import cli

    out = tmp_path / "run"
    args = ["train", "--model", "resnet20", "--data-dir", str(tmp_path), "--out", str(out),
            "--steps", "4", flag, value]
    with pytest.raises(SystemExit) as exit_:
        cli.main(args)
    assert exit_.value.code == 2  # argparse's exit for a bad flag, as every other CLI input
    assert f"error: argument {flag}: {message}" in capsys.readouterr().err
    assert not out.exists()


@pytest.mark.parametrize("value, expected", [
    ({"mAP": float("nan"), "per_class": {"0": float("inf")}}, {"mAP": None,
                                                               "per_class": {"0": None}}),
    ({"loss": [1.5, float("-inf"), np.float32("nan")], "steps": np.int64(3)},
     {"loss": [1.5, None, None], "steps": 3}),
])
def test_metrics_files_are_valid_json_without_nan(tmp_path, value, expected):
    from keras_resnet_suite.training import atomic_write_json

    path = tmp_path / "metrics.json"
    atomic_write_json(path, value)
    text = path.read_text()
    assert "NaN" not in text and "Infinity" not in text
    assert json.loads(text, parse_constant=lambda c: math.nan) == expected
