"""A model file of the wrong kind (issue 35): every `--model`/`--weights`/`--checkpoint`/
`--model-file` of both command lines, and `build(weights=...)`, reads what the file says it is
before loading it, and refuses another kind in one line naming the file, what it is and what was
expected (a classifier `.keras` given to `detection predict` failed inside Keras naming a layer)."""

import json

import numpy as np
import pytest

keras = pytest.importorskip("keras")

import keras_resnet_suite as krs  # noqa: E402
from detection import cli as detection_cli  # noqa: E402
from keras_resnet_suite import cli as krs_cli  # noqa: E402
from keras_resnet_suite.model_kind import WrongModelKind, file_kind  # noqa: E402
from tests.hostile.inputs import write_image  # noqa: E402

CONFIG = "detection/configs/shapes_demo.yaml"


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """A classifier, a backbone, a tiny detector and a foreign Keras model, as `.keras` and
    `.weights.h5`, plus a classifier SavedModel's folder as `export_saved_model` leaves it."""
    from tests.detection.detector_helpers import tiny_detector

    root = tmp_path_factory.mktemp("kinds")
    keras.utils.set_random_seed(0)
    classifier = krs.build("resnet20", input_shape=(32, 32, 3), classes=10)
    classifier.save(root / "classifier.keras")
    classifier.save_weights(root / "classifier.weights.h5")
    krs.backbones.ResNet18(input_shape=(None, None, 3)).save(root / "backbone.keras")
    detector = tiny_detector(image_size=(64, 64))
    detector.predict(np.zeros((1, 64, 64, 3), "float32"), verbose=0)
    detector.save(root / "detector.keras")
    detector.save_weights(root / "detector.weights.h5")
    keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)]).save(root / "foreign.keras")
    served = root / "classifier_saved_model"  # what the kind check reads, before any loading
    (served / "assets.extra").mkdir(parents=True)
    (served / "saved_model.pb").write_bytes(b"")
    (served / "assets.extra" / "metadata.json").write_text(json.dumps(
        {"spec": {"name": "resnet20"}, "serving_bytes": {"image_size": [32, 32]}}))
    run = root / "run"
    run.mkdir()
    (run / "run.json").write_text(json.dumps({"model": "resnet20", "data": "cifar10"}))
    write_image(root / "photo.jpg")
    return root


def _refused(main, argv, capsys, *words) -> str:
    code = main([str(a) for a in argv])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1, err
    for word in words:
        assert word in err, err
    return err


@pytest.mark.parametrize("name, what", [
    ("classifier.keras", "is a resnet20 classifier (.keras): expected a detector"),
    ("backbone.keras", "is a resnet18 backbone (.keras): expected a detector"),
    ("foreign.keras", "is a Keras model of class Sequential (.keras), not one of this project's"),
    ("classifier_saved_model", "is a classifier SavedModel: expected a detector"),
])  # fmt: skip
def test_detection_predict_refuses_a_model_of_another_kind(files, name, what, capsys, tmp_path):
    _refused(detection_cli.main, ["predict", files / "photo.jpg", "--model", files / name,
                                  "--out", tmp_path / "out"], capsys, f"--model {files / name} {what}")
    assert not (tmp_path / "out").exists()  # refused before anything is written


def test_detection_predict_refuses_classifier_weights_with_a_config(files, capsys, tmp_path):
    _refused(detection_cli.main, ["predict", files / "photo.jpg", "--model",
                                  files / "classifier.weights.h5", "--config", CONFIG, "--out",
                                  tmp_path], capsys, "classifier.weights.h5 is a classifier's or "
             "backbone's weights (.weights.h5): expected a detector")


def test_detection_predict_refuses_a_saved_model_of_another_exporter(files, capsys, tmp_path):
    """No metadata to read: the loaded signature's outputs tell it is not a detector."""
    import tensorflow as tf

    module = tf.Module()
    module.f = tf.function(lambda x: {"probabilities": x}, input_signature=[
        tf.TensorSpec([None, 3], tf.float32)])
    tf.saved_model.save(module, str(tmp_path / "sm"), signatures={"serving_default": module.f})
    _refused(detection_cli.main, ["predict", files / "photo.jpg", "--model", tmp_path / "sm",
                                  "--out", tmp_path / "o"], capsys,
             f"--model {tmp_path / 'sm'} is a SavedModel whose serving_default gives "
             "['probabilities']: expected a detector exported by `python -m detection export`")


@pytest.mark.parametrize("command, name", [("evaluate", "classifier.keras"),
                                           ("export", "classifier.weights.h5")])
def test_detection_checkpoint_of_another_kind_is_refused(files, command, name, capsys, tmp_path):
    extra = ["--out", tmp_path / "x"] if command == "export" else []
    _refused(detection_cli.main, [command, "--checkpoint", files / name, "--config", CONFIG,
                                  *extra], capsys, f"--checkpoint {files / name} is a ",
             "expected a detector")


@pytest.mark.parametrize("command", ["predict", "evaluate", "export"])
def test_detection_weights_given_a_trained_detector_points_to_checkpoint(files, command, capsys,
                                                                         tmp_path):
    argv = {"predict": ["predict", files / "photo.jpg", "--out", tmp_path],
            "evaluate": ["evaluate", "--config", CONFIG],
            "export": ["export", "--out", tmp_path / "x"]}[command]  # fmt: skip
    _refused(detection_cli.main, [*argv, "--weights", files / "detector.keras"], capsys,
             f"--weights {files / 'detector.keras'} is a FasterRCNN detector (.keras): expected "
             "published COCO weights", "goes to --checkpoint")


def test_detection_weights_given_a_classifier_checkpoint_names_the_file(shared_data, capsys,
                                                                        tmp_path):
    th = shared_data / "cifar-resnet-checkpoints" / "resnet20-12fca82f.th"
    _refused(detection_cli.main, ["predict", th, "--weights", th, "--out", tmp_path], capsys,
             str(th), "not a torchvision or detectron2 Faster R-CNN state dict")


@pytest.mark.parametrize("command", ["evaluate", "export"])
def test_classifier_model_file_of_a_detector_is_refused(files, command, capsys, tmp_path):
    extra = ["--out", tmp_path / "x"] if command == "export" else []
    _refused(krs_cli.main, [command, "--run", files / "run", "--model-file",
                            files / "detector.keras", *extra], capsys,
             f"--model-file {files / 'detector.keras'} is a FasterRCNN detector (.keras): "
             "expected a classifier")


def test_classifier_weights_of_a_detector_are_refused(files, capsys, tmp_path):
    _refused(krs_cli.main, ["evaluate", "--model", "resnet20", "--weights",
                            files / "detector.weights.h5", "--data-dir", tmp_path], capsys,
             f"weights {files / 'detector.weights.h5'} is a detector's weights (.weights.h5): "
             "expected a classifier")
    with pytest.raises(WrongModelKind, match="detector.keras is a FasterRCNN detector"):
        krs.build("resnet20", weights=files / "detector.keras")


def test_files_of_the_right_kind_pass_and_unreadable_ones_are_left_to_their_loader(files,
                                                                                   tmp_path):
    assert file_kind(files / "detector.keras")[0] == "detector"
    assert file_kind(files / "classifier.keras")[0] == "classifier"
    (tmp_path / "cut.keras").write_bytes(b"PK\x03\x04 not a whole zip")
    assert file_kind(tmp_path / "cut.keras") == (None, "")  # load_model_file names it
    model = krs.build("resnet20", weights=files / "classifier.weights.h5")
    assert model.count_params() > 0
