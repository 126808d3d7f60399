"""The per-stage option objects behind `FasterRCNN(...)`'s keywords, and the presets as them."""

import dataclasses

import pytest

from detection.checkpoints import presets
from detection.modeling.options import KEYWORDS, DetectorOptions, ROIHeadsOptions


def test_every_keyword_names_one_field_of_one_stage():
    options = DetectorOptions()
    for keyword, (stage, name) in KEYWORDS.items():
        owner = options if stage == "" else getattr(options, stage)
        assert name in {f.name for f in dataclasses.fields(owner)}, keyword
    assert len(set(KEYWORDS.values())) == len(KEYWORDS)


def test_keywords_replace_single_fields_and_leave_the_original_alone():
    base = DetectorOptions()
    changed = base.replace(score_threshold=0.2, rpn_nms_threshold=0.6, resize_min_size=600,
                           seed=3)
    assert changed.roi_heads == dataclasses.replace(ROIHeadsOptions(), score_threshold=0.2)
    assert (changed.rpn.nms_threshold, changed.transform.min_size, changed.seed) == (0.6, 600, 3)
    assert changed.backbone == base.backbone
    assert base == DetectorOptions() and base.replace() == base
    with pytest.raises(dataclasses.FrozenInstanceError):
        base.seed = 1  # type: ignore[misc]


def test_an_unknown_keyword_is_one_line_naming_it():
    with pytest.raises(ValueError, match=r"^FasterRCNN: unknown option\(s\) \['score_treshold'\]"
                                         r"; valid: .*score_threshold") as err:
        DetectorOptions().replace(score_treshold=0.1)
    assert "\n" not in str(err.value)


def test_presets_are_options_and_detectron2_heads_differ_only_in_proposal_counts():
    for preset in presets.PRESETS:
        assert isinstance(presets.options(preset, "fpn"), DetectorOptions)
    c4, fpn = presets.options("detectron2", "c4"), presets.options("detectron2", "fpn")
    assert dataclasses.replace(c4, rpn=fpn.rpn) == fpn
    assert (c4.rpn.pre_nms_topk, c4.rpn.post_nms_topk) == ((12000, 6000), (2000, 1000))
    v1, v2 = presets.options("torchvision", "fpn"), presets.options("torchvision_v2", "fpn")
    assert (v1.rpn.head_convs, v2.rpn.head_convs, v2.roi_heads.fc_dims) == (1, 2, (1024,))
    with pytest.raises(ValueError, match="unknown detector preset 'mmdet'"):
        presets.options("mmdet", "fpn")
