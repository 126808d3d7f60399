"""Region Proposal Network (Faster R-CNN sec. 3.1): anchors, the RPN head, proposals, losses."""

from detection.modeling.rpn.proposal_network import RPN, RPNHead

__all__ = ["RPN", "RPNHead"]
