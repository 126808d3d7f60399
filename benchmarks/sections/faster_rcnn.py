"""Faster R-CNN R101-C4 and R50-FPN at the 600-pixel canvas, oneDNN on and off, against
torchvision's R50-FPN; the raccoon VOC pipeline against the R101-C4 step it would feed."""

from __future__ import annotations

from benchmarks import detect, peers, pipelines, settings
from benchmarks.suite import Suite, plan, setting_checks
from benchmarks.targets import TARGETS

STREAM = 20  # batches the VOC stream pulls per timed call (benchmarks.worker.detection)
VOC = "voc pipeline"


def detection(suite: Suite) -> None:
    """Every detector configuration of the mode, where the data and the detector are at hand."""
    root = pipelines.data_dir()
    voc_dir = root / "raccoon-voc" if root else None
    if voc_dir is None or not voc_dir.is_dir():
        suite.skipped.append("VOC pipeline and detection steps: ../shared/data/raccoon-voc "
                             "not found")
        return
    reason = (detect.detection_available() if suite.mode.detection
              else "opt-in: python -m benchmarks --only detection --detection")
    if reason:
        suite.skipped.append(f"Faster R-CNN timings: {reason}")
        return
    torch = [peers.TORCHVISION] if peers.torchvision_wanted() else []
    if not torch:
        suite.skipped.append("torchvision fasterrcnn_resnet50_fpn: torch/torchvision not "
                             "installed or left out (optional peer)")
    for backbone, head in suite.mode.det_configs:
        configuration(suite, backbone, head, str(voc_dir), torch if head == "fpn" else [])


def configuration(suite: Suite, backbone: str, head: str, voc_dir: str,
                  torch: list[str]) -> None:
    """Inference and the training step of one detector (and the VOC stream beside R101-C4)."""
    label = f"{backbone}-{head}"
    canvas = f"{detect.CANVAS[0]}x{detect.CANVAS[1]}"
    photo = f"{detect.PHOTO[0]}x{detect.PHOTO[1]} -> {canvas}"
    ours_on = settings.label(peers.OURS, settings.ON)
    args = {"backbone": backbone, "head": head, "voc_dir": voc_dir}
    meta = {"model": f"faster_rcnn {label}", "batch": 1, "dtype": "float32",
            "repeats": suite.mode.det_repeats}  # compare_remote takes `repeats` itself
    base = peers.TORCHVISION if torch else settings.label(peers.OURS, suite.tf_default)
    rows = suite.compare_remote("detection inference", "detection-infer",
                                plan(suite, [peers.OURS], [peers.OURS], torch, **args), base,
                                input_size=photo, **meta)
    setting_checks(suite, f"Faster R-CNN {label} inference", rows, [peers.OURS])
    if head == "fpn":
        suite.check(f"Faster R-CNN {label} inference: {ours_on} / torchvision", rows,
                    ours_on, TARGETS["detection inference vs torchvision"])
    # The VOC stream alternates with the R101-C4 step it would feed.
    on = [peers.OURS] + ([VOC] if head == "c4" else [])
    rows = suite.compare_remote("detection train step", "detection-train",
                                plan(suite, on, [peers.OURS], torch, **args), base,
                                input_size=canvas,
                                items=lambda n: STREAM if n == VOC else 1, **meta)
    for r in rows:
        if r["contender"].startswith(VOC):
            r["section"] = "input pipeline"
    if head == "fpn":
        suite.check(f"Faster R-CNN {label} training step: {ours_on} / torchvision", rows,
                    ours_on, TARGETS["detection training vs torchvision"])
    else:
        suite.check("VOC pipeline / Faster R-CNN R101-C4 training step", rows,
                    settings.label(VOC, settings.ON), TARGETS["pipeline vs step"],
                    versus=ours_on)
    setting_checks(suite, f"Faster R-CNN {label} training step", rows, [peers.OURS])
