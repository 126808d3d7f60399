"""Res2Net (Gao et al. 2019, TPAMI): timm's parameter and multiply-add counts, the hierarchical
3x3 (`MultiScaleConv`) as Bottleneck's `scale` option, serialization, checkpoints in timm's
layout, backbones. Logits against timm: tests/weights/test_reference_parity.py; the detector on a
Res2Net backbone: tests/detection/modeling/test_faster_rcnn.py."""

import keras
import numpy as np
import pytest

import keras_resnet_suite as krs
from keras_resnet_suite import backbones, convert, layers, weights

TINY = {"depths": (1, 2, 1, 1), "widths": (16, 32, 64, 128)}

# timm 1.0.31: `sum(p.numel() for p in timm.create_model(name).parameters())`, 1000 classes.
TIMM_PARAMS = {
    "res2net50_26w_4s": 25_699_120, "res2net50_48w_2s": 25_287_304,
    "res2net50_14w_8s": 25_059_816, "res2net50_26w_6s": 37_051_448,
    "res2net50_26w_8s": 48_403_776, "res2net101_26w_4s": 45_206_688,
    "res2next50": 24_671_464, "res2net50d": 25_718_352, "res2net101d": 45_225_920,
}
# Multiply-adds at 224x224 of timm's models (torch.utils.flop_counter: convolutions and the
# classifier, FLOPs / 2); timm's model cards round them to 4.3 (26w_4s) and 4.2 (res2next50).
TIMM_MACS = {"res2net50_26w_4s": 4_255_166_464, "res2net50_48w_2s": 4_159_832_064,
             "res2next50": 4_172_677_120, "res2net50d": 4_494_807_040}
# A model per code path under JAX (building and counting cost seconds per model there).
JAX = {"res2net50_26w_4s", "res2next50"}


def _jax_if(name):
    return pytest.param(name, marks=pytest.mark.jax) if name in JAX else name


def _np(x):
    return keras.ops.convert_to_numpy(x)


@pytest.mark.parametrize("name", [_jax_if(n) for n in TIMM_PARAMS])
def test_params_equal_timm(name, zoo):
    assert krs.count_params(zoo(name)) == TIMM_PARAMS[name]


@pytest.mark.parametrize("name", [_jax_if(n) for n in TIMM_MACS])
def test_macs_at_224_equal_timm(name, zoo):
    assert krs.count_macs(zoo(name), (224, 224, 3)) == TIMM_MACS[name]


AUTHORS = [n for n in TIMM_PARAMS if not n.endswith("d")]


@pytest.mark.parametrize("name", [_jax_if(n) for n in AUTHORS])
def test_counts_match_the_authors_table(name, zoo):
    """The authors' table (params to 0.01M, GFLOPs to 0.1): parameters equal to its digits,
    multiply-adds within 0.06 G (res2net50_26w_4s: 4.255 G against its 4.2)."""
    model, paper = zoo(name), krs.get_spec(name).paper
    assert f"{krs.count_params(model) / 1e6:.2f}M" == paper["params"]
    assert krs.count_macs(model, (224, 224, 3)) / 1e9 == pytest.approx(paper["gflops"], abs=0.06)


@pytest.mark.jax
def test_builders_and_specs():
    assert krs.Res2Net50_26w_4s.__name__ == "Res2Net50_26w_4s"
    assert krs.Res2NeXt50.__name__ == "Res2NeXt50"
    spec = krs.get_spec("res2next50")
    assert (spec.block, spec.groups, spec.width_per_group, spec.scale) == ("bottleneck", 8, 4, 4)
    assert krs.get_spec("res2net50d").stem == "deep" and krs.get_spec("res2net50d").avg_down
    assert krs.get_spec("resnet50").scale == 1


@pytest.mark.jax
def test_first_block_pools_the_last_split_counting_zero_padding():
    """timm's AvgPool2d(3, stride, padding=1) counts the padded zeros: a corner averages 4
    real pixels over 9. The other splits are not chained in a first block."""
    layer = layers.MultiScaleConv(2, 3, stride=2, first=True)
    x = np.random.default_rng(0).uniform(0.5, 1.5, (1, 6, 6, 6)).astype("float32")
    y = _np(layer(x, training=False))
    assert y.shape == (1, 3, 3, 6)
    last = x[0, :, :, 4:]
    padded = np.pad(last, ((1, 1), (1, 1), (0, 0)))
    pooled = np.stack([[padded[2 * i:2 * i + 3, 2 * j:2 * j + 3].sum((0, 1)) / 9
                        for j in range(3)] for i in range(3)])
    np.testing.assert_allclose(y[0, :, :, 4:], pooled, rtol=1e-6)
    # Unchained: zeroing split 0 leaves split 1's output as it was.
    x0 = x.copy()
    x0[..., :2] = 0
    np.testing.assert_allclose(_np(layer(x0, training=False))[..., 2:4], y[..., 2:4], rtol=1e-6)


@pytest.mark.jax
def test_later_block_chains_the_splits_and_passes_the_last_through():
    layer = layers.MultiScaleConv(2, 3, stride=1, first=False)
    x = np.random.default_rng(1).uniform(0.5, 1.5, (1, 5, 5, 6)).astype("float32")
    y = _np(layer(x, training=False))
    np.testing.assert_array_equal(y[..., 4:], x[..., 4:])
    x0 = x.copy()
    x0[..., :2] += 1.0  # split 0 feeds split 1's 3x3 through y1 + x2
    assert not np.allclose(_np(layer(x0, training=False))[..., 2:4], y[..., 2:4])
    assert [type(v).__name__ for v in layer.param_layers().values()] == [
        "Conv2D", "BatchNormalization", "Conv2D", "BatchNormalization"]


@pytest.mark.jax
def test_bottleneck_without_scale_is_unchanged():
    config = layers.Bottleneck(64).get_config()
    assert "scale" not in config
    block = layers.Bottleneck(64, 2, scale=4, width_per_group=26)
    block.build((None, 16, 16, 64))
    assert block.get_config()["scale"] == 4
    assert [layer.name for layer in block.branch if layer.weights] == [
        "conv1", "bn1", "conv2", "conv3", "bn3"]
    assert block.branch[3].first and block.branch[3].stride == 2


@pytest.mark.jax
def test_bad_scale_is_refused_in_one_line():
    with pytest.raises(ValueError, match="scale must be a positive integer, got 0"):
        layers.Bottleneck(64, scale=0)
    with pytest.raises(ValueError, match=r"scale=4 \(Res2Net\) needs block='bottleneck', "
                                         r"got 'basic'"):
        krs.build("res2net50_26w_4s", block="basic", **TINY)
    with pytest.raises(ValueError, match="expects 2 x 3 = 6 channels, got 5"):
        layers.MultiScaleConv(2, 3, name="ms").build((None, 4, 4, 5))


@pytest.mark.jax
def test_keras_file_round_trip(tmp_path):
    model = krs.build("res2next50", input_shape=(64, 64, 3), classes=5, **TINY)
    path = tmp_path / "r2n.keras"
    model.save(path)
    again = keras.saving.load_model(path)
    x = np.random.default_rng(2).normal(size=(2, 64, 64, 3)).astype("float32")
    np.testing.assert_array_equal(_np(again(x)), _np(model(x)))
    assert [w.path for w in again.weights] == [w.path for w in model.weights]


@pytest.mark.jax
def test_safetensors_file_in_timm_layout_loads_by_path(tmp_path):
    source = krs.build("res2net50d", input_shape=(None, None, 3), classes=10, **TINY)
    rng = np.random.default_rng(3)
    for v in source.non_trainable_weights:  # BN statistics: a dropped one would show
        v.assign(rng.uniform(0.5, 1.5, v.shape).astype("float32"))
    state = weights.to_torchvision(source)
    assert {"layer1.0.convs.2.weight", "layer1.0.bns.0.running_var", "conv1.6.weight",
            "layer2.0.downsample.1.weight"} <= set(state)
    path = tmp_path / "r2n50d.safetensors"
    convert.write_safetensors(state, path)
    loaded = krs.build("res2net50d", weights=str(path), input_shape=(None, None, 3),
                       classes=10, **TINY)
    x = np.random.default_rng(4).normal(size=(1, 40, 40, 3)).astype("float32")
    np.testing.assert_allclose(_np(loaded(x)), _np(source(x)), atol=1e-6)
    with pytest.raises(ValueError, match=r"missing: layer2\.1\.bns\.1$"):
        weights.load_torchvision(loaded, {k: v for k, v in state.items()
                                          if not k.startswith("layer2.1.bns.1.")})
    del state["layer2.1.bns.1.running_mean"]
    with pytest.raises(ValueError, match=r"layer2\.1\.bns\.1: incomplete entry"):
        weights.load_torchvision(loaded, state)


@pytest.mark.jax
def test_registry_has_timms_res2net_checkpoints():
    ckpt = weights.get_checkpoint("res2net50_26w_4s", "imagenet")
    assert (ckpt.tag, ckpt.file_hash, ckpt.hash_algorithm, ckpt.top1) == (
        "timm", "06e79181", "sha256", 77.99)
    assert ckpt.url.endswith("/v0.1-res2net/res2net50_26w_4s-06e79181.pth")
    assert (ckpt.layout, ckpt.preprocessing, ckpt.resize, ckpt.crop) == (
        "torchvision", "torch", 256, 224)
    assert {a for (a, t) in weights.CHECKPOINTS if t == "timm" and a.startswith("res2")} == {
        n for n in TIMM_PARAMS if not n.endswith("d")}
    with pytest.raises(ValueError, match="no such checkpoint for res2net50d"):
        krs.build("res2net50d", weights="imagenet")


@pytest.mark.jax
def test_backbone_levels_frozen_bn_and_freeze_at():
    bb = backbones.build("res2net50_26w_4s", norm="frozen", freeze_at=2, **TINY)
    assert bb.feature_info == {"C2": {"channels": 64, "stride": 4},
                               "C3": {"channels": 128, "stride": 8},
                               "C4": {"channels": 256, "stride": 16},
                               "C5": {"channels": 512, "stride": 32}}
    out = bb(np.zeros((1, 64, 96, 3), "float32"))
    assert {k: tuple(v.shape) for k, v in out.items()} == {
        "C2": (1, 16, 24, 64), "C3": (1, 8, 12, 128), "C4": (1, 4, 6, 256),
        "C5": (1, 2, 3, 512)}
    split_bn = bb.get_layer("conv3_x").blocks[1].branch[3].param_layers()["bns.0"]
    assert type(split_bn).__name__ == "FrozenBatchNormalization"
    frozen = {v.path.split("/")[0] for v in bb.non_trainable_weights}
    trainable = {v.path.split("/")[0] for v in bb.trainable_weights}
    assert {"conv1", "conv2_x"} <= frozen and not ({"conv1", "conv2_x"} & trainable)
    assert any("conv2_x/block1/conv2/conv1" in v.path for v in bb.non_trainable_weights)
    assert {"conv3_x", "conv4_x", "conv5_x"} <= trainable
    # DC5: conv5_x dilates instead of striding; its first block still pools (stride 1).
    dc5 = backbones.Res2Net50_26w_4s(output_stride=16, **TINY)
    assert tuple(dc5(np.zeros((1, 64, 64, 3), "float32"))["C5"].shape) == (1, 4, 4, 512)
    ms = dc5.get_layer("conv5_x").blocks[0].branch[3]
    assert (ms.first, ms.stride, ms.dilation) == (True, 1, 2)


def test_fold_batchnorm_folds_every_split_conv():
    """The serving copy folds each split's conv -> BN too: the stem, 5 per block (conv1,
    three splits, conv3) x 5 blocks and 3 projection shortcuts (conv2_x keeps 64 channels)."""
    from keras_resnet_suite import export

    model = krs.build("res2net50_26w_4s", input_shape=(None, None, 3), classes=10, **TINY)
    rng = np.random.default_rng(5)
    for v in model.non_trainable_weights:
        v.assign(rng.uniform(0.5, 1.5, v.shape).astype("float32"))
    folded, count = export.fold_batchnorm(model)
    assert count == 1 + 5 * 5 + 3
    block = folded.get_layer("conv3_x").blocks[1]
    [ms] = [layer for layer in block.branch if isinstance(layer, layers.MultiScaleConv)]
    split = ms.split1
    assert [type(layer).__name__ for layer in split] == ["Conv2D", "ReLU"]
    x = rng.normal(size=(2, 48, 48, 3)).astype("float32")
    np.testing.assert_allclose(_np(folded(x, training=False)), _np(model(x, training=False)),
                               atol=1e-5)
