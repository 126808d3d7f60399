"""Training MaskRCNN: two replicas under MirroredStrategy match one device (all five losses and
the step's update per variable), `fit` on the shapes set with masks lowers `mask_loss`, and a
`.keras` file saved mid-way resumes to the very next step of the uninterrupted run."""

import keras
import numpy as np
import pytest
from detector_helpers import mirrored_and_one_device, tiny_detector, toy_batch

from detection.modeling import MASK_LOSS_KEYS


@pytest.mark.tf_only  # tf.distribute
def test_mirrored_strategy_matches_one_device_with_masks(tmp_path):
    """Faster R-CNN's MirroredStrategy check with the mask branch: the same five losses and
    one SGD step's update of every variable, mask head included (rel 1e-4 / 1e-3)."""
    results = mirrored_and_one_device(tmp_path, masks=True)
    one, two = results["one"], results["two"]
    for key in MASK_LOSS_KEYS + ("loss",):
        assert two[key] == pytest.approx(one[key], rel=1e-4, abs=1e-6), key
    assert 0.3 < one["mask_loss"] < 1.0  # ~log 2: near-zero logits, positives present
    assert one["variables"] == two["variables"]
    mask_head = [i for i, p in enumerate(one["variables"]) if "mask" in p]
    assert mask_head and min(one["update"][i] for i in mask_head) > 0
    assert two["update"] == pytest.approx(one["update"], rel=1e-3, abs=1e-9)


@pytest.mark.tf_only  # the JAX pass runs the fit path in the resume test
def test_fit_on_shapes_with_masks_lowers_mask_loss():
    from detection.data import shapes  # tf.data: imported only where the test runs
    from detection.data.pipeline import training_batches

    keras.utils.set_random_seed(0)
    data = training_batches(shapes(16, image_size=64, masks=True, max_objects=3), (64, 64),
                            batch_size=4, max_boxes=4, flip=False)
    model = tiny_detector("c4", masks=True)
    model.compile(optimizer=keras.optimizers.Adam(3e-3))
    logs = model.fit(data, epochs=6, verbose=0).history
    first, last = logs["mask_loss"][0], logs["mask_loss"][-1]
    assert np.isfinite(logs["loss"]).all()
    assert last < 0.8 * first, logs["mask_loss"]


@pytest.mark.jax
def test_resuming_from_a_keras_file_gives_the_same_next_step(tmp_path):
    """Step 1, save (weights and SGD momentum), load; step 2 of the loaded model equals step 2
    of the original: the same five losses and the same weights after it."""
    keras.utils.set_random_seed(0)
    first, second = toy_batch(batch=2, masks=True), toy_batch(batch=2, masks=True,
                                                               empty_last=False)
    model = tiny_detector("c4", masks=True, norm="frozen", rpn_batch_size=1000,
                          roi_batch_size=64)
    model.compile(optimizer=keras.optimizers.SGD(0.01, momentum=0.9))
    model.train_on_batch(first, return_dict=True)
    path = tmp_path / "mid.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert int(loaded.optimizer.iterations) == 1
    going = model.train_on_batch(second, return_dict=True)
    resumed = loaded.train_on_batch(second, return_dict=True)
    assert set(MASK_LOSS_KEYS) <= set(going)
    for key in MASK_LOSS_KEYS + ("loss",):
        assert resumed[key] == pytest.approx(going[key], rel=1e-5, abs=1e-7), key
    for a, b in zip(model.weights, loaded.weights, strict=True):
        np.testing.assert_allclose(keras.ops.convert_to_numpy(b), keras.ops.convert_to_numpy(a),
                                   rtol=1e-5, atol=1e-7, err_msg=a.path)
