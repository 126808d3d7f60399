"""What a data loader produced: the datasets, their sizes, and every record it skipped."""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

import numpy as np

log = logging.getLogger("keras_resnet_suite.data")


@dataclasses.dataclass
class DataReport:
    """Counts of loaded records per split and the files skipped, each with its reason."""

    source: str
    loaded: dict[str, int] = dataclasses.field(default_factory=dict)
    skipped: list[tuple[str, str]] = dataclasses.field(default_factory=list)

    def skip(self, path: str, reason: str) -> None:
        """Record one bad file; loaders call this instead of crashing mid-epoch."""
        self.skipped.append((str(path), reason))
        log.warning("skipping %s: %s", path, reason)

    @property
    def num_skipped(self) -> int:
        return len(self.skipped)

    def summary(self) -> str:
        """One line per split plus one per skipped file, for logs and the CLI."""
        counts = ", ".join(f"{k}={v}" for k, v in self.loaded.items())
        lines = [f"{self.source}: {counts}; skipped {self.num_skipped} file(s)"]
        lines += [f"  skipped {path}: {reason}" for path, reason in self.skipped]
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> DataReport:
        return cls(d["source"], dict(d["loaded"]), [tuple(s) for s in d["skipped"]])


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
