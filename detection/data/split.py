"""A seeded train/val split for data sets that come without split files (labelling-tool exports).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

SPLITS = ("train", "val", "all")
ALIASES = {"trainval": "all"}  # VOC's name for "everything that is not test"


def check_fraction(val_fraction: float, where: str = "val_fraction") -> float:
    """`val_fraction` as a float in [0, 1); anything else is a clear error naming `where`."""
    try:
        value = float(val_fraction)
    except (TypeError, ValueError):
        raise ValueError(f"{where} must be a number in [0, 1), got {val_fraction!r}") from None
    if not 0.0 <= value < 1.0:
        raise ValueError(f"{where} must be in [0, 1), got {val_fraction!r}")
    return value


def split_sizes(count: int, val_fraction: float) -> tuple[int, int]:
    """(train, val) image counts of a `count`-image set: val is `round(count * val_fraction)`,
    at least 1 when the fraction is positive and there are 2 images or more, never all."""
    val = int(round(count * val_fraction))
    if val_fraction > 0 and count >= 2:
        val = min(max(val, 1), count - 1)
    return count - val, val


def seeded_split(
    ids: Sequence[str], split: str, val_fraction: float = 0.2, seed: int = 0,
) -> list[str]:
    """The ids of `split` ("train", "val" or "all"/"trainval") of a seeded random split.

    The ids are sorted first, so the split depends only on the set of ids, `val_fraction` and
    `seed`: the same folder gives the same split on any machine and file system order.
    """
    name = ALIASES.get(split, split)
    if name not in SPLITS:
        raise ValueError(f"split must be one of 'train', 'val', 'all' (or 'trainval') for a "
                         f"data set without split files, got {split!r}")
    ordered = sorted(set(ids))
    if name == "all":
        return ordered
    fraction = check_fraction(val_fraction)
    _, n_val = split_sizes(len(ordered), fraction)
    order = np.random.default_rng(int(seed)).permutation(len(ordered))
    val = {ordered[i] for i in order[:n_val]}
    return [i for i in ordered if (i in val) == (name == "val")]


def describe(ids: Sequence[str], val_fraction: float, seed: int, what: str) -> str:
    """One line for the data report: how the split was made."""
    train, val = split_sizes(len(set(ids)), check_fraction(val_fraction))
    return (f"no split files: seeded split of {len(set(ids))} {what} (val_fraction "
            f"{val_fraction:g}, split_seed {seed}): {train} train / {val} val")
