"""torchvision and timm models with random weights and random BN statistics, converted from
their state_dict, give the same logits (max abs diff <= 1e-4). Each library's tests are
skipped where it is absent (neither is a test dependency); the measured differences are in
the README. timm's ResNet-D runs on 72x72 images, whose 9x9 -> 5x5 stage exercises the
average-pooled shortcut's partial window.

The reference side runs in a subprocess: importing torch (triton) after TensorFlow in one
process crashes."""

import importlib.util
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest

from keras_resnet_suite import models

REFERENCE = textwrap.dedent("""
    import importlib, sys
    import numpy as np, torch
    library, out = sys.argv[1], sys.argv[2]
    lib = importlib.import_module(library)
    make = (lambda a: lib.create_model(a, pretrained=False)) if library == "timm" else (
        lambda a: getattr(lib.models, a)())
    x = torch.from_numpy(np.load(out + "/x.npy").transpose(0, 3, 1, 2))
    for arch in sys.argv[3:]:
        torch.manual_seed(0)
        model = make(arch).eval()
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                # Gammas below 1 keep a deep random network's logits O(1), so 1e-4 is tight.
                m.weight.data.uniform_(0.4, 0.8)
                m.bias.data.uniform_(-0.1, 0.1)
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 1.5)
        with torch.no_grad():
            np.save(f"{out}/{arch}.npy", model(x).numpy())
        torch.save(model.state_dict(), f"{out}/{arch}.pth")
""")

# library -> (architectures, image side)
CASES = {"torchvision": (["resnet18", "resnet50", "resnext50_32x4d"], 64),
         "timm": (["resnet18d", "resnet50d"], 72)}


def _skip_unless(library):
    return pytest.mark.skipif(importlib.util.find_spec(library) is None,
                              reason=f"{library} is not installed")


@pytest.fixture(scope="module", params=[pytest.param(lib, marks=_skip_unless(lib))
                                        for lib in CASES])
def reference(request, tmp_path_factory):
    """Input, logits and state_dict of each random model of one library (one subprocess)."""
    library = request.param
    archs, size = CASES[library]
    out = tmp_path_factory.mktemp(library)
    x = np.random.default_rng(0).uniform(-1, 1, (2, size, size, 3)).astype("float32")
    np.save(out / "x.npy", x)
    run = subprocess.run([sys.executable, "-c", REFERENCE, library, str(out), *archs],
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    return library, x, out


def test_logits_equal_the_reference_library(reference):
    library, x, out = reference
    for arch in CASES[library][0]:
        expected = np.load(out / f"{arch}.npy")
        ours = models.convert_torchvision(arch, str(out / f"{arch}.pth"),
                                           classifier_activation=None)
        got = keras.ops.convert_to_numpy(ours(x))
        assert np.abs(expected).max() > 0.1
        diff = float(np.abs(got - expected).max())
        print(f"{library} {arch}: max abs diff {diff:.2e} "
              f"(logits up to {np.abs(expected).max():.3f})")
        assert diff <= 1e-4, arch
