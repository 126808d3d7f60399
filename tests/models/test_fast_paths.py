"""Our BatchNormalization (TensorFlow's fused kernel) computes what Keras' BN computes."""

import keras
import numpy as np
import pytest

import keras_resnet_suite as krs
from keras_resnet_suite import layers as L
from keras_resnet_suite.compat import flatten_layers


def _inputs(shape, seed=0):
    return np.random.default_rng(seed).normal(size=shape).astype("float32")


def _randomise_bn(model, seed=1):
    """Non-trivial BN statistics and affine weights, so a wrong fused path cannot hide."""
    rng = np.random.default_rng(seed)
    for layer in flatten_layers(model):
        if isinstance(layer, keras.layers.BatchNormalization):
            c = layer.gamma.shape[0]
            layer.set_weights([rng.uniform(0.5, 1.5, c), rng.normal(0, 0.2, c),
                               rng.normal(0, 0.2, c), rng.uniform(0.5, 2.0, c)])


def _keras_bn_only(model):
    """Route every BN of `model` through Keras' own call (the reference)."""
    for layer in flatten_layers(model):
        if isinstance(layer, L.BatchNormalization):
            layer._fusable = lambda *a: False
    return model


@pytest.mark.jax
@pytest.mark.parametrize("name", ["resnet20", "resnet50"])
def test_inference_equals_keras_bn(name):
    size = 32 if name == "resnet20" else 64
    model = krs.build(name, input_shape=(size, size, 3))
    _randomise_bn(model)
    x = _inputs((2, size, size, 3))
    fast = keras.ops.convert_to_numpy(model(x, training=False))
    plain = keras.ops.convert_to_numpy(_keras_bn_only(model)(x, training=False))
    np.testing.assert_allclose(fast, plain, rtol=1e-4, atol=1e-6)
    frozen = L.FrozenBatchNormalization()
    frozen.build((1, 4, 4, 8))
    assert frozen._fusable(np.zeros((1, 4, 4, 8), "float32"), None) == (
        keras.backend.backend() == "tensorflow")


@pytest.mark.skipif(keras.backend.backend() != "tensorflow", reason="TensorFlow fused kernel")
@pytest.mark.parametrize("affine", [True, False])
def test_both_inference_paths_equal_keras_bn(monkeypatch, affine):
    # One image with oneDNN on an AVX2 CPU: one multiply-add (not fused into the convolution
    # as slow post-ops); otherwise FusedBatchNormV3, fused into the convolution.
    from keras_resnet_suite import normalization

    asked = []
    monkeypatch.setattr(normalization, "_affine_inference", lambda: asked.append(1) or affine)
    model = krs.build("resnet20", input_shape=(32, 32, 3))
    _randomise_bn(model)
    x = _inputs((1, 32, 32, 3))
    fast = keras.ops.convert_to_numpy(model.predict_on_batch(x))  # compiled: the graph path
    plain = keras.ops.convert_to_numpy(_keras_bn_only(model)(x, training=False))
    np.testing.assert_allclose(fast, plain, rtol=1e-4, atol=1e-6)
    assert len(asked) >= 19  # every BN of the batch-of-one graph chose its path


def test_affine_inference_rule(monkeypatch):
    from keras_resnet_suite import normalization, runtime

    monkeypatch.setattr(runtime, "onednn_enabled", lambda: True)
    rule = normalization._affine_inference.__wrapped__
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX2")
    assert rule()
    monkeypatch.setattr(runtime, "onednn_has_avx512", lambda: True)
    assert not rule()
    monkeypatch.delenv("ONEDNN_MAX_CPU_ISA")
    monkeypatch.setattr(runtime, "onednn_enabled", lambda: False)
    assert not rule()


def test_count_macs_and_analysis_see_every_layer():
    # resnet50 at 224 (v1.5): 4.09 GMACs, the torchvision figure
    assert krs.count_macs(krs.build("resnet50"), (224, 224, 3)) == pytest.approx(4.089e9, rel=2e-3)
    model = krs.build("resnet20")
    out = krs.analysis.layer_responses(model, _inputs((4, 32, 32, 3)))
    assert len(out["names"]) == 19  # every 3x3 conv + BN, recorded once each


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
        if not fused:
            _keras_bn_only(model)
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


@pytest.mark.skipif(keras.backend.backend() != "tensorflow", reason="TensorFlow fused kernel")
@pytest.mark.parametrize("training", [True, False])
def test_bfloat16_activations_go_through_the_kernel_as_they_are(training):
    """Under mixed_bfloat16 the fused kernel takes bf16 activations with float32 statistics
    (no float32 round trip, 18 % of a CPU step) and agrees with Keras' BN to bf16 rounding."""
    import tensorflow as tf

    x = tf.constant(_inputs((4, 6, 5, 3)) * 3.0 + 1.0, tf.bfloat16)
    ours = L.BatchNormalization(momentum=0.9, dtype="mixed_bfloat16")
    ref = keras.layers.BatchNormalization(momentum=0.9, dtype="mixed_bfloat16")
    for bn in (ours, ref):
        bn.build(x.shape)
        bn.set_weights([np.array([0.5, 1.0, 2.0]), np.array([0.1, -0.2, 0.3]),
                        np.array([0.5, 1.0, 1.5]), np.array([9.0, 8.0, 10.0])])
    results = []
    for bn in (ours, ref):
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = bn(x, training=training)
            loss = tf.reduce_sum(tf.cast(y, "float32") * tf.range(1.0, 4.0))
        assert y.dtype == tf.bfloat16
        grads = tape.gradient(loss, [x, bn.gamma, bn.beta])
        results.append([y, *grads, bn.moving_mean, bn.moving_variance])
    for got, want in zip(*results, strict=True):
        np.testing.assert_allclose(np.asarray(tf.cast(got, "float32")),
                                   np.asarray(tf.cast(want, "float32")), rtol=2e-2, atol=3e-2)
    graph = tf.function(lambda t: ours(t, training=training)).get_concrete_function(x).graph
    kinds = [op.type for op in graph.get_operations()]
    assert any(k.startswith("FusedBatchNorm") for k in kinds)
    assert not any(op.type == "Cast" and op.inputs[0].dtype == tf.bfloat16
                   for op in graph.get_operations())  # the activations stay bf16


@pytest.mark.skipif(keras.backend.backend() != "tensorflow", reason="TensorFlow graph paths")
def test_dynamic_batch_branches_on_the_batch_size(monkeypatch):
    # A SavedModel, model.predict and model.export trace with a None batch: one image must
    # still take the multiply-add path where the rule says so, larger batches the fused one.
    import tensorflow as tf

    from keras_resnet_suite import normalization

    monkeypatch.setattr(normalization, "_affine_inference", lambda: True)
    model = krs.build("resnet20", input_shape=(32, 32, 3))
    _randomise_bn(model)
    fn = tf.function(lambda x: model(x, training=False),
                     input_signature=[tf.TensorSpec([None, 32, 32, 3], tf.float32)])
    graph = fn.get_concrete_function().graph.as_graph_def()
    branches = {f.signature.name: {n.op for n in f.node_def} for f in graph.library.function}
    conds = [n for n in graph.node if n.op in ("If", "StatelessIf")]
    assert len(conds) == 4  # the stem and three stages, not one per BN
    for node in conds:
        one, many = node.attr["then_branch"].func.name, node.attr["else_branch"].func.name
        assert "FusedBatchNormV3" not in branches[one]
        assert "FusedBatchNormV3" in branches[many]
    plain = _keras_bn_only(krs.build("resnet20", input_shape=(32, 32, 3)))
    plain.set_weights(model.get_weights())
    for batch in (1, 3):
        x = _inputs((batch, 32, 32, 3), seed=batch)
        np.testing.assert_allclose(fn(x).numpy(), keras.ops.convert_to_numpy(plain(x)),
                                   rtol=1e-4, atol=1e-6)


@pytest.mark.skipif(keras.backend.backend() != "tensorflow", reason="TensorFlow graph paths")
@pytest.mark.parametrize("rule", [True, False])
def test_no_branch_where_it_cannot_matter(monkeypatch, rule):
    # Without the rule (AVX-512, oneDNN off, GPU), or with a static batch, the graph is as before.
    import tensorflow as tf

    from keras_resnet_suite import normalization

    monkeypatch.setattr(normalization, "_affine_inference", lambda: rule)
    model = krs.build("resnet20", input_shape=(32, 32, 3))
    batch = 2 if rule else None
    fn = tf.function(lambda x: model(x, training=False),
                     input_signature=[tf.TensorSpec([batch, 32, 32, 3], tf.float32)])
    ops = {n.op for n in fn.get_concrete_function().graph.as_graph_def().node}
    assert not ops & {"If", "StatelessIf"}


@pytest.mark.skipif(keras.backend.backend() != "tensorflow", reason="TensorFlow graph paths")
def test_exports_branch_whatever_this_machines_rule(monkeypatch, tmp_path):
    # A SavedModel written on an AVX-512 machine is served on AVX2 ones: it carries the branch.
    import tensorflow as tf

    from keras_resnet_suite import export, normalization

    monkeypatch.setattr(normalization, "_affine_inference", lambda: False)
    model = krs.build("resnet20", input_shape=(32, 32, 3))
    _randomise_bn(model)
    export.export_saved_model(model, tmp_path / "m", fold_bn=False)
    fn = tf.saved_model.load(str(tmp_path / "m")).signatures["serving_default"]
    library = fn.graph.as_graph_def().library.function
    assert sum(n.op in ("If", "StatelessIf") for f in library for n in f.node_def) >= 4
    for batch in (1, 2):
        x = _inputs((batch, 32, 32, 3), seed=batch)
        np.testing.assert_allclose(fn(images=x)["probabilities"].numpy(),
                                   keras.ops.convert_to_numpy(model(x, training=False)),
                                   rtol=1e-4, atol=1e-6)


@pytest.mark.skipif(keras.backend.backend() != "tensorflow", reason="TensorFlow graph paths")
def test_conversion_to_onnx_traces_no_branch(monkeypatch, tmp_path):
    # tf2onnx cannot convert a convolution inside a tf.cond branch: Keras' export into other
    # runtimes gets the plain graph even where this machine's rule would branch.
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("tf2onnx")
    from keras_resnet_suite import compat, normalization

    monkeypatch.setattr(normalization, "_affine_inference", lambda: True)
    assert not compat.tracing_for_conversion()
    model = krs.build("resnet20", input_shape=(32, 32, 3))
    _randomise_bn(model)
    x = _inputs((2, 32, 32, 3))
    expected = keras.ops.convert_to_numpy(model.predict(x, verbose=0))
    model.export(str(tmp_path / "m.onnx"), format="onnx", verbose=False)
    session = ort.InferenceSession(str(tmp_path / "m.onnx"), providers=["CPUExecutionProvider"])
    assert "If" not in {n.op_type for n in __import__("onnx").load(
        str(tmp_path / "m.onnx")).graph.node}
    for batch in (1, 2):
        got = session.run(None, {session.get_inputs()[0].name: x[:batch]})[0]
        np.testing.assert_allclose(got, expected[:batch], rtol=1e-4, atol=1e-6)
