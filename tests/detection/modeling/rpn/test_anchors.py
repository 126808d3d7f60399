"""Anchors of a known feature map equal hand-computed ones (centre convention in anchors.py)."""

import numpy as np
import pytest

from detection.modeling.rpn import anchors

pytestmark = pytest.mark.jax


def test_cell_anchors_area_and_ratio():
    cell = anchors.cell_anchors((32, 64), (0.5, 1.0, 2.0))
    w = cell[:, 2] - cell[:, 0]
    h = cell[:, 3] - cell[:, 1]
    np.testing.assert_allclose(w * h, [32**2] * 3 + [64**2] * 3, rtol=1e-5)
    np.testing.assert_allclose(h / w, [0.5, 1, 2, 0.5, 1, 2], rtol=1e-5)
    np.testing.assert_allclose(cell[:, :2] + cell[:, 2:], 0, atol=1e-5)  # centred on 0


def test_grid_anchors_hand_computed():
    # 2x3 map, stride 16, one 32 px square anchor: centres at (16 j, 16 i), order row-major.
    got = anchors.grid_anchors(2, 3, 16, (32,), (1.0,))
    want = np.array([[16 * j - 16, 16 * i - 16, 16 * j + 16, 16 * i + 16]
                     for i in range(2) for j in range(3)], "float32")
    np.testing.assert_allclose(got, want)


def test_grid_anchors_order_and_offset():
    got = anchors.grid_anchors(1, 2, 8, (16,), (0.5, 2.0), offset=0.5)
    s2 = np.sqrt(2.0)
    # cell (0, 0) centred at (4, 4); ratio 0.5 is wide (w = 16 sqrt 2, h = 16 / sqrt 2).
    np.testing.assert_allclose(got[0], [4 - 8 * s2, 4 - 8 / s2, 4 + 8 * s2, 4 + 8 / s2], rtol=1e-5)
    np.testing.assert_allclose(got[1], [4 - 8 / s2, 4 - 8 * s2, 4 + 8 / s2, 4 + 8 * s2], rtol=1e-5)
    np.testing.assert_allclose(got[2, [0, 2]], got[0, [0, 2]] + 8, rtol=1e-5)  # next column
    assert got.shape == (4, 4)


def test_c4_and_fpn_counts():
    c4 = anchors.grid_anchors(4, 5, 16, anchors.C4_SIZES)
    assert c4.shape == (4 * 5 * 15, 4)
    levels = anchors.multilevel_anchors([(8, 8), (4, 4)], [4, 8], anchors.FPN_SIZES[:2])
    assert [lvl.shape[0] for lvl in levels] == [8 * 8 * 3, 4 * 4 * 3]
    w = levels[1][:, 2] - levels[1][:, 0]
    h = levels[1][:, 3] - levels[1][:, 1]
    np.testing.assert_allclose(np.sqrt(w * h), 64, rtol=1e-5)


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match="must be positive"):
        anchors.grid_anchors(0, 3, 16, (32,))
    with pytest.raises(ValueError, match="must match"):
        anchors.multilevel_anchors([(2, 2)], [4, 8], [(32,)])
