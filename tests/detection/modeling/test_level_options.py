"""Per-level and per-phase options of the wrong shape fail before any layer is built, with one
line naming the option and the shape it needs (issue 33: `FasterRCNN(head="fpn",
anchor_sizes=(16, 32, 64))` used to fail with "'int' object is not iterable" deep inside)."""

import pytest

import detection

CASES = [
    ({"head": "fpn", "anchor_sizes": (16, 32, 64)},
     "anchor_sizes for head='fpn' is one tuple of sizes per level P2..P6 (5 tuples), e.g. "
     "((32,), (64,), (128,), (256,), (512,)), got (16, 32, 64)"),
    ({"head": "c4", "anchor_sizes": [[32], [64]]},
     "anchor_sizes for head='c4' is one tuple of anchor sizes in pixels, e.g. "
     "(32, 64, 128, 256, 512), got [[32], [64]]"),
    ({"head": "fpn", "anchor_ratios": ((0.5, 1.0, 2.0),) * 5},
     "anchor_ratios is one tuple of aspect ratios (height / width) shared by every level, e.g. "
     "(0.5, 1.0, 2.0), got " + repr(((0.5, 1.0, 2.0),) * 5)),
    ({"head": "c4", "rpn_post_nms_topk": 300},
     "rpn_post_nms_topk is a (train, test) pair of counts, e.g. (2000, 1000), got 300"),
    ({"head": "fpn", "fc_dims": 256},
     "fc_dims is a tuple of layer widths, one per layer, e.g. (1024, 1024), got 256"),
]


@pytest.mark.jax
@pytest.mark.parametrize("model", ["FasterRCNN", "MaskRCNN"])
@pytest.mark.parametrize("options, message", CASES)
def test_wrong_shape_is_one_line_naming_the_option(model, options, message):
    with pytest.raises(ValueError) as info:
        getattr(detection, model)(3, backbone="resnet18", image_size=(64, 64), **options)
    assert str(info.value) == message


def test_right_shapes_pass_the_check():
    from detection.modeling.level_options import check_level_options
    from detection.modeling.options import DetectorOptions

    check_level_options("fpn", DetectorOptions().replace(
        anchor_sizes=[[32, 40], [64], [128], [256], [512]], rpn_pre_nms_topk=[100, 50]))
    check_level_options("c4", DetectorOptions().replace(anchor_sizes=(16, 32), fc_dims=[]))
