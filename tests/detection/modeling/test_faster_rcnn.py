"""FasterRCNN end to end on tiny backbones: fit, predict, frozen stages, bad input, replicas."""


import keras
import numpy as np
import pytest
import tensorflow as tf
from detector_helpers import mirrored_and_one_device, tiny_detector, toy_batch

from detection.modeling import LOSS_KEYS
from detection.modeling import transform as transforms


def _dataset(batch, repeat=1):
    return tf.data.Dataset.from_tensors(batch).repeat(repeat)


@pytest.fixture(scope="module")
def trained_c4():
    """One tiny C4 detector (stem and conv2_x frozen) trained 3 x 4 steps with SGD on a batch
    whose last image has no objects; shared so the graph is traced once."""
    keras.utils.set_random_seed(0)
    model = tiny_detector("c4", freeze_at=2, norm="frozen")
    before = {v.path: np.array(v.numpy()) for v in model.weights}
    model.compile(optimizer=keras.optimizers.SGD(0.02, momentum=0.9))
    history = model.fit(_dataset(toy_batch(empty_last=True), 12), epochs=3, steps_per_epoch=4,
                        verbose=0)
    return model, before, history.history


@pytest.mark.jax
def test_fit_reports_and_lowers_the_four_losses(trained_c4):
    _, _, logs = trained_c4
    assert set(LOSS_KEYS) <= set(logs)  # the loss dict reaches the progress bar
    assert all(np.isfinite(logs[k]).all() for k in LOSS_KEYS)
    assert logs["loss"][-1] < logs["loss"][0]
    total = np.sum([logs[k][-1] for k in LOSS_KEYS])
    assert logs["loss"][-1] == pytest.approx(total, rel=1e-4)


@pytest.mark.jax
def test_gradients_reach_unfrozen_stages_only(trained_c4):
    model, before, _ = trained_c4
    changed = {v.path for v in model.weights
               if v.path in before and not np.allclose(before[v.path], v.numpy())}
    frozen = [p for p in before if p.startswith(("conv1/", "conv2_x/"))]
    assert frozen and not (set(frozen) & changed)
    for stage in ("conv3_x/", "conv4_x/", "conv5_x/", "rpn/rpn_head/", "roi_heads/"):
        assert any(p.startswith(stage) for p in changed), f"no gradient reached {stage}"


@pytest.mark.jax
def test_predict_any_size_gives_padded_detections_in_input_pixels(trained_c4):
    model, _, _ = trained_c4
    # 40 x 90 images are resized onto the 64 x 64 canvas; boxes come back in their pixels.
    images = np.random.default_rng(1).uniform(0, 255, (3, 40, 90, 3)).astype("float32")
    images[:, 10:30, 20:40] = [220, 40, 30]
    out = model.predict(images, verbose=0)
    assert out["boxes"].shape == (3, 10, 4) and out["scores"].shape == (3, 10)
    assert out["classes"].shape == (3, 10) and out["num_detections"].shape == (3,)
    n = out["num_detections"]
    for b in range(3):
        boxes = out["boxes"][b, : n[b]]
        assert (boxes[:, [0, 2]] <= 90 + 1e-3).all() and (boxes[:, [1, 3]] <= 40 + 1e-3).all()
        assert (boxes >= 0).all() and (out["boxes"][b, n[b]:] == 0).all()
        assert (out["classes"][b, : n[b]] >= 0).all() and (out["classes"][b, n[b]:] == -1).all()
        assert (out["scores"][b, : n[b]] >= 0.05).all()
        assert (np.diff(out["scores"][b, : n[b]]) <= 1e-6).all()  # best first


def test_save_and_load_round_trip(trained_c4, tmp_path):
    model, _, _ = trained_c4
    images = toy_batch()["images"]
    model.save(tmp_path / "detector.keras")
    loaded = keras.saving.load_model(tmp_path / "detector.keras")
    a, b = model.predict(images, verbose=0), loaded.predict(images, verbose=0)
    for key in ("boxes", "scores", "classes", "num_detections"):
        np.testing.assert_allclose(a[key], b[key], atol=1e-5, err_msg=key)


def test_fpn_trains_and_predicts_with_dict_input():
    model = tiny_detector("fpn")
    model.compile(optimizer=keras.optimizers.SGD(1e-3), run_eagerly=True)
    history = model.fit(_dataset(toy_batch()), epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])
    assert any(v.path.startswith("fpn/") for v in model.trainable_weights)
    out = model.predict({"images": toy_batch()["images"]}, verbose=0)
    assert out["boxes"].shape == (2, 10, 4)


def test_mixed_precision_trains_and_predicts():
    keras.config.set_dtype_policy("mixed_float16")
    try:
        model = tiny_detector("c4")
        model.compile(optimizer=keras.optimizers.SGD(1e-3), run_eagerly=True)
        logs = model.fit(_dataset(toy_batch()), epochs=1, verbose=0).history
        out = model.predict(toy_batch()["images"], verbose=0)
    finally:
        keras.config.set_dtype_policy("float32")
    assert model.backbone.outputs[0].dtype == "float16"
    assert all(np.isfinite(logs[k][0]) for k in LOSS_KEYS)
    assert out["boxes"].dtype == np.float32 and np.isfinite(out["boxes"]).all()


def test_bad_input_is_refused_clearly():
    model = tiny_detector("c4", num_classes=2)
    model.compile(keras.optimizers.SGD(0.01))
    bad_labels = toy_batch()
    bad_labels["bounding_boxes"]["labels"][0, 0] = 4
    with pytest.raises(ValueError, match=r"label 4 .*num_classes=2"):
        model.fit(_dataset(bad_labels), verbose=0)
    # every batch is checked, not only the first one
    late = tf.data.Dataset.from_tensors(toy_batch()).concatenate(_dataset(bad_labels))
    with pytest.raises(ValueError, match=r"label 4 \(so at least 5 classes\)"):
        model.fit(late, verbose=0)
    with pytest.raises(ValueError, match=r"label 4 .*num_classes=2"):
        model.fit(bad_labels, verbose=0)  # arrays: checked up front
    nan = toy_batch()
    nan["images"][1, 3, 3, 0] = np.nan
    with pytest.raises(ValueError, match="NaN or inf"):
        model.fit(_dataset(nan), verbose=0)
    with pytest.raises(ValueError, match="NaN or inf"):
        model.predict(nan["images"], verbose=0)
    with pytest.raises(ValueError, match="head must be 'c4' or 'fpn'"):
        tiny_detector("retina")
    with pytest.raises(ValueError, match="multiples of 32"):
        tiny_detector("fpn", image_size=(72, 64))
    with pytest.raises(ValueError, match="bounding_boxes"):
        model.fit(_dataset({"images": nan["images"]}), verbose=0)


def test_resize_to_canvas_matches_tf_image_resize():
    rng = np.random.default_rng(0)
    # 25 x 50 -> scale 64 / 50 = 1.28 on both axes, i.e. a 32 x 64 image on the 64 x 64 canvas.
    images = rng.uniform(0, 255, (2, 25, 50, 3)).astype("float32")
    out, scale, extent = transforms.resize_to_canvas(images, (64, 64))
    out = keras.ops.convert_to_numpy(out)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(scale), [1.28, 1.28])
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(extent), [32, 64])
    want = tf.image.resize(images, (32, 64)).numpy()
    np.testing.assert_allclose(out[:, :32], want, atol=1e-3)
    assert (out[:, 32:] == 0).all()
    back = keras.ops.convert_to_numpy(
        transforms.boxes_to_input(np.array([[6.4, 12.8, 70.0, 32.0]], "float32"), scale, 25, 50))
    np.testing.assert_allclose(back, [[5, 10, 50, 25]], atol=1e-4)


@pytest.mark.parametrize("rule, size", [("torchvision", (31, 51)), ("detectron2", (32, 51))])
def test_reference_resize_rules(rule, size):
    # 25 x 40, shortest side 32, longest at most 51: s = min(32 / 25, 51 / 40) = 1.275.
    # torchvision floors: 31.875 -> 31, 51.0 -> 51; detectron2 rounds: int(31.875 + 0.5) = 32.
    rng = np.random.default_rng(1)
    images = rng.uniform(0, 255, (1, 25, 40, 3)).astype("float32")
    out, scale, extent = transforms.resize_to_canvas(images, (64, 64), rule, 32, 51)
    h, w = (int(v) for v in keras.ops.convert_to_numpy(extent))
    assert (h, w) == size
    np.testing.assert_allclose(keras.ops.convert_to_numpy(scale), [h / 25, w / 40], rtol=1e-6)
    want = tf.image.resize(images, (h, w)).numpy()  # half-pixel bilinear at (h / 25, w / 40)
    out = keras.ops.convert_to_numpy(out)
    np.testing.assert_allclose(out[:, :h, :w], want, atol=1e-3)
    assert (out[:, h:] == 0).all() and (out[:, :, w:] == 0).all()
    # Unknown sizes (a SavedModel's input) give the same sizes from float32 graph arithmetic.
    _, _, dynamic = tf.function(lambda x: transforms.resize_to_canvas(x, (64, 64), rule, 32, 51),
                                input_signature=[tf.TensorSpec([1, None, None, 3])])(images)
    assert tuple(dynamic.numpy()) == (h, w)


@pytest.mark.skipif(keras.backend.backend() != "tensorflow", reason="tf.distribute is TF-only")
def test_mirrored_strategy_matches_one_device(tmp_path):
    """One step on 2 logical CPUs gives the losses and the weight update of 1 device for the
    same global batch (Keras scales the model's `add_loss` losses per replica).

    Sampling budgets exceed the candidates (every anchor / RoI is used), so no randomness
    differs between the runs; frozen BN removes per-replica batch statistics. Tolerance 1e-4
    relative (float32 summation order).
    """
    results = mirrored_and_one_device(tmp_path)
    for key in LOSS_KEYS + ("loss",):
        assert results["two"][key] == pytest.approx(results["one"][key], rel=1e-4, abs=1e-6), key
    one, two = results["one"]["update"], results["two"]["update"]
    assert len(one) == len(two) and max(one) > 0
    assert two == pytest.approx(one, rel=1e-3, abs=1e-9)


def _same_detections(a, b):
    for key in ("boxes", "scores", "classes", "num_detections"):
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)


@pytest.mark.jax
@pytest.mark.parametrize("head", ["c4", "fpn"])
def test_keras_round_trip_gives_identical_detections(head, tmp_path):
    model = tiny_detector(head, freeze_at=2, score_threshold=0.0)
    images = toy_batch()["images"]
    model.save(tmp_path / "detector.keras")
    loaded = keras.saving.load_model(tmp_path / "detector.keras")
    assert type(loaded).__name__ == "FasterRCNN" and loaded.head_type == head
    assert len(loaded.trainable_weights) == len(model.trainable_weights)
    _same_detections(model.predict(images, verbose=0), loaded.predict(images, verbose=0))


@pytest.mark.jax
def test_a_detector_built_from_parts_or_a_backbone_object_serialises(tmp_path):
    from detector_helpers import TINY

    from detection import FasterRCNN
    from detection.modeling import GeneralizedRCNN
    from detection.modeling.builder import build_parts
    from keras_resnet_suite import backbones

    net = backbones.build("resnet18", input_shape=(64, 64, 3), **TINY)
    model = tiny_detector("c4", backbone=net, backbone_kwargs=None, score_threshold=0.0)
    again = FasterRCNN.from_config(model.get_config())
    again.set_weights(model.get_weights())
    images = toy_batch()["images"]
    _same_detections(model.predict(images, verbose=0), again.predict(images, verbose=0))
    parts = build_parts(2, "resnet18", "fpn", (64, 64), backbone_kwargs=dict(TINY),
                        anchor_sizes=((8,), (16,), (32,), (64,), (128,)), fc_dims=(16,),
                        fpn_channels=8)
    composed = GeneralizedRCNN(**parts)
    assert composed.num_classes == 2 and composed.image_size == (64, 64)
    assert composed.head_type == "fpn"
    # one personality: FasterRCNN builds; given parts are not among its options
    with pytest.raises(ValueError, match=r"unknown option\(s\) \['roi_heads', 'rpn', "
                                         r"'transform'\]"):
        FasterRCNN(3, **parts)


@pytest.mark.jax
def test_input_normalisation_follows_the_backbone_checkpoint():
    """A backbone with keras.applications ("caffe") weights is fed BGR minus the caffe mean;
    built with `load_weights=False`, nothing is downloaded."""
    from detection import FasterRCNN
    from keras_resnet_suite.preprocessing import CAFFE_BGR_MEAN

    kwargs = {"load_weights": False, "depths": (1, 1, 1, 1), "widths": (8, 16, 32, 64)}
    model = FasterRCNN(2, backbone="resnet50", image_size=(64, 64), backbone_weights="keras",
                       backbone_kwargs=kwargs)
    assert model.transform.preprocessing == "caffe"
    canvas = np.random.default_rng(0).uniform(0, 255, (1, 64, 64, 3)).astype("float32")
    expected = canvas[..., ::-1] - np.asarray(CAFFE_BGR_MEAN, "float32")
    np.testing.assert_allclose(keras.ops.convert_to_numpy(model.transform.normalize(canvas)),
                               expected, rtol=1e-6, atol=1e-4)
    plain = tiny_detector("c4")  # no weights: torch mean/std, as before
    assert plain.transform.preprocessing == "torch"


def test_loading_trained_weights_fetches_no_backbone_weights(tmp_path, monkeypatch):
    """`evaluate`/`export`/`predict` load a `.weights.h5` over the config's architecture: with
    `backbone_weights: imagenet` in the config and an empty weights cache, nothing is fetched."""
    import yaml

    from detection.config import CONFIGS, from_dict
    from detection.engine.evaluate import load_detector
    from detection.engine.train import build_model
    from keras_resnet_suite import models, weights

    def no_download(*args, **kwargs):
        raise AssertionError("a saved detector must load without fetching backbone weights")

    monkeypatch.setenv("KRS_WEIGHTS_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(weights, "fetch", no_download)
    monkeypatch.setattr(models, "convert_checkpoint", no_download)
    raw = yaml.safe_load((CONFIGS / "raccoon_tiny.yaml").read_text())
    raw["model"].update(backbone_weights="imagenet", image_size=[64, 64], score_threshold=0.0)
    config = from_dict(raw)
    trained = build_model(config, load_backbone_weights=False)
    trained.save_weights(tmp_path / "final.weights.h5")
    loaded = load_detector(config, tmp_path / "final.weights.h5")
    assert loaded.transform.preprocessing == "torch"  # torchvision's IMAGENET1K_V1 convention
    assert not (tmp_path / "cache").exists() or not any((tmp_path / "cache").iterdir())
    images = toy_batch()["images"]
    _same_detections(trained.predict(images, verbose=0), loaded.predict(images, verbose=0))
    with pytest.raises(AssertionError, match="without fetching"):
        build_model(config)  # what loading used to do


def test_c4_detector_trains_on_a_res2net_backbone():
    """The C4 head runs the backbone's conv5_x (Res2Net blocks) per RoI; a few SGD steps lower
    the loss and reach every unfrozen stage's multi-scale 3x3, the frozen ones stay put."""
    keras.utils.set_random_seed(0)
    model = tiny_detector("c4", backbone="res2net50_26w_4s", freeze_at=2, norm="frozen",
                          backbone_kwargs={"depths": (1, 1, 1, 1),
                                           "widths": (16, 32, 64, 128)})
    before = {v.path: np.array(v.numpy()) for v in model.weights}
    model.compile(optimizer=keras.optimizers.SGD(0.02, momentum=0.9))
    logs = model.fit(_dataset(toy_batch(empty_last=True), 8), epochs=2, steps_per_epoch=4,
                     verbose=0).history
    assert np.isfinite(logs["loss"]).all() and logs["loss"][-1] < logs["loss"][0]
    changed = {v.path for v in model.weights
               if v.path in before and not np.allclose(before[v.path], v.numpy())}
    assert not any(p.startswith(("conv1/", "conv2_x/")) for p in changed)
    for stage in ("conv3_x/", "conv4_x/", "conv5_x/"):
        assert any(p.startswith(stage) and "/conv2/" in p for p in changed), stage
