"""Per-layer learning-rate multipliers (`LayerLRMultiplier`), the fine-tune recipe and its flags,
checked against hand-computed updates on a two-layer linear model."""

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import keras
import numpy as np
import pytest

from keras_resnet_suite import cli, training
from keras_resnet_suite.schema import LR_MULTIPLIERS
from keras_resnet_suite.training import SGDL2, LayerLRMultiplier, WarmupCosine, get_recipe
from keras_resnet_suite.training.lr_multipliers import multiplier_for, scale_trunk

REPO = Path(__file__).resolve().parents[2]
X = np.random.RandomState(0).randn(8, 4).astype("float32")
Y = np.random.RandomState(1).randn(8, 2).astype("float32")


def _linear():
    """body: h = x W1 + b1 (3 units); head: out = h W2 + b2; MSE. Seeded, so every call is the
    same model."""
    keras.utils.set_random_seed(1)
    inputs = keras.Input((4,))
    h = keras.layers.Dense(3, name="body", bias_initializer="ones")(inputs)
    return keras.Model(inputs, keras.layers.Dense(2, name="head")(h))


def _weights(model):
    return {v.path: np.array(v.numpy()) for v in model.trainable_variables}


def _step(optimizer, steps=1, model=None):
    """(weights before, weights after `steps` full-batch steps) of `_linear` under `optimizer`."""
    model = model or _linear()
    before = _weights(model)
    model.compile(optimizer=optimizer, loss="mse")
    model.fit(X, Y, batch_size=8, epochs=steps, verbose=0, shuffle=False)
    return before, _weights(model)


def _grads(w):
    """The exact MSE gradients of `_linear` at weights `w` (float64)."""
    w = {k: v.astype(np.float64) for k, v in w.items()}
    h = X @ w["body/kernel"] + w["body/bias"]
    r = 2 * (h @ w["head/kernel"] + w["head/bias"] - Y) / Y.size
    dh = r @ w["head/kernel"].T
    return {"head/kernel": h.T @ r, "head/bias": r.sum(0), "body/kernel": X.T @ dh,
            "body/bias": dh.sum(0)}


pytestmark = pytest.mark.jax


def test_patterns_match_layers_by_path_and_the_last_match_wins():
    m = {"*": 0.1, "predictions": 1.0, "conv2_x/block1": 0.0}
    assert multiplier_for("conv1/conv/kernel", m) == 0.1
    assert multiplier_for("predictions/kernel", m) == 1.0
    assert multiplier_for("conv2_x/block1/conv1/kernel", m) == 0.0
    assert multiplier_for("conv2_x/block2/conv1/kernel", m) == 0.1
    # `conv1` is the stem, not every layer named conv1 inside a block
    assert multiplier_for("conv2_x/block1/conv1/kernel", {"conv1": 0.5}) == 1.0
    assert multiplier_for("conv3_x/block1/bn1/gamma", {"conv*_x": 0.2}) == 0.2
    assert multiplier_for("conv3_x/block1/bn1/gamma", {"**/bn1": 0.3}) == 0.3


def test_zero_multiplier_leaves_weights_bit_identical_while_the_head_moves():
    for opt in (SGDL2(0.1, momentum=0.9, l2=1e-2),
                keras.optimizers.AdamW(0.1, weight_decay=0.5)):
        wrapped = LayerLRMultiplier(opt, {"body": 0.0})
        before, after = _step(wrapped, steps=3)
        for k in ("body/kernel", "body/bias"):
            assert np.array_equal(before[k], after[k]), (type(opt).__name__, k)
        for k in ("head/kernel", "head/bias"):
            assert (after[k] != before[k]).all(), (type(opt).__name__, k)
        assert int(wrapped.iterations) == 3


def test_point_one_moves_sgd_by_the_exact_scaled_step_l2_included():
    # momentum's buffer is 0 at the first step: w1 = w0 - lr * mult * (g + l2 * w0)
    lr, l2 = 0.1, 1e-2
    before, after = _step(LayerLRMultiplier(SGDL2(lr, momentum=0.9, l2=l2), {"body": 0.1}))
    g = _grads(before)
    for k, mult in (("body/kernel", 0.1), ("body/bias", 0.1), ("head/kernel", 1.0),
                    ("head/bias", 1.0)):
        expected = before[k] - lr * mult * (g[k] + l2 * before[k])
        np.testing.assert_allclose(after[k], expected, rtol=2e-5, atol=1e-7, err_msg=k)
    _, plain = _step(SGDL2(lr, momentum=0.9, l2=l2))
    body = after["body/kernel"] - before["body/kernel"]
    # differences of float32 weights: good to an ulp of the weight (~6e-8), not of the step
    np.testing.assert_allclose(body, 0.1 * (plain["body/kernel"] - before["body/kernel"]),
                               rtol=2e-5, atol=1e-7)


def test_adam_and_adamw_steps_and_decoupled_decay_scale_with_the_multiplier():
    # Adam's step is lr * m / (sqrt(v) + eps): a scaled gradient cancels out, a scaled rate
    # does not. AdamW's decoupled decay w -= lr * wd * w is scaled with the rate (PyTorch's
    # parameter groups), so the whole update of a 0.1x layer is 0.1x the plain one.
    for make in (lambda: keras.optimizers.Adam(0.01),
                 lambda: keras.optimizers.AdamW(0.01, weight_decay=0.5)):
        before, plain = _step(make(), steps=2)
        _, same = _step(LayerLRMultiplier(make(), {}), steps=2)
        for k in plain:  # no multiplier: Keras' own numbers, bit for bit
            assert np.array_equal(same[k], plain[k]), k
        # one step (from the same gradient): exactly 0.1x the plain step, decay included
        before, plain = _step(make())
        _, scaled = _step(LayerLRMultiplier(make(), {"body": 0.1}))
        for k in ("body/kernel", "body/bias"):
            np.testing.assert_allclose(scaled[k] - before[k], 0.1 * (plain[k] - before[k]),
                                       rtol=1e-4, atol=1e-7, err_msg=k)
    # the contrast: scaling Adam's gradient by 0.1 hardly changes its first step
    g = _grads(before)["body/kernel"]
    m, v = 0.1 * g * 0.1, 0.001 * (0.1 * g) ** 2  # beta1 = 0.9, beta2 = 0.999, one step
    adam_step = 0.01 * (m / 0.1) / (np.sqrt(v / 0.001) + 1e-7)
    np.testing.assert_allclose(adam_step, 0.01 * np.sign(g), rtol=1e-3)


def test_keras_file_and_checkpoint_resume_reproduce_an_uninterrupted_run(tmp_path):
    def make():
        return LayerLRMultiplier(SGDL2(WarmupCosine(0.1, 6, 2), momentum=0.9, l2=1e-3),
                                 {"body": 0.1})

    _, straight = _step(make(), steps=4)
    model = _linear()
    _step(make(), steps=2, model=model)
    model.save(tmp_path / "half.keras")
    model.save_weights(tmp_path / "half.weights.h5")
    loaded = keras.saving.load_model(tmp_path / "half.keras")
    assert isinstance(loaded.optimizer, LayerLRMultiplier)
    assert loaded.optimizer.multipliers == {"body": 0.1}
    assert int(loaded.optimizer.iterations) == 2
    loaded.fit(X, Y, batch_size=8, epochs=2, verbose=0, shuffle=False)
    fresh = _linear()  # a checkpoint (weights + optimizer state) into a newly compiled model
    fresh.compile(optimizer=make(), loss="mse")
    fresh.optimizer.build(fresh.trainable_variables)
    fresh.load_weights(tmp_path / "half.weights.h5")
    fresh.fit(X, Y, batch_size=8, epochs=2, verbose=0, shuffle=False)
    for resumed in (loaded, fresh):
        got = _weights(resumed)
        for k in straight:
            np.testing.assert_allclose(got[k], straight[k], rtol=1e-6, atol=1e-7, err_msg=k)


def test_loss_scaling_gradient_accumulation_and_ema_go_through_the_wrapper():
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:  # compile puts Keras' LossScaleOptimizer around the wrapper
        model = _linear()
        before, after = _step(LayerLRMultiplier(SGDL2(0.1), {"body": 0.0}), 2, model)
    finally:
        keras.mixed_precision.set_global_policy("float32")
    assert type(model.optimizer).__name__ == "LossScaleOptimizer"
    assert np.array_equal(before["body/kernel"], after["body/kernel"])
    assert not np.array_equal(before["head/kernel"], after["head/kernel"])
    adam = keras.optimizers.Adam(0.1, gradient_accumulation_steps=2, use_ema=True)
    before, after = _step(LayerLRMultiplier(adam, {"body": 0.0}), 2)
    assert np.array_equal(before["body/kernel"], after["body/kernel"])
    assert not np.array_equal(before["head/kernel"], after["head/kernel"])


def test_schedule_and_learning_rate_reach_the_wrapped_optimizer():
    schedule = WarmupCosine(0.1, 10, 2)
    opt = LayerLRMultiplier(SGDL2(schedule), {"body": 0.5})
    assert training.schedules.schedule_of(keras.optimizers.LossScaleOptimizer(opt)) is schedule
    plain = LayerLRMultiplier(SGDL2(0.1), {"body": 0.5})
    plain.learning_rate = 0.01  # what ReduceLROnPlateau does
    assert float(plain.inner_optimizer.learning_rate) == pytest.approx(0.01)
    with pytest.raises(ValueError, match="wraps a plain optimizer, not a LayerLRMultiplier"):
        LayerLRMultiplier(opt, {})


@pytest.mark.parametrize("text, message", [
    ("conv1=abc", "--lr-mult: multiplier 'abc' in 'conv1=abc' is not a number"),
    ("=0.1", "--lr-mult: '=0.1' is not PATTERNS=MULTIPLIER (e.g. 'conv1,conv2_x=0.1')"),
    ("conv1", "--lr-mult: 'conv1' is not PATTERNS=MULTIPLIER (e.g. 'conv1,conv2_x=0.1')"),
    ("conv1=-1", "--lr-mult['conv1'] must be a finite number >= 0, got -1.0"),
    ("conv1=nan", "--lr-mult['conv1'] must be a finite number >= 0, got nan"),
    ("conv 1=0.1", "--lr-mult: 'conv 1' is not a layer pattern"),
])
def test_bad_multipliers_are_one_line_naming_the_flag(text, message):
    with pytest.raises(ValueError) as err:
        LR_MULTIPLIERS.check(text, "--lr-mult")
    assert str(err.value).startswith(message)
    assert "\n" not in str(err.value)


def test_multiplier_text_parses_groups_in_order():
    assert LR_MULTIPLIERS.check("conv1,conv2_x=0.1; conv3_x=0.5", "--lr-mult") == {
        "conv1": 0.1, "conv2_x": 0.1, "conv3_x": 0.5}


def test_cli_refuses_a_bad_lr_mult_in_one_line_naming_the_flag(capsys):
    with pytest.raises(SystemExit):
        cli.main(["train", "--data-dir", ".", "--out", "x", "--lr-mult", "conv1=fast"])
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.endswith("argument --lr-mult: --lr-mult: multiplier 'fast' in 'conv1=fast' is "
                        "not a number")
    with pytest.raises(SystemExit) as ex:  # argparse's exit 2, as every bad flag
        cli.main(["train", "--data-dir", ".", "--out", "x", "--freeze-at", "-1"])
    assert ex.value.code == 2
    assert capsys.readouterr().err.strip().splitlines()[-1].endswith(
        "argument --freeze-at: --freeze-at must be an integer >= 0, got -1")
    with pytest.raises(SystemExit) as ex:
        cli.main(["train", "--data-dir", ".", "--out", "x", "--recipe", "fine-tune"])
    assert str(ex.value) == "error: --recipe fine-tune needs --weights (the pretrained checkpoint)"


def _tiny_resnet(classes=3):
    return training.finetune_model("resnet20", None, classes, depths=(1, 1, 1),
                                   input_shape=(8, 8, 3))


def test_fine_tune_recipe_freezes_scales_and_refuses_unknown_layers():
    recipe = get_recipe("fine-tune", global_batch_size=64, steps_per_epoch=10, freeze_at=2)
    assert (recipe.lr, recipe.total_steps, recipe.warmup_steps, recipe.label_smoothing) == (
        0.0125, 100, 10, 0.1)
    assert recipe.lr_multipliers == {"*": 0.1, "predictions": 1.0}
    model = _tiny_resnet()
    assert model.get_layer("predictions").units == 3
    recipe.compile(model)
    assert [layer.name for layer in model.layers if not layer.trainable] == ["conv1", "conv2_x"]
    opt = model.optimizer
    opt.build(model.trainable_variables)
    factors = {v.path.split("/")[0]: opt.multiplier_of(v) for v in model.trainable_variables}
    assert factors == {"conv3_x": 0.1, "conv4_x": 0.1, "predictions": 1.0}
    with pytest.raises(ValueError, match=r"recipe.lr_multipliers: pattern\(s\) 'conv_2' match "
                       r"no layer of resnet20 \(its layers with weights: conv1, conv2_x, "):
        get_recipe("fine-tune", total_steps=5, lr_multipliers={"conv_2": 0.1}).compile(
            _tiny_resnet())
    with pytest.raises(ValueError, match=r"recipe.freeze_at must be in \[0, 4\] for resnet20"):
        get_recipe("fine-tune", total_steps=5, freeze_at=5).compile(_tiny_resnet())
    with pytest.raises(ValueError, match="recipe 'fine-tune' needs total_steps or "
                       "steps_per_epoch"):
        get_recipe("fine-tune")


def test_fine_tune_model_keeps_the_published_weights_and_preprocessing():
    path = REPO.parent / "shared" / "data" / "cifar-resnet-checkpoints" / "resnet20-12fca82f.th"
    if not path.is_file():
        pytest.skip(f"published CIFAR checkpoint absent: {path}")
    import keras_resnet_suite as krs

    source = krs.ResNet20(weights=str(path))
    tuned = training.finetune_model("resnet20", str(path), 5)
    assert tuned.output_shape == (None, 5) and tuned.input_shape == (None, 32, 32, 3)
    assert tuned.preprocessing == source.preprocessing == "torch"
    src = {v.path: v.numpy() for v in source.variables}
    trunk = [v for v in tuned.variables if not v.path.startswith("predictions")]
    assert len(trunk) == len(src) - 2  # all but the old 10-way head
    for v in trunk:
        assert np.array_equal(v.numpy(), src[v.path]), v.path


@pytest.mark.tf_only
def test_detector_backbone_lr_mult_scales_the_resnet_layers_only():
    from detection.config import from_dict
    from detection.modeling import FasterRCNN

    model = FasterRCNN(3, backbone="resnet18", head="c4", image_size=(32, 32),
                       backbone_kwargs={"depths": (1, 1, 1, 1), "widths": (8, 8, 8, 8),
                                        "stem_width": 8}, anchor_sizes=(8, 16), fc_dims=(8,),
                       roi_pooled_size=4, seed=0)
    sgd = keras.optimizers.SGD(0.1)
    assert scale_trunk(model, sgd, 1.0) is sgd
    opt = scale_trunk(model, sgd, 0.1)
    opt.build(model.trainable_variables)
    factors = {v.path.split("/")[0]: opt.multiplier_of(v) for v in model.trainable_variables}
    assert {k for k, f in factors.items() if f == 0.1} == {"conv1", "conv2_x", "conv3_x",
                                                             "conv4_x", "conv5_x"}
    assert {k for k, f in factors.items() if f == 1.0} == {"rpn", "roi_heads"}
    raw = {"data": {"train": {"loader": "shapes", "num_images": 4}, "class_names": ["a"]},
           "train": {"steps": 1, "learning_rate": 0.01, "backbone_lr_mult": -0.1}}
    with pytest.raises(ValueError, match=r"^cfg.yaml: train.backbone_lr_mult must be a finite "
                       r"number >= 0, got -0.1$"):
        from_dict(raw, "cfg.yaml")


MIRRORED = textwrap.dedent("""
    import sys
    import numpy as np, tensorflow as tf
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    import keras
    sys.path.insert(0, sys.argv[1])
    from test_lr_mult import X, Y, _linear, _weights
    from keras_resnet_suite.training import SGDL2, LayerLRMultiplier

    def run(strategy):
        with strategy.scope():
            model = _linear()
            model.compile(optimizer=LayerLRMultiplier(
                keras.optimizers.AdamW(0.01, weight_decay=0.5), {"body": 0.1}), loss="mse")
        before = _weights(model)
        model.fit(X, Y, batch_size=8, epochs=2, verbose=0, shuffle=False)
        return before, _weights(model), model.optimizer

    b1, one, _ = run(tf.distribute.get_strategy())
    b2, two, opt = run(tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"]))
    assert opt._distribution_strategy.num_replicas_in_sync == 2
    worst = max(float(np.abs(two[k] - one[k]).max()) for k in one)
    moved = min(float(np.abs(one[k] - b1[k]).max()) for k in one)
    ratio = float(np.abs(two["body/kernel"] - b2["body/kernel"]).max() /
                  np.abs(two["head/kernel"] - b2["head/kernel"]).max())
    print(f"RESULT {worst:.3g} {moved:.3g} {ratio:.3g}")
""")


@pytest.mark.tf_only
def test_mirrored_strategy_gives_the_single_device_update(tmp_path):
    script = tmp_path / "mirrored.py"
    script.write_text(MIRRORED)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), str(Path(__file__).parent)]),
           "TF_CPP_MIN_LOG_LEVEL": "3", "KERAS_BACKEND": "tensorflow"}
    proc = subprocess.run([sys.executable, str(script), str(Path(__file__).parent)],
                          capture_output=True, text=True, env=env, timeout=300)
    lines = [x.split()[1:] for x in proc.stdout.splitlines() if x.startswith("RESULT ")]
    assert lines, proc.stderr[-3000:]
    worst, moved, ratio = map(float, lines[0])
    assert worst < 1e-6 and moved > 1e-3, (worst, moved)
    assert 0.05 < ratio < 0.2  # body at 0.1x on both replicas
