"""Hostile training: data without objects, divergence, NaN/inf images, resumed runs. Each case
asserts the exit code, the one-line message (naming the key, split, image or checkpoint) and
what is on disk afterwards: no non-finite final weights, a metrics.json that parses without
NaN, and nothing a finished run wrote lost."""

import csv
import json
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import h5py
import keras
import numpy as np
import pytest
import tensorflow as tf
from train_helpers import tiny_config, write_config

pytestmark = pytest.mark.skipif(keras.backend.backend() != "tensorflow",
                                reason="the training loops and tf.data checks are TF-only")

REPO = Path(__file__).resolve().parents[2]


def _train(args, capsys):
    """`python -m detection train ARGS` in-process: (exit code, stdout, the error line). The
    error line is the last of stderr (progress bars write there too); there is at most one."""
    from detection import cli

    code = cli.main(["train", *map(str, args)])
    captured = capsys.readouterr()
    lines = captured.err.replace("\r", "\n").strip().splitlines()
    errors = [x for x in lines if x.startswith("error:") or "Traceback" in x]
    assert len(errors) <= 1 and (not errors or errors[0] == lines[-1]), captured.err[-2000:]
    return code, captured.out, (errors[0] + "\n") if errors else ""


def _write_coco(folder: Path, categories, annotations, n_images=4) -> Path:
    """A COCO JSON beside `n_images` 32x32 JPEGs."""
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    images = []
    for i in range(n_images):
        Image.fromarray(np.full((32, 32, 3), 40 * i, np.uint8)).save(folder / f"{i}.jpg")
        images.append({"id": i + 1, "file_name": f"{i}.jpg", "width": 32, "height": 32})
    path = folder / "instances.json"
    path.write_text(json.dumps({"images": images, "categories": categories,
                                "annotations": annotations}))
    return path


SHAPES = [{"id": 1, "name": "circle"}, {"id": 2, "name": "square"}, {"id": 3, "name": "triangle"}]


def _refuse_constant(name):
    raise AssertionError(f"metrics.json holds the non-JSON literal {name}")


def _metrics(run: Path) -> dict:
    """metrics.json parsed strictly: a NaN/Infinity literal fails the test."""
    return json.loads((run / "metrics.json").read_text(), parse_constant=_refuse_constant)


def _all_finite(h5_path: Path) -> bool:
    arrays = []
    with h5py.File(h5_path, "r") as f:
        f.visititems(lambda _, obj: arrays.append(obj[()]) if isinstance(obj, h5py.Dataset)
                     else None)
    floats = [a for a in arrays if np.asarray(a).dtype.kind == "f"]
    return bool(floats) and all(np.isfinite(a).all() for a in floats)


# ------------------------------------------------------------------ no usable objects
def _no_object_cases(tmp_path):
    coco_empty = _write_coco(tmp_path / "coco_empty", SHAPES, [])
    coco_bad = _write_coco(tmp_path / "coco_bad", SHAPES, [
        {"id": 1, "image_id": 1, "category_id": 1, "bbox": [2, 2, "big", 9]},
        {"id": 2, "image_id": 2, "category_id": 2, "bbox": [1, 1, 5]}])
    coco = {"loader": "coco", "data_dir": str(coco_empty)}
    return {
        "classes_the_data_lacks": (
            ["--classes", "zebra,okapi"], {},
            "data.train: 0 objects kept (8 images): data.class_names (--classes) names 'zebra', "
            "'okapi', which the data set lacks (it has: circle, square, triangle); nothing to "
            "train on"),
        "coco_annotations_empty": (
            [], {"train": coco, "eval": None},
            "data.train: 0 objects kept (4 images): its annotations hold no objects; nothing to "
            "train on"),
        "coco_every_object_malformed": (
            [], {"train": {"loader": "coco", "data_dir": str(coco_bad)}, "eval": None},
            "data.train: 0 objects kept (4 images): every object was skipped (2 "
            "malformed_annotation; see the data report above); nothing to train on"),
        "eval_set_without_objects": (
            [], {"eval": coco},
            "data.eval: 0 objects kept (4 images): its annotations hold no objects; nothing to "
            "score"),
        "coco_categories_not_the_class_names": (
            ["--classes", "zebra"], {"train": coco, "eval": None},
            "data.class_names (zebra) are not the COCO categories of data.train (circle, "
            "square, triangle); the COCO loader labels objects by its categories: use "
            "--classes auto (data.class_names: auto)"),
    }


@pytest.mark.parametrize("case", ["classes_the_data_lacks", "coco_annotations_empty",
                                  "coco_every_object_malformed", "eval_set_without_objects",
                                  "coco_categories_not_the_class_names"])
def test_no_usable_objects_is_refused_before_training(tmp_path, capsys, case):
    extra, data, message = _no_object_cases(tmp_path)[case]
    raw = tiny_config(tmp_path)
    raw["data"].update(data)
    if raw["data"]["eval"] is None:
        del raw["data"]["eval"]
    run = tmp_path / "run"
    code, out, err = _train(["--config", write_config(tmp_path, raw), "--out", run, *extra],
                            capsys)
    assert (code, err) == (2, f"error: {message}\n")
    assert not run.exists()  # refused before any folder, checkpoint or metrics was written
    assert "Epoch 1" not in out and "mAP" not in out


def test_a_class_some_split_lacks_gets_a_note(tmp_path, capsys):
    from detection.data.build import dataset_from_config
    from detection.data.objects import check_objects

    spec = tiny_config(tmp_path)["data"]["train"]
    names = ["circle", "square", "triangle", "zebra"]
    check_objects(dataset_from_config(spec, names, verbose=False), spec, "train", names)
    assert "note: data.train has no object of class 'zebra': that class gets no examples " \
           "there" in capsys.readouterr().out


@pytest.mark.parametrize("metrics", [{"mAP": float("nan"), "per_class": {}},
                                     {"AP": float("nan"), "AP50": float("nan"),
                                      "AP75": float("nan")}], ids=["voc", "coco"])
def test_no_score_is_never_printed_as_nan(tmp_path, capsys, metrics):
    from detection.config import from_dict
    from detection.engine.train import print_metrics

    print_metrics(metrics, from_dict(tiny_config(tmp_path)))
    assert capsys.readouterr().out == ("no score: the evaluated images hold no ground-truth "
                                       "objects (mAP/AP undefined)\n")


# ------------------------------------------------------------------ divergence
@pytest.mark.parametrize("learning_rate, kept_step", [(1e30, None), (1e8, 2)],
                         ids=["before_any_checkpoint", "after_a_checkpoint"])
def test_a_diverged_run_stops_non_zero_and_says_what_is_kept(tmp_path, capsys, learning_rate,
                                                             kept_step):
    config = write_config(tmp_path, tiny_config(tmp_path, learning_rate=learning_rate,
                                                clipnorm=None, steps=8))
    run = tmp_path / "run"
    code, out, err = _train(["--config", config, "--out", run, "--eval-images", "1"], capsys)
    assert code == 1 and err.startswith("error: training diverged: loss became nan at step ")
    assert "mAP" not in out
    assert not (run / "final.weights.h5").exists()
    metrics = _metrics(run)
    assert metrics["status"] == "diverged" and metrics["metrics"] == {}
    checkpoints = sorted((run / "checkpoints").glob("step-*")) if (run / "checkpoints").exists() \
        else []
    if kept_step is None:
        assert checkpoints == [] and metrics["kept_checkpoint"] is None
        assert (f"no checkpoint had been written yet (nothing in {run / 'checkpoints'}), so no "
                "trained state is kept") in err
    else:
        kept = run / "checkpoints" / f"step-{kept_step:08d}"
        assert checkpoints == [kept] and metrics["kept_checkpoint"] == str(kept)
        assert f"the last finite checkpoint is kept: {kept} (step {kept_step})" in err
        assert _all_finite(kept / "state.weights.h5")
    assert metrics["diverged_at_step"] == int(re.search(r"at step (\d+)", err).group(1))


@pytest.mark.parametrize("before, kept", [
    (None, False), ('{"status": "finished", "steps": 8}', True), ('{"steps": 8}', True),
    ('{"status": "diverged", "diverged_at_step": 3}', False), ("{torn", False)],
    ids=["none", "finished", "finished_before_statuses", "earlier_divergence", "unreadable"])
def test_a_divergence_record_never_replaces_a_finished_runs_metrics(tmp_path, before, kept):
    from detection.engine.train import _record_divergence
    from keras_resnet_suite.training import TrainingDiverged

    path = tmp_path / "metrics.json"
    if before is not None:
        path.write_text(before)
    _record_divergence(tmp_path, TrainingDiverged("training diverged: ...", 5, None))
    if kept:
        assert path.read_text() == before
    else:
        assert _metrics(tmp_path) == {"status": "diverged", "diverged_at_step": 5,
                                      "kept_checkpoint": None,
                                      "message": "training diverged: ...", "metrics": {}}


def _nan_batches(n_batches=6, nan_batch=None, classes=3):
    rng = np.random.default_rng(0)
    x = rng.random((4 * n_batches, 32, 32, 3), dtype=np.float32)
    if nan_batch is not None:
        x[4 * nan_batch: 4 * (nan_batch + 1)] = np.nan
    y = rng.integers(0, classes, len(x)).astype(np.int32)
    ds = tf.data.Dataset.from_tensor_slices((x, y)).batch(4)
    return lambda start: ds.repeat().skip(start)


@pytest.mark.parametrize("nan_batch, step, kept", [(0, 2, None), (3, 4, 3)],
                         ids=["first_batch", "after_a_checkpoint"])
def test_classification_divergence_raises_naming_the_kept_checkpoint(tmp_path, nan_batch, step,
                                                                     kept):
    """NaN images leave this loss finite but poison batch norm's moving statistics: the
    checkpoint writer finds the non-finite state at its next interval and stops there."""
    import keras_resnet_suite as krs
    from keras_resnet_suite import training

    def model():
        net = krs.build("resnet18", depths=(1, 1, 1, 1), widths=(8, 16, 16, 16), classes=3,
                        input_shape=(32, 32, 3))
        recipe = training.get_recipe("paper-cifar", global_batch_size=4, total_steps=6)
        recipe.compile(net)
        return net, recipe

    net, recipe = model()
    with pytest.raises(training.TrainingDiverged) as err:
        training.fit_resumable(net, _nan_batches(nan_batch=nan_batch), steps_per_epoch=3,
                               epochs=2, backup_dir=tmp_path / "bk", save_freq=2, verbose=0,
                               callbacks=recipe.callbacks())
    assert err.value.step == step and int(net.optimizer.iterations) == step
    assert f"the loss or the weights became non-finite by step {step}" in str(err.value)
    if kept is None:
        assert err.value.checkpoint is None and "no checkpoint had been written yet" in str(
            err.value)
        assert not list((tmp_path / "bk").glob("step-*"))
    else:
        path = tmp_path / "bk" / f"step-{kept:08d}"
        assert err.value.checkpoint == path
        assert f"the last finite checkpoint is kept: {path} (step {kept})" in str(err.value)
        fresh, _ = model()
        assert training.BackupAndRestore(tmp_path / "bk").restore(fresh) == kept
        assert training.weights_finite(fresh)


def test_backup_stops_a_nan_run_even_without_a_nan_guard(tmp_path):
    from keras_resnet_suite import training

    inputs = keras.Input((32, 32, 3))
    x = keras.layers.GlobalAveragePooling2D()(keras.layers.Conv2D(4, 3)(inputs))
    model = keras.Model(inputs, keras.layers.Dense(3)(x))
    model.compile(keras.optimizers.SGD(0.01),
                  keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    with pytest.raises(training.TrainingDiverged, match="non-finite by step 2; training "
                                                        "stopped"):
        training.fit_resumable(model, _nan_batches(nan_batch=1), steps_per_epoch=6, epochs=1,
                               backup_dir=tmp_path / "bk", save_freq=1, verbose=0)
    assert int(model.optimizer.iterations) == 2  # stopped at the NaN, not 4 steps later
    assert [s for s, _ in training.BackupAndRestore(tmp_path / "bk").checkpoints()] == [1]


# ------------------------------------------------------------------ resume, nothing lost
def test_resume_reports_the_runs_first_epoch_and_a_later_failure_loses_nothing(
        tmp_path, capsys, monkeypatch):
    import detection.engine.train as engine
    from keras_resnet_suite.training.schedules import WarmupStepLR

    config = write_config(tmp_path, tiny_config(tmp_path))
    run = tmp_path / "run"
    common = ["--config", config, "--out", run, "--eval-images", "1"]
    assert _train([*common, "--steps", "4"], capsys)[0] == 0
    code, out, _ = _train([*common, "--steps", "8"], capsys)
    assert code == 0 and "resuming from step 4 of 8" in out
    rows = list(csv.DictReader((run / "history.csv").open()))
    first, last = float(rows[0]["loss"]), float(rows[1]["loss"])
    assert len(rows) == 2 and first != last
    assert f"loss: first epoch {first:.4f}, last epoch {last:.4f} (8 steps" in out
    metrics = _metrics(run)
    assert (metrics["loss_first_epoch"], metrics["loss_last_epoch"]) == (first, last)
    assert metrics["status"] == "finished" and metrics["steps"] == 8

    saved = {name: (run / name).read_bytes() for name in ("final.weights.h5", "metrics.json")}
    checkpoints = sorted(p.name for p in (run / "checkpoints").iterdir())
    assert checkpoints == ["step-00000006", "step-00000008"]

    # another config in the same folder: refused, nothing touched
    record = (run / "config.yaml").read_bytes()
    other = write_config(tmp_path, tiny_config(tmp_path, learning_rate=0.1), "other.yaml")
    code, _, err = _train(["--config", other, "--out", run, "--steps", "12"], capsys)
    assert code == 2 and "holds a different run (train.learning_rate: 0.01 -> 0.1" in err
    # the finished run asked for fewer steps: refused naming its step count, nothing rewritten
    code, out, err = _train([*common, "--steps", "4"], capsys)
    assert (code, err) == (2, f"error: {run / 'checkpoints'} holds a run trained for 8 steps, "
                              "more than the 4 asked for; a finished run is not shortened: ask "
                              "for at least 8 steps (the same run, or longer) or choose another "
                              "folder\n")
    assert (run / "config.yaml").read_bytes() == record
    assert {name: (run / name).read_bytes() for name in saved} == saved
    # the same run, longer, diverging (an absurd learning rate swapped in): exit 1, and the
    # finished run's final weights, metrics and finite checkpoints are all still there
    monkeypatch.setattr(engine, "_schedule",
                        lambda train: WarmupStepLR(1e30, [], 0.1, 0, train.warmup_factor))
    code, out, err = _train([*common, "--steps", "12"], capsys)
    assert code == 1 and "resuming from step 8 of 12" in out
    kept = run / "checkpoints" / "step-00000008"
    assert f"the last finite checkpoint is kept: {kept} (step 8)" in err
    assert f"{run / 'metrics.json'} of the earlier finished run is kept" in out
    assert {name: (run / name).read_bytes() for name in saved} == saved
    assert kept.is_dir() and _all_finite(kept / "state.weights.h5")
    assert _all_finite(run / "final.weights.h5")


def _class_folder(root: Path) -> Path:
    """A CIFAR-style folder: 10 classes x 4 train / 1 test 32x32 PNGs."""
    from PIL import Image

    rng = np.random.default_rng(0)
    for split, n in (("train", 4), ("test", 1)):
        for c in range(10):
            folder = root / split / f"c{c}"
            folder.mkdir(parents=True)
            for i in range(n):
                pixels = rng.integers(0, 256, (32, 32, 3)) // 4 + 20 * c
                Image.fromarray(pixels.astype(np.uint8)).save(folder / f"{i}.png")
    return root


def test_classification_cli_divergence_exits_non_zero_and_loses_nothing(tmp_path, capsys,
                                                                        monkeypatch):
    from keras_resnet_suite import cli
    from keras_resnet_suite.training import recipes

    monkeypatch.setenv("KRS_CACHE_DIR", str(tmp_path / "cache"))
    run = tmp_path / "run"
    args = ["train", "--model", "resnet20", "--data-dir", _class_folder(tmp_path / "data"),
            "--out", run, "--steps", "4", "--batch-size", "8", "--save-every", "2",
            "--verbose", "0", "--jit-compile", "false"]
    assert cli.main(list(map(str, args))) == 0
    saved = {name: (run / name).read_bytes() for name in ("model.keras", "summary.json",
                                                          "run.json")}
    shorter = list(args)  # the finished run asked for less
    shorter[shorter.index("--steps") + 1] = "2"
    with pytest.raises(SystemExit, match=r"holds a different run \(total_steps: 4 -> 2\)"):
        cli.main(list(map(str, shorter)))
    assert {name: (run / name).read_bytes() for name in saved} == saved
    # as if killed after step 2 but with its model.keras from before: resume, and diverge
    for path in (run / "backup" / "step-00000004").iterdir():
        path.unlink()
    (run / "backup" / "step-00000004").rmdir()
    monkeypatch.setattr(recipes.Recipe, "lr", property(lambda self: 1e30))
    capsys.readouterr()
    assert cli.main(list(map(str, args))) == 1
    kept = run / "backup" / "step-00000002"
    out, err = capsys.readouterr()
    message = err.strip().splitlines()[-1]
    assert message.startswith("error: training diverged: ") and "Traceback" not in err
    assert f"the last finite checkpoint is kept: {kept} (step 2)" in message
    assert "resuming from step 2 of 4" in out
    assert {name: (run / name).read_bytes() for name in saved} == saved
    assert [p.name for p in (run / "backup").iterdir()] == ["step-00000002"]
    assert json.loads(saved["summary.json"], parse_constant=_refuse_constant)["iterations"] == 4


# ------------------------------------------------------------------ NaN / inf images
def _tiny_detector():
    from detection import FasterRCNN

    return FasterRCNN(3, backbone="resnet18", head="c4", image_size=(32, 32),
                      backbone_kwargs={"depths": (1, 1, 1, 1), "widths": (8, 8, 8, 8),
                                       "stem_width": 8},
                      anchor_sizes=(8, 16), rpn_pre_nms_topk=(50, 50),
                      rpn_post_nms_topk=(8, 8), rpn_batch_size=16, roi_batch_size=8,
                      roi_pooled_size=4, max_detections=4, fc_dims=(8,), seed=0)


@pytest.fixture(scope="module")
def detector():
    model = _tiny_detector()
    model.compile(optimizer=keras.optimizers.SGD(0.001))
    return model


def _elements(bad_index, value, with_ids=True):
    images = np.full((4, 24, 24, 3), 90.0, np.float32)
    if bad_index is not None:
        images[bad_index, 5, 7, 1] = value
    data = {"images": images,
            "bounding_boxes": {"boxes": np.tile(np.float32([[2, 2, 14, 14]]), (4, 1, 1)),
                               "labels": np.zeros((4, 1), np.int32)}}
    if with_ids:
        data["image_id"] = np.array([f"photo_{i}.jpg" for i in range(4)])
    return tf.data.Dataset.from_tensor_slices(data)


@pytest.mark.parametrize("bad_index, value", [(1, np.nan), (3, np.inf), (0, -np.inf)])
def test_nan_images_in_training_batches_are_a_value_error_naming_the_image(
        detector, bad_index, value):
    from detection.data.pipeline import training_batches

    batches = training_batches(_elements(bad_index, value), (32, 32), 2, max_boxes=2,
                               flip=False)
    with pytest.raises(ValueError) as err:
        detector.fit(batches, epochs=1, verbose=0)
    assert str(err.value) == (f"image 'photo_{bad_index}.jpg' (element {bad_index} of the "
                              "stream) contains NaN or inf values; clean or drop these images "
                              "before detection")


def _ready_batches(n, batch, bad_index):
    """`n` images in batches of `batch`, padded to 2 boxes as `training_batches` makes them
    (one shape for every test: the detector's train function is traced once)."""
    images = np.full((n, 32, 32, 3), 90.0, np.float32)
    images[bad_index, 1, 2, 0] = np.nan
    boxes = np.tile(np.array([[2, 2, 14, 14], [0, 0, 0, 0]], np.float32), (n, 1, 1))
    labels = np.tile(np.array([0, -1], np.int32), (n, 1))
    return tf.data.Dataset.from_tensor_slices({
        "images": images, "bounding_boxes": {"boxes": boxes, "labels": labels}}).batch(
        batch, drop_remainder=True)


@pytest.mark.parametrize("bad_index", [0, 3, 5])
def test_nan_images_in_ready_batches_name_the_batch_and_element(detector, bad_index):
    with pytest.raises(ValueError) as err:
        detector.fit(_ready_batches(6, 2, bad_index), epochs=1, verbose=0)
    assert str(err.value) == (f"batch {bad_index // 2}, element {bad_index % 2}: the image "
                              "contains NaN or inf values; clean or drop these images before "
                              "detection")


def test_a_failed_check_is_told_from_other_tensorflow_errors():
    from detection.data.pipeline import CHECK_END, CHECK_TAG, data_error

    tagged = tf.errors.InvalidArgumentError(None, None, f"assertion failed: [{CHECK_TAG}image "
                                            f"\\'a]b.jpg\\' broke{CHECK_END}]\n\t [[node]]")
    assert str(data_error(tagged)) == "image 'a]b.jpg' broke"
    assert data_error(tf.errors.InvalidArgumentError(None, None, "Incompatible shapes")) is None


MIRRORED = textwrap.dedent("""
    import sys
    import numpy as np, tensorflow as tf
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    import keras
    sys.path.insert(0, sys.argv[1])
    from test_training import _ready_batches, _tiny_detector
    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    with strategy.scope():
        model = _tiny_detector()
        model.compile(optimizer=keras.optimizers.SGD(0.001))
    ds = _ready_batches(12, 4, 6)
    try:
        model.fit(ds, epochs=1, verbose=0)
    except ValueError as err:
        print("VALUEERROR " + str(err))
""")


def test_nan_images_are_a_value_error_under_mirrored_strategy(tmp_path):
    script = tmp_path / "mirrored.py"
    script.write_text(MIRRORED)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), str(Path(__file__).parent)]),
           "TF_CPP_MIN_LOG_LEVEL": "3"}
    proc = subprocess.run([sys.executable, str(script), str(Path(__file__).parent)],
                          capture_output=True, text=True, env=env, timeout=300)
    lines = [x for x in proc.stdout.splitlines() if x.startswith("VALUEERROR ")]
    assert lines == ["VALUEERROR batch 1, element 2: the image contains NaN or inf values; "
                     "clean or drop these images before detection"], proc.stderr[-3000:]
