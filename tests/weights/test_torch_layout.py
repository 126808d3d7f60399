"""torchvision/timm state dicts (as numpy, .safetensors or .pth):
key layout, round trips, and every kind of bad checkpoint refused with the keys listed."""

import keras
import numpy as np
import pytest
from test_torch_file import tensor, torch_save

import keras_resnet_suite as krs
from keras_resnet_suite import convert, weights

SMALL = {"widths": (8, 16, 32, 64), "stem_width": 8}
TINY = {"depths": (1, 1, 1, 1), **SMALL}


def _np(x):
    return keras.ops.convert_to_numpy(x)


def _x(size=64):
    return np.random.default_rng(0).normal(size=(2, size, size, 3)).astype("float32")


def test_state_dict_has_torchvision_keys_and_shapes():
    state = weights.to_torchvision(krs.build("resnet50", input_shape=(None, None, 3)))
    # torchvision's resnet50 has 320 entries, 53 of them BN `num_batches_tracked` counters.
    assert len(state) == 320 - 53
    assert state["conv1.weight"].shape == (64, 3, 7, 7)
    assert state["layer1.0.downsample.0.weight"].shape == (256, 64, 1, 1)
    assert state["layer3.5.conv2.weight"].shape == (256, 256, 3, 3)
    assert state["layer4.2.bn3.running_var"].shape == (2048,)
    assert state["fc.weight"].shape == (1000, 2048)
    grouped = weights.to_torchvision(krs.build("resnext50_32x4d", input_shape=(None, None, 3),
                                               depths=(1, 1, 1, 1)))
    assert grouped["layer1.0.conv2.weight"].shape == (128, 4, 3, 3)  # 32 groups of 4


def test_safetensors_round_trip_gives_identical_outputs(tmp_path):
    source = krs.build("resnet50", classes=5, input_shape=(None, None, 3), **TINY)
    for v in source.non_trainable_weights:  # statistics away from their initial 0/1
        v.assign(np.random.default_rng(1).uniform(0.5, 1.5, v.shape).astype("float32"))
    path = tmp_path / "r50.safetensors"
    convert.write_safetensors(weights.to_torchvision(source), path)
    loaded = krs.build("resnet50", classes=5, weights=str(path), input_shape=(None, None, 3),
                       **TINY)
    np.testing.assert_array_equal(_np(loaded(_x())), _np(source(_x())))
    backbone = krs.backbones.build("resnet50", weights=str(path), **TINY)  # fc is skipped
    np.testing.assert_array_equal(_np(backbone(_x())["C5"]),
                                  _np(krs.backbones.from_classifier(source)(_x())["C5"]))


@pytest.mark.jax
def test_bfloat16_safetensors_are_widened(tmp_path):
    values = np.array([1.0, -2.5, 3.140625], "float32")
    bits = (values.view(np.uint32) >> 16).astype(np.uint16)  # exact in bfloat16
    head = b'{"w":{"dtype":"BF16","shape":[3],"data_offsets":[0,6]}}'
    head += b" " * (-len(head) % 8)
    raw = len(head).to_bytes(8, "little") + head + bits.astype("<u2").tobytes()
    path = tmp_path / "bf16.safetensors"
    path.write_bytes(raw)
    np.testing.assert_array_equal(convert.read_safetensors(path)["w"], values)


@pytest.mark.jax
def test_conv_bias_is_folded_into_the_following_bn():
    model = krs.build("resnet18", input_shape=(None, None, 3), **TINY)
    state = weights.to_torchvision(model)
    bias = np.linspace(-1, 1, 8).astype("float32")
    state["layer1.0.conv1.bias"] = bias  # timm-style biased conv before a BN
    weights.load_torchvision(model, state)
    bn1 = [layer for layer in model.get_layer("conv2_x").blocks[0].branch
           if layer.name == "bn1"][0]
    np.testing.assert_allclose(_np(bn1.moving_mean), state["layer1.0.bn1.running_mean"] - bias)


@pytest.mark.jax
def test_missing_unexpected_and_misshaped_keys_are_all_listed():
    model = krs.build("resnet18", input_shape=(None, None, 3), **TINY)
    state = weights.to_torchvision(model)
    del state["layer2.0.bn1.running_var"]
    state["layer2.0.attn.fc1.weight"] = np.zeros((4, 4), "float32")  # no module of ours
    state["layer3.0.conv2.weight"] = np.zeros((32, 32, 5, 5), "float32")
    with pytest.raises(ValueError) as err:
        weights.load_torchvision(model, state)
    message = str(err.value)
    assert "layer2.0.bn1: incomplete entry" in message  # running_var gone
    assert "unexpected: layer2.0.attn.fc1.weight" in message
    assert "wrong shape: layer3.0.conv2: checkpoint [(5, 5, 32, 32)] vs model [(3, 3, 32, 32)]" \
        in message
    state = weights.to_torchvision(model)
    del state["layer4.0.downsample.0.weight"]
    with pytest.raises(ValueError, match=r"missing: layer4\.0\.downsample\.0\Z"):
        weights.load_torchvision(model, state)


@pytest.mark.jax
def test_resnet50_weights_into_resnet101_is_an_architecture_mismatch():
    state = weights.to_torchvision(krs.build("resnet50", input_shape=(None, None, 3), **SMALL))
    target = krs.build("resnet101", input_shape=(None, None, 3), **SMALL)
    with pytest.raises(ValueError, match=r"blocks per stage \(3, 4, 6, 3\) in the checkpoint, "
                                         r"\(3, 4, 23, 3\) in the model"):
        weights.load_torchvision(target, state)


@pytest.mark.jax
def test_corrupt_safetensors_names_the_file(tmp_path):
    path = tmp_path / "broken.safetensors"
    path.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json at all")
    with pytest.raises(ValueError, match="broken.safetensors.*bad JSON"):
        convert.read_state_dict(path)


def test_pth_is_read_only_as_a_plain_tensor_dict(tmp_path):
    # The files are written as torch.save writes them (test_torch_file's writer), so this
    # runs without torch: in CI too.
    model = krs.build("resnet18", input_shape=(None, None, 3), **TINY)
    state = {k: tensor(v) for k, v in weights.to_torchvision(model).items()}
    good = tmp_path / "good.pth"
    torch_save({"state_dict": state, "epoch": 3}, good, zip_format=True)  # training checkpoint
    loaded = krs.build("resnet18", weights=str(good), input_shape=(None, None, 3), **TINY)
    np.testing.assert_array_equal(_np(loaded(_x())), _np(model(_x())))
    mixed = tmp_path / "mixed.pth"
    torch_save({**state, "note": "hello"}, mixed, zip_format=True)
    with pytest.raises(ValueError, match=r"mixed.pth: refused.*\['note'\]"):
        convert.read_state_dict(mixed)
    code = tmp_path / "code.pth"
    torch_save({"w": tensor(np.zeros(1, "float32")), "obj": _Arbitrary()}, code, zip_format=True)
    with pytest.raises(ValueError, match="code.pth: refused: not a plain tensor checkpoint"):
        convert.read_state_dict(code)


class _Arbitrary:
    """An object whose unpickling would run this module's code: weights_only refuses it."""
