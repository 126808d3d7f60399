"""load_timm_efficientnet's refusals: a missing, a left-over or a wrongly shaped tensor, or a
model that is not an EfficientNet B0-B7, each named in one line (logit parity with timm itself
is `tests/weights/test_reference_parity.py::...[timm_tf_efficientnet_b0]`)."""

import json
import pathlib
import sys

import numpy as np
import pytest

import keras_resnet_suite as krs
from keras_resnet_suite.efficientnet_timm import load_timm_efficientnet

pytestmark = pytest.mark.tf_only
sys.path.insert(0, str(pathlib.Path(__file__).parents[1] / "detection" / "parity"))
import seeded  # noqa: E402

REFERENCE = pathlib.Path(__file__).parents[1] / "weights" / "reference"


@pytest.fixture(scope="module")
def state():
    skeleton = json.loads(str(np.load(REFERENCE / "timm_tf_efficientnet_b0.npz")["skeleton"]))
    return seeded.seeded_state(skeleton, 0, calibrated=False)


@pytest.fixture(scope="module")
def model():
    return krs.build("efficientnet_b0", input_shape=(32, 32, 3), classifier_activation=None)


def test_the_whole_state_loads_and_headless_models_take_it_without_the_classifier(state, model):
    load_timm_efficientnet(model, state)
    np.testing.assert_array_equal(model.get_layer("stem_conv").get_weights()[0],
                                  state["conv_stem.weight"].transpose(2, 3, 1, 0))
    headless = krs.build("efficientnet_b0", include_top=False, input_shape=(32, 32, 3))
    load_timm_efficientnet(headless, state)


@pytest.mark.parametrize("change, message", [
    (lambda s: s.pop("blocks.1.0.se.conv_reduce.bias"),
     r"no 'blocks.1.0.se.conv_reduce.bias' \(for block2a/se/reduce"),
    (lambda s: s.update({"blocks.7.0.conv_pw.weight": np.zeros((1, 1, 1, 1))}),
     r"tensor\(s\) \['blocks.7.0.conv_pw.weight'\] have no place in efficientnet_b0"),
    (lambda s: s.update({"conv_head.weight": np.zeros((1280, 32, 1, 1), "float32")}),
     r"conv_head.\*: shapes \[\(1, 1, 32, 1280\)\] differ from top_conv's"),
])
def test_a_state_that_does_not_fit_is_named(state, model, change, message):
    broken = dict(state)
    change(broken)
    with pytest.raises(ValueError, match=message):
        load_timm_efficientnet(model, broken)


def test_other_models_are_refused(state):
    with pytest.raises(ValueError, match="takes an EfficientNet B0-B7 of this library, got "
                                         "'resnet20'"):
        load_timm_efficientnet(krs.build("resnet20"), state)


def _pth(state, path):
    from tests.weights.test_torch_file import tensor, torch_save

    torch_save({k: tensor(np.asarray(v, "float32")) for k, v in state.items()}, path,
               zip_format=True)
    return path


def test_imagenet_weights_are_timms_published_file_with_its_preprocessing(state, tmp_path,
                                                                          monkeypatch):
    """`weights="imagenet"` fetches timm's tf_efficientnet_b0 file (verified by its published
    hash prefix; here the download is replaced by a seeded file) and keeps its preprocessing."""
    import keras_resnet_suite.efficientnet as effnet

    fetched = []
    monkeypatch.setattr(effnet, "fetch", lambda c: fetched.append(c) or _pth(state, tmp_path / c.filename))
    model = krs.build("efficientnet_b0", weights="imagenet", input_shape=(32, 32, 3))
    assert fetched[0].url.endswith("/tf_efficientnet_b0_aa-827b6e33.pth")
    assert fetched[0].file_hash == "827b6e33" and (fetched[0].resize, fetched[0].crop) == (256, 224)
    assert model.checkpoint.name == "efficientnet_b0:timm" and model.checkpoint.top1 == 77.1
    direct = load_timm_efficientnet(
        krs.build("efficientnet_b0", input_shape=(32, 32, 3)), state)
    x = np.random.default_rng(0).uniform(0, 255, (2, 32, 32, 3)).astype("float32")
    np.testing.assert_array_equal(model.predict(x, verbose=0), direct.predict(x, verbose=0))
    assert np.asarray(model.preprocess_input(x)).std() < 5  # ImageNet mean/std applied


def test_a_pth_file_loads_into_classifiers_and_frozen_backbones(state, tmp_path):
    from keras_resnet_suite import backbones

    path = _pth(state, tmp_path / "tf_efficientnet_b0.pth")
    net = backbones.build("efficientnet_b0", weights=str(path), norm="frozen", freeze_at=2,
                          input_shape=(32, 32, 3))
    np.testing.assert_array_equal(net.get_layer("stem_conv").get_weights()[0],
                                  state["conv_stem.weight"].transpose(2, 3, 1, 0))
    with pytest.raises(FileNotFoundError, match="weights='missing.pth': no such file"):
        krs.build("efficientnet_b0", weights="missing.pth")
    with pytest.raises(ValueError, match="no such checkpoint for efficientnet_b0; available: "
                                         r"\['imagenet', 'timm'\]"):
        krs.build("efficientnet_b0", weights="torchvision")


def test_keras_hub_adapter_takes_an_efficientnet_with_published_weights(state, tmp_path,
                                                                         monkeypatch):
    """The keras-hub adapter wraps an EfficientNet backbone as it wraps the ResNets; its reload
    (`load_weights=False`) reads no file but keeps the checkpoint's preprocessing."""
    pytest.importorskip("keras_hub")
    import keras_resnet_suite.efficientnet as effnet
    from keras_resnet_suite.integrations.keras_hub import ResNetHubBackbone

    monkeypatch.setattr(effnet, "fetch", lambda c: _pth(state, tmp_path / c.filename))
    hub = ResNetHubBackbone("efficientnet_b0", weights="imagenet", image_shape=(64, 64, 3))
    assert list(hub.pyramid_outputs) == ["P2", "P3", "P4", "P5"]
    assert hub.checkpoint.name == "efficientnet_b0:timm"
    monkeypatch.setattr(effnet, "fetch", lambda c: pytest.fail("a reload must not download"))
    again = ResNetHubBackbone.from_config(hub.get_config())
    assert again.checkpoint.name == "efficientnet_b0:timm"
