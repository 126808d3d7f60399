"""Write the stored Res2Net parity references (tests/weights/reference/res2net_*.npz): timm's
Res2Net / Res2NeXt / Res2Net-D shrunk to 2-2-1-1 blocks of widths 16-32-64-128 with 10 classes,
weights and BN statistics drawn by `seeded_state` (tests/detection/parity/seeded.py) and a
72x72 input pair drawn by `inputs()`: both pure numpy, so the test regenerates the same arrays
without torch. Only timm's logits and its state dict's key/shape list are stored (a few KB).

Run where timm is installed (torch and TensorFlow must not share a process):
    python tests/weights/make_res2net_reference.py [OUT_DIR]
"""

from __future__ import annotations

import json
import os
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "detection", "parity"))
import seeded  # noqa: E402

# The shrink keeps every code path: a chained (non-first) block in conv2_x and conv3_x, strided
# first blocks with the pooled last split, a stride-1 first block (conv2_x), grouped 3x3s.
ARCHS = ("res2net50_26w_4s", "res2next50", "res2net50d")
SHRINK = {"layers": (2, 2, 1, 1), "channels": (16, 32, 64, 128), "num_classes": 10}
SIZE = 72  # 72 -> 18 -> 9 -> 5 -> 3: odd sizes exercise the strided pools' edges
SEED = 0


def inputs() -> np.ndarray:
    """The input pair, NHWC float32 in [-1, 1)."""
    return np.random.default_rng(SEED).uniform(-1, 1, (2, SIZE, SIZE, 3)).astype("float32")


def reference(arch: str) -> dict[str, np.ndarray]:
    """timm's `logits` for `inputs()` and its state dict's `skeleton` (JSON)."""
    import timm  # only here: the parity test imports this module without torch
    import torch

    model = timm.create_model(arch, pretrained=False, **SHRINK).eval()
    skeleton = [(k, tuple(v.shape), str(v.numpy().dtype)) for k, v in model.state_dict().items()]
    state = seeded.seeded_state(skeleton, SEED, calibrated=False)
    model.load_state_dict({k: torch.from_numpy(v) for k, v in state.items()})
    x = inputs()
    with torch.no_grad():
        logits = model(torch.from_numpy(x.transpose(0, 3, 1, 2))).numpy()
    return {"logits": logits, "skeleton": np.array(json.dumps(skeleton))}


def main(out: str) -> None:
    os.makedirs(out, exist_ok=True)
    for arch in ARCHS:
        np.savez_compressed(os.path.join(out, f"res2net_{arch}.npz"), **reference(arch))


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else os.path.join(HERE, "reference"))
