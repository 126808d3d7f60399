"""Where the files of an annotation set are: the XML and image folders of a VOC tree or a
labelling tool's folder, and an image found for an annotation by name, case-insensitively."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path, PureWindowsPath

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif")  # compared lower-case
# XML folders beside the images that labelling-tool exports use (labelImg's Kaggle sets:
# annots/ + images/), compared lower-case
XML_FOLDER_NAMES = ("annotations", "annots", "annotation", "xml", "xmls", "labels")


@dataclass
class VOCFolders:
    """Where a VOC-XML data set lives: the XML folder, the image folder, the split files."""

    annotations: Path
    images: Path
    splits: Path | None  # ImageSets/Main when it holds split files, else None

    @property
    def xml_files(self) -> list[Path]:
        """The annotation files, sorted by name."""
        return sorted(p for p in self.annotations.iterdir()
                      if p.suffix.lower() == ".xml" and p.is_file())


def _has(folder: Path, suffixes: Sequence[str]) -> bool:
    return folder.is_dir() and any(p.suffix.lower() in suffixes for p in folder.iterdir())


def split_files(main: Path) -> list[str]:
    # class-specific lists (aeroplane_train.txt, ...) are not splits
    return sorted(p.stem for p in main.glob("*.txt") if "_" not in p.stem) if main.is_dir() else []


def find_voc_folders(
    data_dir: str | Path, year: int = 2007, image_dir: str | Path | None = None,
) -> VOCFolders:
    """Locate the XML and image folders of a VOCdevkit tree or a flat labelling-tool folder.

    XML: `Annotations/` of a VOC tree (`data_dir`, `data_dir/VOC<year>`,
    `data_dir/VOCdevkit/VOC<year>`), else a sub-folder named as in `XML_FOLDER_NAMES`
    (`annotations/`, labelImg's `annots/`, ...) holding XML files, else `data_dir` itself.
    Images: `image_dir` when given, else the first of the XML folder, `data_dir`,
    `JPEGImages/`, `images/` (beside the XML folder or in `data_dir`) that holds image files.
    """
    data_dir = Path(data_dir).expanduser()
    if not data_dir.is_dir():
        raise FileNotFoundError(f"VOC data folder {data_dir} does not exist")
    root = None
    for path in (data_dir, data_dir / f"VOC{year}", data_dir / "VOCdevkit" / f"VOC{year}"):
        if (path / "Annotations").is_dir():
            root = path
            break
    if root is not None:
        annotations = root / "Annotations"
    else:
        named = sorted(p for p in data_dir.iterdir() if p.is_dir() and p.name.lower()
                       in XML_FOLDER_NAMES)
        looked = [*named, data_dir] if named else [data_dir / "annotations", data_dir]
        annotations = next((p for p in looked if _has(p, (".xml",))), None)
        if annotations is None:
            raise FileNotFoundError(
                f"no VOC XML annotations under {data_dir}: looked for an 'Annotations' folder "
                f"(VOC tree, also in VOC{year}/ and VOCdevkit/VOC{year}/) and for *.xml files in "
                + ", ".join(str(p) for p in looked))
    if image_dir is not None:
        images = Path(image_dir).expanduser()
        if not images.is_dir():
            raise FileNotFoundError(f"image folder {images} (image_dir) does not exist")
    else:
        parent = annotations.parent
        candidates = list(dict.fromkeys([
            annotations, data_dir, parent / "JPEGImages", data_dir / "JPEGImages",
            parent / "images", data_dir / "images", parent / "Images"]))
        images = next((p for p in candidates if _has(p, IMAGE_SUFFIXES)), None)
        if images is None:
            raise FileNotFoundError(
                f"no image folder found for the annotations in {annotations}: looked for "
                f"{'/'.join(IMAGE_SUFFIXES)} files in " + ", ".join(map(str, candidates))
                + "; pass image_dir")
    main = (root or annotations.parent) / "ImageSets" / "Main"
    return VOCFolders(annotations, images, main if split_files(main) else None)


def basename(value: str) -> str:
    # `path` is often another machine's (C:\\Users\\...\\img.jpg): take the last component
    return PureWindowsPath(value).name if "\\" in value else Path(value).name


class ImageIndex:
    """The image files of a folder, found for an annotation by stem or by name: exact names
    first, then case-insensitively; names that differ only in case are never guessed between
    (`find` answers "ambiguous" with the candidates)."""

    def __init__(self, folder: Path) -> None:
        self.files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        self.used: set[Path] = set()
        # (stem or name, exact?) -> the files it fits, built once: lookups are dictionary hits
        self._index: dict[tuple[str, bool], dict[str, list[Path]]] = {}
        for how in ("stem", "name"):
            for exact in (True, False):
                table: dict[str, list[Path]] = {}
                for p in self.files:
                    value = p.stem if how == "stem" else p.name
                    table.setdefault(value if exact else value.lower(), []).append(p)
                self._index[(how, exact)] = table

    @staticmethod
    def _best(paths: list[Path]) -> Path:
        # one stem in several formats: the first suffix in IMAGE_SUFFIXES order wins
        return min(paths, key=lambda p: IMAGE_SUFFIXES.index(p.suffix.lower()))

    def _lookup(self, how: str, key: str, exact: bool) -> list[Path]:
        """The files whose stem (how == "stem") or name equals `key`, exactly or ignoring case;
        of one stem in several formats only the preferred one."""
        table = self._index[("stem" if how == "stem" else "name", exact)]
        by_stem: dict[str, list[Path]] = {}
        for p in table.get(key if exact else key.lower(), []):
            by_stem.setdefault(p.stem, []).append(p)
        return [self._best(group) for group in by_stem.values()]

    def find(self, stem: str, ann: dict) -> tuple[Path | None, str, list[Path]]:
        """(image, how it was found, candidates) for the XML `stem`: its own name first (tools
        rename images and keep the old `filename`), then `<filename>`, then `<path>`'s last
        part; each by exact name, then ignoring case. Several files that differ only in case
        answer (None, "ambiguous", those files)."""
        keys = [("stem", stem)] + [(how, basename(ann[how])) for how in ("filename", "path")
                                   if ann.get(how)]
        for exact in (True, False):
            for how, key in keys:
                hits = self._lookup(how, key, exact)
                if len(hits) == 1:
                    return hits[0], how, hits
                if hits:
                    return None, "ambiguous", hits
        return None, "", []
