"""Classification parity against torchvision, timm and keras.applications from stored
references (tests/weights/reference, written by make_references.py), in every CI pass and
without torch: the reference's own weight format, drawn from a numpy seed with random BN
statistics, converted by this library's converter (`load_torchvision`, or a keras.applications
`.h5` through `convert_keras_applications`), gives the reference's logits to
max |diff| <= 1e-4 x max |logit| (float32), with every key of the reference used (the loader
refuses a missing, unexpected or mis-shaped one). The JAX pass runs one case per code path.
`test_stored_reference_is_current` reruns the installed reference libraries in a subprocess
(torch and TensorFlow crash in one process) and checks the stored files still hold; it skips
where a library is absent."""

import importlib.util
import json
import pathlib
import subprocess
import sys

import keras
import numpy as np
import pytest
from conftest import write_legacy_h5_layers

import keras_resnet_suite as krs
from keras_resnet_suite import models, weights
from keras_resnet_suite.efficientnet_timm import load_timm_efficientnet
from tests.conftest import load_script

HERE = pathlib.Path(__file__).resolve().parent
MAKE = HERE / "make_references.py"
REFERENCE = HERE / "reference"
TOLERANCE = 1e-4  # relative to the largest |logit|; measured 5e-7 to 2e-6 (float32)



make = load_script("make_references", MAKE)
seeded = load_script("reference_seeded", HERE.parent / "detection" / "parity" / "seeded.py")
# What each library's reference needs installed besides this project's test dependencies.
NEEDS = {"torchvision": ("torch", "torchvision"), "timm": ("torch", "timm"), "keras": ()}
# One case per code path in the JAX pass (basic, bottleneck, ResNet-D, Res2Net, pre-activation):
# its eager model calls cost 5-30 s per full-size case.
JAX_CASES = {"torchvision_resnet50", "timm_resnet18d", "timm_res2net50_26w_4s", "timm_res2next50",
             "timm_res2net50d", "keras_ResNet50V2"}


def _our_model(case: str, skeleton: list, tmp_path: pathlib.Path) -> keras.Model:
    """Our classifier with the seeded reference weights, converted from the reference format."""
    library, arch, _, options = make.CASES[case]
    if library == "keras":
        layers = {layer: list(zip([w for w, _, _ in ws], arrays, strict=True))
                  for (layer, ws), arrays in zip(skeleton, make.keras_state(skeleton).values(),
                                                 strict=True)}
        path = write_legacy_h5_layers(layers, tmp_path / f"{arch}.h5")
        return models.convert_keras_applications(str(path), classifier_activation=None)
    if arch.startswith("tf_efficientnet"):
        model = krs.build(arch[3:], input_shape=(None, None, 3), classifier_activation=None)
        return load_timm_efficientnet(model, seeded.seeded_state(skeleton, make.SEED,
                                                                 calibrated=False))
    shrink = {"depths": options["layers"], "widths": options["channels"],
              "classes": options["num_classes"]} if options else {}
    model = krs.build(arch, input_shape=(None, None, 3), classifier_activation=None, **shrink)
    return weights.load_torchvision(model, seeded.seeded_state(skeleton, make.SEED,
                                                               calibrated=False))


@pytest.mark.parametrize("case", [pytest.param(case, marks=pytest.mark.jax)
                                  if case in JAX_CASES else case for case in make.CASES])
def test_logits_equal_stored_reference(case, tmp_path):
    ref = np.load(REFERENCE / f"{case}.npz")
    model = _our_model(case, json.loads(str(ref["skeleton"])), tmp_path)
    got = keras.ops.convert_to_numpy(model(make.inputs(make.CASES[case][2]), training=False))
    expected = ref["logits"]
    scale = float(np.abs(expected).max())
    # The two images' logits differ by far more than the tolerance: the input reaches them.
    assert np.abs(expected[0] - expected[1]).max() > 100 * TOLERANCE * scale
    diff = float(np.abs(got - expected).max())
    print(f"{case}: max abs diff {diff:.2e} (logits up to {scale:.2f})")
    assert got.shape == expected.shape
    assert diff <= TOLERANCE * scale


@pytest.fixture(scope="module")
def regenerated(tmp_path_factory):
    """library -> a folder with its freshly generated references (one subprocess each)."""
    done = {}

    def get(library: str) -> pathlib.Path:
        if library not in done:
            out = tmp_path_factory.mktemp(library)
            run = subprocess.run([sys.executable, str(MAKE), "--library", library, str(out)],
                                 capture_output=True, text=True, timeout=600)
            assert run.returncode == 0, run.stderr[-2000:]
            done[library] = out
        return done[library]

    return get


def _installed(case):
    missing = [m for m in NEEDS[make.CASES[case][0]] if importlib.util.find_spec(m) is None]
    return pytest.param(case, marks=pytest.mark.skipif(
        bool(missing), reason=f"{', '.join(missing)} not installed: the stored reference is "
        "checked by test_logits_equal_stored_reference"))


@pytest.mark.parametrize("case", [_installed(case) for case in make.CASES])
def test_stored_reference_is_current(case, regenerated):
    fresh = np.load(regenerated(make.CASES[case][0]) / f"{case}.npz")
    stored = np.load(REFERENCE / f"{case}.npz")
    assert str(fresh["skeleton"]) == str(stored["skeleton"])
    scale = float(np.abs(stored["logits"]).max())
    np.testing.assert_allclose(fresh["logits"], stored["logits"], rtol=0,
                               atol=TOLERANCE * scale)


def test_a_converter_that_drops_a_bn_statistic_fails(tmp_path):
    """The comparison can fail: the same weights with every BN running_var reset to one (as a
    converter that forgot it would load them) miss the logits by far more than the tolerance."""
    case = "timm_res2net50_26w_4s"
    ref = np.load(REFERENCE / f"{case}.npz")
    skeleton = json.loads(str(ref["skeleton"]))
    model = _our_model(case, skeleton, tmp_path)
    state = seeded.seeded_state(skeleton, make.SEED, calibrated=False)
    weights.load_torchvision(model, {k: np.ones_like(v) if k.endswith("running_var") else v
                                     for k, v in state.items()})
    got = keras.ops.convert_to_numpy(model(make.inputs(make.CASES[case][2]), training=False))
    scale = float(np.abs(ref["logits"]).max())
    assert np.abs(got - ref["logits"]).max() > 100 * TOLERANCE * scale
