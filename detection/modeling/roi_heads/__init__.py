"""Second stages: a shared base (sampling, losses, post-processing), the C4 and FPN heads and
Mask R-CNN's mask head."""

from detection.modeling.roi_heads.base import ROIHeads, sample_rois
from detection.modeling.roi_heads.c4_heads import C4ROIHeads
from detection.modeling.roi_heads.fpn_heads import FPNROIHeads
from detection.modeling.roi_heads.mask_heads import MaskHead

__all__ = ["C4ROIHeads", "FPNROIHeads", "MaskHead", "ROIHeads", "sample_rois"]
