"""Recipes, schedules, SGD with coupled L2, label smoothing and mixup/cutmix, checked by hand."""

import math

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_resnet_suite import training
from keras_resnet_suite.training import (
    SGDL2,
    SmoothedCrossEntropy,
    StepDecay,
    WarmupCosine,
    get_recipe,
)


def test_unknown_recipe_lists_the_valid_names():
    with pytest.raises(ValueError, match="paper-cifar, paper-imagenet, modern"):
        get_recipe("paper-cifarr")


def test_paper_cifar_matches_section_4_2_and_scales_linearly():
    r = get_recipe("paper-cifar")
    assert (r.lr, r.global_batch_size, r.total_steps, r.boundaries) == (
        0.1,
        128,
        64000,
        [32000, 48000],
    )
    assert (r.momentum, r.l2, r.decay_norm_and_bias, r.warmup_lr) == (0.9, 1e-4, True, None)
    s = r.schedule()
    assert [float(s(k)) for k in (0, 31999, 32000, 48000, 63999)] == pytest.approx(
        [0.1, 0.1, 0.01, 0.001, 0.001]
    )
    r2 = get_recipe("paper-cifar", global_batch_size=256, steps_per_epoch=195)
    assert (
        r2.lr == pytest.approx(0.2) and r2.boundaries == [16000, 24000] and r2.total_steps == 32000
    )
    assert r2.epochs == math.ceil(32000 / 195)
    short = get_recipe("paper-cifar", total_steps=400)
    assert short.boundaries == [200, 300]


def test_paper_cifar_110_layers_warms_up_at_001():
    r = get_recipe("paper-cifar", depth=110)
    s = r.schedule()
    assert float(s(5)) == pytest.approx(0.01) and float(s(40000)) == pytest.approx(0.01)
    s.warmup_done = True
    assert float(s(5)) == pytest.approx(0.1) and float(s(50000)) == pytest.approx(0.001)
    assert any(isinstance(c, training.WarmupUntilError) for c in r.callbacks())
    assert get_recipe("paper-cifar", depth=56).warmup_lr is None


def test_paper_imagenet_steps_and_plateau():
    r = get_recipe("paper-imagenet")
    assert (r.lr, r.global_batch_size, r.total_steps) == (0.1, 256, 600_000)
    assert r.boundaries == [150_000, 300_000, 450_000]
    p = get_recipe("paper-imagenet", lr_policy="plateau", global_batch_size=512)
    assert p.schedule() == pytest.approx(0.2)
    assert any(isinstance(c, keras.callbacks.ReduceLROnPlateau) for c in p.callbacks())


@pytest.mark.jax
def test_modern_recipe_warmup_cosine_and_smoothing():
    r = get_recipe("modern", global_batch_size=512, steps_per_epoch=100, total_steps=1000)
    assert r.lr == pytest.approx(0.2) and r.label_smoothing == 0.1 and not r.decay_norm_and_bias
    assert r.nesterov and r.warmup_steps == 100
    s = r.schedule()
    assert float(s(0)) == pytest.approx(0.2 / 100)
    assert float(s(49)) == pytest.approx(0.1)
    assert float(s(100)) == pytest.approx(0.2)
    assert float(s(550)) == pytest.approx(0.1, abs=1e-6)  # half-way through the cosine
    assert float(s(1000)) == pytest.approx(0.0, abs=1e-7)
    with pytest.raises(ValueError, match="total_steps or steps_per_epoch"):
        get_recipe("modern")


def test_warmup_cosine_rejects_bad_spans():
    with pytest.raises(ValueError, match="warmup_steps"):
        WarmupCosine(0.1, total_steps=10, warmup_steps=20)


@pytest.mark.jax
def test_schedules_serialize():
    for s in (StepDecay(0.1, [5, 9], warmup_lr=0.01), WarmupCosine(0.1, 100, 10)):
        clone = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(s))
        assert [float(clone(k)) for k in (0, 6, 50)] == pytest.approx(
            [float(s(k)) for k in (0, 6, 50)]
        )


def test_mixed_precision_and_jit_switches():
    r = get_recipe("paper-cifar", mixed_precision="mixed_bfloat16", jit_compile=True)
    try:
        r.apply_precision()
        assert keras.mixed_precision.global_policy().name == "mixed_bfloat16"
        model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, activation="softmax")])
        r.compile(model)
        assert model.layers[0].compute_dtype == "bfloat16" and model.jit_compile
    finally:
        keras.mixed_precision.set_global_policy("float32")
    with pytest.raises(ValueError, match="mixed_precision"):
        get_recipe("paper-cifar", mixed_precision="fp8")


def _one_step(opt, value, grad):
    v = keras.Variable(np.array(value, np.float32))
    opt.apply([np.array(grad, np.float32)], [v])
    return v.numpy()


@pytest.mark.jax
def test_sgd_l2_is_coupled_and_spares_norm_and_bias():
    # m = 0.9*0 - lr*(g + l2*w); w += m  ->  1 - 0.1*(0.5 + 0.1*1) = 0.94
    w = _one_step(SGDL2(0.1, momentum=0.9, l2=0.1), [[1.0]], [[0.5]])
    np.testing.assert_allclose(w, [[0.94]], rtol=1e-6)
    w = _one_step(SGDL2(0.1, momentum=0.9, l2=0.1, decay_norm_and_bias=False), [1.0], [0.5])
    np.testing.assert_allclose(w, [0.95], rtol=1e-6)
    # second step: the L2 term goes through momentum (unlike Keras's decoupled weight_decay)
    opt, v = SGDL2(0.1, momentum=0.9, l2=0.1), keras.Variable(np.ones((1, 1), np.float32))
    for _ in range(2):
        opt.apply([np.full((1, 1), 0.5, np.float32)], [v])
    m1 = -0.1 * 0.6
    m2 = 0.9 * m1 - 0.1 * (0.5 + 0.1 * (1 + m1))
    np.testing.assert_allclose(v.numpy(), [[1 + m1 + m2]], rtol=1e-6)


@pytest.mark.jax
def test_smoothed_cross_entropy_by_hand_and_against_keras():
    p = np.array([[0.7, 0.2, 0.1]], np.float32)
    t = np.array([0.9 + 0.1 / 3, 0.1 / 3, 0.1 / 3])
    expect = -(t * np.log(p[0])).sum()
    loss = SmoothedCrossEntropy(0.1)
    assert float(loss(np.array([0]), p)) == pytest.approx(expect, rel=1e-6)
    assert float(loss(np.array([[1.0, 0, 0]], np.float32), p)) == pytest.approx(expect, rel=1e-6)
    logits = np.random.default_rng(0).normal(size=(5, 4)).astype(np.float32)
    labels = np.array([0, 3, 1, 2, 3])
    ref = keras.losses.CategoricalCrossentropy(from_logits=True, label_smoothing=0.1)
    ours = SmoothedCrossEntropy(0.1, from_logits=True)
    assert float(ours(labels, logits)) == pytest.approx(
        float(ref(np.eye(4)[labels], logits)), rel=1e-5
    )
    with pytest.raises(ValueError, match="label_smoothing"):
        SmoothedCrossEntropy(1.5)


def test_mixup_blends_images_and_targets_with_one_lambda():
    x = tf.random.uniform([4, 6, 6, 3], seed=1)
    y = tf.one_hot([0, 1, 2, 0], 3)
    mx, my = training.mixup(x, y, tf.constant([1, 2], tf.int64), alpha=0.4)
    lam = my.numpy()[1, 1]  # row 1 is lam * onehot(1) + (1 - lam) * onehot(2)
    np.testing.assert_allclose(my.numpy()[1], [0, lam, 1 - lam], atol=1e-6)
    np.testing.assert_allclose(mx, lam * x + (1 - lam) * tf.reverse(x, [0]), atol=1e-6)
    np.testing.assert_allclose(my.numpy().sum(1), 1.0, atol=1e-6)
    assert 0.0 < lam < 1.0


def test_cutmix_targets_follow_the_pasted_area():
    x = tf.concat([tf.zeros([1, 16, 16, 1]), tf.ones([1, 16, 16, 1])], 0)
    y = tf.one_hot([0, 1], 2)
    for s in range(5):
        mx, my = training.cutmix(x, y, tf.constant([s, 9], tf.int64), alpha=1.0)
        pasted = float(tf.reduce_mean(mx[0]))  # image 0 is zeros, so ones mark the box
        np.testing.assert_allclose(my[0], [1 - pasted, pasted], atol=1e-6)


def test_mix_batches_one_hots_and_is_seeded():
    ds = tf.data.Dataset.from_tensor_slices(
        (tf.random.uniform([8, 4, 4, 3], seed=3), tf.range(8) % 3)
    ).batch(4)
    a = [b for b in training.mix_batches(ds, 3, mixup_alpha=0.2, cutmix_alpha=1.0, seed=5)]
    b = [b for b in training.mix_batches(ds, 3, mixup_alpha=0.2, cutmix_alpha=1.0, seed=5)]
    assert a[0][1].shape == (4, 3)
    for (x1, y1), (x2, y2) in zip(a, b, strict=True):
        np.testing.assert_array_equal(x1, x2)
        np.testing.assert_array_equal(y1, y2)


@pytest.mark.jax
def test_warmup_step_lr_is_detectron2s_and_round_trips():
    from keras_resnet_suite.training import WarmupStepLR

    s = WarmupStepLR(0.02, steps=[100, 200], gamma=0.1, warmup_steps=10, warmup_factor=0.001)
    assert float(s(0)) == pytest.approx(0.02 * 0.001)
    assert float(s(5)) == pytest.approx(0.02 * (0.001 * 0.5 + 0.5))
    assert [float(s(k)) for k in (10, 150, 250)] == pytest.approx([0.02, 0.002, 0.0002])
    config = keras.saving.serialize_keras_object(s)
    assert config["registered_name"] == "keras_resnet_suite>WarmupStepLR"
    clone = keras.saving.deserialize_keras_object(config)
    assert "detection>WarmupStepLR" not in keras.saving.get_custom_objects()  # no old alias
    assert isinstance(clone, WarmupStepLR) and clone.get_config() == s.get_config()
    with pytest.raises(ValueError, match="increasing"):
        WarmupStepLR(0.1, steps=[5, 3])
