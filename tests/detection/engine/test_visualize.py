"""`draw_detections`: the photo at its own size, labels that never overlap (`label_layout`)."""

import numpy as np
import pytest
from PIL import Image

from detection.engine.visualize import MAX_SIDE, draw_detections, label_layout


def _overlap(a, b):
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def _predictions(w, h, n=6, seed=0):
    rng = np.random.default_rng(seed)
    xy = rng.uniform(0, 0.5, (n, 2)) * (w, h)
    boxes = np.concatenate([xy, xy + rng.uniform(0.1, 0.5, (n, 2)) * (w, h)], 1)
    return {"boxes": boxes, "scores": rng.uniform(0.5, 1, n), "classes": rng.integers(0, 2, n)}


@pytest.mark.parametrize("w, h", [(450, 319), (550, 309), (64, 200)])
def test_the_png_has_the_photos_size(tmp_path, w, h):
    image = np.random.default_rng(0).integers(0, 255, (h, w, 3), dtype=np.uint8)
    png = draw_detections([image], [_predictions(w, h)], tmp_path / "p.png",
                          class_names=["kangaroo", "raccoon"])
    drawn = np.asarray(Image.open(png).convert("RGB"))
    assert drawn.shape == image.shape  # no canvas, no white margins
    assert (np.abs(drawn.astype(int) - image).sum(-1) > 0).mean() > 0.01  # boxes and labels


def test_a_large_photo_is_scaled_down_to_the_documented_maximum(tmp_path):
    image = np.zeros((1000, 2000, 3), np.uint8)
    png = draw_detections([image], [_predictions(2000, 1000)], tmp_path / "big.png")
    assert Image.open(png).size == (MAX_SIDE, round(1000 * MAX_SIDE / 2000))


def test_a_grid_keeps_each_image_at_its_size(tmp_path):
    images = [np.zeros((100, 150, 3), np.uint8), np.zeros((120, 80, 3), np.uint8)]
    preds = [_predictions(150, 100, 2), _predictions(80, 120, 2)]
    assert Image.open(draw_detections(images, preds, tmp_path / "g.png")).size == (304, 120)


def test_labels_never_overlap_and_stay_inside_the_image():
    rng = np.random.default_rng(1)
    for trial in range(20):
        w, h = rng.integers(200, 900, 2)
        n = int(rng.integers(1, 40))
        pred = _predictions(w, h, n, seed=trial)
        sizes = [tuple(rng.uniform((30, 12), (160, 30))) for _ in range(n)]
        spots = label_layout(pred["boxes"], sizes, w, h)
        placed = [s for s in spots if s is not None]
        assert len(placed) >= min(n, 5)  # a crowded image may leave some out, never the first
        assert spots[0] is not None
        for i, a in enumerate(placed):
            assert 0 <= a[0] and a[2] <= w and 0 <= a[1] and a[3] <= h, a
            assert not any(_overlap(a, b) for b in placed[i + 1:]), (a, placed)


def test_labels_of_the_same_box_are_stacked():
    """Two detections of one object ("kangi", "kangaroo"): both labels shown, one above the
    other at the box's corner instead of written over each other."""
    box = [100.0, 100.0, 300.0, 250.0]
    spots = label_layout([box, box], [(80, 20), (90, 20)], 450, 319)
    assert spots[0] == (100.0, 80.0, 180.0, 100.0)  # above the box's top-left corner
    assert spots[1] is not None and not _overlap(spots[0], spots[1])
    assert abs(spots[1][1] - spots[0][1]) <= 20 or spots[1][0] != spots[0][0]
