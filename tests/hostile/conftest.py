"""Fixtures of the hostile-input tests: a decompression bomb, made once per session."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image


@pytest.fixture(scope="session")
def bomb_jpeg(tmp_path_factory) -> Path:
    """An 8000x8000 JPEG of one colour: 64 megapixels (192 MB decoded) in a small file."""
    path = tmp_path_factory.mktemp("bomb") / "bomb.jpg"
    Image.new("RGB", (8000, 8000), (90, 90, 90)).save(path, quality=10)
    return path
