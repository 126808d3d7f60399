"""The COCO 2017 detection classes, and how each pretrained detector numbers them.

COCO's 80 categories have ids 1..90 with ten gaps (ids from the 2014 paper's 91-category
list that were never annotated). torchvision's detectors predict over the 91 slots 0..90
directly (0 = background, the gaps named "N/A", as `torchvision.models._meta
._COCO_CATEGORIES`); detectron2's predict 80 contiguous classes in category-id order (as
`detectron2.data.datasets.builtin_meta.COCO_CATEGORIES`). Our class index k is 0-based with
the background removed, so a layout maps k to a name and to the official category id that
COCO evaluation needs.
"""

from __future__ import annotations

# (official category id, name) of the 80 annotated COCO 2017 categories, in id order.
COCO_CATEGORIES: tuple[tuple[int, str], ...] = (
    (1, "person"), (2, "bicycle"), (3, "car"), (4, "motorcycle"), (5, "airplane"),
    (6, "bus"), (7, "train"), (8, "truck"), (9, "boat"), (10, "traffic light"),
    (11, "fire hydrant"), (13, "stop sign"), (14, "parking meter"), (15, "bench"),
    (16, "bird"), (17, "cat"), (18, "dog"), (19, "horse"), (20, "sheep"), (21, "cow"),
    (22, "elephant"), (23, "bear"), (24, "zebra"), (25, "giraffe"), (27, "backpack"),
    (28, "umbrella"), (31, "handbag"), (32, "tie"), (33, "suitcase"), (34, "frisbee"),
    (35, "skis"), (36, "snowboard"), (37, "sports ball"), (38, "kite"),
    (39, "baseball bat"), (40, "baseball glove"), (41, "skateboard"), (42, "surfboard"),
    (43, "tennis racket"), (44, "bottle"), (46, "wine glass"), (47, "cup"), (48, "fork"),
    (49, "knife"), (50, "spoon"), (51, "bowl"), (52, "banana"), (53, "apple"),
    (54, "sandwich"), (55, "orange"), (56, "broccoli"), (57, "carrot"), (58, "hot dog"),
    (59, "pizza"), (60, "donut"), (61, "cake"), (62, "chair"), (63, "couch"),
    (64, "potted plant"), (65, "bed"), (67, "dining table"), (70, "toilet"), (72, "tv"),
    (73, "laptop"), (74, "mouse"), (75, "remote"), (76, "keyboard"), (77, "cell phone"),
    (78, "microwave"), (79, "oven"), (80, "toaster"), (81, "sink"), (82, "refrigerator"),
    (84, "book"), (85, "clock"), (86, "vase"), (87, "scissors"), (88, "teddy bear"),
    (89, "hair drier"), (90, "toothbrush"),
)
COCO_NAMES: tuple[str, ...] = tuple(name for _, name in COCO_CATEGORIES)
COCO_IDS: tuple[int, ...] = tuple(cid for cid, _ in COCO_CATEGORIES)

# torchvision's 91 labels: index = category id, 0 = background, "N/A" for the unused ids.
TORCHVISION_LABELS: tuple[str, ...] = ("__background__",) + tuple(
    dict(COCO_CATEGORIES).get(cid, "N/A") for cid in range(1, 91))

# Class layouts of the pretrained detectors: what their classifier's columns mean.
LAYOUTS = {
    "coco91": "torchvision: 91 logits, background first, then category ids 1..90 ('N/A' gaps)",
    "coco80": "detectron2: 80 contiguous classes in category-id order, background last",
}


def _check(layout: str) -> str:
    if layout not in LAYOUTS:
        raise ValueError(f"unknown class layout {layout!r}; known: {sorted(LAYOUTS)}")
    return layout


def class_names(layout: str) -> list[str]:
    """Names of our classes k = 0.. (background removed), so labels print as the publisher's."""
    if _check(layout) == "coco91":
        return list(TORCHVISION_LABELS[1:])
    return list(COCO_NAMES)


def category_ids(layout: str) -> list[int]:
    """Official COCO category id of each class k, for writing results COCO evaluation reads."""
    if _check(layout) == "coco91":
        return list(range(1, 91))
    return list(COCO_IDS)


def num_classes(layout: str) -> int:
    """How many foreground classes a layout has (90 with 'N/A' gaps, or 80)."""
    return len(category_ids(layout))
