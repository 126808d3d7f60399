"""Deterministic "randomised but peaked" weights for the Faster R-CNN parity references.

Pure numpy (no torch, no tensorflow): the reference script (``make_reference.py``, torch) and
the parity test (Keras, no torch) both call :func:`seeded_state` on the same skeleton and get
bit-identical arrays on every platform.

A *skeleton* is the ``[name, shape, dtype]`` list of a reference model's ``state_dict`` in the
reference's own naming (``skeletons/<arch>.json``, written by ``make_reference.py
--skeletons``).

Randomness
    Every tensor has its own generator ``np.random.default_rng([seed, zlib.crc32(name)])``, so
    a value depends only on (seed, key name, shape, calibration) - not on the order of the
    skeleton or on the other keys. Draws are made in float64 and cast to the skeleton dtype.

Rules (first match wins; ``fan_in = prod(shape[1:])``)
    1. integer tensors (``num_batches_tracked``): zeros.
    2. BatchNorm tensors (a key whose prefix also owns ``<prefix>.running_mean``; torchvision
       ``FrozenBatchNorm2d``/``BatchNorm2d`` and detectron2 ``FrozenBatchNorm2d`` alike):

       - ``running_mean`` ~ N(0, 0.5)
       - ``running_var``  ~ U(0.5, 2.0)   (never near 0: the torchvision COCO_V1 model uses eps=0)
       - ``bias`` (beta)  ~ N(0, 0.25)
       - ``weight`` (gamma) ~ U(0.5, 1.5); on the LAST norm of every residual branch
         (torchvision ``layerK.I.bn3``, detectron2 ``resK.I.conv3.norm``) gamma ~ U(0.1, 0.3),
         so that a ResNet-101 trunk stays O(1) (feature abs-means ~1-3) after 33 additions.

       The statistics are random on purpose: a converter that drops running_mean/var or eps
       cannot match.
    3. conv (4-d) and linear (2-d) weights: He-normal, N(0, sqrt(2 / fan_in)), times a gain:

       - detectron2 stem conv (``*stem.conv1.weight``): 1/58 - detectron2 feeds 0..255 BGR
         pixels minus the mean with PIXEL_STD 1, torchvision feeds (x - mean) / std.
       - FPN lateral / output convs (tv ``backbone.fpn.{inner,layer}_blocks``, d2
         ``backbone.fpn_{lateral,output}K``): sqrt(1/2) (no ReLU follows them).
       - the four output layers (RPN objectness conv, RPN anchor-delta conv, box-regression
         linear, classifier linear) get a per-architecture gain from the calibration (below);
         uncalibrated defaults 0.5, 0.05, 0.2, 1.0.
       - the classifier (``roi_heads.box_predictor.cls_score.weight``) rows are centred (each
         row minus its mean) before the gain.
    4. other biases (conv / linear): N(0, 0.01), plus for the classifier bias
       ``-cls_gain * cls_offset[c]`` (calibration) and ``+BG_BIAS`` on the background logit
       (torchvision index 0, detectron2 index 80 = last).
    5. anything else (none in the six skeletons): N(0, 0.01).

Calibration (``skeletons/calibration.json``, written by ``make_reference.py --calibrate``, only
used for the seed it was made with, 0)
    Random deep ReLU features of different RoIs are highly correlated (pairwise cosine 0.75-0.98),
    so a plain random classifier gives every RoI the same winning class (a constant per-class
    offset ``w_c . mean(x)`` dominates). The calibration stores, per architecture:

    - ``rpn_obj_gain``, ``rpn_delta_gain``: make the RPN objectness logits std ~1.5 (spread but
      not saturated: torchvision sorts sigmoid(logit) in its NMS) and the anchor deltas std
      ~0.1 (proposals stay near their anchors);
    - ``box_delta_gain``: box-regression outputs std ~0.3 (before the (10, 10, 5, 5) weights);
    - ``cls_gain``, ``cls_offset``: ``cls_offset[c] = w0_c . mu`` with ``w0`` the centred
      gain-1 classifier rows and ``mu`` the mean box-head feature over all RoIs of the two
      reference photos; the classifier becomes ``cls_gain * w0_c . (x - mu) + BG_BIAS[bg]``,
      with ``cls_gain`` setting the per-RoI logit std to ~2.5. So classes vary from RoI to RoI
      and, with BG_BIAS, a few tens of detections per photo clear the 0.05 threshold.

    The architecture is recognised from the key names (:func:`arch_of`).

Mask R-CNN (``MASK_ARCHS``, ``make_mask_rcnn_reference.py``)
    A Mask R-CNN skeleton is its Faster R-CNN's plus the mask head, and every tensor depends
    only on its own name: the box parts are bit-identical to the Faster R-CNN arch's, whose
    calibration they reuse. The mask head's convs and deconv follow rules 2-4; its per-class
    1x1 predictor (tv ``roi_heads.mask_predictor.mask_fcn_logits``, d2
    ``roi_heads.mask_head.predictor``) is calibrated like the classifier, for the same reason
    (random ReLU features share a large mean, so ``w_c . x`` is nearly constant over the
    mask): centred rows ``w0`` times ``mask_gain``, bias ``N(0, 0.01) - mask_gain *
    mask_offset[c]`` with ``mask_offset[c] = w0_c . mu`` (``mu``: the mean predictor input over
    the pixels of the detections on ``coco139``), ``mask_gain`` setting the detected class's
    logit std to ~2 (``MASK_TARGET_STD``): masks about half on, neither all 0 nor all 1.
    Stored in ``skeletons/mask_calibration.json`` (``make_mask_rcnn_reference.py
    --calibrate``), merged over the Faster R-CNN arch's entry.
"""

from __future__ import annotations

import json
import re
import zlib
from pathlib import Path

import numpy as np

SKELETON_DIR = Path(__file__).resolve().parent / "skeletons"
CALIBRATION_FILE = SKELETON_DIR / "calibration.json"
MASK_CALIBRATION_FILE = SKELETON_DIR / "mask_calibration.json"
ARCHS = ("tv_r50_fpn_v1", "tv_r50_fpn_v2", "d2_r50_c4", "d2_r101_c4", "d2_r50_fpn", "d2_r101_fpn")
MASK_ARCHS = tuple(a.replace("_", "_mask_", 1) for a in ARCHS)  # tv_mask_r50_fpn_v1, ...
MASK_TARGET_STD = 2.0
MASK_LOGITS = re.compile(r"^roi_heads\.(mask_predictor\.mask_fcn_logits|mask_head\.predictor)"
                         r"\.(weight|bias)$")

BN_MEAN_STD = 0.5
BN_BETA_STD = 0.25
LAST_GAMMA = (0.1, 0.3)
D2_STEM_GAIN = 1.0 / 58.0
FPN_GAIN = 0.5**0.5
BG_BIAS = 4.0
DEFAULT_GAINS = {
    "rpn_obj_gain": 0.5,
    "rpn_delta_gain": 0.05,
    "box_delta_gain": 0.2,
    "cls_gain": 1.0,
}
TARGETS = {
    "rpn_obj_std": 1.5,
    "rpn_delta_std": 0.1,
    "box_delta_std": 0.3,
    "cls_std": 2.5,
    "fg_pairs": 80,  # (RoI, class) pairs with probability > 0.05 before NMS, in the poorer photo
}

_LAST_BN = re.compile(r"(^|\.)(layer\d+\.\d+\.bn3|res\d\.\d+\.conv3\.norm)\.weight$")
_D2_STEM = re.compile(r"(^|\.)stem\.conv1\.weight$")
_FPN = re.compile(
    r"^backbone\.(fpn\.(inner|layer)_blocks\.\d+\.(0\.)?weight|fpn_(lateral|output)\d\.weight)$"
)
_OUTPUT_GAINS = (
    (re.compile(r"(rpn\.head\.cls_logits|rpn_head\.objectness_logits)\.weight$"), "rpn_obj_gain"),
    (re.compile(r"(rpn\.head\.bbox_pred|rpn_head\.anchor_deltas)\.weight$"), "rpn_delta_gain"),
    (re.compile(r"roi_heads\.box_predictor\.bbox_pred\.weight$"), "box_delta_gain"),
    (re.compile(r"roi_heads\.box_predictor\.cls_score\.weight$"), "cls_gain"),
)
CLS_WEIGHT = "roi_heads.box_predictor.cls_score.weight"
CLS_BIAS = "roi_heads.box_predictor.cls_score.bias"


def load_skeleton(arch: str) -> list[tuple[str, tuple[int, ...], str]]:
    """The ``[(name, shape, dtype), ...]`` list stored in ``skeletons/<arch>.json``."""
    with open(SKELETON_DIR / f"{arch}.json") as f:
        return [(str(n), tuple(int(d) for d in s), str(t)) for n, s, t in json.load(f)]


def load_calibration() -> dict:
    """{arch: entry} of both calibration files; a Mask R-CNN arch's entry is its Faster R-CNN
    arch's with the mask keys added."""
    calib = {}
    if CALIBRATION_FILE.exists():
        with open(CALIBRATION_FILE) as f:
            calib = json.load(f)
    if MASK_CALIBRATION_FILE.exists():
        with open(MASK_CALIBRATION_FILE) as f:
            for arch, entry in json.load(f).items():
                calib[arch] = {**calib.get(box_arch(arch), {}), **entry}
    return calib


def box_arch(arch: str) -> str:
    """The Faster R-CNN arch of a Mask R-CNN arch (``tv_mask_r50_fpn_v1`` -> ``tv_r50_fpn_v1``)."""
    return arch.replace("_mask_", "_", 1)


def arch_of(names) -> str | None:
    """Which of :data:`ARCHS` / :data:`MASK_ARCHS` a set of state-dict key names belongs to."""
    names = set(names)
    box = _box_arch_of(names)
    if box and any(n.startswith("roi_heads.mask_") for n in names):
        return box.replace("_", "_mask_", 1)
    return box


def _box_arch_of(names: set) -> str | None:
    if "backbone.body.conv1.weight" in names:
        return "tv_r50_fpn_v2" if "rpn.head.conv.1.0.weight" in names else "tv_r50_fpn_v1"
    if "roi_heads.res5.0.conv1.weight" in names:
        return "d2_r101_c4" if "backbone.res4.22.conv1.weight" in names else "d2_r50_c4"
    if "backbone.bottom_up.stem.conv1.weight" in names:
        deep = "backbone.bottom_up.res4.22.conv1.weight" in names
        return "d2_r101_fpn" if deep else "d2_r50_fpn"
    return None


def _rng(seed: int, name: str) -> np.random.Generator:
    return np.random.default_rng([int(seed), zlib.crc32(name.encode())])


def _weight_gain(name: str, gains: dict) -> float:
    if _D2_STEM.search(name):  # torchvision's stem is backbone.body.conv1: detectron2 only
        return D2_STEM_GAIN
    if _FPN.search(name):
        return FPN_GAIN
    for pattern, key in _OUTPUT_GAINS:
        if pattern.search(name):
            return float(gains[key])
    return 1.0


def background_index(num_logits: int) -> int:
    """torchvision: 91 logits, background first; detectron2: 80 + 1, background last."""
    return num_logits - 1 if num_logits == 81 else 0


def _cls_gain(gains: dict, rows: int) -> np.ndarray:
    """The classifier gain: a scalar or one value per class row, as float64 [rows]."""
    return np.broadcast_to(np.asarray(gains["cls_gain"], np.float64), (rows,))


def centred_cls_rows(shape, seed: int = 0) -> np.ndarray:
    """The gain-1 classifier weight ``w0`` (float64): He-normal draws, each row centred."""
    return centred_rows(CLS_WEIGHT, shape, seed)


def centred_rows(name: str, shape, seed: int = 0) -> np.ndarray:
    """He-normal draws for ``name`` (float64), each output row centred over its inputs."""
    fan_in = int(np.prod(shape[1:]))
    x = _rng(seed, name).normal(0.0, np.sqrt(2.0 / fan_in), tuple(shape))
    axes = tuple(range(1, len(shape)))
    return x - x.mean(axis=axes, keepdims=True)


def seeded_tensor(name, shape, dtype, names, seed: int = 0, calib: dict | None = None):
    """One tensor of :func:`seeded_state` (``names``: all key names of the skeleton;
    ``calib``: this architecture's calibration entry or None)."""
    shape = tuple(int(d) for d in shape)
    np_dtype = np.dtype(dtype)
    if np_dtype.kind in "iub":
        return np.zeros(shape, np_dtype)
    gains = dict(DEFAULT_GAINS)
    if calib:
        gains.update({k: calib[k] for k in DEFAULT_GAINS if k in calib})
    rng = _rng(seed, name)
    prefix, _, leaf = name.rpartition(".")
    if f"{prefix}.running_mean" in names and leaf in (
        "weight",
        "bias",
        "running_mean",
        "running_var",
    ):
        if leaf == "running_mean":
            x = rng.normal(0.0, BN_MEAN_STD, shape)
        elif leaf == "running_var":
            x = rng.uniform(0.5, 2.0, shape)
        elif leaf == "bias":
            x = rng.normal(0.0, BN_BETA_STD, shape)
        elif _LAST_BN.search(name):
            x = rng.uniform(*LAST_GAMMA, shape)
        else:
            x = rng.uniform(0.5, 1.5, shape)
    elif name == CLS_WEIGHT:
        x = centred_cls_rows(shape, seed) * _cls_gain(gains, shape[0])[:, None]
    elif MASK_LOGITS.match(name) and leaf == "weight":
        gain = float(calib.get("mask_gain", 1.0)) if calib else 1.0
        x = centred_rows(name, shape, seed) * gain
    elif MASK_LOGITS.match(name):
        x = rng.normal(0.0, 0.01, shape)
        if calib and "mask_offset" in calib:
            x -= float(calib["mask_gain"]) * np.asarray(calib["mask_offset"], np.float64)
    elif leaf == "weight" and len(shape) in (2, 4):
        fan_in = int(np.prod(shape[1:]))
        x = rng.normal(0.0, np.sqrt(2.0 / fan_in), shape) * _weight_gain(name, gains)
    elif leaf == "bias":
        x = rng.normal(0.0, 0.01, shape)
        if name == CLS_BIAS:
            if calib and "cls_offset" in calib:
                x -= _cls_gain(gains, shape[0]) * np.asarray(calib["cls_offset"], np.float64)
            x[background_index(shape[0])] += float(
                calib.get("bg_bias", BG_BIAS) if calib else BG_BIAS
            )
    else:
        x = rng.normal(0.0, 0.01, shape)
    return x.astype(np_dtype)


def seeded_state(
    skeleton, seed: int = 0, calibrated: bool = True, calibration: dict | None = None
) -> dict[str, np.ndarray]:
    """``{name: array}`` for every ``(name, shape, dtype)`` of ``skeleton`` (see module doc).

    ``calibrated=False`` (or a seed other than the calibration's) uses the default gains and
    no classifier offsets; ``calibration`` (one architecture's entry) replaces the stored one.
    """
    names = {str(n) for n, _, _ in skeleton}
    calib = None
    if calibration is not None:
        calib = calibration
    elif calibrated:
        entry = load_calibration().get(arch_of(names) or "")
        if entry and int(entry.get("seed", -1)) == int(seed):
            calib = entry
    return {str(n): seeded_tensor(str(n), s, t, names, seed, calib) for n, s, t in skeleton}
