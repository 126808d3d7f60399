"""NaN stop, atomic checkpoints, backup fallback, exact in-process resume, warm-up gate."""

import json

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_resnet_suite import training
from keras_resnet_suite.training import BackupAndRestore, NaNGuard, StepDecay, atomic_save


def _model(dropout=0.0):
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(4, 3)(inputs)
    x = keras.layers.BatchNormalization()(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    if dropout:  # its SeedGenerator state must survive the resume too
        x = keras.layers.Dropout(dropout)(x)
    model = keras.Model(inputs, keras.layers.Dense(3, activation="softmax")(x))
    model.compile(
        keras.optimizers.SGD(0.05, momentum=0.9),
        "sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    return model


def _batches(n_batches=10, nan_batch=None):
    rng = np.random.default_rng(0)
    x = rng.random((16 * n_batches, 8, 8, 3), dtype=np.float32)
    if nan_batch is not None:
        x[16 * nan_batch : 16 * (nan_batch + 1)] = np.nan
    y = rng.integers(0, 3, len(x)).astype(np.int32)
    ds = tf.data.Dataset.from_tensor_slices((x, y)).batch(16)
    return lambda start: ds.repeat().skip(start)


def test_nan_loss_stops_naming_the_step_and_keeps_the_last_good_checkpoint(tmp_path):
    messages = []
    guard = NaNGuard(print_fn=messages.append)
    ckpt = training.AtomicModelCheckpoint(tmp_path / "model-{epoch}.keras")
    model = _model()
    with pytest.raises(training.TrainingDiverged) as err:
        training.fit_resumable(
            model,
            _batches(nan_batch=5),
            steps_per_epoch=4,
            epochs=3,
            backup_dir=tmp_path / "bk",
            save_freq=2,
            callbacks=[guard, ckpt],
            verbose=0,
        )
    assert guard.nan_step == 6 and "at step 6 (epoch 2, batch 2)" in messages[0]
    assert err.value.step == 6 and err.value.checkpoint == tmp_path / "bk" / "step-00000004"
    assert f"the last finite checkpoint is kept: {tmp_path / 'bk' / 'step-00000004'}" in str(
        err.value
    )
    assert [p.name for p in sorted(tmp_path.glob("*.keras"))] == ["model-1.keras"]
    backup = BackupAndRestore(tmp_path / "bk")
    assert [s for s, _ in backup.checkpoints()] == [4, 2]
    fresh = _model()
    assert backup.restore(fresh) == 4 and training.weights_finite(fresh)
    assert not training.weights_finite(model)


def test_atomic_save_never_leaves_a_torn_file(tmp_path, monkeypatch):
    model = _model()
    path = tmp_path / "m.weights.h5"
    atomic_save(model, path)
    before = path.read_bytes()

    def torn(filepath, *a, **k):
        with open(filepath, "wb") as f:
            f.write(b"half a file")
        raise OSError("disk full")

    monkeypatch.setattr(model, "save_weights", torn)
    with pytest.raises(OSError, match="disk full"):
        atomic_save(model, path)
    assert path.read_bytes() == before and list(tmp_path.iterdir()) == [path]
    with pytest.raises(ValueError, match=".keras or .weights.h5"):
        atomic_save(model, tmp_path / "m.h5")


def test_restore_falls_back_past_a_corrupt_checkpoint(tmp_path):
    model = _model()
    training.fit_resumable(
        model, _batches(), steps_per_epoch=3, epochs=2, backup_dir=tmp_path, save_freq=2, verbose=0
    )
    backup = BackupAndRestore(tmp_path)
    (newest, path), (older, _) = backup.checkpoints()[:2]
    assert (newest, older) == (6, 4)
    weights = path / "state.weights.h5"
    weights.write_bytes(weights.read_bytes()[:200])
    (tmp_path / ".step-00000008.tmp-1").mkdir()  # a writer killed mid-checkpoint
    fresh = _model()
    assert backup.restore(fresh) == 4
    assert int(fresh.optimizer.iterations) == 4


@pytest.mark.parametrize("dropout", [0.0, 0.5])
def test_interrupted_run_resumes_to_identical_weights(tmp_path, dropout):
    def run(out, crash_at=None):
        keras.utils.set_random_seed(0)
        model = _model(dropout)

        class Crash(keras.callbacks.Callback):
            def on_train_batch_end(self, batch, logs=None):
                if int(self.model.optimizer.iterations) == crash_at:
                    raise RuntimeError("simulated crash")

        training.fit_resumable(
            model,
            _batches(),
            steps_per_epoch=4,
            epochs=3,
            backup_dir=out,
            save_freq=3,
            callbacks=[Crash()],
            verbose=0,
        )
        return model

    reference = run(tmp_path / "a")
    with pytest.raises(RuntimeError, match="simulated crash"):
        run(tmp_path / "b", crash_at=7)
    assert BackupAndRestore(tmp_path / "b").checkpoints()[0][0] == 6
    resumed = run(tmp_path / "b")
    assert int(resumed.optimizer.iterations) == 12
    for a, b in zip(reference.weights, resumed.weights, strict=True):
        np.testing.assert_allclose(a.numpy(), b.numpy(), atol=1e-6)
    for a, b in zip(reference.optimizer.variables, resumed.optimizer.variables, strict=True):
        np.testing.assert_allclose(a.numpy(), b.numpy(), atol=1e-6)


@pytest.mark.jax
def test_warmup_gate_switches_the_traced_learning_rate():
    # loss = -prediction with x = 1 makes every gradient -1, so w grows by the LR each step
    model = keras.Sequential(
        [keras.Input((1,)), keras.layers.Dense(1, use_bias=False, kernel_initializer="zeros")]
    )
    always_right = keras.metrics.MeanMetricWrapper(lambda y, p: keras.ops.ones_like(p), name="hit")
    opt = keras.optimizers.SGD(StepDecay(0.1, [], warmup_lr=0.01))
    model.compile(opt, loss=lambda y, p: -p, metrics=[always_right])
    gate = training.WarmupUntilError(threshold=0.8, window=2, metric="hit", print_fn=lambda m: None)
    model.fit(
        np.ones((6, 1)), np.zeros((6, 1)), batch_size=1, epochs=1, callbacks=[gate], verbose=0
    )
    assert gate.switched_at == 2
    np.testing.assert_allclose(model.weights[0].numpy(), [[2 * 0.01 + 4 * 0.1]], rtol=1e-5)


def test_warmup_state_survives_a_resume(tmp_path):
    model = _model()
    sched = StepDecay(0.05, [100], warmup_lr=0.005)
    model.compile(
        keras.optimizers.SGD(sched), "sparse_categorical_crossentropy", metrics=["accuracy"]
    )
    sched.warmup_done = True
    training.fit_resumable(
        model, _batches(), steps_per_epoch=2, epochs=1, backup_dir=tmp_path, verbose=0
    )
    meta = json.loads((BackupAndRestore(tmp_path).checkpoints()[0][1] / "meta.json").read_text())
    assert meta == {"step": 2, "schedule": {"warmup_done": True}}
    fresh = _model()
    fresh_sched = StepDecay(0.05, [100], warmup_lr=0.005)
    fresh.compile(keras.optimizers.SGD(fresh_sched), "sparse_categorical_crossentropy")
    BackupAndRestore(tmp_path).restore(fresh)
    assert fresh_sched.warmup_done
