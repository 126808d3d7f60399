"""Refuse, before any work, a split with nothing to learn or score (issue 20: a run with no
usable objects used to train to the end and print `mAP@0.5 = nan`)."""

from __future__ import annotations

from collections.abc import Sequence

from detection.data.discover import class_names_of

# data-report kinds that take objects away (the others are repairs: the object is kept)
_REMOVING = ("missing_image", "missing_annotation", "malformed_annotation", "unknown_class",
             "corrupt_image", "degenerate_box", "bad_segmentation")


def _names_in_data(spec: dict) -> list[str] | None:
    """The class names a VOC/COCO split's annotations hold, or None when they cannot be read
    without loading the data (tfds) or the loader has no names of its own."""
    if spec.get("loader") not in ("voc", "coco"):
        return None
    try:
        return class_names_of(spec)
    except (ValueError, KeyError, OSError):
        return None


def check_objects(dataset, spec: dict, split: str, class_names: Sequence[str]) -> None:
    """Refuse, before any training, a split that yields no object to learn or score (its
    loader's report counts 0 objects kept), naming the cause; and a COCO split whose
    categories are not `class_names` (the COCO loader labels by its own categories, so other
    names would train and score the wrong classes). A VOC split lacking some of the named
    classes gets a note: those classes get no examples."""
    names = list(class_names)
    own = list(getattr(dataset, "class_names", None) or [])
    if spec.get("loader") == "coco" and own and own != names:
        raise ValueError(f"data.class_names ({', '.join(names)}) are not the COCO categories "
                         f"of data.{split} ({', '.join(own)}); the COCO loader labels objects "
                         "by its categories: use --classes auto (data.class_names: auto)")
    report = getattr(dataset, "report", None)
    if report is None:  # tfds: nothing counted up front
        return
    have = _names_in_data(spec)
    lacking = [n for n in names if have is not None and n not in have]
    if report.num_objects > 0:
        if lacking:
            print(f"note: data.{split} has no object of class "
                  f"{', '.join(map(repr, lacking))}: that class gets no examples there")
        return
    where = f"data.{split}: 0 objects kept ({report.num_images} images)"
    if have and len(lacking) == len(names):
        cause = (f"data.class_names (--classes) names {', '.join(map(repr, lacking))}, which "
                 f"the data set lacks (it has: {', '.join(have)})")
    else:
        removed = {k: n for k, n in report.counts.items() if k in _REMOVING}
        cause = ("every object was skipped (" + ", ".join(f"{n} {k}" for k, n in removed.items())
                 + "; see the data report above)") if removed else (
            "its annotations hold no objects")
    verb = "train on" if split == "train" else "score"
    raise ValueError(f"{where}: {cause}; nothing to {verb}")
