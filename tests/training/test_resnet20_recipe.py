"""The pieces together on the real model: CIFAR pipeline -> resnet20 -> paper-cifar recipe ->
resumable fit, then a restart that finds nothing left to do."""

import numpy as np
import pytest

import keras_resnet_suite as krs
from keras_resnet_suite import data, training


@pytest.fixture
def binary_release(tmp_path):
    """A CIFAR-10 binary release of 5 x 6 training and 6 test images."""
    rng = np.random.default_rng(0)
    d = tmp_path / "cifar-10-batches-bin"
    d.mkdir()
    for name in [f"data_batch_{i}.bin" for i in range(1, 6)] + ["test_batch.bin"]:
        labels = rng.integers(0, 10, (6, 1), dtype=np.uint8)
        np.concatenate([labels, rng.integers(0, 256, (6, 3072), dtype=np.uint8)], 1).tofile(
            d / name
        )
    return tmp_path


def test_resnet20_paper_cifar_trains_and_resumes(binary_release, tmp_path):
    recipe = training.get_recipe("paper-cifar", global_batch_size=8, total_steps=6, depth=20)
    cifar = data.cifar(binary_release, batch_size=8, seed=0)
    assert cifar.steps_per_epoch == 3

    def run():
        model = recipe.compile(krs.build("resnet20", classes=10))
        history = training.fit_resumable(
            model,
            lambda step: data.cifar(binary_release, batch_size=8, start_step=step).train,
            steps_per_epoch=3,
            epochs=2,
            backup_dir=tmp_path / "bk",
            callbacks=recipe.callbacks(),
            validation_data=cifar.test,
            verbose=0,
        )
        return model, history

    model, history = run()
    assert int(model.optimizer.iterations) == 6 and len(history["loss"]) == 2
    assert np.isfinite(history["val_loss"]).all()
    assert float(model.optimizer.learning_rate) == np.float32(0.1 * 8 / 128 * 0.01)
    again, history = run()  # restarted after completion: restores, trains nothing
    assert history == {} and int(again.optimizer.iterations) == 6
    for a, b in zip(model.weights, again.weights, strict=True):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
