"""Mask R-CNN R50-FPN seconds per image on the CPU at the reference size: one COCO photo
(coco-mini val2017 000000000139, 426x640), resized by each library to an 800-pixel shorter
side (max 1333), against torchvision's `maskrcnn_resnet50_fpn` and detectron2's
`mask_rcnn_R_50_FPN_3x`; ours also without masks (`FasterRCNN`, same weights and options) to
show what the mask head costs.

Weights: the parity tests' seeded weights (`tests/detection/parity/seeded.py`) on every side,
drawn from each model's own state dict, so that every stage works on realistic numbers
(plain random weights blow up through detectron2's trunk: 15 proposals, 48 detections).
Ours and torchvision's are the same network with the same weights, mask head included (the
seeded torchvision Mask R-CNN state through our converter, torchvision's preset: the same
proposals, detections and masks); our FasterRCNN takes that state's box parts.
Post-processing is set alike so the mask head runs on as many boxes everywhere: score
threshold 0 and 100 detections per image. Every call records its detection count in `COUNTS`;
the section reports them.

The torch contenders import neither Keras nor TensorFlow (the two must not share a process):
they run in the suite's torch worker, which loads Keras only for the figures that need it.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from benchmarks.pretrained import photo, seeded_module
from benchmarks.timing import Case

if TYPE_CHECKING:  # torch is an optional peer, imported only in the torch worker
    import torch

CASE = "tv_r50_fpn_v1"  # the parity case whose photo ours runs
MASK_CASE = "tv_mask_r50_fpn_v1"  # the Mask R-CNN parity skeleton whose seeded weights it loads
PHOTO = "coco-mini/val2017/000000000139.jpg"  # that case's photo, under the data folder
DETECTIONS = 100
D2_ENV = "DETECTRON2_SRC"
D2_CONFIG = "COCO-InstanceSegmentation/mask_rcnn_R_50_FPN_3x.yaml"
OURS, OURS_BOXES = "ours MaskRCNN", "ours FasterRCNN (no masks)"
TORCHVISION, DETECTRON2 = "torchvision maskrcnn_resnet50_fpn", "detectron2 mask_rcnn_R_50_FPN_3x"
COUNTS: dict[str, int] = {}  # contender -> detections its last call returned


def d2_source() -> Path:
    """Where detectron2's source tree is: `$DETECTRON2_SRC`, else /work/detectron2-src."""
    return Path(os.environ.get(D2_ENV, "/work/detectron2-src"))


def detectron2_missing() -> str | None:
    """None when detectron2's source tree and its config are at hand, else why not."""
    src = d2_source()
    if not (src / "detectron2" / "__init__.py").is_file():
        return f"detectron2 source not found at {src} (set {D2_ENV})"
    if not (src / "configs" / D2_CONFIG).is_file():
        return f"{src / 'configs' / D2_CONFIG}: config not found"
    return None


def _counted(name: str, call: Callable[[], object], count: Callable[[object], int]) -> Case:
    """A case whose every call records how many detections it returned."""

    def run():
        out = call()
        COUNTS[name] = int(count(out))
        return out

    return Case(name, run, items=1)


def ours_cases(contenders: list[str], models: dict) -> list[Case]:
    """Our R50-FPN MaskRCNN and FasterRCNN (those named in `contenders`) with torchvision's
    preset and the seeded weights at the photo's reference canvas (800x1216); `models`
    caches the built detectors between figures."""
    from benchmarks.pretrained import seeded_detector
    from detection import FasterRCNN, MaskRCNN

    cases = []
    for name, cls in ((OURS, MaskRCNN), (OURS_BOXES, FasterRCNN)):
        if name not in contenders:
            continue
        if name not in models:
            models[name] = seeded_detector(CASE, cls, masks=MASK_CASE, score_threshold=0.0,
                                           max_detections=DETECTIONS)[:2]
        model, pixels = models[name]
        cases.append(_counted(name, lambda m=model, x=pixels: m.predict_on_batch(x),
                              lambda out: np.asarray(out["num_detections"])[0]))
    return cases


def seed_torch(model: torch.nn.Module) -> torch.nn.Module:
    """`model` (torch) with the seeded weights of its own state dict, in eval mode."""
    import torch

    skeleton = [(k, tuple(v.shape), str(v.dtype).replace("torch.", ""))
                for k, v in model.state_dict().items()]
    state = seeded_module().seeded_state(skeleton, seed=0)
    model.load_state_dict({k: torch.from_numpy(v) for k, v in state.items()}, strict=True)
    return model.eval()


def torchvision_model() -> torch.nn.Module:
    """torchvision's Mask R-CNN R50-FPN as `maskrcnn_resnet50_fpn(weights=COCO_V1)` builds it
    (frozen BN with eps 0, 91 classes), seeded, score threshold 0, 100 detections."""
    from torchvision.models import resnet50
    from torchvision.models.detection import MaskRCNN
    from torchvision.models.detection._utils import overwrite_eps
    from torchvision.models.detection.backbone_utils import _resnet_fpn_extractor
    from torchvision.ops.misc import FrozenBatchNorm2d

    trunk = _resnet_fpn_extractor(resnet50(weights=None, norm_layer=FrozenBatchNorm2d), 3)
    model = MaskRCNN(trunk, num_classes=91, box_score_thresh=0.0,
                     box_detections_per_img=DETECTIONS)
    overwrite_eps(model, 0.0)
    return seed_torch(model)


def detectron2_predictor(pixels: np.ndarray) -> Callable[[], object]:
    """detectron2's `DefaultPredictor` (`build_model(cfg).eval()`, its 800/1333 resize, BGR
    input, `torch.no_grad`) of mask_rcnn_R_50_FPN_3x, seeded, on the photo."""
    src = str(d2_source())
    if src not in sys.path:
        sys.path.insert(0, src)
    from detectron2.config import get_cfg
    from detectron2.engine import DefaultPredictor

    cfg = get_cfg()
    cfg.merge_from_file(str(d2_source() / "configs" / D2_CONFIG))
    cfg.MODEL.DEVICE = "cpu"
    cfg.MODEL.WEIGHTS = ""  # DetectionCheckpointer.load("") loads nothing: seeded below
    cfg.MODEL.ROI_HEADS.SCORE_THRESH_TEST = 0.0
    cfg.TEST.DETECTIONS_PER_IMAGE = DETECTIONS
    cfg.freeze()
    predictor = DefaultPredictor(cfg)
    seed_torch(predictor.model)
    bgr = np.ascontiguousarray(pixels[:, :, ::-1])
    return lambda: predictor(bgr)


def torch_cases(contenders: list[str]) -> list[Case]:
    """torchvision's and detectron2's Mask R-CNN R50-FPN (those named), eager under
    `torch.no_grad`, each resizing the photo itself; detectron2 only where its source is
    at hand (the section says why not)."""
    import torch

    pixels = photo(CASE)
    cases = []
    if TORCHVISION in contenders:
        model = torchvision_model()
        image = torch.from_numpy(pixels.copy()).permute(2, 0, 1).float().div(255.0)

        def tv_call():
            with torch.no_grad():
                return model([image])

        cases.append(_counted(TORCHVISION, tv_call, lambda out: len(out[0]["boxes"])))
    if DETECTRON2 in contenders and detectron2_missing() is None:
        cases.append(_counted(DETECTRON2, detectron2_predictor(pixels),
                              lambda out: len(out["instances"])))
    return cases


def cases(contenders: list[str], models: dict) -> list[Case]:
    """Every contender of `contenders` this process runs: ours (TensorFlow) or the torch ones
    (a process without TensorFlow)."""
    COUNTS.clear()
    mine = [n for n in contenders if n in (OURS, OURS_BOXES)]
    theirs = [n for n in contenders if n in (TORCHVISION, DETECTRON2)]
    return (ours_cases(mine, models) if mine else []) + (torch_cases(theirs) if theirs else [])
