"""Every model builds, runs, trains one step, saves and reloads; bad arguments are refused."""

import os

import keras
import numpy as np
import pytest

import keras_resnet_suite as krs

# The JAX pass (`pytest -m jax`) runs one model per code path: building and compiling under
# JAX costs ~15 s a model on 2 cores, so all 25 there would break the 20-minute budget. The
# TensorFlow pass runs every model.
JAX_MODELS = {"resnet20", "plain20", "resnet18", "resnet50", "resnext50_32x4d", "resnet50v2"}
# ResNet-RS-152 ... -420 repeat resnetrs50's blocks at other depths and input sizes and take
# ~135 s to build on 2 cores; test_resnet_rs.py checks their rows (parameters, multiply-adds).
DEEP_RS = {"resnetrs152", "resnetrs200", "resnetrs270", "resnetrs350", "resnetrs420"}
_ALL = os.environ.get("KRS_ALL_MODELS") == "1"
_DEEP_RS_SKIP = pytest.mark.skipif(not _ALL, reason="deep ResNet-RS row: KRS_ALL_MODELS=1 "
                                   "builds it (~20-45 s each)")
# EfficientNets have their own rows and tests (test_efficientnet.py).
EVERY_MODEL = [pytest.param(n, marks=pytest.mark.jax) if n in JAX_MODELS else
               pytest.param(n, marks=_DEEP_RS_SKIP) if n in DEEP_RS else n
               for n in krs.available_models() if isinstance(krs.get_spec(n), krs.ResNetSpec)]
# One training step per code path (block, stem, shortcut option, pre-activation, grouped
# convolution, plain or residual): a deeper or wider model of a family runs its shallowest
# one's layers with other counts, so it gets the forward pass only (the 1202-layer step
# alone took 30-45 s).
FIT_MODELS = {"resnet18", "resnet50", "plain18", "resnet18d", "resnet50d", "resnet50v2",
              "resnext50_32x4d", "resnet20", "plain20", "wrn28_10", "res2net50_26w_4s",
              "res2next50", "res2net50d", "resnetrs50"}
# Res2Net's scale is a count too (how many 3x3 splits), but a Res2Net is not a ResNet. ResNet-RS
# rows differ in depths and input size only.
_COUNTS = ("name", "depths", "width_per_group", "paper", "scale", "input_shape")


def _shallowest_of_family(name: str) -> str:
    """The model of `name`'s family with the fewest blocks (same spec but for its counts)."""
    def key(n):
        spec = krs.get_spec(n)
        return {**{k: v for k, v in vars(spec).items() if k not in _COUNTS},
                "res2net": spec.scale > 1}

    family = [n for n in krs.available_models()
              if isinstance(krs.get_spec(n), krs.ResNetSpec) and key(n) == key(name)]
    return min(family, key=lambda n: sum(krs.get_spec(n).depths))


def _input_size(name):
    return 32  # the smallest input every model accepts (ImageNet models: total stride 32)


@pytest.mark.parametrize("name", EVERY_MODEL)
def test_every_model_forward_and_one_fit_step(name, zoo):
    """Every model runs forward; one of each code path also trains a step."""
    size = _input_size(name)
    model = zoo(name)
    classes = krs.get_spec(name).classes
    x = np.random.default_rng(0).normal(size=(2, size, size, 3)).astype("float32")
    # Training-mode BN: an untrained 1202-layer net overflows with its initial statistics.
    probs = keras.ops.convert_to_numpy(model(x, training=True))
    assert probs.shape == (2, classes)
    np.testing.assert_allclose(probs.sum(-1), 1.0, rtol=1e-5)
    if name not in FIT_MODELS:
        assert _shallowest_of_family(name) in FIT_MODELS  # its blocks are trained there
        return
    # Eager step: the property is that gradients flow through every block, not compile speed.
    # TF: eager, as tracing a 1202-layer step costs more than running it. JAX: jit, as its
    # eager mode compiles every primitive separately.
    model.compile("sgd", "sparse_categorical_crossentropy",
                  run_eagerly=keras.backend.backend() == "tensorflow")
    before = [keras.ops.convert_to_numpy(w).copy() for w in model.trainable_weights]
    history = model.fit(x, np.array([1, 3]), epochs=1, batch_size=2, verbose=0)
    assert np.isfinite(history.history["loss"][0])
    after = model.trainable_weights
    changed = sum(not np.array_equal(b, keras.ops.convert_to_numpy(a))
                  for b, a in zip(before, after, strict=True))
    assert changed == len(before)  # every trainable weight received a gradient


@pytest.mark.parametrize("name", [pytest.param("resnet20", marks=pytest.mark.jax), "resnet18",
                                  "resnext50_32x4d",
                                  pytest.param("resnet50v2", marks=pytest.mark.jax), "wrn28_10"])
def test_keras_file_round_trip_gives_identical_outputs(name, tmp_path):
    size = _input_size(name)
    model = krs.build(name, input_shape=(size, size, 3), classes=7, drop_path_rate=0.1)
    x = np.random.default_rng(1).normal(size=(3, size, size, 3)).astype("float32")
    path = tmp_path / f"{name}.keras"
    model.save(path)
    reloaded = keras.saving.load_model(path)
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(model(x)),
                                  keras.ops.convert_to_numpy(reloaded(x)))
    assert [w.path for w in reloaded.weights] == [w.path for w in model.weights]


@pytest.mark.jax
def test_weights_file_loads_into_builder(tmp_path):
    model = krs.ResNet20(classes=4)
    path = tmp_path / "r20.weights.h5"
    model.save_weights(path)
    again = krs.ResNet20(classes=4, weights=str(path))
    x = np.ones((1, 32, 32, 3), "float32")
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(model(x)),
                                  keras.ops.convert_to_numpy(again(x)))


def test_summary_reads_like_table1():
    model = krs.ResNet34(input_shape=(224, 224, 3))
    names = [layer.name for layer in model.layers]
    assert names == ["images", "conv1", "conv2_x", "conv3_x", "conv4_x", "conv5_x", "avg_pool",
                     "predictions"]
    sizes = [tuple(model.get_layer(n).output.shape[1:3]) for n in names[1:6]]
    assert sizes == [(56, 56), (56, 56), (28, 28), (14, 14), (7, 7)]  # Table 1 "output size"
    assert [model.get_layer(f"conv{i}_x").depth for i in range(2, 6)] == [3, 4, 6, 3]


def test_cifar_stage_sizes_follow_section_4_2():
    model = krs.ResNet20()
    shapes = [tuple(model.get_layer(f"conv{i}_x").output.shape[1:]) for i in (2, 3, 4)]
    assert shapes == [(32, 32, 16), (16, 16, 32), (8, 8, 64)]


def test_builders_have_keras_applications_signature():
    model = krs.ResNet50(include_top=False, pooling="avg", input_shape=(64, 64, 3))
    assert model.output_shape == (None, 2048)
    model = krs.ResNet18(include_top=False, input_shape=(None, None, 3))
    assert model.output_shape == (None, None, None, 512)
    tensor = keras.Input((96, 96, 3))
    model = krs.ResNeXt50_32x4d(input_tensor=tensor, classes=3, classifier_activation=None)
    assert model.output_shape == (None, 3)
    for camel in ("ResNet1202", "PlainNet34", "PlainNet110", "ResNet152V2", "ResNeXt101_32x8d",
                  "WideResNet50_2", "WRN28_10"):
        assert callable(getattr(krs, camel))


def test_overrides_change_the_spec():
    tiny = krs.build("resnet18", depths=(1, 1, 1, 1), widths=(8, 16, 32, 64), classes=2,
                     input_shape=(32, 32, 3))
    assert [tiny.get_layer(f"conv{i}_x").depth for i in range(2, 6)] == [1, 1, 1, 1]
    assert tiny.get_layer("conv5_x").output.shape[-1] == 64


def test_stride_placement_v1_and_v15():
    v15 = krs.build("resnet50", input_shape=(64, 64, 3))
    v1 = krs.build("resnet50", input_shape=(64, 64, 3), stride_in_1x1=True)
    first = {m: m.get_layer("conv3_x").blocks[0] for m in (v1, v15)}
    assert first[v15].branch[0].strides == (1, 1)  # first 1x1
    assert [layer.strides for layer in first[v1].branch if hasattr(layer, "strides")][:2] == \
        [(2, 2), (1, 1)]
    assert krs.count_params(v1) == krs.count_params(v15)


@pytest.mark.jax
def test_zero_init_residual_starts_last_bn_at_zero():
    model = krs.build("resnet18", zero_init_residual=True, input_shape=(32, 32, 3))
    block = model.get_layer("conv2_x").blocks[0]
    bn2 = [layer for layer in block.branch if layer.name == "bn2"][0]
    assert not np.any(keras.ops.convert_to_numpy(bn2.gamma))
    x = np.random.default_rng(0).normal(size=(1, 32, 32, 64)).astype("float32")
    # With a zero branch a block is ReLU(identity): the residual learning's starting point.
    np.testing.assert_allclose(keras.ops.convert_to_numpy(block(x)), np.maximum(x, 0), atol=1e-6)


@pytest.mark.jax
def test_stochastic_depth_is_random_in_training_and_identity_at_test():
    model = krs.build("resnet20", drop_path_rate=0.5, classes=3)
    rates = [b.drop_path_rate for i in (2, 3, 4) for b in model.get_layer(f"conv{i}_x").blocks]
    assert rates[0] == 0.0 and rates[-1] == pytest.approx(0.5) and rates == sorted(rates)
    x = np.random.default_rng(0).normal(size=(4, 32, 32, 3)).astype("float32")
    test_a, test_b = (keras.ops.convert_to_numpy(model(x, training=False)) for _ in range(2))
    np.testing.assert_array_equal(test_a, test_b)
    train_a, train_b = (keras.ops.convert_to_numpy(model(x, training=True)) for _ in range(2))
    assert not np.allclose(train_a, train_b)


@pytest.mark.jax
def test_option_a_shortcut_pads_zeros_and_subsamples():
    shortcut = krs.layers.Shortcut(8, stride=2, option="A")
    x = np.arange(1 * 4 * 4 * 4, dtype="float32").reshape(1, 4, 4, 4)
    y = keras.ops.convert_to_numpy(shortcut(x))
    assert y.shape == (1, 2, 2, 8)
    np.testing.assert_array_equal(y[..., 2:6], x[:, ::2, ::2, :])
    assert not y[..., :2].any() and not y[..., 6:].any()
    assert not shortcut.weights


@pytest.mark.jax
def test_frozen_batch_norm_uses_statistics_and_cannot_be_unfrozen():
    bn = krs.layers.FrozenBatchNormalization()
    x = np.random.default_rng(0).normal(3.0, 2.0, size=(8, 4, 4, 2)).astype("float32")
    bn.build(x.shape)
    bn.trainable = True
    assert not bn.trainable_weights
    y = keras.ops.convert_to_numpy(bn(x, training=True))
    np.testing.assert_allclose(y, x / np.sqrt(1 + 1e-3), rtol=1e-5)  # stored stats 0/1
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(bn.moving_mean), [0.0, 0.0])


@pytest.mark.parametrize("kwargs, message", [
    ({"shortcut": "D"}, "shortcut"),
    ({"classes": 0}, "classes"),
    ({"input_shape": (16, 16, 3)}, "too small"),
    ({"input_shape": (224, 224)}, "input_shape"),
    ({"pooling": "sum", "include_top": False}, "pooling"),
    ({"weights": "/no/such/file.weights.h5"}, "weights"),
    ({"depths": (1, 1, 1)}, "depths"),
])
def test_bad_arguments_are_refused_with_the_argument_named(kwargs, message):
    with pytest.raises(ValueError, match=message):
        krs.build("resnet50", **kwargs)


def test_wrong_channel_count_with_weights_is_refused(tmp_path):
    path = tmp_path / "w.weights.h5"
    krs.ResNet20().save_weights(path)
    with pytest.raises(ValueError, match="3 input channels"):
        krs.ResNet20(weights=str(path), input_shape=(32, 32, 1))


def test_unknown_model_lists_valid_names():
    with pytest.raises(ValueError, match="resnet50.*resnet101"):
        krs.build("resnet51")


def test_unknown_override_is_refused():
    with pytest.raises(TypeError, match="colour"):
        krs.build("resnet20", colour="red")
