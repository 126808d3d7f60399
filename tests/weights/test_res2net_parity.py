"""Res2Net / Res2NeXt / Res2Net-D against timm: the same seeded weights and randomised BN
statistics give the same logits (max abs diff <= 1e-4), and our torch-layout names are
exactly timm's state dict keys. "stored" checks the references in tests/weights/reference
(written by make_res2net_reference.py; CI has no torch); "live" regenerates them with the
installed timm in a subprocess (torch and TensorFlow crash in one process)."""

import importlib.util
import json
import pathlib
import subprocess
import sys

import keras
import numpy as np
import pytest

import keras_resnet_suite as krs
from keras_resnet_suite import weights

HERE = pathlib.Path(__file__).resolve().parent
MAKE = HERE / "make_res2net_reference.py"


def _load(name, path):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


make = _load("make_res2net_reference", MAKE)
seeded = _load("res2net_seeded", HERE.parent / "detection" / "parity" / "seeded.py")


@pytest.fixture(scope="module", params=[
    pytest.param("stored", marks=pytest.mark.jax), pytest.param("live", marks=pytest.mark.skipif(
        importlib.util.find_spec("timm") is None, reason="timm is not installed"))])
def references(request, tmp_path_factory):
    if request.param == "stored":
        return HERE / "reference"
    out = tmp_path_factory.mktemp("res2net")
    run = subprocess.run([sys.executable, str(MAKE), str(out)], capture_output=True, text=True,
                         timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    return out


@pytest.mark.parametrize("arch", make.ARCHS)
def test_logits_equal_timm(arch, references):
    ref = np.load(references / f"res2net_{arch}.npz")
    skeleton = json.loads(str(ref["skeleton"]))
    shrink = make.SHRINK
    model = krs.build(arch, depths=shrink["layers"], widths=shrink["channels"],
                      classes=shrink["num_classes"], input_shape=(None, None, 3),
                      classifier_activation=None)
    ours = {k: tuple(v.shape) for k, v in weights.to_torchvision(model).items()}
    theirs = {k: tuple(s) for k, s, t in skeleton if not k.endswith("num_batches_tracked")}
    assert ours == theirs
    weights.load_torchvision(model, seeded.seeded_state(skeleton, make.SEED, calibrated=False))
    got = keras.ops.convert_to_numpy(model(make.inputs(), training=False))
    expected = ref["logits"]
    assert np.abs(expected).max() > 1.0
    diff = float(np.abs(got - expected).max())
    print(f"{arch}: max abs diff {diff:.2e} (logits up to {np.abs(expected).max():.2f})")
    assert diff <= 1e-4
