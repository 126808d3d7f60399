"""DataReport: what a loader skipped, clipped or converted, counted per kind with file names."""

from __future__ import annotations

import collections
import dataclasses

# Kinds a loader records. Problems that remove data come first; the last ones are
# repairs (the data is kept after the fix) and are reported so nothing happens silently.
KINDS = {
    "missing_image": "annotation without an image file (record skipped)",
    "missing_annotation": "id listed in the split file without an annotation (skipped)",
    "malformed_annotation": "unparsable XML/JSON or a malformed record (skipped)",
    "unknown_class": "object whose class is not in class_names (object skipped)",
    "corrupt_image": "image file that cannot be decoded (record skipped)",
    "degenerate_box": "box with zero or negative width/height after clipping (dropped)",
    "box_clipped": "box partly outside the image (clipped to the image)",
    "size_mismatch": "annotated image size differs from the file (file size used)",
    "grayscale_image": "single-channel image (converted to RGB)",
    "cmyk_image": "CMYK image (converted to RGB)",
    "filename_mismatch": "XML <filename> names another file (image found by the XML's own name)",
    "exif_rotated": "photo with an EXIF orientation (turned upright; boxes in its frame)",
    "area_from_box": "annotation without 'area' (box area w*h used, e.g. for APs/APm/APl)",
    "unannotated_image": "image without an annotation file (not used)",
}


@dataclasses.dataclass
class Issue:
    kind: str
    file: str
    detail: str = ""


class DataReport:
    """Counts of data problems per kind, each with the files involved; `summary()` prints them."""

    def __init__(self, name: str = "data") -> None:
        self.name = name
        self.issues: list[Issue] = []
        self.num_images = 0
        self.num_objects = 0
        self.known_classes: list[str] = []
        self.notes: list[str] = []  # what the loader decided (classes found, split made)

    def note(self, text: str) -> None:
        """Record a decision the loader made (printed first by `summary()`)."""
        self.notes.append(text)

    def add(self, kind: str, file: str, detail: str = "") -> None:
        """Record one problem of `kind` (a key of `KINDS`) in `file`."""
        if kind not in KINDS:
            raise ValueError(f"unknown data-report kind {kind!r}; expected one of {sorted(KINDS)}")
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
        self.num_images += other.num_images
        self.num_objects += other.num_objects
        self.known_classes = self.known_classes or other.known_classes
        self.notes.extend(other.notes)
        return self

    def summary(self, max_files: int = 5) -> str:
        """Totals, then one line per problem kind with up to `max_files` examples."""
        lines = [f"Data report for {self.name}: {self.num_images} images, "
                 f"{self.num_objects} objects kept"]
        lines += [f"  {text}" for text in self.notes]
        if not self.issues:
            lines[0] += "; no problems found"
            return "\n".join(lines)
        for kind, what in KINDS.items():
            n = self.count(kind)
            if not n:
                continue
            examples = self.details(kind)
            shown = "; ".join(examples[:max_files])
            extra = len(examples) - max_files
            more = f"; ... and {extra} more" if extra > 0 else ""
            lines.append(f"  {kind}: {n} -- {what}: {shown}{more}")
            if kind == "unknown_class" and self.known_classes:
                lines.append(f"    known class names: {', '.join(self.known_classes)}")
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.summary()

    def __repr__(self) -> str:
        return f"DataReport({self.name!r}, images={self.num_images}, counts={self.counts})"
