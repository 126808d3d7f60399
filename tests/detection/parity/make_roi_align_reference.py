"""Write the stored RoIAlign reference (roi_align.npz, beside this script):
torchvision.ops.roi_align on a seeded 9x8x3 feature map and boxes inside, across, outside and
smaller than a bin of it, for sampling_ratio 0 (adaptive) and 2, aligned True and False. The
npz holds the inputs too (`feat` NHWC, `boxes` xyxy in input pixels, scale 1/8, 4x4 output), so
the test needs no torch.

Run where torchvision is installed (torch and TensorFlow must not share a process):
    python tests/detection/parity/make_roi_align_reference.py [OUT_FILE]
"""

from __future__ import annotations

import os
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
SEED = 2
OUTPUT, SCALE = 4, 1 / 8
CASES = ((2, True), (2, False), (0, True), (0, False))  # (sampling_ratio, aligned)
BOXES = np.array([[3.0, 5.0, 40.0, 30.0], [-6.0, -4.0, 20.0, 12.0], [50.0, 40.0, 70.0, 66.0],
                  [10.0, 10.0, 10.5, 11.0], [-30.0, -20.0, -9.0, -10.0], [0.0, 0.0, 64.0, 72.0]],
                 "float32")


def key(ratio: int, aligned: bool) -> str:
    return f"out_ratio{ratio}_{'aligned' if aligned else 'legacy'}"


def reference() -> dict[str, np.ndarray]:
    """torchvision's pooled features (NHWC per box) for every case, and the inputs."""
    import torch  # only here: the test imports this module without torch
    from torchvision.ops import roi_align

    feat = np.random.default_rng(SEED).normal(size=(1, 9, 8, 3)).astype("float32")
    rois = torch.from_numpy(np.concatenate([np.zeros((len(BOXES), 1), "float32"), BOXES], 1))
    out = {"feat": feat, "boxes": BOXES}
    for ratio, aligned in CASES:
        pooled = roi_align(torch.from_numpy(feat).permute(0, 3, 1, 2), rois, (OUTPUT, OUTPUT),
                           SCALE, ratio, aligned=aligned)
        out[key(ratio, aligned)] = pooled.permute(0, 2, 3, 1).numpy()
    return out


if __name__ == "__main__":
    path = sys.argv[1] if len(sys.argv) > 1 else os.path.join(HERE, "roi_align.npz")
    np.savez_compressed(path, **reference())
