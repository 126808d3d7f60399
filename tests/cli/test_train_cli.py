"""`keras-resnet-suite train | evaluate | export` on a tiny CIFAR-style image folder."""

import json
import shutil

import numpy as np
import pytest

keras = pytest.importorskip("keras")
if keras.backend.backend() != "tensorflow":
    pytest.skip("the CLI trains with tf.data / tf.distribute", allow_module_level=True)

from keras_resnet_suite import cli  # noqa: E402

CLASSES = [f"c{i}" for i in range(10)]


@pytest.fixture
def folder(tmp_path, monkeypatch):
    """10 classes x 4 train / 2 test 32x32 PNGs, plus one non-image file that must be skipped."""
    from PIL import Image

    monkeypatch.setenv("KRS_CACHE_DIR", str(tmp_path / "cache"))
    rng = np.random.default_rng(0)
    root = tmp_path / "tiny-cifar"
    for split, n in (("train", 4), ("test", 2)):
        for c, name in enumerate(CLASSES):
            d = root / split / name
            d.mkdir(parents=True)
            for i in range(n):
                pixels = rng.integers(0, 256, (32, 32, 3)) // 4 + 24 * c  # class-dependent
                Image.fromarray(pixels.astype(np.uint8)).save(d / f"{i}.png")
    (root / "train" / "c3" / "notes.png").write_text("not an image")
    return root


def _train_args(folder, out, *extra):
    return ["train", "--model", "resnet20", "--data", "cifar10", "--data-dir", str(folder),
            "--recipe", "paper-cifar", "--out", str(out), "--steps", "4", "--batch-size", "8",
            "--save-every", "2", "--verbose", "0", "--jit-compile", "false", *extra]  # fmt: skip


def test_train_resume_evaluate_export(folder, tmp_path, capsys):
    run = tmp_path / "run"
    # MirroredStrategy over the one local device: the same code path as a multi-GPU run
    assert cli.main(_train_args(folder, run, "--strategy", "mirrored")) == 0
    text = capsys.readouterr().out
    assert "skipped 1 file(s)" in text and "notes.png: not an image" in text
    assert "resnet20 on cifar10 (paper-cifar): 4/4 iterations" in text
    assert "on 1 replica(s)" in text
    for name in ("run.json", "model.keras", "history.csv", "error_curves.png", "summary.json",
                 "normalization.npz", "backup/step-00000004"):  # fmt: skip
        assert (run / name).exists(), name
    cfg = json.loads((run / "run.json").read_text())
    assert cfg["total_steps"] == 4 and cfg["class_names"] == CLASSES
    summary = json.loads((run / "summary.json").read_text())
    assert summary["iterations"] == 4 and summary["epochs_of_data"] == 0.8  # 4 of 5 batches

    # a run killed after step 2: its newer files are gone; the same command resumes at step 2
    shutil.rmtree(run / "backup" / "step-00000004")
    (run / "model.keras").unlink()
    assert cli.main(_train_args(folder, run)) == 0
    text = capsys.readouterr().out
    assert "resuming from step 2 of 4" in text
    assert json.loads((run / "summary.json").read_text())["iterations"] == 4
    assert cli.main(_train_args(folder, run)) == 0  # finished: nothing left to do
    assert "already trained for 4 of 4 steps" in capsys.readouterr().out

    with pytest.raises(SystemExit, match="holds a different run .*total_steps: 4 -> 6"):
        cli.main(_train_args(folder, run, "--steps", "6"))

    assert cli.main(["evaluate", "--run", str(run), "--mode", "center", "ten-crop",
                     "multiscale"]) == 0  # fmt: skip
    results = json.loads((run / "evaluation.json").read_text())
    assert set(results) == {"center", "ten-crop", "multiscale"}
    for r in results.values():
        assert r["images"] == 20 and 0.0 <= r["top1_error"] <= 1.0
        assert r["top5_error"] <= r["top1_error"]
    summary = json.loads((run / "summary.json").read_text())
    assert results["center"]["top1_error"] == pytest.approx(summary["test_error"], abs=1e-4)

    served = tmp_path / "served"
    assert cli.main(["export", "--run", str(run), "--out", str(served), "--top-k", "3"]) == 0
    import tensorflow as tf

    loaded = tf.saved_model.load(str(served))
    png = (folder / "test" / "c7" / "0.png").read_bytes()
    out = loaded.signatures["serving_bytes"](image_bytes=tf.constant([png]))
    labels = [s.decode() for s in out["top_k_labels"].numpy()[0]]
    assert len(labels) == 3 and set(labels) <= set(CLASSES)
    # the in-graph preprocessing used the run's per-pixel mean: same as Keras on x - mean
    with np.load(run / "normalization.npz") as z:
        mean = z["mean"]
    from PIL import Image

    x = np.asarray(Image.open(folder / "test" / "c7" / "0.png"), np.float32) - mean
    model = keras.saving.load_model(run / "model.keras")
    np.testing.assert_allclose(out["probabilities"].numpy(), model(x[None], training=False),
                               atol=1e-5)  # fmt: skip


@pytest.mark.parametrize("change, message", [
    (("--data-dir", "/nonexistent/cifar"), "--data-dir /nonexistent/cifar does not exist"),
    (("--recipe", "fast"), "unknown --recipe 'fast'; valid: paper-cifar"),
    (("--model", "resnet21"), "unknown --model 'resnet21'"),
])  # fmt: skip  (--steps 0: argparse's exit 2, tests/hostile/test_configs.py)
def test_bad_arguments_are_named(tmp_path, change, message):
    args = _train_args(tmp_path, tmp_path / "run")
    i = args.index(change[0])
    args[i + 1] = change[1]
    with pytest.raises(SystemExit, match=message.replace("(", r"\(")):
        cli.main(args)
    assert not (tmp_path / "run").exists()


def test_evaluate_and_export_need_a_run(tmp_path):
    with pytest.raises(SystemExit, match="is not a run directory"):
        cli.main(["evaluate", "--run", str(tmp_path)])
    with pytest.raises(SystemExit, match="is not a run directory"):
        cli.main(["export", "--run", str(tmp_path), "--out", str(tmp_path / "x")])


def test_fit_schedule_covers_exactly_the_requested_iterations():
    from keras_resnet_suite.train_cli import _fit_schedule

    assert _fit_schedule(64_000, 390) == (320, 200)  # the paper's 64k at batch 128
    assert _fit_schedule(390, 390) == (390, 1)
    assert _fit_schedule(100, 390) == (100, 1)  # shorter than an epoch: one interval
    assert _fit_schedule(780, 390) == (390, 2)
    assert _fit_schedule(1009, 390) == (390, 3)  # a prime: rounded up to whole epochs


def test_fine_tune_from_a_published_checkpoint_with_multipliers(folder, tmp_path, capsys):
    from pathlib import Path

    weights = (Path(__file__).resolve().parents[3] / "shared" / "data" /
               "cifar-resnet-checkpoints" / "resnet20-12fca82f.th")
    if not weights.is_file():
        pytest.skip(f"published CIFAR checkpoint absent: {weights}")
    run = tmp_path / "tuned"
    args = _train_args(folder, run, "--weights", str(weights), "--freeze-at", "2",
                       "--lr-mult", "*=0.1", "--lr-mult", "predictions=1")
    args[args.index("--recipe") + 1] = "fine-tune"
    assert cli.main(args) == 0
    assert "resnet20 on cifar10 (fine-tune): 4/4 iterations" in capsys.readouterr().out
    cfg = json.loads((run / "run.json").read_text())
    assert (cfg["weights"], cfg["freeze_at"], cfg["lr_multipliers"]) == (
        str(weights), 2, {"*": 0.1, "predictions": 1.0})
    model = keras.saving.load_model(run / "model.keras")
    assert model.optimizer.multipliers == {"*": 0.1, "predictions": 1.0}
    assert [layer.name for layer in model.layers if not layer.trainable] == ["conv1", "conv2_x"]
    # another multiplier is another run: refused, the run directory kept
    with pytest.raises(SystemExit, match="lr_multipliers"):
        cli.main([*args[:-1], "predictions=2"])
    with pytest.raises(SystemExit) as err:
        cli.main([*args[:-4], "--lr-mult", "conv_9=0.1", "--out", str(tmp_path / "other")])
    assert str(err.value).startswith("error: --lr-mult: pattern(s) 'conv_9' match no layer of "
                                     "resnet20 (its layers with weights: conv1, conv2_x,")
    with pytest.raises(SystemExit, match=r"^error: --freeze-at must be in \[0, 4\] for resnet20"):
        cli.main([*args, "--freeze-at", "9", "--out", str(tmp_path / "other")])
    assert not (tmp_path / "other").exists()  # nothing written that would refuse the fix
