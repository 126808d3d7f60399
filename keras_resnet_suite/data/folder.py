"""Image-folder trees (`<split>/<class>/*.jpg`), also inside `.tar.gz` archives.

Archives are extracted once into a cache directory (atomically: a half-extracted tree is never
taken for a complete one). Files are validated before training so corrupt or non-image files are
skipped and reported by name instead of failing mid-epoch.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tarfile
import tempfile
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm.auto import tqdm

from keras_resnet_suite.data.images import bmp_problem, too_large
from keras_resnet_suite.data.report import DataReport

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp")
_DONE_MARKER = ".krs-extracted"


def cache_dir(path: str | os.PathLike | None = None) -> Path:
    """`path`, else `$KRS_CACHE_DIR`, else `~/.cache/keras_resnet_suite`."""
    env = os.environ.get("KRS_CACHE_DIR")
    p = Path(path or env or Path.home() / ".cache" / "keras_resnet_suite")
    p.mkdir(parents=True, exist_ok=True)
    return p


def _archive_key(archive: Path) -> str:
    st = archive.stat()
    key = f"{archive.resolve()}|{st.st_size}|{st.st_mtime_ns}".encode()
    return f"{archive.name.split('.')[0]}-{hashlib.sha1(key).hexdigest()[:12]}"


def extract_archive(archive: str | os.PathLike, cache: str | os.PathLike | None = None) -> Path:
    """Extract a tar(.gz) archive once into the cache and return the extracted directory.

    Extraction goes to a temporary sibling directory that is renamed into place when complete,
    so a killed extraction leaves no tree that looks finished. Members escaping the target
    (absolute paths, `..`, links) are refused.
    """
    archive = Path(archive)
    if not archive.is_file():
        raise FileNotFoundError(f"archive not found: {archive}")
    target = cache_dir(cache) / _archive_key(archive)
    if (target / _DONE_MARKER).exists():
        return target
    tmp = Path(tempfile.mkdtemp(prefix=target.name + ".tmp-", dir=target.parent))
    try:
        with tarfile.open(archive, "r:*") as tar:
            members = tar.getmembers()
            for m in tqdm(members, desc=f"extracting {archive.name}", unit="file"):
                name = Path(m.name)
                if name.is_absolute() or ".." in name.parts or m.issym() or m.islnk():
                    raise ValueError(f"{archive}: refusing unsafe archive member {m.name!r}")
                if m.isdir() or m.isfile():
                    tar.extract(m, tmp, set_attrs=False, **_tar_filter())
        (tmp / _DONE_MARKER).touch()
        try:
            os.rename(tmp, target)
        except OSError:
            # Another process finished first; its tree is as good as ours.
            if not (target / _DONE_MARKER).exists():
                raise
            shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target


def _tar_filter() -> dict:
    # Python >= 3.12 (and patched 3.11) warn unless a filter is given; we validated members.
    return {"filter": "data"} if hasattr(tarfile, "data_filter") else {}


def find_split_dir(root: str | os.PathLike, split: str) -> Path:
    """The directory `split` under `root` or one level deeper (archives add a top folder)."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"data directory not found: {root}")
    for cand in [root / split, *sorted(p / split for p in root.iterdir() if p.is_dir())]:
        if cand.is_dir():
            return cand
    raise FileNotFoundError(
        f"no '{split}/' folder under {root} (expected {root}/{split}/<class>/<image files>)"
    )


def sniff_image(head: bytes) -> str | None:
    """Image format from the first bytes (only formats `tf.io.decode_image` reads), else None."""
    if head[:3] == b"\xff\xd8\xff":
        return "jpeg"
    if head[:8] == b"\x89PNG\r\n\x1a\n":
        return "png"
    if head[:4] == b"GIF8":
        return "gif"
    if head[:2] == b"BM":
        return "bmp"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "webp"
    return None


def check_image(path: str | os.PathLike, full: bool = True,
                max_pixels: int | None = None) -> str | None:
    """None if `path` is a readable image, else the reason it is not. `full` decodes all pixels
    (catches truncated files); otherwise only the signature and the header are read. An image
    over the pixel limit (`images.max_pixels`) is refused from its header, never decoded."""
    try:
        with Path(path).open("rb") as f:
            head = f.read(16)
    except OSError as e:
        return f"unreadable ({e.strerror or e})"
    if sniff_image(head) is None:
        return "not an image (unknown file signature)"
    if sniff_image(head) == "bmp":
        with Path(path).open("rb") as f:
            problem = bmp_problem(f.read(66))
        if problem is not None:
            return f"unsupported image ({problem})"
    try:
        with Image.open(path) as im:  # reads the header only
            reason = too_large(*im.size, max_pixels)
            if reason is not None:
                return f"too large: {reason}"
            if full:
                im.load()
    except Exception as e:  # PIL raises many types for bad data
        return f"corrupt image ({type(e).__name__}: {e})"
    return None


def scan_image_folder(
    split_dir: str | os.PathLike,
    report: DataReport,
    class_names: Sequence[str] | None = None,
    validate: str = "full",
    workers: int = 8,
) -> tuple[list[str], np.ndarray, list[str]]:
    """Files, integer labels and class names of `split_dir/<class>/*`.

    Classes are the sorted sub-folder names (or `class_names`, to share a train split's label
    map with its test split). `validate` is "full", "header" or "none"; bad files are recorded in
    `report` and left out.
    """
    split_dir = Path(split_dir)
    if validate not in ("full", "header", "none"):
        raise ValueError(f"validate must be 'full', 'header' or 'none', got {validate!r}")
    found = sorted(p.name for p in split_dir.iterdir() if p.is_dir())
    if class_names is None:
        class_names = found
    if not class_names:
        raise ValueError(f"{split_dir} has no class sub-folders (expected <class>/<images>)")
    index = {c: i for i, c in enumerate(class_names)}
    for extra in sorted(set(found) - set(index)):
        report.skip(str(split_dir / extra), "class folder not in the training classes")
    candidates: list[tuple[Path, int]] = []
    for c in class_names:
        cdir = split_dir / c
        if not cdir.is_dir():
            continue
        for p in sorted(cdir.iterdir()):
            if p.is_file() and not p.name.startswith("."):
                candidates.append((p, index[c]))
    if validate == "none":
        reasons: list[str | None] = [
            None if p.suffix.lower() in IMAGE_SUFFIXES else "not an image (file extension)"
            for p, _ in candidates
        ]
    else:
        with ThreadPoolExecutor(workers) as pool:
            reasons = list(
                tqdm(
                    pool.map(lambda c: check_image(c[0], validate == "full"), candidates),
                    total=len(candidates),
                    desc=f"checking {split_dir.name}",
                    unit="img",
                    mininterval=1.0,
                )
            )
    files, labels = [], []
    for (p, label), reason in zip(candidates, reasons, strict=True):
        if reason is None:
            files.append(str(p))
            labels.append(label)
        else:
            report.skip(str(p), reason)
    if not files:
        raise ValueError(f"no readable images under {split_dir}")
    report.loaded[split_dir.name] = len(files)
    return files, np.asarray(labels, np.int64), list(class_names)


def resolve_folder_root(path: str | os.PathLike, cache: str | os.PathLike | None = None) -> Path:
    """A folder tree for `path`: itself if a directory, the extracted cache if an archive."""
    path = Path(path)
    if path.is_file() and (path.name.endswith((".tar.gz", ".tgz", ".tar"))):
        return extract_archive(path, cache)
    if not path.exists():
        raise FileNotFoundError(f"data path not found: {path}")
    if not path.is_dir():
        raise ValueError(f"{path} is neither a directory nor a .tar/.tar.gz/.tgz archive")
    return path
