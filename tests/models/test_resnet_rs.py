"""ResNet-RS (Bello et al. 2021) rows: parameters equal timm's, multiply-adds within 3 % of the
paper, the SE and stem-pool options, serialization, the torch layout and the backbone path."""

import numpy as np
import pytest

import keras_resnet_suite as krs
from keras_resnet_suite import backbones, cli, layers, weights
from keras_resnet_suite.convert import torch_state_from_model
from keras_resnet_suite.squeeze_excite import SqueezeExcite

pytestmark = pytest.mark.jax

ROWS = ("resnetrs50", "resnetrs101", "resnetrs152", "resnetrs200", "resnetrs270",
        "resnetrs350", "resnetrs420")
# `sum(p.numel() for p in timm.create_model(name).parameters())`, timm 1.x, 1000 classes.
TIMM_PARAMS = {"resnetrs50": 35_691_912, "resnetrs101": 63_618_696, "resnetrs152": 86_621_576,
               "resnetrs200": 93_209_992, "resnetrs270": 129_861_448,
               "resnetrs350": 163_956_168, "resnetrs420": 191_891_656}
# Paper Table 7 FLOPs (billions, a multiply-add counted as two) at the paper's resolutions.
PAPER_GFLOPS = {("resnetrs50", 160): 4.6, ("resnetrs101", 192): 12, ("resnetrs152", 256): 31,
                ("resnetrs200", 256): 40, ("resnetrs270", 256): 54, ("resnetrs350", 256): 69,
                ("resnetrs350", 320): 107, ("resnetrs420", 320): 128}


def _tiny(depths=(1, 1, 1, 1)):
    return krs.build("resnetrs50", input_shape=(None, None, 3), depths=depths)


@pytest.fixture(scope="module")
def tiny_models():
    """The 1-1-1-1 model, then one with a second block in stage 1, 2, 3 and 4.

    Within a stage every block after the first is the same (same shapes, same SE), so a row's
    parameters and multiply-adds are base + sum((depth - 1) * per-block); these five small
    models check all seven rows in seconds (`test_resnetrs50_counts_directly` and the
    benchmark's full builds check the extrapolation itself)."""
    return [_tiny()] + [_tiny(tuple(2 if i == stage else 1 for i in range(4)))
                        for stage in range(4)]


_MACS: dict = {}


def _extrapolate(models, name, count):
    base, *more = [count(m) for m in models]
    return base + sum((d - 1) * (m - base)
                      for d, m in zip(krs.get_spec(name).depths, more, strict=True))


# The counts do not depend on the backend, and building under JAX costs minutes on 2 cores:
# the JAX pass runs the layer, serialization, layout and backbone tests below.
@pytest.mark.tf_only
@pytest.mark.parametrize("name", ROWS)
def test_params_equal_timm(name, tiny_models):
    assert _extrapolate(tiny_models, name, krs.count_params) == TIMM_PARAMS[name]


@pytest.mark.tf_only
@pytest.mark.parametrize("name,size", sorted(PAPER_GFLOPS))
def test_macs_within_3_percent_of_paper(name, size, tiny_models):
    if size not in _MACS:  # each tiny model's count at this size, once for all rows
        _MACS[size] = {id(m): krs.count_macs(m, (size, size, 3)) for m in tiny_models}
    macs = _extrapolate(tiny_models, name, lambda m: _MACS[size][id(m)])
    assert macs / 1e9 == pytest.approx(PAPER_GFLOPS[name, size] / 2, rel=0.03)


@pytest.mark.tf_only
def test_resnetrs50_counts_directly(zoo):
    model = zoo("resnetrs50")
    assert krs.count_params(model) == TIMM_PARAMS["resnetrs50"]
    assert krs.count_macs(model, (160, 160, 3)) / 1e9 == pytest.approx(2.3, rel=0.03)


def test_rows_builders_and_recipe():
    assert [n for n in krs.available_models() if n.startswith("resnetrs")] == list(ROWS)
    spec = krs.get_spec("resnetrs101")
    assert (spec.depths, spec.input_shape, spec.se_ratio, spec.stem_pool) == \
        ((3, 4, 23, 3), (192, 192, 3), 0.25, "conv")
    assert spec.stem == "deep" and spec.avg_down
    assert krs.ResNetRS101.__name__ == "ResNetRS101" and callable(krs.ResNetRS420)
    assert [krs.get_spec(n).paper["drop_path_rate"] for n in ROWS] == [0, 0, 0, .1, .1, .1, .1]


@pytest.mark.tf_only
def test_models_command_lists_resnetrs(capsys):
    cli.main(["models", "--names", "resnetrs50", "--size", "64"])
    line = next(x for x in capsys.readouterr().out.splitlines() if x.startswith("resnetrs50"))
    assert "35,691,912" in line and "35.7M" in line and "64x64" in line


def test_se_and_conv_pool_layers():
    model = _tiny()
    stem = model.get_layer("conv1")
    assert [layer.name for layer in stem.chain][-4:] == ["pool_conv_pad", "pool_conv", "pool_bn",
                                                         "pool_relu"]
    block = model.get_layer("conv3_x").blocks[0]
    se = block.branch[-1]
    assert isinstance(se, SqueezeExcite) and se.name == "se"
    assert se.squeeze_channels == 128 and se.expand.filters == 512  # a quarter of 4 x 128
    assert layers.se_channels(256, 0.25) == 64 and layers.se_channels(100, 1 / 16) == 8


def test_save_and_reload_keeps_se_and_stem_pool(tmp_path):
    import keras

    model = _tiny()
    x = np.random.default_rng(0).uniform(-1, 1, (1, 64, 64, 3)).astype("float32")
    path = tmp_path / "rs.keras"
    model.save(path)
    again = keras.saving.load_model(path)
    np.testing.assert_allclose(again(x), model(x), atol=1e-5)


def test_torch_layout_round_trip_and_refusal():
    model = _tiny()
    state = torch_state_from_model(model)
    assert "maxpool.0.weight" in state and "layer2.0.se.fc1.bias" in state
    fresh = weights.load_torchvision(_tiny(), state)
    x = np.random.default_rng(1).uniform(-1, 1, (1, 64, 64, 3)).astype("float32")
    np.testing.assert_allclose(fresh(x), model(x), atol=1e-5)
    no_se = {k: v for k, v in state.items() if ".se." not in k}
    with pytest.raises(ValueError, match=r"missing: layer1\.0\.se\.fc1"):
        weights.load_torchvision(_tiny(), no_se)
    plain = krs.build("resnet50d", input_shape=(None, None, 3), depths=(1, 1, 1, 1))
    with pytest.raises(ValueError, match=r"unexpected: maxpool\.0, maxpool\.1, layer1\.0\.se\.fc1"):
        weights.load_torchvision(plain, state)


@pytest.mark.parametrize("override,message", [
    ({"se_ratio": 1.5}, "se_ratio must be in [0, 1], got 1.5"),
    ({"stem_pool": "avg"}, "stem pool must be one of ('max', 'conv'), got 'avg'"),
])
def test_bad_options_name_the_value(override, message):
    with pytest.raises(ValueError) as err:
        krs.build("resnetrs50", depths=(1, 1, 1, 1), **override)
    assert str(err.value) == message


def test_backbone_c2_to_c5_frozen():
    model = backbones.build("resnetrs50", depths=(1, 1, 1, 1), freeze_at=2, norm="frozen")
    out = model(np.zeros((1, 64, 64, 3), "float32"))
    assert {k: tuple(v.shape) for k, v in out.items()} == {
        "C2": (1, 16, 16, 256), "C3": (1, 8, 8, 512), "C4": (1, 4, 4, 1024), "C5": (1, 2, 2, 2048)}
    assert not model.get_layer("conv1").trainable and not model.get_layer("conv2_x").trainable
    assert model.get_layer("conv3_x").trainable


def test_registry_has_timm_resnetrs_checkpoints():
    for name in ROWS:
        ckpt = weights.get_checkpoint(name, "imagenet")
        assert ckpt.tag == "timm" and ckpt.crop == krs.get_spec(name).input_shape[0]
        assert ckpt.filename.startswith(name) and ckpt.preprocessing == "torch"
    rs50 = weights.get_checkpoint("resnetrs50", "imagenet")
    assert (rs50.resize, rs50.file_hash, rs50.top1) == (175, "6b53758b", 78.8)  # 160 / 0.91
