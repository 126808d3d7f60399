"""Numeric options (issue 35): every float and count option of both command lines and of the
model constructors refuses NaN, infinity and out-of-range values by name, by one rule per
option (`keras_resnet_suite.schema`): CLIs exit 2 with argparse's line naming the flag, the
library raises ValueError naming the keyword. Before, `detection predict --score-threshold
nan` compared every score with NaN, kept nothing and exited 0."""

from __future__ import annotations

import math

import pytest

NAN_INF = ("nan", "inf", "-inf")


def _cli_error(main, argv, capsys) -> str:
    """The stderr of a command line refused by argparse (exit 2)."""
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    assert exit_.value.code == 2
    return capsys.readouterr().err


@pytest.mark.parametrize("value", [*NAN_INF, "-0.1", "1.5", "half"])
def test_predict_score_threshold_is_a_probability(tmp_path, capsys, value):
    from detection import cli

    out = tmp_path / "pred"
    err = _cli_error(cli.main, ["predict", str(tmp_path / "a.jpg"), "--model", str(tmp_path),
                                "--out", str(out), f"--score-threshold={value}"], capsys)
    assert ("error: argument --score-threshold: --score-threshold must be a finite number "
            ">= 0 and <= 1, got") in err
    assert not out.exists()


@pytest.mark.parametrize("command, flag, value, message", [
    ("init-config", "--val-fraction", "nan", "must be a finite number >= 0 and < 1, got nan"),
    ("init-config", "--val-fraction", "1", "must be a finite number >= 0 and < 1, got 1.0"),
    ("evaluate", "--max-images", "0", "must be an integer >= 1, got 0"),
    ("export", "--image-size", "-32", "must be an integer >= 1, got -32"),
    ("predict", "--max-pixels", "1e9", "must be an integer >= 1, got '1e9'"),
])
def test_detection_count_and_fraction_flags(tmp_path, capsys, command, flag, value, message):
    from detection import cli

    argv = {"init-config": [command, str(tmp_path)],
            "evaluate": [command, "--weights", "x.pth"],
            "export": [command, "--weights", "x.pth", "--out", str(tmp_path / "sm")],
            "predict": [command, "a.jpg", "--model", "m"]}[command]
    values = ["64", value] if flag == "--image-size" else [value]  # H W
    err = _cli_error(cli.main, [*argv, flag, *values], capsys)
    assert f"error: argument {flag}: {flag} {message}" in err


@pytest.mark.parametrize("argv, flag", [
    (["models", "--size", "0"], "--size"),
    (["demo", "--epochs", "nan"], "--epochs"),
    (["demo", "--train-images", "-5"], "--train-images"),
    (["evaluate", "--run", "r", "--limit", "0"], "--limit"),
    (["export", "--run", "r", "--out", "o", "--top-k", "-1"], "--top-k"),
    (["benchmark", "--data", "d", "--batch-size", "0"], "--batch-size"),
    (["train", "--data-dir", "d", "--out", "o", "--freeze-at", "-1"], "--freeze-at"),
])
def test_classification_count_flags(capsys, argv, flag):
    from keras_resnet_suite import cli

    err = _cli_error(cli.main, argv, capsys)
    assert f"error: argument {flag}: {flag} must be an integer >=" in err


@pytest.mark.parametrize("keywords, message", [
    ({"score_threshold": math.nan}, "score_threshold must be a finite number >= 0 and <= 1, "
                                    "got nan"),
    ({"nms_threshold": 1.5}, "nms_threshold must be a finite number >= 0 and <= 1, got 1.5"),
    ({"rpn_nms_threshold": math.inf}, "rpn_nms_threshold must be a finite number >= 0 and <= 1"),
    ({"rpn_positive_fraction": 0.0}, "rpn_positive_fraction must be a finite number > 0 and "
                                     "<= 1, got 0.0"),
    ({"roi_positive_fraction": -0.25}, "roi_positive_fraction must be a finite number > 0"),
    ({"resize_min_size": -800}, "resize_min_size must be a finite number > 0, got -800"),
    ({"resize_max_size": math.nan}, "resize_max_size must be a finite number > 0, got nan"),
    ({"anchor_ratios": (0.5, math.inf)}, "anchor_ratios[1] must be a finite number > 0, "
                                         "got inf"),
    ({"anchor_sizes": ((32, -64),)}, "anchor_sizes must be"),
    ({"pixel_std": (58.4, 0.0, 57.4)}, "pixel_std[1] must be a finite number > 0, got 0.0"),
    ({"detection_min_size": -1.0}, "detection_min_size must be a finite number >= 0"),
    ({"max_detections": 0}, "max_detections must be an integer >= 1, got 0"),
    ({"rpn_batch_size": 2.5}, "rpn_batch_size must be an integer >= 1, got 2.5"),
])
def test_detector_options_refuse_bad_numbers_by_name(keywords, message):
    """`FasterRCNN`'s keywords (and a config's `model:` keys, the same rules) are checked when
    the options are made, before any layer is built."""
    from detection.modeling.options import DetectorOptions

    with pytest.raises(ValueError) as err:
        DetectorOptions().replace(**keywords)
    assert str(err.value).startswith(message)


@pytest.mark.parametrize("builder", ["FasterRCNN", "MaskRCNN"])
def test_constructors_check_the_options_and_presets_pass(builder):
    import detection
    from detection.checkpoints import presets

    with pytest.raises(ValueError, match="^score_threshold must be a finite number"):
        getattr(detection, builder)(2, backbone="resnet18", image_size=(64, 64),
                                    score_threshold=math.nan)
    for options in (presets.TORCHVISION, *presets.DETECTRON2.values()):
        assert options.checked() == options  # every shipped convention passes its own rules


def test_a_config_model_key_uses_the_constructor_rules(tmp_path):
    from detection.config import load_config

    path = tmp_path / "bad.yaml"
    path.write_text("model: {backbone: resnet18, score_threshold: .nan}\n"
                    "data: {train: {loader: shapes, num_images: 4}}\n"
                    "train: {steps: 1, learning_rate: 0.01}\n")
    with pytest.raises(ValueError) as err:
        load_config(path)
    assert str(err.value) == (f"{path}: model.score_threshold must be a finite number >= 0 and "
                              "<= 1, got nan")


@pytest.mark.parametrize("keywords, message", [
    ({"drop_path_rate": math.nan}, "drop_path_rate must be a finite number >= 0 and < 1, got nan"),
    ({"bn_momentum": 2}, "bn_momentum must be a finite number >= 0 and <= 1, got 2.0"),
    ({"bn_epsilon": -1e-5}, "bn_epsilon must be a finite number > 0, got -1e-05"),
])
def test_classifier_and_backbone_numbers(keywords, message):
    import keras_resnet_suite as krs
    from keras_resnet_suite import backbones

    builds = [krs.ResNet20] + ([] if "drop_path_rate" in keywords else [backbones.ResNet18])
    for build in builds:
        with pytest.raises(ValueError) as err:
            build(**keywords)
        assert str(err.value) == message
