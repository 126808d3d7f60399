"""Detection backbones: level sizes and strides, dilation, frozen BN and stages under `fit`,
weights shared with the classifier, bad arguments, SavedModel export."""

import math
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest

import keras_resnet_suite as krs
from keras_resnet_suite import backbones

TINY = {"depths": (1, 1, 1, 1), "widths": (8, 16, 32, 64), "stem_width": 8}


def _np(x):
    return keras.ops.convert_to_numpy(x)


def _snapshot(variables):
    return [_np(v).copy() for v in variables]


def test_odd_input_gives_ceil_sizes_at_strides_4_to_32():
    h, w = 601, 803
    model = backbones.ResNet18(input_shape=(None, None, 3), widths=(4, 8, 16, 32), stem_width=4)
    out = model(np.zeros((1, h, w, 3), "float32"))
    assert sorted(out) == ["C2", "C3", "C4", "C5"]
    for level, stride in zip(("C2", "C3", "C4", "C5"), (4, 8, 16, 32), strict=True):
        assert out[level].shape[1:3] == (math.ceil(h / stride), math.ceil(w / stride)), level
    assert model.feature_info == {"C2": {"channels": 4, "stride": 4},
                                  "C3": {"channels": 8, "stride": 8},
                                  "C4": {"channels": 16, "stride": 16},
                                  "C5": {"channels": 32, "stride": 32}}
    # The ResNet-101 at that size, shapes only (a forward pass would cost seconds).
    deep = backbones.ResNet101(input_shape=(h, w, 3))
    assert {k: tuple(v.shape[1:]) for k, v in deep.output.items()} == {
        "C2": (151, 201, 256), "C3": (76, 101, 512), "C4": (38, 51, 1024), "C5": (19, 26, 2048)}


@pytest.mark.parametrize("output_stride, strides", [(16, (4, 8, 16, 16)), (8, (4, 8, 8, 8))])
def test_output_stride_dilates_instead_of_striding(output_stride, strides):
    model = backbones.build("resnet50", output_stride=output_stride, **TINY)
    size = 128
    out = model(np.ones((1, size, size, 3), "float32"))
    got = tuple(size // out[k].shape[1] for k in ("C2", "C3", "C4", "C5"))
    assert got == strides
    assert [model.feature_info[k]["stride"] for k in ("C2", "C3", "C4", "C5")] == list(strides)
    rates = [model.get_layer(f"conv{i}_x").dilation for i in range(2, 6)]
    assert rates == ([1, 1, 1, 2] if output_stride == 16 else [1, 1, 2, 4])
    # Same weights as the stride-32 model: dilation changes no shape.
    plain = backbones.build("resnet50", **TINY)
    assert [w.shape for w in plain.weights] == [w.shape for w in model.weights]


@pytest.mark.jax
def test_return_levels_and_feature_info_channels():
    model = backbones.ResNet50(return_levels=("C3", "C5"), input_shape=(64, 64, 3))
    assert sorted(model.output) == ["C3", "C5"]
    assert model.feature_info == {"C3": {"channels": 512, "stride": 8},
                                  "C5": {"channels": 2048, "stride": 32}}
    assert model.output["C5"].shape[1:] == (2, 2, 2048)


def test_frozen_bn_is_unchanged_bit_for_bit_after_fit():
    model = backbones.build("resnet50", norm="frozen", input_shape=(64, 64, 3), **TINY)
    bns = [v for v in model.weights if "bn" in v.path]
    rng = np.random.default_rng(0)
    for v in bns:  # non-trivial statistics, so "unchanged" is not "still at init"
        v.assign(rng.uniform(0.5, 1.5, v.shape).astype("float32"))
    assert bns and not any(v.trainable for v in bns)
    before = _snapshot(bns)
    convs = [v for v in model.trainable_weights if "conv" in v.path]
    conv_before = _snapshot(convs)
    x = rng.normal(size=(4, 64, 64, 3)).astype("float32")
    target = {k: np.zeros((4, *v.shape[1:]), "float32") for k, v in model.output.items()}
    model.compile("sgd", "mse", run_eagerly=True)
    model.fit(x, target, epochs=2, batch_size=2, verbose=0)
    for b, v in zip(before, bns, strict=True):
        np.testing.assert_array_equal(b, _np(v), err_msg=v.path)
    assert all(not np.array_equal(b, _np(v)) for b, v in zip(conv_before, convs, strict=True))


def test_freeze_at_2_keeps_stem_and_conv2_while_later_stages_train():
    model = backbones.build("resnet50", freeze_at=2, input_shape=(64, 64, 3), **TINY)
    frozen = [v for layer in ("conv1", "conv2_x") for v in model.get_layer(layer).weights]
    later = [v for layer in ("conv3_x", "conv5_x") for v in model.get_layer(layer).trainable_weights]
    assert frozen and later and not any(v.trainable for v in frozen)
    before, later_before = _snapshot(frozen), _snapshot(later)
    x = np.random.default_rng(1).normal(size=(4, 64, 64, 3)).astype("float32")
    target = {k: np.ones((4, *v.shape[1:]), "float32") for k, v in model.output.items()}
    model.compile("sgd", "mse", run_eagerly=True)
    model.fit(x, target, epochs=1, batch_size=2, verbose=0)
    for b, v in zip(before, frozen, strict=True):  # BN statistics included
        np.testing.assert_array_equal(b, _np(v), err_msg=v.path)
    changed = [not np.array_equal(b, _np(v)) for b, v in zip(later_before, later, strict=True)]
    assert all(changed)


@pytest.mark.jax
def test_frozen_stages_stay_frozen_after_a_keras_round_trip(tmp_path):
    model = backbones.build("resnet50", freeze_at=3, input_shape=(64, 64, 3), **TINY)
    model.save(tmp_path / "backbone.keras")
    loaded = keras.saving.load_model(tmp_path / "backbone.keras")
    paths = sorted(v.path for v in model.trainable_weights)
    assert paths == sorted(v.path for v in loaded.trainable_weights)
    assert not any(p.startswith(("conv1/", "conv2_x/", "conv3_x/")) for p in paths)


def test_from_classifier_shares_the_classifier_weights():
    clf = krs.build("resnet50", input_shape=(64, 64, 3), classes=3, **TINY)
    backbone = backbones.from_classifier(clf)
    assert {id(v) for v in backbone.weights} <= {id(v) for v in clf.weights}
    x = np.random.default_rng(2).normal(size=(1, 64, 64, 3)).astype("float32")
    before = _np(backbone(x)["C5"])
    kernel = clf.get_layer("conv5_x").blocks[0].branch[0].kernel
    kernel.assign(kernel * 2.0)  # a change to the classifier shows in the backbone
    assert not np.allclose(before, _np(backbone(x)["C5"]))
    # Weights also move by layer name into a separately built backbone.
    fresh = backbones.build("resnet50", input_shape=(64, 64, 3), **TINY)
    krs.weights.copy_by_name(fresh, clf)
    np.testing.assert_allclose(_np(fresh(x)["C4"]), _np(backbone(x)["C4"]), atol=1e-6)
    v2 = backbones.from_classifier(krs.build("resnet50v2", input_shape=(64, 64, 3), **TINY))
    assert v2.output["C5"].shape[-1] == 256  # the post-BN-ReLU output, not conv5_x's


@pytest.mark.parametrize("kwargs, message", [
    ({"output_stride": 4}, "output_stride"),
    ({"return_levels": ("C6",)}, "return_levels"),
    ({"return_levels": ()}, "return_levels"),
    ({"freeze_at": 7}, "freeze_at"),
    ({"norm": "group"}, "norm"),
    ({"preset": "caffe"}, "preset"),
    ({"weights": "/no/such/file.pth"}, "weights"),
    ({"weights": "imagenet", "stride_in_1x1": True}, "stride_in_1x1"),
    ({"input_shape": (16, 16, 3)}, "too small"),
    ({"colour": 1}, "colour"),
])
def test_bad_arguments_are_refused(kwargs, message):
    with pytest.raises((ValueError, TypeError), match=message):
        backbones.build("resnet18", **kwargs)


def test_keras_v2_layout_is_refused_for_detection():
    with pytest.raises(ValueError, match="downsample='last'"):
        backbones.ResNet50V2(weights="keras")
    clf = krs.build("resnet50v2", input_shape=(64, 64, 3), downsample="last", **TINY)
    with pytest.raises(ValueError, match="strides 8, 16, 32, 32"):
        backbones.from_classifier(clf)


def test_saved_model_serves_named_levels_without_the_project(tmp_path):
    model = backbones.build("resnet18", return_levels=("C3", "C5"), **TINY)
    path = backbones.export_saved_model(model, tmp_path / "backbone")
    x = np.random.default_rng(3).normal(size=(1, 70, 90, 3)).astype("float32")
    np.save(tmp_path / "x.npy", x)
    script = textwrap.dedent(f"""
        import sys
        sys.modules["keras_resnet_suite"] = None  # importing the project must fail
        import numpy as np, tensorflow as tf
        fn = tf.saved_model.load({str(path)!r}).signatures["serving_default"]
        assert list(fn.structured_input_signature[1]) == ["images"]
        out = fn(images=tf.constant(np.load({str(tmp_path / 'x.npy')!r})))
        for k in sorted(out):
            np.save({str(tmp_path)!r} + "/" + k + ".npy", out[k].numpy())
        print(sorted(out))
    """)
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         cwd=tmp_path, timeout=120)
    assert run.returncode == 0, run.stderr[-2000:]
    assert run.stdout.strip().splitlines()[-1] == "['C3', 'C5']"
    expected = model(x)
    for level in ("C3", "C5"):
        np.testing.assert_allclose(np.load(tmp_path / f"{level}.npy"), _np(expected[level]),
                                   atol=1e-5)
