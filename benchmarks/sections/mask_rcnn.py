"""Mask R-CNN R50-FPN inference at the reference size (one COCO photo, 800-pixel shorter side):
ours with and without masks against torchvision and detectron2 (`benchmarks.mask_rcnn`)."""

from __future__ import annotations

from benchmarks import detect, peers, pipelines, settings
from benchmarks import mask_rcnn as masks
from benchmarks.suite import Suite
from benchmarks.targets import TARGETS
from benchmarks.timing import median, paired_speed_ratio
from keras_resnet_suite.runtime import onednn_pays_off

SECTION = "mask_rcnn inference"
SAVED_MODEL_NOT_TIMED = ("ours Mask R-CNN SavedModel (with detection_masks): timed in fresh "
                         "processes by python -m benchmarks.detector_serving --masks")


def mask_rcnn(suite: Suite) -> None:
    """Our Mask R-CNN against the peers at hand, and what its mask head costs."""
    root = pipelines.data_dir()
    if root is None or not (root / masks.PHOTO).is_file():
        suite.skipped.append(f"Mask R-CNN timings: ../shared/data/{masks.PHOTO} not found")
        return
    reason = (detect.detection_available() if suite.mode.masks
              else "opt-in: python -m benchmarks --only mask_rcnn (or --detection)")
    if reason:
        suite.skipped.append(f"Mask R-CNN timings: {reason}")
        return
    torch = []
    if peers.torchvision_wanted():
        torch.append(masks.TORCHVISION)
        missing = masks.detectron2_missing()
        if missing is None:
            torch.append(masks.DETECTRON2)
        else:
            suite.skipped.append(f"{masks.DETECTRON2}: {missing}")
    else:
        suite.skipped.append("torchvision and detectron2 Mask R-CNN: torch/torchvision not "
                             "installed or left out (optional peers)")
    suite.skipped.append(SAVED_MODEL_NOT_TIMED)
    setting = _setting(suite)
    args: dict = {}
    plan = {setting: ([masks.OURS, masks.OURS_BOXES], args), settings.TORCH: (torch, args)}
    rows = suite.compare_remote(SECTION, "mask-rcnn-infer", plan,
                                torch[0] if torch else settings.label(masks.OURS_BOXES, setting),
                                model="mask_rcnn resnet50-fpn", batch=1, dtype="float32",
                                input_size="426x640 -> 800 shorter side (max 1333)",
                                repeats=suite.mode.det_repeats)
    if not rows:
        return
    record(suite, rows, _counts(suite, plan))


def _setting(suite: Suite) -> str:
    """The TensorFlow setting ours runs under: the library's pick for one image
    (`runtime.onednn_pays_off`) where this run measures it (`--onednn`)."""
    best = settings.ON if onednn_pays_off(1) else settings.OFF
    return best if best in suite.settings else suite.settings[0]


def _counts(suite: Suite, plan: dict) -> dict[str, int]:
    """Detections each contender returned on its last call, asked of the plan's workers."""
    counts: dict[str, int] = {}
    for setting, (names, _args) in plan.items():
        if names:
            got = suite.pool.get(setting).request("call", fn="mask_counts")["result"]
            counts.update({settings.label(name, setting): n for name, n in got.items()})
    return counts


def record(suite: Suite, rows: list, counts: dict[str, int]) -> None:
    """Each row's detection count, the checks against torchvision and detectron2, and the
    mask head's paired cost (our MaskRCNN against our FasterRCNN of the same options)."""
    for r in rows:
        r["detections"] = counts.get(r["contender"])
    by_peer = {r["peer"]: r for r in rows}
    ours = by_peer.get(masks.OURS)
    if ours is None:
        suite.skipped.append(f"{SECTION}: no figure of {masks.OURS}")
        return
    suite.notes.append("Mask R-CNN detections per image on the last call: " + ", ".join(
        f"{r['contender']} {r['detections']}" for r in rows) + " (the parity tests' seeded "
        "weights, ours and torchvision's the same; score threshold 0 and at most "
        f"{masks.DETECTIONS} per image on every side)")
    for peer, key in ((masks.TORCHVISION, "mask inference vs torchvision"),
                      (masks.DETECTRON2, "mask inference vs detectron2")):
        if peer in by_peer:
            suite.check(f"Mask R-CNN R50-FPN inference: {ours['contender']} / {peer}", rows,
                        ours["contender"], TARGETS[key], versus=by_peer[peer]["contender"])
    boxes = by_peer.get(masks.OURS_BOXES)
    if boxes is not None:
        wall = median([m - b for m, b in zip(ours["times_s"], boxes["times_s"], strict=False)])
        cpu = median([m - b for m, b in zip(ours["cpu_times_s"], boxes["cpu_times_s"],
                                            strict=False)])
        faster = paired_speed_ratio(boxes["times_s"], ours["times_s"])
        suite.notes.append(f"our mask head's cost at {masks.DETECTIONS} detections: {wall:.2f} s "
                           f"wall, {cpu:.2f} s CPU per image (paired medians; MaskRCNN "
                           f"{ours['median_s']:.2f} s vs FasterRCNN {boxes['median_s']:.2f} s, "
                           f"which is {faster:.2f}x as fast)")
