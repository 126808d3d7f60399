"""Reference outputs of torchvision / detectron2 Faster R-CNN with seeded weights (torch only).

Run with a torch + torchvision interpreter (never tensorflow/keras in this process), e.g.::

    python tests/detection/parity/make_reference.py --skeletons     # skeletons/<arch>.json
    python tests/detection/parity/make_reference.py --calibrate     # skeletons/calibration.json
    python tests/detection/parity/make_reference.py                 # all archs x photos
    python tests/detection/parity/make_reference.py --verify        # rerun == stored npz
    python tests/detection/parity/make_reference.py --arch d2_r50_c4 --image coco139
    python tests/detection/parity/make_reference.py --time tv_r50_fpn_v1 --repeats 2

detectron2 is imported from ``$DETECTRON2_SRC`` (default /work/detectron2-src), uncompiled.
See README.md next to this file for what the ``reference/<arch>__<image>.npz`` files hold.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
import zlib
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[2]
sys.path.insert(0, str(HERE))
import seeded  # noqa: E402

D2_SRC = Path(os.environ.get("DETECTRON2_SRC", "/work/detectron2-src"))
D2_CONFIGS = {
    "d2_r50_c4": "COCO-Detection/faster_rcnn_R_50_C4_1x.yaml",
    "d2_r101_c4": "COCO-Detection/faster_rcnn_R_101_C4_3x.yaml",
    "d2_r50_fpn": "COCO-Detection/faster_rcnn_R_50_FPN_3x.yaml",
    "d2_r101_fpn": "COCO-Detection/faster_rcnn_R_101_FPN_3x.yaml",
}
IMAGES = {
    "coco139": "coco-mini/val2017/000000000139.jpg",
    "voc000001": "voc2007-sample/VOC2007/JPEGImages/000001.jpg",
}
SEED = 0
N_SAMPLES = 2048  # sampled feature positions per level
N_RPN_SAMPLES = 1024  # sampled objectness / delta positions per level (keeps files < 300 KB)
N_HEAD = 64
IDX_SEED = 12345  # the numpy rng seed for the sampled feature / RPN positions
TV_LEVELS = {"0": "p2", "1": "p3", "2": "p4", "3": "p5", "pool": "p6"}
D2_LEVELS = {"res4": "c4", "p2": "p2", "p3": "p3", "p4": "p4", "p5": "p5", "p6": "p6"}
TV_LAYOUT = (
    "torchvision: 91 class logits, index 0 = background, 1..90 = COCO category ids "
    "(unused ids kept); box deltas [R, 91*4], class c at [4c:4c+4] = (dx, dy, dw, dh) "
    "with weights (10, 10, 5, 5); det_labels are COCO category ids 1..90"
)
D2_LAYOUT = (
    "detectron2: 81 class logits, 0..79 = contiguous COCO classes, 80 = background; box deltas "
    "[R, 80*4], class c at [4c:4c+4] = (dx, dy, dw, dh) with weights (10, 10, 5, 5); "
    "det_labels are contiguous 0..79"
)


def data_dir() -> Path:
    env = os.environ.get("KRS_DATA_DIR")
    return Path(env) if env else (REPO / ".." / "shared" / "data").resolve()


def _d2_import():
    if str(D2_SRC) not in sys.path:
        sys.path.insert(0, str(D2_SRC))
    import detectron2  # noqa: F401


def d2_commit() -> str:
    f = D2_SRC / "COMMIT"
    if f.exists():
        return f.read_text().strip()
    try:
        out = subprocess.run(["git", "-C", str(D2_SRC), "rev-parse", "HEAD"], capture_output=True)
        return out.stdout.decode().strip() or "unknown"
    except OSError:
        return "unknown"


# --------------------------------------------------------------------------- model builders


def build_tv(arch: str):
    """As torchvision 0.29 ``fasterrcnn_resnet50_fpn[_v2](weights=COCO_V1)`` builds it, no download."""
    from torch import nn
    from torchvision.models import resnet50
    from torchvision.models.detection._utils import overwrite_eps
    from torchvision.models.detection.backbone_utils import _resnet_fpn_extractor
    from torchvision.models.detection.faster_rcnn import (
        FasterRCNN,
        FastRCNNConvFCHead,
        RPNHead,
        _default_anchorgen,
    )
    from torchvision.ops import misc as misc_nn_ops

    trainable = 3  # _validate_trainable_layers(is_trained=True, None, 5, 3): requires_grad only
    if arch == "tv_r50_fpn_v1":
        backbone = resnet50(weights=None, norm_layer=misc_nn_ops.FrozenBatchNorm2d)
        backbone = _resnet_fpn_extractor(backbone, trainable)
        model = FasterRCNN(backbone, num_classes=91)
        overwrite_eps(model, 0.0)  # done after loading FasterRCNN_ResNet50_FPN_Weights.COCO_V1
    elif arch == "tv_r50_fpn_v2":
        backbone = resnet50(weights=None)  # note: plain nn.BatchNorm2d in the v2 builder
        backbone = _resnet_fpn_extractor(backbone, trainable, norm_layer=nn.BatchNorm2d)
        anchorgen = _default_anchorgen()
        rpn_head = RPNHead(
            backbone.out_channels, anchorgen.num_anchors_per_location()[0], conv_depth=2
        )
        box_head = FastRCNNConvFCHead(
            (backbone.out_channels, 7, 7), [256, 256, 256, 256], [1024], norm_layer=nn.BatchNorm2d
        )
        model = FasterRCNN(
            backbone,
            num_classes=91,
            rpn_anchor_generator=anchorgen,
            rpn_head=rpn_head,
            box_head=box_head,
        )
    else:
        raise ValueError(arch)
    return model.eval()


def d2_cfg(arch: str):
    _d2_import()
    from detectron2.config import get_cfg

    cfg = get_cfg()
    cfg.merge_from_file(str(D2_SRC / "configs" / D2_CONFIGS[arch]))
    cfg.MODEL.DEVICE = "cpu"
    cfg.MODEL.WEIGHTS = ""  # no download: DetectionCheckpointer.load("") is a no-op
    cfg.freeze()
    return cfg


def build_d2(arch: str):
    _d2_import()
    from detectron2.modeling import build_model

    return build_model(d2_cfg(arch)).eval()


def build(arch: str):
    return build_tv(arch) if arch.startswith("tv_") else build_d2(arch)


def skeleton_of(model) -> list[list]:
    return [
        [k, list(v.shape), str(v.dtype).replace("torch.", "")]
        for k, v in model.state_dict().items()
    ]


def load_seeded(model, arch: str, seed: int = SEED, calibration: dict | None = None):
    state = seeded.seeded_state(seeded.load_skeleton(arch), seed=seed, calibration=calibration)
    tensors = {k: torch.from_numpy(v) for k, v in state.items()}
    result = model.load_state_dict(tensors, strict=True)
    assert not result.missing_keys and not result.unexpected_keys, result
    return model.eval()


# --------------------------------------------------------------------------- runners


class Recorder:
    """Forward hooks that keep the outputs of named sub-modules of one model call."""

    def __init__(self):
        self.out = {}
        self.handles = []

    def hook(self, module, key):
        def fn(_mod, args, output):
            self.out[key] = (args, output)

        self.handles.append(module.register_forward_hook(fn))

    def close(self):
        for h in self.handles:
            h.remove()


def read_rgb_float(path: Path) -> torch.Tensor:
    from PIL import Image

    arr = np.asarray(Image.open(path).convert("RGB"))
    return torch.from_numpy(arr.copy()).permute(2, 0, 1).float().div(255.0)


def run_tv(model, image_path: Path) -> dict:
    rec = Recorder()
    rec.hook(model.transform, "transform")
    rec.hook(model.backbone, "backbone")
    rec.hook(model.rpn.head, "rpn_head")
    rec.hook(model.rpn, "rpn")
    rec.hook(model.roi_heads.box_predictor, "box_predictor")
    filtered = {}
    orig_filter = model.rpn.filter_proposals

    def filter_proposals(*args, **kwargs):
        boxes, scores = orig_filter(*args, **kwargs)
        filtered["scores"] = scores
        return boxes, scores

    model.rpn.filter_proposals = filter_proposals
    img = read_rgb_float(image_path)
    try:
        with torch.no_grad():
            dets = model([img])[0]
    finally:
        del model.rpn.filter_proposals
        rec.close()
    images = rec.out["transform"][1][0]
    features = rec.out["backbone"][1]
    objectness, deltas = rec.out["rpn_head"][1]
    proposals = rec.out["rpn"][1][0][0]
    class_logits, box_deltas = rec.out["box_predictor"][1]
    names = [TV_LEVELS[k] for k in features]
    return {
        "orig_hw": list(img.shape[-2:]),
        "resized_hw": list(images.image_sizes[0]),
        "padded_hw": list(images.tensors.shape[-2:]),
        "features": {n: f for n, f in zip(names, features.values(), strict=True)},
        "objectness": dict(zip(names, objectness, strict=True)),
        "deltas": dict(zip(names, deltas, strict=True)),
        "proposals": proposals,
        "proposal_extra": {"proposal_probs": filtered["scores"][0]},
        "class_logits": class_logits,
        "box_deltas": box_deltas,
        "det_boxes": dets["boxes"],
        "det_scores": dets["scores"],
        "det_labels": dets["labels"],
        "layout": TV_LAYOUT,
    }


def d2_predictor(arch: str, seed: int = SEED, calibration: dict | None = None):
    _d2_import()
    from detectron2.engine import DefaultPredictor

    predictor = DefaultPredictor(d2_cfg(arch))
    load_seeded(predictor.model, arch, seed, calibration)
    return predictor


def seeded_model(arch: str, calibration: dict | None = None):
    """The model (torchvision) or DefaultPredictor (detectron2) with seeded weights."""
    if arch.startswith("tv_"):
        return load_seeded(build_tv(arch), arch, SEED, calibration)
    return d2_predictor(arch, SEED, calibration)


def _inner(model):
    return model if arch_is_tv(model) else model.model


def arch_is_tv(model) -> bool:
    return hasattr(model, "rpn")


def read_bgr(image_path: Path) -> np.ndarray:
    _d2_import()
    from detectron2.data.detection_utils import read_image

    return read_image(str(image_path), format="BGR")


def run_d2(predictor, image_path: Path) -> dict:
    model = predictor.model
    rec = Recorder()
    rec.hook(model.backbone, "backbone")
    rec.hook(model.proposal_generator.rpn_head, "rpn_head")
    rec.hook(model.proposal_generator, "rpn")
    rec.hook(model.roi_heads.box_predictor, "box_predictor")
    captured = {}
    orig_pre = model.preprocess_image

    def preprocess_image(batched_inputs):
        images = orig_pre(batched_inputs)
        captured["images"] = images
        return images

    model.preprocess_image = preprocess_image
    bgr = read_bgr(image_path)
    try:
        out = predictor(bgr)
    finally:
        del model.preprocess_image
        rec.close()
    images = captured["images"]
    features = rec.out["backbone"][1]
    in_features = model.proposal_generator.in_features
    objectness, deltas = rec.out["rpn_head"][1]
    props = rec.out["rpn"][1][0][0]
    class_logits, box_deltas = rec.out["box_predictor"][1]
    inst = out["instances"]
    names = [D2_LEVELS[k] for k in in_features]
    return {
        "orig_hw": list(bgr.shape[:2]),
        "resized_hw": list(images.image_sizes[0]),
        "padded_hw": list(images.tensor.shape[-2:]),
        "features": {D2_LEVELS[k]: v for k, v in features.items()},
        "objectness": dict(zip(names, objectness, strict=True)),
        "deltas": dict(zip(names, deltas, strict=True)),
        "proposals": props.proposal_boxes.tensor,
        "proposal_extra": {"proposal_logits": props.objectness_logits},
        "class_logits": class_logits,
        "box_deltas": box_deltas,
        "det_boxes": inst.pred_boxes.tensor,
        "det_scores": inst.scores,
        "det_labels": inst.pred_classes,
        "layout": D2_LAYOUT,
    }


# --------------------------------------------------------------------------- npz


def sample_positions(shape, key: str, n: int = N_SAMPLES) -> np.ndarray:
    """``[n, len(shape)]`` int32 multi-indices into an array of ``shape`` (fixed numpy rng).

    Drawn without replacement and sorted in C order; when the array has fewer than ``n``
    elements, every element is listed once (so the row count is min(n, size)).
    """
    total = int(np.prod(shape))
    rng = np.random.default_rng([IDX_SEED, zlib.crc32(key.encode())])
    flat = np.arange(total) if total <= n else np.sort(rng.choice(total, n, replace=False))
    return np.stack(np.unravel_index(flat, tuple(shape)), axis=1).astype(np.int32)


def _np(t) -> np.ndarray:
    return t.detach().cpu().numpy()


def pack(arch: str, image: str, res: dict) -> dict[str, np.ndarray]:
    import torchvision

    meta = {
        "arch": arch,
        "image": IMAGES[image],
        "orig_hw": [int(v) for v in res["orig_hw"]],
        "resized_hw": [int(v) for v in res["resized_hw"]],
        "padded_hw": [int(v) for v in res["padded_hw"]],
        "seed": SEED,
        "idx_seed": IDX_SEED,
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "detectron2_commit": d2_commit() if arch.startswith("d2_") else None,
        "class_layout": res["layout"],
        "levels": list(res["features"]),
        "rpn_levels": list(res["objectness"]),
    }
    out: dict[str, np.ndarray] = {}
    for lvl, f in res["features"].items():
        hwc = _np(f[0]).transpose(1, 2, 0)
        idx = sample_positions(hwc.shape, f"feat_{lvl}")
        out[f"feat_{lvl}_shape"] = np.array(hwc.shape, np.int32)
        out[f"feat_{lvl}_idx"] = idx
        out[f"feat_{lvl}_val"] = hwc[tuple(idx.T)].astype(np.float32)
        out[f"feat_{lvl}_absmean"] = np.float32(np.abs(hwc, dtype=np.float64).mean())
    for lvl, o in res["objectness"].items():
        a_h_w = _np(o[0])  # [A, H, W]
        hwa = a_h_w.transpose(1, 2, 0)
        idx = sample_positions(hwa.shape, f"obj_{lvl}", N_RPN_SAMPLES)
        out[f"obj_{lvl}_shape"] = np.array(hwa.shape, np.int32)
        out[f"obj_{lvl}_idx"] = idx
        out[f"obj_{lvl}_val"] = hwa[tuple(idx.T)].astype(np.float32)
        d = _np(res["deltas"][lvl][0])  # [A*4, H, W], channel a*4 + k
        a = a_h_w.shape[0]
        hwak = d.reshape(a, 4, d.shape[1], d.shape[2]).transpose(2, 3, 0, 1)
        idx = sample_positions(hwak.shape, f"delta_{lvl}", N_RPN_SAMPLES)
        out[f"delta_{lvl}_idx"] = idx
        out[f"delta_{lvl}_val"] = hwak[tuple(idx.T)].astype(np.float32)
    out["proposals"] = _np(res["proposals"]).astype(np.float32)
    for k, v in res["proposal_extra"].items():
        out[k] = _np(v).astype(np.float32)
    out["head_rois"] = out["proposals"][:N_HEAD]
    out["head_class_logits"] = _np(res["class_logits"][:N_HEAD]).astype(np.float32)
    out["head_box_deltas"] = _np(res["box_deltas"][:N_HEAD]).astype(np.float32)
    out["det_boxes"] = _np(res["det_boxes"]).astype(np.float32)
    out["det_scores"] = _np(res["det_scores"]).astype(np.float32)
    out["det_labels"] = _np(res["det_labels"]).astype(np.int32)
    out["meta"] = np.array(json.dumps(meta))
    return out


def run_one(arch: str, image: str, model=None) -> dict[str, np.ndarray]:
    path = data_dir() / IMAGES[image]
    if model is None:
        model = seeded_model(arch)
    res = run_tv(model, path) if arch.startswith("tv_") else run_d2(model, path)
    return pack(arch, image, res)


def summary(name: str, arrays: dict, size: int, seconds: float) -> str:
    s = arrays["det_scores"]
    rng = f"[{s.min():.3f}, {s.max():.3f}]" if len(s) else "[]"
    absm = " ".join(
        f"{k[5:-8]}={float(v):.3g}" for k, v in arrays.items() if k.endswith("_absmean")
    )
    return (
        f"{name}: dets={len(s)} scores={rng} proposals={len(arrays['proposals'])} "
        f"absmean {absm} size={size / 1024:.0f}KB time={seconds:.1f}s"
    )


def _collect(arch: str, images, calibration: dict) -> dict[str, np.ndarray]:
    """RPN head outputs and box-predictor inputs / deltas over all positions / RoIs."""
    model = seeded_model(arch, calibration)
    inner = _inner(model)
    rpn_head = inner.rpn.head if arch.startswith("tv_") else inner.proposal_generator.rpn_head
    predictor = inner.roi_heads.box_predictor
    got: dict[str, list] = {"obj": [], "delta": [], "x": [], "box": []}

    def on_rpn(_m, _a, out):
        got["obj"] += [_np(t).ravel() for t in out[0]]
        got["delta"] += [_np(t).ravel() for t in out[1]]

    def on_pred(_m, args, out):
        got["x"].append(_np(args[0]).reshape(len(args[0]), -1).astype(np.float64))
        got["box"].append(_np(out[1]).ravel())

    handles = [rpn_head.register_forward_hook(on_rpn), predictor.register_forward_hook(on_pred)]
    try:
        for image in images:
            run_one(arch, image, model)
    finally:
        for h in handles:
            h.remove()
    out = {k: np.concatenate(v) for k, v in got.items()}
    out["x_per_image"] = got["x"]
    return out


def _bg_bias_for(per_image: list[np.ndarray], pairs: float) -> float:
    """The background logit bias that leaves about ``pairs`` (RoI, class) probabilities > 0.05
    in the photo that has the fewest."""
    k = per_image[0].shape[1]
    bg = seeded.background_index(k)
    fg = np.delete(np.arange(k), bg)

    def count_one(logits, b):
        z = logits.copy()
        z[:, bg] += b
        z -= z.max(axis=1, keepdims=True)
        p = np.exp(z)
        p /= p.sum(axis=1, keepdims=True)
        return int((p[:, fg] > 0.05).sum())

    def count(b):
        return min(count_one(z, b) for z in per_image)

    lo, hi = -10.0, 40.0
    for _ in range(40):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if count(mid) > pairs else (lo, mid)
    return round(hi, 3)


def calibrate(archs, images):
    """Write skeletons/calibration.json (see seeded.py): two seeded runs per architecture."""
    table = seeded.load_calibration()
    tgt = seeded.TARGETS
    for arch in archs:
        t0 = time.perf_counter()
        entry = {"seed": SEED, **seeded.DEFAULT_GAINS}
        got = _collect(arch, images, entry)
        entry["rpn_obj_gain"] *= tgt["rpn_obj_std"] / float(got["obj"].std())
        entry["rpn_delta_gain"] *= tgt["rpn_delta_std"] / float(got["delta"].std())
        got = _collect(arch, images, entry)
        entry["box_delta_gain"] *= tgt["box_delta_std"] / float(got["box"].std())
        x = got["x"]
        mu = x.mean(axis=0)
        shape = dict((n, s) for n, s, _ in seeded.load_skeleton(arch))[seeded.CLS_WEIGHT]
        w0 = seeded.centred_cls_rows(shape, SEED)
        z = (x - mu) @ w0.T  # [R, K] per-RoI logits before the gain
        gain = tgt["cls_std"] / z.std(axis=0)
        entry["cls_gain"] = [float(v) for v in gain]
        entry["cls_offset"] = [float(v) for v in w0 @ mu]
        per_image = [((xi - mu) @ w0.T) * gain for xi in got["x_per_image"]]
        entry["bg_bias"] = _bg_bias_for(per_image, tgt["fg_pairs"])
        entry["n_rois"] = len(x)
        entry["images"] = list(images)
        table[arch] = entry
        with open(seeded.CALIBRATION_FILE, "w") as f:
            json.dump(table, f, indent=1, sort_keys=True)
            f.write("\n")
        gains = {k: round(float(np.mean(entry[k])), 5) for k in seeded.DEFAULT_GAINS}
        print(f"{arch}: {gains} rois={len(x)} {time.perf_counter() - t0:.0f}s", flush=True)


def write_references(archs, images, out_dir: Path):
    out_dir.mkdir(parents=True, exist_ok=True)
    for arch in archs:
        t0 = time.perf_counter()
        model = seeded_model(arch)
        t_build = time.perf_counter() - t0
        for image in images:
            t0 = time.perf_counter()
            arrays = run_one(arch, image, model)
            path = out_dir / f"{arch}__{image}.npz"
            np.savez_compressed(path, **arrays)
            dt = time.perf_counter() - t0
            print(summary(path.name, arrays, path.stat().st_size, dt + t_build), flush=True)
            t_build = 0.0


def plain_detections(arch: str, image: str, model) -> dict[str, np.ndarray]:
    """Final detections of the plain reference call (no hooks, no wrappers)."""
    path = data_dir() / IMAGES[image]
    if arch.startswith("tv_"):
        with torch.no_grad():
            d = model([read_rgb_float(path)])[0]
        boxes, scores, labels = d["boxes"], d["scores"], d["labels"]
    else:
        inst = model(read_bgr(path))["instances"]
        boxes, scores, labels = inst.pred_boxes.tensor, inst.scores, inst.pred_classes
    return {
        "det_boxes": _np(boxes).astype(np.float32),
        "det_scores": _np(scores).astype(np.float32),
        "det_labels": _np(labels).astype(np.int32),
    }


def verify(archs, images, ref_dir: Path) -> bool:
    """Stored npz == a fresh run (bit for bit), and its detections == the plain model call."""
    ok = True
    for arch in archs:
        model = seeded_model(arch)
        for image in images:
            path = ref_dir / f"{arch}__{image}.npz"
            with np.load(path) as f:
                stored = {k: f[k] for k in f.files}
            fresh = run_one(arch, image, model)
            plain = plain_detections(arch, image, model)
            bad = sorted(
                k for k in stored.keys() | fresh.keys() if k not in stored or k not in fresh
            )
            bad += [
                k
                for k in stored.keys() & fresh.keys()
                if stored[k].shape != fresh[k].shape or not np.array_equal(stored[k], fresh[k])
            ]
            bad += [f"plain:{k}" for k, v in plain.items() if not np.array_equal(v, stored[k])]
            ok &= not bad
            print(f"{path.name}: {'identical' if not bad else 'DIFFERS ' + ', '.join(bad)}")
    if "detectron2._C" in sys.modules:
        print("note: detectron2._C was imported")
    return ok


def write_skeletons():
    seeded.SKELETON_DIR.mkdir(parents=True, exist_ok=True)
    for arch in seeded.ARCHS:
        skel = skeleton_of(build(arch))
        path = seeded.SKELETON_DIR / f"{arch}.json"
        with open(path, "w") as f:
            f.write("[\n" + ",\n".join(json.dumps(e) for e in skel) + "\n]\n")
        n = sum(int(np.prod(s)) for _, s, _ in skel)
        print(f"{path.name}: {len(skel)} tensors, {n} values", flush=True)


def time_arch(arch: str, image: str, repeats: int, make=None) -> dict:
    """Seconds per image of the seeded reference `arch` (`make(arch)` builds it: the model, or
    detectron2's predictor; default `seeded_model`) on `image`, after one warm-up call."""
    make = make or seeded_model
    path = data_dir() / IMAGES[image]
    if arch.startswith("tv_"):
        model = make(arch)
        from PIL import Image

        rgb = np.asarray(Image.open(path).convert("RGB"))

        def call():
            img = torch.from_numpy(rgb.copy()).permute(2, 0, 1).float().div(255.0)
            with torch.no_grad():
                return model([img])
    else:
        predictor = make(arch)
        bgr = read_bgr(path)

        def call():
            return predictor(bgr)

    call()  # warm-up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        call()
        times.append(time.perf_counter() - t0)
    return {
        "arch": arch,
        "image": image,
        "median_s": statistics.median(times),
        "times_s": times,
        "threads": torch.get_num_threads(),
        "repeats": repeats,
        "torch": torch.__version__,
    }


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--skeletons", action="store_true", help="rewrite skeletons/<arch>.json")
    p.add_argument(
        "--calibrate", action="store_true", help="rewrite skeletons/calibration.json (seed 0)"
    )
    p.add_argument("--arch", action="append", choices=seeded.ARCHS, help="default: all six")
    p.add_argument("--image", action="append", choices=sorted(IMAGES), help="default: both")
    p.add_argument("--out", type=Path, default=HERE / "reference")
    p.add_argument("--time", metavar="ARCH", choices=seeded.ARCHS)
    p.add_argument(
        "--verify", action="store_true", help="rerun and compare with the stored npz files"
    )
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    if args.skeletons:
        write_skeletons()
        return
    images = args.image or list(IMAGES)
    if args.calibrate:
        calibrate(args.arch or list(seeded.ARCHS), list(IMAGES))
        return
    if args.verify:
        sys.exit(0 if verify(args.arch or list(seeded.ARCHS), images, args.out) else 1)
    if args.time:
        print(json.dumps(time_arch(args.time, images[0], args.repeats)), flush=True)
        return
    write_references(args.arch or list(seeded.ARCHS), images, args.out)


if __name__ == "__main__":
    main()
