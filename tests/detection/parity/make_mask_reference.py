"""Write the stored mask reference (masks.npz, beside this script): torchvision's
`paste_masks_in_image` (pasting 28x28 probabilities into a 40x48 image at boxes inside and across
the border of it (torchvision fails on a box wholly outside: detections are clipped first),
and detectron2's rule (`_do_paste_mask`, its ~10 lines of torch copied below: `grid_sample`
at each pixel centre's position in the box, kept where >= 0.5), thresholded at 0.5 as its COCO evaluation does) and
`project_masks_on_boxes` (the mask targets: the matched ground-truth masks RoIAligned into
28x28, `aligned=False`, adaptive sampling) on seeded inputs. The npz holds the inputs too, so
the test needs no torch.

Run where torchvision is installed (torch and TensorFlow must not share a process):
    python tests/detection/parity/make_mask_reference.py [OUT_FILE]
"""

from __future__ import annotations

import os
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
SEED = 5
SIZE, HEIGHT, WIDTH = 28, 40, 48
PASTE_BOXES = np.array([[4.0, 6.0, 30.0, 25.0], [-5.5, -3.2, 12.7, 10.1], [30.3, 20.6, 60.0, 52.0],
                        [10.0, 10.0, 10.4, 10.6], [40.0, 33.0, 47.9, 39.9], [0.0, 0.0, 47.0, 39.0]],
                       "float32")
# RoIs of 2 images against 3 ground-truth masks each; every side under 6 * 28 px, where our
# capped adaptive sampling equals torchvision's.
ROIS = np.array([[[2.0, 3.0, 30.0, 33.0], [10.5, 4.2, 20.1, 18.9], [-4.0, -2.0, 15.0, 9.0],
                  [5.0, 5.0, 5.5, 5.3]],
                 [[0.0, 0.0, 48.0, 40.0], [20.0, 12.0, 46.0, 38.0], [33.3, 1.7, 44.4, 30.2],
                  [12.0, 20.0, 40.0, 39.0]]], "float32")
MATCHED = np.array([[0, 2, 1, 0], [1, 2, 0, 2]], "int32")


def inputs() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(SEED)
    probs = rng.uniform(size=(len(PASTE_BOXES), SIZE, SIZE)).astype("float32")
    gt = np.zeros((2, 3, HEIGHT, WIDTH), "uint8")
    for b in range(2):
        for m in range(3):
            x0, y0 = rng.integers(0, 30), rng.integers(0, 24)
            w, h = rng.integers(8, 18), rng.integers(8, 16)
            gt[b, m, y0:y0 + h, x0:x0 + w] = 1
            gt[b, m] &= rng.uniform(size=(HEIGHT, WIDTH)) > 0.2  # ragged edges and holes
    return {"probs": probs, "paste_boxes": PASTE_BOXES, "gt_masks": gt, "rois": ROIS,
            "matched": MATCHED}


def detectron2_paste(masks, boxes, height: int, width: int):
    """detectron2.layers.mask_ops._do_paste_mask (skip_empty=False) on [N, 1, S, S] masks."""
    import torch
    import torch.nn.functional as F

    x0, y0, x1, y1 = torch.split(boxes, 1, dim=1)
    n = masks.shape[0]
    img_y = torch.arange(0, height, dtype=torch.float32) + 0.5
    img_x = torch.arange(0, width, dtype=torch.float32) + 0.5
    img_y = (img_y - y0) / (y1 - y0) * 2 - 1
    img_x = (img_x - x0) / (x1 - x0) * 2 - 1
    gx = img_x[:, None, :].expand(n, img_y.size(1), img_x.size(1))
    gy = img_y[:, :, None].expand(n, img_y.size(1), img_x.size(1))
    grid = torch.stack([gx, gy], dim=3)
    return F.grid_sample(masks, grid, align_corners=False)[:, 0]


def reference() -> dict[str, np.ndarray]:
    """torchvision's pasted masks and mask targets, and the inputs."""
    import torch  # only here: the test imports this module without torch
    from torchvision.models.detection.roi_heads import paste_masks_in_image, project_masks_on_boxes

    out = inputs()
    pasted = paste_masks_in_image(torch.from_numpy(out["probs"])[:, None],
                                  torch.from_numpy(PASTE_BOXES), (HEIGHT, WIDTH))
    out["pasted"] = (pasted[:, 0] > 0.5).numpy().astype("uint8")
    d2 = detectron2_paste(torch.from_numpy(out["probs"])[:, None], torch.from_numpy(PASTE_BOXES),
                          HEIGHT, WIDTH)
    out["pasted_detectron2"] = (d2 >= 0.5).numpy().astype("uint8")
    out["targets"] = np.stack([
        project_masks_on_boxes(torch.from_numpy(out["gt_masks"][b]), torch.from_numpy(ROIS[b]),
                               torch.from_numpy(MATCHED[b]).long(), SIZE).numpy()
        for b in range(2)])
    return out


if __name__ == "__main__":
    path = sys.argv[1] if len(sys.argv) > 1 else os.path.join(HERE, "masks.npz")
    np.savez_compressed(path, **reference())
