"""Reference masks of torchvision / detectron2 Mask R-CNN with seeded weights (torch only).

Run with a torch + torchvision interpreter (never tensorflow/keras in this process), e.g.::

    python tests/detection/parity/make_mask_rcnn_reference.py --skeletons   # skeletons/<arch>.json
    python tests/detection/parity/make_mask_rcnn_reference.py --calibrate   # mask_calibration.json
    python tests/detection/parity/make_mask_rcnn_reference.py               # reference_masks/*.npz
    python tests/detection/parity/make_mask_rcnn_reference.py --verify      # rerun == stored npz
    python tests/detection/parity/make_mask_rcnn_reference.py --arch d2_mask_r50_c4

The models are built as torchvision 0.29's ``maskrcnn_resnet50_fpn[_v2](weights=COCO_V1)`` and
detectron2's ``COCO-InstanceSegmentation/mask_rcnn_*.yaml`` build them (no download), loaded
with ``seeded.seeded_state`` (the Faster R-CNN rules plus the mask predictor's calibration), and
run on ``coco139`` exactly as ``make_reference.py`` runs the Faster R-CNN models. See README.md
next to this file for what ``reference_masks/<arch>__coco139.npz`` holds.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import make_reference as mr  # noqa: E402
import seeded  # noqa: E402

OUT = HERE / "reference_masks"
IMAGE = "coco139"
N_MASKS = 32  # detections whose mask logits and pasted masks are stored (keeps files small)
mr.D2_CONFIGS.update({
    "d2_mask_r50_c4": "COCO-InstanceSegmentation/mask_rcnn_R_50_C4_1x.yaml",
    "d2_mask_r101_c4": "COCO-InstanceSegmentation/mask_rcnn_R_101_C4_3x.yaml",
    "d2_mask_r50_fpn": "COCO-InstanceSegmentation/mask_rcnn_R_50_FPN_3x.yaml",
    "d2_mask_r101_fpn": "COCO-InstanceSegmentation/mask_rcnn_R_101_FPN_3x.yaml",
})


def build_tv(arch: str):
    """As torchvision 0.29 ``maskrcnn_resnet50_fpn[_v2](weights=COCO_V1)`` builds it."""
    from torch import nn
    from torchvision.models import resnet50
    from torchvision.models.detection._utils import overwrite_eps
    from torchvision.models.detection.backbone_utils import _resnet_fpn_extractor
    from torchvision.models.detection.faster_rcnn import (
        FastRCNNConvFCHead,
        RPNHead,
        _default_anchorgen,
    )
    from torchvision.models.detection.mask_rcnn import MaskRCNN, MaskRCNNHeads
    from torchvision.ops import misc as misc_nn_ops

    if arch == "tv_mask_r50_fpn_v1":
        backbone = resnet50(weights=None, norm_layer=misc_nn_ops.FrozenBatchNorm2d)
        model = MaskRCNN(_resnet_fpn_extractor(backbone, 3), num_classes=91)
        overwrite_eps(model, 0.0)  # done after loading MaskRCNN_ResNet50_FPN_Weights.COCO_V1
    elif arch == "tv_mask_r50_fpn_v2":
        backbone = _resnet_fpn_extractor(resnet50(weights=None), 3, norm_layer=nn.BatchNorm2d)
        anchorgen = _default_anchorgen()
        model = MaskRCNN(
            backbone, num_classes=91, rpn_anchor_generator=anchorgen,
            rpn_head=RPNHead(256, anchorgen.num_anchors_per_location()[0], conv_depth=2),
            box_head=FastRCNNConvFCHead((256, 7, 7), [256] * 4, [1024], norm_layer=nn.BatchNorm2d),
            mask_head=MaskRCNNHeads(256, [256] * 4, 1, norm_layer=nn.BatchNorm2d))
    else:
        raise ValueError(arch)
    return model.eval()


def build(arch: str):
    return build_tv(arch) if arch.startswith("tv_") else mr.build_d2(arch)


def seeded_model(arch: str, calibration: dict | None = None):
    """The model (torchvision) or DefaultPredictor (detectron2) with seeded weights."""
    if arch.startswith("tv_"):
        return mr.load_seeded(build_tv(arch), arch, mr.SEED, calibration)
    return mr.d2_predictor(arch, mr.SEED, calibration)


def run(arch: str, model) -> dict:
    """The detections, the mask head's input and logits, and the pasted binary masks."""
    path = mr.data_dir() / mr.IMAGES[IMAGE]
    rec = mr.Recorder()
    inner = model if arch.startswith("tv_") else model.model
    logits_layer = (inner.roi_heads.mask_predictor.mask_fcn_logits if arch.startswith("tv_")
                    else inner.roi_heads.mask_head.predictor)
    rec.hook(logits_layer, "logits")
    heads = {}

    def on_heads(_mod, _args, output):
        # copied now: both libraries' post-processing rescales these boxes in place
        first = output[0][0]
        if arch.startswith("tv_"):
            heads["boxes"], heads["labels"] = first["boxes"].clone(), first["labels"].clone()
        else:
            heads["boxes"] = first.pred_boxes.tensor.clone()
            heads["labels"] = first.pred_classes.clone()

    rec.handles.append(inner.roi_heads.register_forward_hook(on_heads))
    try:
        if arch.startswith("tv_"):
            rec.hook(inner.transform, "transform")
            img = mr.read_rgb_float(path)
            with torch.no_grad():
                dets = model([img])[0]
            images = rec.out["transform"][1][0]
            resized, padded = list(images.image_sizes[0]), list(images.tensors.shape[-2:])
            final = {"boxes": dets["boxes"], "scores": dets["scores"], "labels": dets["labels"],
                     "masks": dets["masks"][:, 0] > 0.5}  # torchvision's COCO evaluation rule
            orig = list(img.shape[-2:])
        else:
            bgr = mr.read_bgr(path)
            captured = {}
            orig_pre = inner.preprocess_image

            def preprocess_image(batched_inputs):
                captured["images"] = orig_pre(batched_inputs)
                return captured["images"]

            inner.preprocess_image = preprocess_image
            try:
                inst = model(bgr)["instances"]
            finally:
                del inner.preprocess_image
            images = captured["images"]
            resized, padded = list(images.image_sizes[0]), list(images.tensor.shape[-2:])
            final = {"boxes": inst.pred_boxes.tensor, "scores": inst.scores,
                     "labels": inst.pred_classes, "masks": inst.pred_masks}
            orig = list(bgr.shape[:2])
    finally:
        rec.close()
    inputs, logits = rec.out["logits"][0][0], rec.out["logits"][1]
    return {"orig_hw": orig, "resized_hw": resized, "padded_hw": padded, "inputs": inputs,
            "logits": logits, "roi_boxes": heads["boxes"], "roi_labels": heads["labels"],
            **final}


def pack(arch: str, res: dict) -> dict[str, np.ndarray]:
    import torchvision

    n = min(N_MASKS, len(res["labels"]))
    labels = mr._np(res["roi_labels"]).astype(np.int64)
    logits = mr._np(res["logits"])[np.arange(n), labels[:n]]
    meta = {
        "arch": arch, "image": mr.IMAGES[IMAGE],
        "orig_hw": [int(v) for v in res["orig_hw"]],
        "resized_hw": [int(v) for v in res["resized_hw"]],
        "padded_hw": [int(v) for v in res["padded_hw"]],
        "seed": mr.SEED, "n_masks": n, "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "detectron2_commit": mr.d2_commit() if arch.startswith("d2_") else None,
        "class_layout": mr.TV_LAYOUT if arch.startswith("tv_") else mr.D2_LAYOUT,
        "paste_rule": "torchvision" if arch.startswith("tv_") else "detectron2",
    }
    return {
        "meta": np.array(json.dumps(meta)),
        "det_boxes": mr._np(res["boxes"]).astype(np.float32),
        "det_scores": mr._np(res["scores"]).astype(np.float32),
        "det_labels": mr._np(res["labels"]).astype(np.int32),
        "mask_rois": mr._np(res["roi_boxes"][:n]).astype(np.float32),
        "mask_labels": labels[:n].astype(np.int32),
        "mask_logits": logits.astype(np.float32),
        "pasted_masks": mr._np(res["masks"][:n]).astype(np.uint8),
    }


def calibrate(archs) -> None:
    """``mask_gain`` / ``mask_offset`` per arch (see ``seeded.py``), merged into the file."""
    file = seeded.MASK_CALIBRATION_FILE
    stored = json.loads(file.read_text()) if file.exists() else {}
    for arch in archs:
        base = {**seeded.load_calibration().get(seeded.box_arch(arch), {}), "mask_gain": 1.0}
        res = run(arch, seeded_model(arch, calibration=base))
        x = mr._np(res["inputs"]).astype(np.float64)  # [N, C, S, S], the predictor's input
        mu = x.mean(axis=(0, 2, 3))
        name = next(n for n, _, _ in seeded.load_skeleton(arch) if seeded.MASK_LOGITS.match(n)
                    and n.endswith(".weight"))
        shape = next(s for n, s, _ in seeded.load_skeleton(arch) if n == name)
        w0 = seeded.centred_rows(name, shape)[:, :, 0, 0]  # [K, C]
        labels = mr._np(res["roi_labels"]).astype(np.int64)
        picked = np.einsum("nchw,nc->nhw", x - mu[None, :, None, None], w0[labels])
        gain = seeded.MASK_TARGET_STD / float(picked.std())
        stored[arch] = {"seed": mr.SEED, "mask_gain": gain,
                        "mask_offset": [float(v) for v in w0 @ mu]}
        print(f"{arch}: {len(labels)} detections, logit std {picked.std():.4f} -> gain "
              f"{gain:.4f}", flush=True)
        file.write_text(json.dumps(stored, indent=1) + "\n")


def write_skeletons(archs) -> None:
    for arch in archs:
        skel = mr.skeleton_of(build(arch))
        path = seeded.SKELETON_DIR / f"{arch}.json"
        path.write_text("[\n" + ",\n".join(json.dumps(e) for e in skel) + "\n]\n")
        print(f"{path.name}: {len(skel)} tensors", flush=True)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--skeletons", action="store_true")
    p.add_argument("--calibrate", action="store_true")
    p.add_argument("--verify", action="store_true", help="rerun; compare with the stored npz")
    p.add_argument("--arch", action="append", choices=seeded.MASK_ARCHS, help="default: all")
    p.add_argument("--out", type=Path, default=OUT)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--time", metavar="ARCH", choices=seeded.MASK_ARCHS,
                   help="print seconds per image of ARCH on the photo as a JSON line")
    p.add_argument("--repeats", type=int, default=2, help="timed calls with --time")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    if args.time:
        return print(json.dumps(mr.time_arch(args.time, IMAGE, args.repeats, seeded_model)),
                     flush=True)
    archs = args.arch or list(seeded.MASK_ARCHS)
    if args.skeletons:
        return write_skeletons(archs)
    if args.calibrate:
        return calibrate(archs)
    args.out.mkdir(parents=True, exist_ok=True)
    ok = True
    for arch in archs:
        t0 = time.perf_counter()
        arrays = pack(arch, run(arch, seeded_model(arch)))
        path = args.out / f"{arch}__{IMAGE}.npz"
        if args.verify:
            with np.load(path) as f:
                stored = {k: f[k] for k in f.files}
            bad = sorted(k for k in stored.keys() ^ arrays.keys()) + sorted(
                k for k in stored.keys() & arrays.keys()
                if stored[k].shape != arrays[k].shape or not np.array_equal(stored[k], arrays[k]))
            ok &= not bad
            print(f"{path.name}: {'identical' if not bad else 'DIFFERS ' + ', '.join(bad)}")
            continue
        np.savez_compressed(path, **arrays)
        logits, masks = arrays["mask_logits"], arrays["pasted_masks"]
        print(f"{path.name}: {path.stat().st_size // 1024} KB, {len(arrays['det_boxes'])} "
              f"detections, logits std {logits.std():.2f}, mask pixels on "
              f"{(logits > 0).mean():.2f} (box-relative) / pasted areas {masks.sum((1, 2)).min()}-"
              f"{masks.sum((1, 2)).max()} px, {time.perf_counter() - t0:.1f} s", flush=True)
    if "detectron2._C" in sys.modules:
        print("note: detectron2._C was imported")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
