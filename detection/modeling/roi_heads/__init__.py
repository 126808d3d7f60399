"""Second stages: a shared base (sampling, losses, post-processing) and the C4 and FPN heads."""

from detection.modeling.roi_heads.base import ROIHeads, sample_rois
from detection.modeling.roi_heads.c4_heads import C4ROIHeads
from detection.modeling.roi_heads.fpn_heads import FPNROIHeads

__all__ = ["C4ROIHeads", "FPNROIHeads", "ROIHeads", "sample_rois"]
