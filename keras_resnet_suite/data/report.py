"""What a data loader produced and met: sizes per split, totals, the decisions it made, and
every problem (skipped, dropped or repaired data) by kind, each with its file.

One report class for both packages: classification loaders `skip()` bad files; detection's
loaders `add()` kinds of their own (a subclass with a larger `KINDS` table).
"""

from __future__ import annotations

import collections
import dataclasses
import logging
from typing import Any, ClassVar

import numpy as np

log = logging.getLogger("keras_resnet_suite.data")


@dataclasses.dataclass
class Issue:
    """One problem of `kind` (a key of the report's `KINDS`) in `file`."""

    kind: str
    file: str
    detail: str = ""


class DataReport:
    """Counts of loaded records per split, totals, notes, and data problems per kind with the
    files involved; `summary()` prints them. Subclasses extend `KINDS` with their own."""

    KINDS: ClassVar[dict[str, str]] = {"skipped": "file skipped (record not loaded)"}

    def __init__(self, source: str = "data", loaded: dict[str, int] | None = None,
                 skipped: list[tuple[str, str]] | None = None) -> None:
        self.source = source
        self.loaded: dict[str, int] = dict(loaded or {})
        self.issues: list[Issue] = [Issue("skipped", str(f), r) for f, r in skipped or []]
        self.num_images = 0
        self.num_objects = 0
        self.known_classes: list[str] = []
        self.notes: list[str] = []  # what the loader decided (classes found, split made)

    @property
    def name(self) -> str:
        """The data's name (`source`)."""
        return self.source

    @name.setter
    def name(self, value: str) -> None:
        self.source = value

    def skip(self, path: str, reason: str) -> None:
        """Record one bad file; loaders call this instead of crashing mid-epoch."""
        self.add("skipped", path, reason)
        log.warning("skipping %s: %s", path, reason)

    @property
    def skipped(self) -> list[tuple[str, str]]:
        """`(file, reason)` of every skipped file."""
        return [(i.file, i.detail) for i in self.issues if i.kind == "skipped"]

    @property
    def num_skipped(self) -> int:
        return self.count("skipped")

    def note(self, text: str) -> None:
        """Record a decision the loader made (printed first by `summary()`)."""
        self.notes.append(text)

    def add(self, kind: str, file: str, detail: str = "") -> None:
        """Record one problem of `kind` (a key of `KINDS`) in `file`."""
        if kind not in self.KINDS:
            raise ValueError(f"unknown data-report kind {kind!r}; expected one of "
                             f"{sorted(self.KINDS)}")
        self.issues.append(Issue(kind, str(file), detail))

    @property
    def counts(self) -> dict[str, int]:
        """Number of issues per kind (only kinds that occurred)."""
        return dict(collections.Counter(issue.kind for issue in self.issues))

    def count(self, kind: str) -> int:
        """Number of issues of `kind`."""
        return sum(issue.kind == kind for issue in self.issues)

    def files(self, kind: str) -> list[str]:
        """Files with at least one issue of `kind`, in the order they were found, no repeats."""
        return list(dict.fromkeys(i.file for i in self.issues if i.kind == kind))

    def details(self, kind: str) -> list[str]:
        """`file: detail` lines of every issue of `kind`."""
        return [f"{i.file}: {i.detail}" if i.detail else i.file
                for i in self.issues if i.kind == kind]

    def __bool__(self) -> bool:
        return bool(self.issues)

    def merge(self, other: DataReport) -> DataReport:
        """Add `other`'s issues and totals to this report (for concatenated splits or years)."""
        self.issues.extend(other.issues)
        for split, n in other.loaded.items():
            self.loaded[split] = self.loaded.get(split, 0) + n
        self.num_images += other.num_images
        self.num_objects += other.num_objects
        self.known_classes = self.known_classes or other.known_classes
        self.notes.extend(other.notes)
        return self

    def summary(self, max_files: int | None = 5) -> str:
        """Sizes and totals, the notes, then one line per problem kind with up to `max_files`
        examples (None: all)."""
        sizes = [", ".join(f"{k}={v}" for k, v in self.loaded.items())] if self.loaded else []
        if self.num_images or not self.loaded:
            sizes.append(f"{self.num_images} images, {self.num_objects} objects kept")
        if self.loaded or self.num_skipped:
            sizes.append(f"skipped {self.num_skipped} file(s)")
        lines = [f"Data report for {self.source}: {'; '.join(sizes)}"]
        lines += [f"  {text}" for text in self.notes]
        if not self.issues:
            lines[0] += "; no problems found"
            return "\n".join(lines)
        for kind, what in self.KINDS.items():
            examples = self.details(kind)
            if not examples:
                continue
            shown = examples if max_files is None else examples[:max_files]
            extra = len(examples) - len(shown)
            more = f"; ... and {extra} more" if extra > 0 else ""
            lines.append(f"  {kind}: {len(examples)} -- {what}: {'; '.join(shown)}{more}")
            if kind == "unknown_class" and self.known_classes:
                lines.append(f"    known class names: {', '.join(self.known_classes)}")
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.summary()

    def __repr__(self) -> str:
        return (f"{type(self).__name__}({self.source!r}, loaded={self.loaded}, "
                f"images={self.num_images}, counts={self.counts})")

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready contents (loaders cache it beside their arrays)."""
        return {"source": self.source, "loaded": dict(self.loaded),
                "skipped": [list(s) for s in self.skipped],
                "issues": [dataclasses.asdict(i) for i in self.issues if i.kind != "skipped"],
                "num_images": self.num_images, "num_objects": self.num_objects,
                "known_classes": list(self.known_classes), "notes": list(self.notes)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> DataReport:
        """The report `to_dict` wrote (also its older form: source, loaded, skipped)."""
        report = cls(d["source"], dict(d.get("loaded", {})),
                     [tuple(s) for s in d.get("skipped", [])])
        report.issues += [Issue(**i) for i in d.get("issues", [])]
        report.num_images = int(d.get("num_images", 0))
        report.num_objects = int(d.get("num_objects", 0))
        report.known_classes = list(d.get("known_classes", []))
        report.notes = list(d.get("notes", []))
        return report


@dataclasses.dataclass
class ClassificationData:
    """Train/test pipelines of one data set.

    `train` is an endless stream of `(images, labels)` batches indexed by global step (feed
    `model.fit` with `steps_per_epoch`); `test` is finite and in a fixed order.
    """

    train: Any  # tf.data.Dataset
    test: Any  # tf.data.Dataset
    num_classes: int
    class_names: list[str]
    num_train: int
    num_test: int
    batch_size: int
    steps_per_epoch: int
    mean: np.ndarray | None
    std: np.ndarray | None
    report: DataReport
