"""Same weights, same detections: the torchvision and detectron2 presets against the
libraries themselves.

`parity/reference/*.npz` hold what torchvision 0.29 and detectron2 computed with seeded
"randomised but peaked" weights (`parity/seeded.py`) on two real photographs at their own
reference sizes (`parity/make_reference.py` made them; torch is not needed here). The same
seeded weights go through this package's converter into the preset's model on the
reference's padded canvas, and every stage is compared: backbone/FPN features, RPN
objectness and deltas, proposals, the box head on the reference's own proposals, and the
final detections in the input image's pixels.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import keras
import numpy as np
import pytest
from keras import ops
from parity.seeded import load_skeleton, seeded_state

from detection import FasterRCNN
from detection.checkpoints import pretrained, registry

REFERENCE = Path(__file__).parents[1] / "parity" / "reference"
DATA = Path(os.environ.get("KRS_DATA_DIR", Path(__file__).parents[4] / "shared" / "data"))
ARCHS = {"tv_r50_fpn_v1": "torchvision/fasterrcnn_resnet50_fpn",
         "tv_r50_fpn_v2": "torchvision/fasterrcnn_resnet50_fpn_v2",
         "d2_r50_c4": "detectron2/faster_rcnn_R_50_C4_1x",
         "d2_r101_c4": "detectron2/faster_rcnn_R_101_C4_3x",
         "d2_r50_fpn": "detectron2/faster_rcnn_R_50_FPN_3x",
         "d2_r101_fpn": "detectron2/faster_rcnn_R_101_FPN_3x"}
ALL = sorted(p.stem for p in REFERENCE.glob("*.npz"))
# Every case takes 10-50 s on 2 cores (a 800 x 1216 canvas, 1000 RoIs): the default run (CI)
# checks each library's ResNet-50 models (every code path: R101 differs only in depth) on the
# landscape photo through every stage, and end to end each library's FPN post-processing
# (detectron2's C4 model ends in the same one), plus the portrait photo once;
# KRS_PARITY_ALL=1 runs all 12 cases, R101 included, through every stage.
EVERY = bool(os.environ.get("KRS_PARITY_ALL"))
CASES = ALL if EVERY else [c for c in ALL if c.endswith("coco139") and "_r101_" not in c]
END_TO_END = ALL if EVERY else ["tv_r50_fpn_v1__voc000001", "tv_r50_fpn_v2__coco139",
                                "d2_r50_fpn__coco139"]

pytestmark = [pytest.mark.tf_only]


def _record(case: str, **figures) -> None:
    """Append measured figures to `$KRS_PARITY_REPORT` (JSON lines) for the README table."""
    path = os.environ.get("KRS_PARITY_REPORT")
    if path:
        with open(path, "a") as f:
            f.write(json.dumps({"case": case, **figures}) + "\n")


def seeded_case(reference: Path, case: str, archs: dict[str, str], cls=FasterRCNN):
    """`(model, arch, ref, meta, image)` of a stored reference case: its arrays and meta, our
    `cls` detector of `archs[arch key]` on the reference's padded canvas with the same seeded
    weights, and the photo as the reference's library resized it (skips without the photo)."""
    ref = dict(np.load(reference / f"{case}.npz"))
    meta = json.loads(str(ref.pop("meta")))
    image_path = DATA / meta["image"]
    if not image_path.exists():
        pytest.skip(f"{image_path} not found (set KRS_DATA_DIR to the shared data folder)")
    arch_key = case.split("__")[0]
    arch = pretrained.Architecture.of(registry.get(archs[arch_key]))
    model = cls.from_architecture(arch, tuple(meta["padded_hw"]))
    pretrained.load_state(model, seeded_state(load_skeleton(arch_key), seed=meta["seed"]), arch,
                          source=f"seeded {arch_key}")
    return model, arch, ref, meta, _image(image_path, arch, meta)


def _case(case: str):
    model, arch, ref, meta, image = seeded_case(REFERENCE, case, ARCHS)
    x, info = model.transform(image)
    features = model.backbone.predict(x, verbose=0)  # compiled: eager R101 is slow
    features = list(features) if isinstance(features, (list, tuple)) else [features]
    return model, arch, ref, meta, image, info, features


def _image(path: Path, arch, meta) -> np.ndarray:
    """What the reference's model resizes from: the RGB photo (torchvision), or detectron2's
    PIL resize of it on uint8 (this package's own resize differs by one grey level in a few
    values per 10^4: `test_detectron2_resize_is_pil_within_one_level`)."""
    from PIL import Image

    image = Image.open(path).convert("RGB")
    if arch.library == "detectron2":
        h, w = meta["resized_hw"]
        image = image.resize((w, h), Image.BILINEAR)
    return np.asarray(image, "float32")[None]


def _close(got, want, rel: float, what: str):
    """`|got - want| <= rel * mean |want|` everywhere (float32 over ~100 layers)."""
    got, want = np.asarray(got, "float64"), np.asarray(want, "float64")
    scale = max(float(np.abs(want).mean()), 1e-6)
    worst = float(np.abs(got - want).max()) / scale
    assert worst <= rel, f"{what}: max |diff| = {worst:.2e} x mean |ref| (allowed {rel})"
    return worst


def _sampled(array, idx):
    return np.asarray(array)[tuple(np.asarray(idx).T)]


@pytest.mark.parametrize("case", sorted(set(CASES) | set(END_TO_END)))
def test_same_weights_same_outputs(case):
    """Every stage against the reference (one model build per case)."""
    loaded = _case(case)
    if case in CASES:
        _check_features_and_rpn(case, *loaded)
        _check_box_head(case, *loaded)
    if case in END_TO_END:
        _check_final_detections(case, *loaded)


def _check_features_and_rpn(case, model, arch, ref, meta, image, info, features):
    feats = [f[0] for f in features]
    levels = meta["levels"]
    assert len(feats) == len(levels)
    worst = {"features": 0.0, "rpn": 0.0}
    for level, f in zip(levels, feats, strict=True):
        assert tuple(f.shape) == tuple(ref[f"feat_{level}_shape"]), level
        worst["features"] = max(worst["features"], _close(
            _sampled(f, ref[f"feat_{level}_idx"]), ref[f"feat_{level}_val"], 1e-3,
            f"{case} {level} features"))
    logits, deltas = model.rpn.head(features)
    for level, lg, dl in zip(meta["rpn_levels"], logits, deltas, strict=True):
        h, w, a = (int(v) for v in ref[f"obj_{level}_shape"])
        lg = keras.ops.convert_to_numpy(lg).reshape(h, w, a)
        dl = keras.ops.convert_to_numpy(dl).reshape(h, w, a, 4)
        for got, key, what in ((lg, "obj", "objectness"), (dl, "delta", "anchor deltas")):
            worst["rpn"] = max(worst["rpn"], _close(
                _sampled(got, ref[f"{key}_{level}_idx"]), ref[f"{key}_{level}_val"], 1e-3,
                f"{case} {level} {what}"))
    proposals, _ = model.rpn(features, info)
    ours = keras.ops.convert_to_numpy(proposals["boxes"])[0][
        keras.ops.convert_to_numpy(proposals["valid"])[0]]
    fraction = _matched_fraction(ref["proposals"], ours)
    _record(case, **worst, proposals_matched=fraction, proposals=len(ref["proposals"]))
    assert fraction >= 0.99, case


def _matched_fraction(want, ours, rel: float = 1e-3) -> float:
    """Share of reference boxes with a box of ours within `rel` relative per coordinate."""
    if len(want) == 0:
        return 1.0
    tol = rel * np.maximum(np.abs(want), 1.0)  # [N, 4]
    diff = np.abs(want[:, None, :] - ours[None, :, :])  # [N, M, 4]
    return float(np.mean(np.any(np.all(diff <= tol[:, None, :], axis=-1), axis=1)))


def _reference_head(ref, arch):
    """The reference's box-head outputs in this package's layout (background last)."""
    logits, deltas = ref["head_class_logits"], ref["head_box_deltas"]
    if arch.library == "torchvision":  # 91 slots, background first
        logits = np.concatenate([logits[:, 1:], logits[:, :1]], axis=1)
        deltas = deltas[:, 4:]
    return logits, deltas.reshape(len(deltas), -1, 4)


def _check_box_head(case, model, arch, ref, meta, image, info, features):
    """The box head on the reference's own first 64 proposals."""
    logits, deltas = model.roi_heads.box_outputs(features,
                                                 ops.convert_to_tensor(ref["head_rois"][None]))
    want_logits, want_deltas = _reference_head(ref, arch)
    _record(case, head_logits=_close(keras.ops.convert_to_numpy(logits)[0], want_logits, 1e-3,
                                     f"{case} class logits"),
            head_deltas=_close(keras.ops.convert_to_numpy(deltas)[0], want_deltas, 1e-3,
                               f"{case} box deltas"))


def _check_final_detections(case, model, arch, ref, meta, image, info, features):
    """Boxes within 1e-3 relative, same classes, scores within 1e-4 for >= 99%."""
    out = {k: v[0] for k, v in model.predict(image, verbose=0).items()}
    n = int(out["num_detections"])
    boxes, scores, classes = out["boxes"][:n], out["scores"][:n], out["classes"][:n]
    if arch.library == "detectron2":  # our input was the resized image: back to the photo
        (oh, ow), (rh, rw) = meta["orig_hw"], meta["resized_hw"]
        boxes = np.minimum(boxes * np.array([ow / rw, oh / rh] * 2, "float32"),
                           [ow, oh, ow, oh])
    labels = classes + 1 if arch.library == "torchvision" else classes
    want_boxes, want_scores, want_labels = ref["det_boxes"], ref["det_scores"], ref["det_labels"]
    assert len(want_boxes) >= 10, "the seeded weights should give detections"
    matched, score_diff, box_diff = 0, 0.0, 0.0
    for box, score, label in zip(want_boxes, want_scores, want_labels, strict=True):
        rel = np.max(np.abs(boxes - box) / np.maximum(np.abs(box), 1.0), axis=-1)
        same = (labels == label) & (np.abs(scores - score) <= 1e-4) & (rel <= 1e-3)
        if np.any(same):
            matched += 1
            best = np.argmin(np.where(same, rel, np.inf))
            score_diff = max(score_diff, float(abs(scores[best] - score)))
            box_diff = max(box_diff, float(rel[best]))
    fraction = matched / len(want_boxes)
    _record(case, detections=len(want_boxes), ours=n, matched=matched, score_diff=score_diff,
            box_rel_diff=box_diff)
    assert fraction >= 0.99, (f"{case}: {matched}/{len(want_boxes)} reference detections "
                              f"matched (ours: {n})")
    assert abs(n - len(want_boxes)) <= max(1, len(want_boxes) // 100)


@pytest.mark.parametrize("case", [c for c in CASES if c.startswith("d2_r50_c4")])
def test_detectron2_resize_is_pil_within_one_level(case):
    # The preset's own resize (PIL's two rounded passes, in float) against PIL's fixed-point
    # uint8 resize: a few values in 10^4 one grey level apart (its 22-bit coefficients).
    from PIL import Image

    ref = dict(np.load(REFERENCE / f"{case}.npz"))
    meta = json.loads(str(ref["meta"]))
    path = DATA / meta["image"]
    if not path.exists():
        pytest.skip(f"{path} not found")
    arch = pretrained.Architecture.of(registry.get(ARCHS[case.split("__")[0]]))
    from detection.modeling.transform import ImageTransform

    transform = ImageTransform(meta["padded_hw"], resize="detectron2", quantize=True,
                               pixel_mean=(0, 0, 0), pixel_std=(1, 1, 1))
    photo = np.asarray(Image.open(path).convert("RGB"), "float32")[None]
    ours, _, extent = transform.resize(photo)
    h, w = meta["resized_hw"]
    assert tuple(keras.ops.convert_to_numpy(extent)) == (h, w)
    pil = _image(path, arch, meta)[0]
    diff = np.abs(keras.ops.convert_to_numpy(ours)[0, :h, :w] - pil)
    _record(case, resize_max_diff=float(diff.max()), resize_pixels_differing=float(
        np.mean(diff > 0)))
    assert diff.max() <= 1.0 and np.mean(diff > 0) < 1e-3
