"""RoIAlign equals a direct numpy bilinear reference and torchvision's (stored in
parity/roi_align.npz, and rerun where torchvision is installed); the
gather-based multilevel RoIAlign equals pooling on every level and selecting."""

import math
import pathlib

import keras
import numpy as np
import pytest
from keras import ops

from detection.modeling.ops import roi_align
from tests.conftest import load_script, reference_npz, stored_or_live

pytestmark = pytest.mark.jax


def _bilinear(feat, y, x):
    """detectron2's ROIAlign bilinear_interpolate for one sample point, channels last."""
    h, w, _ = feat.shape
    if y < -1.0 or y > h or x < -1.0 or x > w:
        return np.zeros(feat.shape[-1])
    y, x = max(y, 0.0), max(x, 0.0)
    y0, x0 = int(y), int(x)
    if y0 >= h - 1:
        y0 = y1 = h - 1
        y = float(y0)
    else:
        y1 = y0 + 1
    if x0 >= w - 1:
        x0 = x1 = w - 1
        x = float(x0)
    else:
        x1 = x0 + 1
    ly, lx = y - y0, x - x0
    return ((1 - ly) * (1 - lx) * feat[y0, x0] + (1 - ly) * lx * feat[y0, x1]
            + ly * (1 - lx) * feat[y1, x0] + ly * lx * feat[y1, x1])


def _reference(feat, box, out, scale, ratio, aligned):
    off = 0.5 if aligned else 0.0
    x1, y1, x2, y2 = [c * scale - off for c in box]
    rw, rh = x2 - x1, y2 - y1
    if not aligned:
        rw, rh = max(rw, 1.0), max(rh, 1.0)
    bh, bw = rh / out, rw / out
    # sampling_ratio 0: ceil(bin size) samples per side, as torchvision/detectron2.
    ny, nx = (ratio, ratio) if ratio else (max(math.ceil(bh), 1), max(math.ceil(bw), 1))
    res = np.zeros((out, out, feat.shape[-1]))
    for py in range(out):
        for px in range(out):
            acc = 0.0
            for iy in range(ny):
                for ix in range(nx):
                    y = y1 + py * bh + (iy + 0.5) * bh / ny
                    x = x1 + px * bw + (ix + 0.5) * bw / nx
                    acc = acc + _bilinear(feat, y, x)
            res[py, px] = acc / (ny * nx)
    return res


BOXES = np.array([[[3.0, 5.0, 40.0, 30.0], [-6.0, -4.0, 20.0, 12.0], [50.0, 40.0, 70.0, 66.0],
                   [10.0, 10.0, 10.5, 11.0]]], "float32")


@pytest.mark.parametrize("aligned, ratio", [(True, 2), (False, 2), (True, 0), (False, 0)])
def test_matches_numpy_reference(aligned, ratio, jit):
    rng = np.random.default_rng(0)
    feat = rng.normal(size=(1, 9, 8, 3)).astype("float32")
    fn = jit(lambda f, b: roi_align.roi_align(f, b, 4, 1 / 8, sampling_ratio=ratio,
                                              aligned=aligned))
    got = ops.convert_to_numpy(fn(feat, BOXES))
    assert got.shape == (1, 4, 4, 4, 3)
    for r in range(BOXES.shape[1]):
        want = _reference(feat[0], BOXES[0, r], 4, 1 / 8, ratio, aligned)
        np.testing.assert_allclose(got[0, r], want, atol=1e-5, err_msg=f"box {r}")


@pytest.mark.parametrize("height, width", [(9, 8), (8, 9)])
def test_pools_boxes_in_chunks_with_the_same_result(height, width, jit, monkeypatch):
    """Boxes pooled three at a time (3 + 1 of 4: bounded memory, 1000 RoIs on a C4 map of an
    800x1216 canvas made a 2.9 GB intermediate) equal the reference, either axis first."""
    monkeypatch.setattr(roi_align, "CHUNK_ELEMENTS", 3 * 4 * 4 * min(height, width) * 3)
    feat = np.random.default_rng(2).normal(size=(1, height, width, 3)).astype("float32")
    got = ops.convert_to_numpy(jit(lambda f, b: roi_align.roi_align(f, b, 4, 1 / 8, 0))(
        feat, BOXES))
    for r in range(BOXES.shape[1]):
        want = _reference(feat[0], BOXES[0, r], 4, 1 / 8, 0, True)
        np.testing.assert_allclose(got[0, r], want, atol=1e-5, err_msg=f"box {r}")


def test_adaptive_sampling_takes_up_to_six_samples_per_bin(jit):
    # Boxes whose bins span 1..6 feature pixels take 1..6 samples a side (one 48 px map).
    rng = np.random.default_rng(4)
    feat = rng.normal(size=(1, 48, 48, 2)).astype("float32")
    boxes = np.array([[[1, 2, 1 + k, 1.5 + k] for k in range(1, 7)]], "float32")
    got = ops.convert_to_numpy(jit(lambda f, b: roi_align.roi_align(f, b, 1, 1.0, 0))(feat,
                                                                                   boxes))
    for r in range(6):
        want = _reference(feat[0], boxes[0, r], 1, 1.0, 0, True)
        np.testing.assert_allclose(got[0, r], want, atol=1e-5, err_msg=f"box {r}")
    multi = jit(lambda f, b: roi_align.multilevel_roi_align([f], [1], b, 1, 0))(feat, boxes)
    np.testing.assert_allclose(ops.convert_to_numpy(multi), got, atol=1e-5)


def test_batched_boxes_use_their_own_image(jit):
    rng = np.random.default_rng(1)
    feat = rng.normal(size=(2, 6, 7, 2)).astype("float32")
    boxes = np.array([[[1, 1, 20, 15]], [[4, 2, 30, 25]]], "float32")
    fn = jit(lambda f, b: roi_align.roi_align(f, b, (3, 2), 0.25, sampling_ratio=3))
    got = ops.convert_to_numpy(fn(feat, boxes))
    for b in range(2):
        ref = np.zeros((3, 2, 2))
        # Non-square output: rebuild the reference from per-axis bins.
        x1, y1, x2, y2 = boxes[b, 0] * 0.25 - 0.5
        for py in range(3):
            for px in range(2):
                pts = [(y1 + (py + (iy + 0.5) / 3) * (y2 - y1) / 3,
                        x1 + (px + (ix + 0.5) / 3) * (x2 - x1) / 2)
                       for iy in range(3) for ix in range(3)]
                ref[py, px] = np.mean([_bilinear(feat[b], y, x) for y, x in pts], axis=0)
        np.testing.assert_allclose(got[b, 0], ref, atol=1e-5)



PARITY = pathlib.Path(__file__).resolve().parents[2] / "parity"
MAKE = PARITY / "make_roi_align_reference.py"
make = load_script("make_roi_align_reference", MAKE)


@pytest.fixture(scope="module", params=stored_or_live("torchvision"))
def torchvision_reference(request, tmp_path_factory):
    """torchvision.ops.roi_align's outputs and inputs: stored (parity/roi_align.npz),
    or freshly computed in a subprocess (torch and TensorFlow crash in one process)."""
    return reference_npz(request.param, PARITY / "roi_align.npz", MAKE, tmp_path_factory)


@pytest.mark.parametrize("ratio, aligned", make.CASES)
def test_torchvision_parity(ratio, aligned, torchvision_reference, jit):
    feat, boxes = torchvision_reference["feat"], torchvision_reference["boxes"]
    want = torchvision_reference[make.key(ratio, aligned)]
    assert np.abs(want).max() > 1.0
    fn = jit(lambda f, b: roi_align.roi_align(f, b, make.OUTPUT, make.SCALE, ratio,
                                              aligned=aligned))
    got = ops.convert_to_numpy(fn(feat, boxes[None]))[0]
    np.testing.assert_allclose(got, want, atol=1e-5)


def test_fpn_level_assignment():
    sizes = np.array([[[0, 0, 56, 56], [0, 0, 112, 112], [0, 0, 224, 224], [0, 0, 448, 448],
                       [0, 0, 1000, 1000], [0, 0, 10, 10]]], "float32")
    got = ops.convert_to_numpy(roi_align.fpn_levels(sizes, 2, 5))
    np.testing.assert_array_equal(got, [[2, 3, 4, 5, 5, 2]])


def test_multilevel_picks_the_assigned_level(jit):
    rng = np.random.default_rng(3)
    p2 = rng.normal(size=(1, 16, 16, 2)).astype("float32")
    p3 = rng.normal(size=(1, 8, 8, 2)).astype("float32")
    boxes = np.array([[[0, 0, 20, 20], [0, 0, 60, 60]]], "float32")  # tiny boxes: level 2
    fn = jit(lambda a, b, r: (roi_align.multilevel_roi_align([a, b], [4, 8], r, 3),
                              roi_align.roi_align(a, r, 3, 0.25)))
    got, want = (ops.convert_to_numpy(t) for t in fn(p2, p3, boxes))
    np.testing.assert_allclose(got, want, atol=1e-6)


def _multilevel_reference(features, strides, boxes, out, ratio, aligned):
    """The former dense multilevel RoIAlign: pool on every level, keep the assigned one."""
    levels = [int(round(math.log2(s))) for s in strides]
    assignment = roi_align.fpn_levels(boxes, min(levels), max(levels))
    res = 0.0
    for feat, stride, level in zip(features, strides, levels, strict=True):
        pooled = roi_align.roi_align(feat, boxes, out, 1.0 / stride, ratio, aligned)
        res = res + pooled * ops.cast(assignment == level, pooled.dtype)[:, :, None, None, None]
    return res


STRIDES = [4, 8, 16, 32]


def _pyramid_and_boxes(seed):
    """P2..P5 of a 64x48 canvas (non-square), 20 boxes per image (2 images) on all levels:
    tiny, partly or mostly outside the map."""
    rng = np.random.default_rng(seed)
    feats = [rng.normal(size=(2, h, w, 3)).astype("float32")
             for h, w in [(16, 12), (8, 6), (4, 3), (2, 2)]]
    sizes = np.array([0.3, 2, 9, 30, 60, 100, 120, 150, 200, 230, 260, 300, 400, 450, 500, 700,
                      5, 50, 180, 350])
    size = sizes * np.exp(rng.uniform(-0.1, 0.1, (2, 20)))
    aspect = np.exp(rng.uniform(-0.7, 0.7, (2, 20)))
    w, h = size * aspect, size / aspect
    cx, cy = rng.uniform(-8, 56, (2, 20)), rng.uniform(-8, 72, (2, 20))
    boxes = np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], -1).astype("float32")
    levels = ops.convert_to_numpy(roi_align.fpn_levels(boxes, 2, 5))
    assert set(levels[0].tolist()) == set(levels[1].tolist()) == {2, 3, 4, 5}
    return feats, boxes


@pytest.mark.parametrize("aligned,ratio", [(True, 2), (False, 2), (True, 1), (False, 3)])
def test_multilevel_matches_dense_reference(aligned, ratio, jit):
    feats, boxes = _pyramid_and_boxes(4)
    fn = jit(lambda fs, b: roi_align.multilevel_roi_align(fs, STRIDES, b, 3, ratio, aligned))
    got = ops.convert_to_numpy(fn(feats, boxes))
    want = ops.convert_to_numpy(_multilevel_reference(feats, STRIDES, boxes, 3, ratio, aligned))
    assert got.shape == (2, 20, 3, 3, 3)
    assert np.abs(want).max() > 0.1  # not a vacuous comparison
    np.testing.assert_allclose(got, want, atol=1e-5)


@pytest.mark.parametrize("ratio", [2, 0])
def test_multilevel_pools_boxes_in_chunks_with_the_same_result(ratio, jit, monkeypatch):
    """Pooled a few boxes at a time (bounded memory: 1000 RoIs with adaptive sampling gathered
    7 GB at once) equals the dense reference, including a last, shorter chunk."""
    feats, boxes = _pyramid_and_boxes(4)
    monkeypatch.setattr(roi_align, "CHUNK_ELEMENTS", 12 * 3 * 3 * (2 * (ratio or 6)) ** 2 * 3)
    fn = jit(lambda fs, b: roi_align.multilevel_roi_align(fs, STRIDES, b, 3, ratio, True))
    got = ops.convert_to_numpy(fn(feats, boxes))  # 12 boxes a chunk: 12 + 8 of 20
    want = ops.convert_to_numpy(_multilevel_reference(feats, STRIDES, boxes, 3, ratio, True))
    assert got.shape == (2, 20, 3, 3, 3) and np.abs(want).max() > 0.1
    np.testing.assert_allclose(got, want, atol=1e-5)


def _feature_grads(fn, feats, cotangent):
    """d sum(fn(feats) * cotangent) / d feats with the active backend's autodiff."""
    backend = keras.backend.backend()
    if backend == "jax":
        import jax

        return jax.grad(lambda fs: (fn(fs) * cotangent).sum())(feats)
    if backend != "tensorflow":
        pytest.skip(f"no gradient helper for {backend}")
    import tensorflow as tf

    feats = [tf.constant(f) for f in feats]
    with tf.GradientTape() as tape:
        tape.watch(feats)
        loss = tf.reduce_sum(fn(feats) * cotangent)
    return [tf.convert_to_tensor(g) for g in tape.gradient(loss, feats)]


@pytest.mark.parametrize("aligned", [True, False])
def test_multilevel_gradient_matches_dense_reference(aligned):
    feats, boxes = _pyramid_and_boxes(5)
    cotangent = np.random.default_rng(6).normal(size=(2, 20, 3, 3, 3)).astype("float32")
    got = _feature_grads(
        lambda fs: roi_align.multilevel_roi_align(fs, STRIDES, boxes, 3, 2, aligned),
        feats, cotangent)
    want = _feature_grads(
        lambda fs: _multilevel_reference(fs, STRIDES, boxes, 3, 2, aligned), feats, cotangent)
    for level, (g, w) in enumerate(zip(got, want, strict=True)):
        w = ops.convert_to_numpy(w)
        assert np.abs(w).max() > 0.1, f"P{level + 2} gets no gradient"
        np.testing.assert_allclose(ops.convert_to_numpy(g), w, atol=1e-5, err_msg=f"P{level + 2}")


def test_sampling_ratio_must_be_a_non_negative_int():
    with pytest.raises(ValueError, match="sampling_ratio"):
        roi_align.roi_align(np.zeros((1, 4, 4, 1), "float32"), BOXES, 2, 1.0, sampling_ratio=-1)
    with pytest.raises(ValueError, match="sampling_ratio"):
        roi_align.multilevel_roi_align([np.zeros((1, 4, 4, 1), "float32")], [4], BOXES, 2,
                                       sampling_ratio=1.5)


def test_multilevel_non_finite_box_pools_zeros(jit):
    """A diverged proposal (NaN/inf) must not become an out-of-range gather index."""
    rng = np.random.default_rng(5)
    p2 = rng.normal(size=(1, 16, 16, 2)).astype("float32")
    p3 = rng.normal(size=(1, 8, 8, 2)).astype("float32")
    boxes = np.array([[[0, 0, 20, 20], [np.nan, 0, 30, 30], [0, -np.inf, 9, np.inf]]], "float32")
    fn = jit(lambda a, b, r: roi_align.multilevel_roi_align([a, b], [4, 8], r, 3))
    got = ops.convert_to_numpy(fn(p2, p3, boxes))
    assert np.isfinite(got).all()
    np.testing.assert_array_equal(got[0, 1:], 0.0)
    want = ops.convert_to_numpy(roi_align.roi_align(p2, boxes[:, :1], 3, 0.25))
    np.testing.assert_allclose(got[:, :1], want, atol=1e-6)
