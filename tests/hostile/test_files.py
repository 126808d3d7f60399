"""Bad image files among good ones, bad weight files, and the one-line errors of both CLIs.

Every case asserts the exact outcome: which file the message names and why, the exit code,
and that nothing else is lost (the good images are still predicted, other records load).
The CLIs run in-process through their `main(argv)`; the detector is a tiny one, saved once.
"""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

import keras_resnet_suite as krs
from detection import cli as detection_cli
from keras_resnet_suite import cli as krs_cli
from keras_resnet_suite.data import images as image_limits
from keras_resnet_suite.data.folder import scan_image_folder
from keras_resnet_suite.data.report import DataReport
from tests.hostile.inputs import BAD_IMAGES, truncated_jpeg, write_bytes, write_image


@pytest.fixture(scope="module")
def tiny_model_file(tmp_path_factory):
    """A saved tiny Faster R-CNN (`.keras`), for `python -m detection predict --model`."""
    from tests.detection.detector_helpers import tiny_detector

    model = tiny_detector(image_size=(64, 64))
    model.predict(np.zeros((1, 64, 64, 3), "float32"), verbose=0)
    path = tmp_path_factory.mktemp("model") / "tiny.keras"
    model.save(path)
    return path


def _predict(tmp_path, model, images, *extra):
    out = tmp_path / "out"
    code = detection_cli.main(["predict", *map(str, images), "--model", str(model), "--out",
                               str(out), "--score-threshold", "0", *extra])
    return code, out


# --- 1. a bad image among good ones: named, skipped, the others predicted, exit 1 ----------

@pytest.mark.parametrize("kind", sorted(BAD_IMAGES))
def test_predict_skips_a_bad_image_and_predicts_the_others(kind, tmp_path, tiny_model_file,
                                                           capsys):
    writer, reason = BAD_IMAGES[kind]
    a, b = write_image(tmp_path / "a.jpg"), write_image(tmp_path / "b.png", (50, 20))
    bad = writer(tmp_path / "bad.jpg")
    code, out = _predict(tmp_path, tiny_model_file, [a, bad, b])
    err = capsys.readouterr().err
    assert code == 1
    assert f"skipped {bad}: image {bad} cannot be decoded" in err and reason in err
    assert "Traceback" not in err and "error: 1 of 3 image(s) failed" in err
    assert "predicting:   0%|" in err and "0/3 [" in err  # a bar with a total and ETA
    done = json.loads((out / "detections.json").read_text())
    assert [d["image"] for d in done] == [str(a), str(b)]  # the image after the bad one too
    assert [(d["width"], d["height"]) for d in done] == [(40, 30), (50, 20)]
    assert (out / "a.png").is_file() and (out / "b.png").is_file()
    failed = json.loads((out / "failed.json").read_text())
    assert [f["image"] for f in failed] == [str(bad)] and reason in failed[0]["error"]


@pytest.mark.parametrize("case", ["missing", "bmp", "over_limit"])
def test_predict_names_missing_unsupported_and_too_large_images(case, tmp_path,
                                                                tiny_model_file, capsys):
    good = write_image(tmp_path / "good.jpg")
    extra = []
    if case == "missing":
        bad, reason = tmp_path / "gone.jpg", f"image {tmp_path / 'gone.jpg'} does not exist"
    elif case == "bmp":
        bad = write_image(tmp_path / "photo.bmp")
        reason = f"image {bad}: BMP is not JPEG or PNG"
    else:  # 120x100 = 12,000 pixels against --max-pixels 10000, refused from the header
        bad = write_image(tmp_path / "big.jpg", (120, 100))
        extra = ["--max-pixels", "10000"]
        reason = (f"image {bad}: 120x100 pixels (0.0 megapixels) exceed the limit of 0.01 "
                  "megapixels")
    code, out = _predict(tmp_path, tiny_model_file, [bad, good], *extra)
    err = capsys.readouterr().err
    assert code == 1 and f"skipped {bad}: {reason}" in err
    assert [d["image"] for d in json.loads((out / "detections.json").read_text())] == [
        str(good)]


def test_predict_with_only_good_images_exits_0_and_clears_an_old_failed_list(
        tmp_path, tiny_model_file, capsys):
    good = write_image(tmp_path / "good.jpg")
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "failed.json").write_text("[]")  # left by an earlier run
    code, out = _predict(tmp_path, tiny_model_file, [good])
    assert code == 0 and not (out / "failed.json").exists()
    assert "skipped" not in capsys.readouterr().err


def test_predict_refuses_the_8000x8000_bomb_from_its_header(tmp_path, tiny_model_file,
                                                            bomb_jpeg, capsys, monkeypatch):
    from PIL import ImageFile

    def no_decoding(self):
        raise AssertionError("the bomb was decoded")

    good = write_image(tmp_path / "good.jpg")
    monkeypatch.setattr(ImageFile.ImageFile, "load", no_decoding)
    monkeypatch.setattr(image_limits, "MAX_PIXELS", 50_000_000)
    code, out = _predict(tmp_path, tiny_model_file, [bomb_jpeg])
    err = capsys.readouterr().err
    assert code == 1 and (f"skipped {bomb_jpeg}: image {bomb_jpeg}: 8000x8000 pixels (64.0 "
                          "megapixels) exceed the limit of 50 megapixels") in err
    monkeypatch.undo()
    assert _predict(tmp_path, tiny_model_file, [good])[0] == 0


# --- 2. bad weight/model files: one line naming the file, no traceback, exit 2 -------------

def _truncated_copy(src, dst):
    data = src.read_bytes()
    dst.write_bytes(data[: len(data) // 2])
    return dst


@pytest.fixture(scope="module")
def resnet20_files(tmp_path_factory):
    """`resnet20.weights.h5` and `resnet20.keras` of a freshly built CIFAR ResNet-20."""
    folder = tmp_path_factory.mktemp("weights")
    model = krs.build("resnet20")
    model.save_weights(folder / "resnet20.weights.h5")
    model.save(folder / "resnet20.keras")
    krs.build("resnet32").save_weights(folder / "resnet32.weights.h5")
    return folder


BAD_WEIGHTS = {
    # kind -> (make the file from the good files' folder, text the message must hold)
    "truncated_h5": (lambda d, t: _truncated_copy(d / "resnet20.weights.h5",
                                                  t / "cut.weights.h5"),
                     "Unable to synchronously open file"),
    "empty_h5": (lambda d, t: write_bytes(t / "empty.weights.h5", b""),
                 "Unable to synchronously open file"),
    "text_h5": (lambda d, t: write_bytes(t / "notes.weights.h5", b"hello"),
                "Unable to synchronously open file"),
    "other_architecture": (lambda d, t: d / "resnet32.weights.h5",
                           "the file holds 157 arrays, the model has 97 variables"),
}


@pytest.mark.parametrize("kind", sorted(BAD_WEIGHTS))
def test_build_with_a_bad_weights_file_names_the_file(kind, tmp_path, resnet20_files):
    make, words = BAD_WEIGHTS[kind]
    path = make(resnet20_files, tmp_path)
    with pytest.raises(ValueError) as info:
        krs.build("resnet20", weights=str(path))
    message = str(info.value)
    assert message.startswith(f"{path}: cannot load these weights into 'resnet20'")
    assert words in message and "\n" not in message


@pytest.mark.parametrize("kind", ["truncated_h5", "other_architecture"])
def test_krs_evaluate_with_a_bad_weights_file_is_one_line(kind, tmp_path, resnet20_files,
                                                          capsys):
    path = BAD_WEIGHTS[kind][0](resnet20_files, tmp_path)
    code = krs_cli.main(["evaluate", "--model", "resnet20", "--weights", str(path),
                         "--data-dir", str(tmp_path)])
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err
    assert err.startswith(f"error: {path}: cannot load these weights into 'resnet20'")
    assert err.count("\n") == 1


def test_krs_export_with_a_truncated_keras_file_is_one_line(tmp_path, resnet20_files, capsys):
    run = tmp_path / "run"
    run.mkdir()
    (run / "run.json").write_text(json.dumps({"model": "resnet20", "class_names": None}))
    cut = _truncated_copy(resnet20_files / "resnet20.keras", tmp_path / "cut.keras")
    code = krs_cli.main(["export", "--run", str(run), "--model-file", str(cut), "--out",
                         str(tmp_path / "sm")])
    assert code == 2
    assert capsys.readouterr().err == (f"error: {cut}: not a .keras model file (not a zip "
                                       "archive: truncated or another format)\n")
    assert not (tmp_path / "sm").exists()


@pytest.mark.parametrize("name", ["cut.weights.h5", "cut.keras"])
def test_detection_evaluate_with_a_truncated_checkpoint_is_one_line(
        name, tmp_path, tiny_model_file, capsys):
    from detection.config import load_config
    from detection.engine.train import build_model

    good = tmp_path / ("good.weights.h5" if name.endswith(".h5") else "good.keras")
    if name.endswith(".h5"):
        build_model(load_config("raccoon_tiny"), load_backbone_weights=False).save_weights(good)
    else:
        good.write_bytes(tiny_model_file.read_bytes())
    cut = _truncated_copy(good, tmp_path / name)
    code = detection_cli.main(["evaluate", "--config", "raccoon_tiny", "--checkpoint", str(cut)])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "Traceback" not in err
    assert err.startswith(f"error: {cut}: ")
    assert ("Unable to synchronously open file" if name.endswith(".h5") else
            "not a zip archive") in err


def test_an_unexpected_failure_is_one_line_too(monkeypatch, capsys):
    def broken(args):
        raise RuntimeError("something\nspread over\n  lines")

    monkeypatch.setitem(krs_cli.COMMANDS, "models", broken)
    assert krs_cli.main(["models"]) == 1
    assert capsys.readouterr().err == ("error: RuntimeError: something spread over lines "
                                       "(unexpected; set KRS_TRACEBACK=1 to see where)\n")


# --- 8. the pixel limit: one constant, an argument, an environment variable ---------------

@pytest.mark.parametrize(("env", "limit", "expected"), [
    (None, None, 50_000_000), ("1000", None, 1000), ("1000", 20, 20), (None, 7, 7)])
def test_max_pixels_default_environment_and_argument(env, limit, expected, monkeypatch):
    if env is None:
        monkeypatch.delenv("KRS_MAX_PIXELS", raising=False)
    else:
        monkeypatch.setenv("KRS_MAX_PIXELS", env)
    assert image_limits.max_pixels(limit) == expected


@pytest.mark.parametrize(("env", "message"), [
    ("lots", "$KRS_MAX_PIXELS must be a whole number of pixels, got 'lots'"),
    ("-5", "$KRS_MAX_PIXELS must be positive, got -5")])
def test_a_bad_pixel_limit_is_named(env, message, monkeypatch):
    monkeypatch.setenv("KRS_MAX_PIXELS", env)
    with pytest.raises(ValueError) as info:
        image_limits.max_pixels()
    assert str(info.value) == message


def test_classification_folder_skips_the_bomb_and_counts_it(tmp_path, bomb_jpeg):
    for k in range(2):
        write_image(tmp_path / "train" / "cat" / f"cat{k}.png", (32, 32))
    bomb = tmp_path / "train" / "dog" / "bomb.jpg"
    bomb.parent.mkdir(parents=True)
    os.symlink(bomb_jpeg, bomb)
    write_image(tmp_path / "train" / "dog" / "dog0.png", (32, 32))
    truncated_jpeg(tmp_path / "train" / "dog" / "cut.jpg")
    for mode in ("header", "full"):
        report = DataReport("folder")
        files, labels, names = scan_image_folder(tmp_path / "train", report, validate=mode)
        kept = ["cat0.png", "cat1.png", *(["cut.jpg"] if mode == "header" else []), "dog0.png"]
        assert names == ["cat", "dog"] and [os.path.basename(f) for f in files] == kept
        assert labels.tolist() == [0, 0] + [1] * (len(kept) - 2)
        reasons = dict(report.skipped)
        assert reasons[str(bomb)] == ("too large: 8000x8000 pixels (64.0 megapixels) exceed "
                                      "the limit of 50 megapixels (max_pixels; $KRS_MAX_PIXELS "
                                      "raises it)")
        cut = str(tmp_path / "train" / "dog" / "cut.jpg")
        assert (cut in reasons) == (mode == "full")  # a header check cannot see truncation


def test_a_classifier_weights_file_is_refused_by_a_backbone(tmp_path):
    # Keras matches .weights.h5 arrays by position: loaded, they gave another C5 without a word
    path = tmp_path / "resnet18.weights.h5"
    krs.build("resnet18", input_shape=(64, 64, 3)).save_weights(path)
    with pytest.raises(ValueError) as info:
        krs.backbones.ResNet18(weights=str(path), input_shape=(64, 64, 3))
    assert str(info.value) == (f"{path}: cannot load these weights into 'resnet18_backbone' "
                               "(ValueError: the file holds 102 arrays, the model has 100 "
                               "variables: weights of another architecture)")
