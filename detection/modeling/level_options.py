"""The shape of the options that come per level or per phase (anchor sizes and ratios, the
RPN's (train, test) top-k pairs, the FPN box head's layer widths), checked before any layer
is built: one line naming the option, the shape it needs for this head and what it got.
(Their numeric ranges are `options.py`'s business.)"""

from __future__ import annotations

import numbers

from detection.modeling.options import DetectorOptions
from detection.modeling.rpn import anchors as anchor_ops


def _is_number(value) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _flat(value) -> bool:
    """A non-empty list/tuple of numbers."""
    return isinstance(value, (list, tuple)) and len(value) > 0 and all(map(_is_number, value))


def _fail(option: str, needs: str, value) -> None:
    raise ValueError(f"{option} {needs}, got {value!r}")


def check_level_options(head: str, options: DetectorOptions) -> None:
    """Refuse per-level/per-phase options of the wrong shape for `head` ("c4" or "fpn")."""
    rpn = options.rpn
    sizes = rpn.anchor_sizes
    if sizes is not None:
        if head == "c4" and not _flat(sizes):
            _fail("anchor_sizes", "for head='c4' is one tuple of anchor sizes in pixels, e.g. "
                  f"{anchor_ops.C4_SIZES}", sizes)
        if head == "fpn" and not (isinstance(sizes, (list, tuple)) and len(sizes) == 5
                                  and all(map(_flat, sizes))):
            _fail("anchor_sizes", "for head='fpn' is one tuple of sizes per level P2..P6 "
                  f"(5 tuples), e.g. {anchor_ops.FPN_SIZES}", sizes)
    if not _flat(rpn.anchor_ratios):
        _fail("anchor_ratios", "is one tuple of aspect ratios (height / width) shared by "
              f"every level, e.g. {anchor_ops.RATIOS}", rpn.anchor_ratios)
    for option, value in (("rpn_pre_nms_topk", rpn.pre_nms_topk),
                          ("rpn_post_nms_topk", rpn.post_nms_topk)):
        if value is not None and not (_flat(value) and len(value) == 2):
            _fail(option, "is a (train, test) pair of counts, e.g. (2000, 1000)", value)
    heads = options.roi_heads
    for option, value in (("fc_dims", heads.fc_dims), ("box_head_convs", heads.box_head_convs)):
        if not (isinstance(value, (list, tuple)) and all(map(_is_number, value))):
            _fail(option, "is a tuple of layer widths, one per layer, e.g. (1024, 1024)", value)
