"""torchvision models with random weights and random BN statistics, converted from their
state_dict, give the same logits (max abs diff <= 1e-4). Skipped when torchvision is absent
(it is no test dependency); the measured differences are in the README.

The torchvision side runs in a subprocess: importing torchvision (triton) after TensorFlow
in one process crashes."""

import importlib.util
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest

from keras_resnet_suite import weights

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("torchvision") is None, reason="torchvision is not installed")

REFERENCE = textwrap.dedent("""
    import sys
    import numpy as np, torch, torchvision
    out = sys.argv[1]
    x = torch.from_numpy(np.load(out + "/x.npy").transpose(0, 3, 1, 2))
    for arch in sys.argv[2:]:
        torch.manual_seed(0)
        model = getattr(torchvision.models, arch)().eval()
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


ARCHS = ["resnet18", "resnet50", "resnext50_32x4d"]


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """Input, logits and state_dict of each random torchvision model (one subprocess)."""
    out = tmp_path_factory.mktemp("torchvision")
    x = np.random.default_rng(0).uniform(-1, 1, (2, 64, 64, 3)).astype("float32")
    np.save(out / "x.npy", x)
    run = subprocess.run([sys.executable, "-c", REFERENCE, str(out), *ARCHS],
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    return x, out


@pytest.mark.parametrize("arch", ARCHS)
def test_torchvision_parity(arch, reference):
    x, out = reference
    expected = np.load(out / f"{arch}.npy")
    ours = weights.convert_torchvision(arch, str(out / f"{arch}.pth"),
                                       classifier_activation=None)
    got = keras.ops.convert_to_numpy(ours(x))
    assert np.abs(expected).max() > 0.1
    diff = float(np.abs(got - expected).max())
    print(f"{arch}: max abs diff {diff:.2e} (logits up to {np.abs(expected).max():.3f})")
    assert diff <= 1e-4
