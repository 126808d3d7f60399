"""krs.analysis: Fig. 7 layer responses, per-block gradient norms, error-curve history/plots."""

import numpy as np
import pytest

keras = pytest.importorskip("keras")

import keras_resnet_suite as krs  # noqa: E402
from keras_resnet_suite import analysis  # noqa: E402


def _images(n=8, size=32, seed=0):
    return np.random.default_rng(seed).normal(0, 1, (n, size, size, 3)).astype(np.float32)


def _tiny():
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(4, 3, padding="same", name="c3")(inputs)
    x = keras.layers.BatchNormalization(name="bn3")(x)
    x = keras.layers.ReLU()(x)
    x = keras.layers.Conv2D(5, 1, name="c1")(x)
    x = keras.layers.BatchNormalization(name="bn1")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, keras.layers.Dense(3, activation="softmax", name="fc")(x))


@pytest.mark.jax
def test_responses_hand_computed_on_functional_model():
    model = _tiny()
    bn = model.get_layer("bn3")
    bn.moving_mean.assign(np.array([0.5, -0.2, 0.1, 0.0], np.float32))
    bn.moving_variance.assign(np.array([2.0, 0.5, 1.0, 3.0], np.float32))
    x = _images(6, 8)
    stats = analysis.layer_responses(model, x, batch_size=4)  # two batches, pooled
    assert stats["names"] == ["bn3"]  # the 1x1 conv's BN is not a 3x3 response
    out = np.asarray(keras.Model(model.input, bn.output)(x, training=False), np.float64)
    expected = out.reshape(-1, 4).std(axis=0).mean()
    np.testing.assert_allclose(stats["std"], [expected], rtol=1e-5)


@pytest.mark.jax
def test_responses_every_3x3_layer_of_resnet20_in_order():
    model = krs.build("resnet20", zero_init_residual=True)
    stats = analysis.layer_responses(model, _images(4))
    names = stats["names"]
    assert len(names) == 19 and stats["std"].shape == (19,)  # 6n+1 3x3 conv layers, n = 3
    assert names[0] == "conv1/bn" and names[1] == "conv2_x/block1/bn1"
    assert names[-1] == "conv4_x/block3/bn2"
    # zero-initialised last BN of each branch: its response is exactly 0, the others are not
    second = np.array([n.endswith("bn2") for n in names])
    assert np.all(stats["std"][second] == 0) and np.all(stats["std"][~second] > 0)


def test_responses_reject_models_without_3x3_bn():
    inputs = keras.Input((4, 4, 3))
    model = keras.Model(inputs, keras.layers.Conv2D(2, 3)(inputs))
    with pytest.raises(ValueError, match="no 3x3 Conv2D followed by a BatchNormalization"):
        analysis.layer_responses(model, _images(2, 4))


def test_block_of():
    assert analysis.block_of("conv2_x/block1/conv1/kernel") == "conv2_x/block1"
    assert analysis.block_of("conv1/bn/gamma") == "conv1"
    assert analysis.block_of("predictions/kernel") == "predictions"


def test_gradient_norms_match_tape_and_leave_bn_alone():
    tf = pytest.importorskip("tensorflow")
    if keras.backend.backend() != "tensorflow":
        pytest.skip("the hand check uses tf.GradientTape")
    model = _tiny()
    x, y = _images(4, 8), np.array([0, 1, 2, 1])
    loss = keras.losses.SparseCategoricalCrossentropy()
    before = [np.asarray(v) for v in model.non_trainable_variables]
    norms = analysis.gradient_norms(model, x, y, loss)
    after = [np.asarray(v) for v in model.non_trainable_variables]
    for a, b in zip(before, after, strict=True):
        np.testing.assert_array_equal(a, b)
    with tf.GradientTape() as tape:
        value = loss(y, model(x, training=True))
    grads = tape.gradient(value, model.trainable_variables)
    by_block = {}
    for v, g in zip(model.trainable_variables, grads, strict=True):
        by_block.setdefault(analysis.block_of(v.path), []).append(np.asarray(g).ravel())
    assert set(norms) == set(by_block) == {"c3", "bn3", "c1", "bn1", "fc"}
    for k, parts in by_block.items():
        np.testing.assert_allclose(norms[k], np.linalg.norm(np.concatenate(parts)), rtol=1e-4)


def test_gradient_logger_records_during_fit(tmp_path):
    keras.utils.set_random_seed(0)
    model = _tiny()
    model.compile("sgd", keras.losses.SparseCategoricalCrossentropy())
    x, y = _images(16, 8), np.arange(16) % 3
    logger = analysis.GradientNormLogger(x[:4], y[:4], every=2)
    model.fit(x, y, batch_size=4, epochs=1, callbacks=[logger], verbose=0)
    assert logger.steps == [0, 2, 4]
    assert logger.blocks == ["c3", "bn3", "c1", "bn1", "fc"]
    assert logger.norms.shape == (3, 5) and np.all(logger.norms > 0)
    assert not np.allclose(logger.norms[0], logger.norms[-1])  # weights moved in between
    logger.save(tmp_path / "g.npz")
    with np.load(tmp_path / "g.npz") as z:
        np.testing.assert_array_equal(z["norms"], logger.norms)
    assert analysis.plot_gradient_norms(logger, tmp_path / "g.png").stat().st_size > 1000
    stats = {"a": {"std": np.array([1.0, 0.5])}, "b": {"std": np.array([0.3, 0.7])}}
    assert analysis.plot_layer_responses(stats, tmp_path / "r.png").stat().st_size > 1000


def test_history_of_resumed_run_and_error_plot(tmp_path):
    csv = tmp_path / "history.csv"
    csv.write_text("epoch,accuracy,loss,val_accuracy\n0,0.30,2.0,0.25\n1,0.40,1.8,0.35\n"
                   "epoch,accuracy,loss,val_accuracy\n1,0.45,1.7,0.38\n2,0.50,1.5,0.41\n")
    h = analysis.read_history(csv)
    np.testing.assert_array_equal(h["epoch"], [0, 1, 2])
    np.testing.assert_allclose(h["accuracy"], [0.30, 0.45, 0.50])  # the resumed epoch 1 wins
    np.testing.assert_allclose(h["val_accuracy"], [0.25, 0.38, 0.41])
    png = analysis.plot_error_curves(csv, tmp_path / "e.png", steps_per_epoch=10)
    assert png.stat().st_size > 1000
    from PIL import Image

    assert Image.open(png).size == (720, 256)  # error and, beside it, loss (80 dpi)
    assert analysis.plot_error_curves(tmp_path / "missing.csv", tmp_path / "m.png", 10) is None
