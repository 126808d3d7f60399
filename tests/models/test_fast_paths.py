"""The speed paths compute what the plain layers compute: inference conv + BN folding (every
backend) and TensorFlow's fused batch norm in training."""

import keras
import numpy as np
import pytest

import keras_resnet_suite as krs
from keras_resnet_suite import layers as L


def _inputs(shape, seed=0):
    return np.random.default_rng(seed).normal(size=shape).astype("float32")


def _randomise_bn(model, seed=1):
    """Non-trivial BN statistics and affine weights, so a wrong fold cannot hide."""
    rng = np.random.default_rng(seed)
    for layer in model._flatten_layers():
        if isinstance(layer, keras.layers.BatchNormalization):
            c = layer.gamma.shape[0]
            layer.set_weights([rng.uniform(0.5, 1.5, c), rng.normal(0, 0.2, c),
                               rng.normal(0, 0.2, c), rng.uniform(0.5, 2.0, c)])


@pytest.mark.jax
@pytest.mark.parametrize("name", ["resnet20", "resnet18", "resnet50"])
def test_folded_inference_equals_conv_then_bn(name):
    size = 32 if name == "resnet20" else 64
    model = krs.build(name, input_shape=(size, size, 3))
    _randomise_bn(model)
    x = _inputs((2, size, size, 3))
    calls = []
    fold = L._conv_bn

    def counting(conv_layer, bn, x):
        calls.append(conv_layer.name)
        return fold(conv_layer, bn, x)

    L._conv_bn = counting
    try:
        folded = keras.ops.convert_to_numpy(model(x, training=False))
    finally:
        L._conv_bn = fold
    with L.bn_folding(False):
        plain = keras.ops.convert_to_numpy(model(x, training=False))
    assert calls, "no conv + BN pair was folded"
    np.testing.assert_allclose(folded, plain, rtol=1e-4, atol=1e-6)


@pytest.mark.jax
def test_fold_is_skipped_where_the_kernel_outweighs_the_output():
    conv = keras.layers.Conv2D(512, 3, padding="same", use_bias=False)
    conv.build((None, 4, 4, 512))
    small, large = np.zeros((1, 4, 4, 512), "float32"), np.zeros((1, 128, 128, 512), "float32")
    assert not L._fold_pays(conv, small)  # 8k outputs vs 2.4M kernel weights
    assert L._fold_pays(conv, large)


@pytest.mark.jax
def test_training_mode_and_trainable_bn_are_never_folded():
    conv = keras.layers.Conv2D(8, 1, use_bias=False)
    bn = L.BatchNormalization()
    x = np.zeros((1, 64, 64, 8), "float32")
    conv.build(x.shape)
    bn.build((1, 64, 64, 8))
    assert L._foldable(conv, bn, x, training=False)
    assert not L._foldable(conv, bn, x, training=True)
    frozen = L.FrozenBatchNormalization()
    frozen.build((1, 64, 64, 8))
    assert L._foldable(conv, frozen, x, training=True)  # fixed statistics: always foldable
    with L.bn_folding(False):
        assert not L._foldable(conv, bn, x, training=False)


def test_count_macs_is_unchanged_by_folding():
    # resnet50 at 224 (v1.5): 4.09 GMACs, the torchvision figure
    assert krs.count_macs(krs.build("resnet50"), (224, 224, 3)) == pytest.approx(4.089e9, rel=2e-3)


@pytest.mark.skipif(keras.backend.backend() != "tensorflow", reason="TensorFlow fused kernel")
def test_fused_training_bn_matches_keras_bn():
    import tensorflow as tf

    x = tf.constant(_inputs((4, 6, 5, 3)) * 3.0 + 1.0)
    ours, ref = L.BatchNormalization(momentum=0.9), keras.layers.BatchNormalization(momentum=0.9)
    for bn in (ours, ref):
        bn.build(x.shape)
        bn.set_weights([np.array([0.5, 1.0, 2.0]), np.array([0.1, -0.2, 0.3]),
                        np.zeros(3), np.ones(3)])
    results = []
    for bn in (ours, ref):
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = bn(x, training=True)
            loss = tf.reduce_sum(y * tf.range(1.0, 4.0))
        grads = tape.gradient(loss, [x, bn.gamma, bn.beta])
        results.append([y, *grads, bn.moving_mean, bn.moving_variance])
    for got, want in zip(*results, strict=True):  # d/dgamma is ~0 here: absolute tolerance
        np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-4, atol=1e-4)
    assert ours._fusable(x, None)


@pytest.mark.skipif(keras.backend.backend() != "tensorflow", reason="TensorFlow fused kernel")
def test_fused_bn_model_trains_like_keras_bn():
    """One SGD step of resnet20 with the fused BN equals the same step with Keras' BN."""
    x, y = _inputs((4, 32, 32, 3)), np.arange(4) % 10
    losses, updates = [], []
    for fused in (True, False):
        keras.utils.set_random_seed(0)
        model = krs.build("resnet20")
        if not fused:  # route every BN through Keras' own call
            for layer in model._flatten_layers():
                if isinstance(layer, L.BatchNormalization):
                    layer._fusable = lambda *a: False
        model.compile(keras.optimizers.SGD(0.1), "sparse_categorical_crossentropy")
        before = model.get_weights()
        losses.append(float(model.train_on_batch(x, y)))
        updates.append(np.concatenate([(a - b).ravel() for a, b in
                                       zip(model.get_weights(), before, strict=True)]))
    assert losses[0] == pytest.approx(losses[1], rel=1e-5)
    # The fused kernel sums in another order; float32 rounding compounds over 19 BN layers'
    # backward passes, so the whole update (weights and moving statistics) agrees to ~1e-4.
    rel = np.linalg.norm(updates[0] - updates[1]) / np.linalg.norm(updates[1])
    assert rel < 1e-3, rel
