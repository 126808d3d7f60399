"""Hostile inputs built in tmp_path: images cut short, files that only look like images.
Imported as `tests.hostile.inputs` (a plain `conftest` import would find another folder's)."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image


def write_image(path: Path, size=(40, 30), color=(200, 40, 30), fmt: str | None = None) -> Path:
    """A solid-colour image file (`size` = width, height) in the format of its suffix."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, color).save(path, format=fmt)
    return path


def truncated_jpeg(path: Path, size=(64, 48)) -> Path:
    """A noisy JPEG cut to half its bytes (no end-of-image marker): what a broken download
    leaves; PIL reads its header and fails on the pixels (`image file is truncated`)."""
    pixels = np.random.default_rng(0).integers(0, 255, (size[1], size[0], 3), np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG", quality=95)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])
    return path


def write_bytes(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


BAD_IMAGES = {
    # kind -> (writer, the words the one-line reason must contain)
    "truncated_jpeg": (truncated_jpeg, "truncated"),
    "empty_file": (lambda p: write_bytes(p, b""), "cannot identify image file"),
    "text_as_jpeg": (lambda p: write_bytes(p, b"not a picture\n"), "cannot identify image file"),
    "random_bytes": (lambda p: write_bytes(p, np.random.default_rng(1).bytes(700)),
                     "cannot identify image file"),
}
