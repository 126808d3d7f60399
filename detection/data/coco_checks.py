"""What a COCO instances JSON must hold before it is used: the structure (refused as a whole,
naming the entry) and each image and annotation entry (a problem skips it, named by field)."""

from __future__ import annotations

import math
from pathlib import Path


def _number(value) -> bool:
    """A finite JSON number (booleans and numeric strings are not)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(
        value)


def is_id(value) -> bool:
    """A usable id: an integer or a string (JSON ids are used as dictionary keys)."""
    return isinstance(value, (int, str)) and not isinstance(value, bool)


def _shown(value) -> str:
    return repr(value) if len(repr(value)) <= 60 else repr(value)[:57] + "..."


def check_structure(data: dict, path: str | Path) -> None:
    """Refuse, naming the entry (`categories[3].id`), what makes the whole file unusable
    before any work starts: lists that are not lists, a category without an integer id or
    with a blank or repeated name, repeated category or image ids. Problems of one image or
    annotation are counted and skipped by the loader instead."""
    for key in ("images", "annotations", "categories"):
        if not isinstance(data[key], list):
            raise ValueError(f"{path}: '{key}' must be a list, got a {type(data[key]).__name__}")
    ids: dict = {}
    names: dict = {}
    for k, category in enumerate(data["categories"]):
        where = f"{path}: categories[{k}]"
        if not isinstance(category, dict):
            raise ValueError(f"{where}: expected an object, got {_shown(category)}")
        if "id" not in category:
            raise ValueError(f"{where}.id: missing (every category needs an integer id)")
        cid = category["id"]
        if not isinstance(cid, int) or isinstance(cid, bool):
            raise ValueError(f"{where}.id: expected an integer, got {_shown(cid)}")
        if cid in ids:
            raise ValueError(f"{where}.id: {cid} is also categories[{ids[cid]}].id")
        ids[cid] = k
        if "name" in category:
            name = category["name"]
            if not isinstance(name, str) or not name.strip():
                raise ValueError(f"{where}.name: expected a non-empty string, got "
                                 f"{_shown(name)}")
            if name in names:
                raise ValueError(f"{where}.name: {name!r} is also categories[{names[name]}].name"
                                 " (two categories, one class name)")
            names[name] = k
    image_ids: dict = {}
    for k, image in enumerate(data["images"]):
        if isinstance(image, dict) and is_id(image.get("id")):
            if image["id"] in image_ids:
                raise ValueError(f"{path}: images[{k}].id: {image['id']!r} is also "
                                 f"images[{image_ids[image['id']]}].id (which one do its "
                                 "annotations mean?)")
            image_ids[image["id"]] = k


def image_problem(k: int, image) -> str | None:
    """Why `images[k]` cannot be used (the entry and field named), or None."""
    if not isinstance(image, dict):
        return f"images[{k}]: expected an object, got {_shown(image)}"
    if "id" not in image or "file_name" not in image:
        return f"images[{k}]: needs 'id' and 'file_name'"
    if not is_id(image["id"]):
        return f"images[{k}].id: expected an integer or a string, got {_shown(image['id'])}"
    if not isinstance(image["file_name"], str) or not image["file_name"].strip():
        return f"images[{k}].file_name: expected a file name, got {_shown(image['file_name'])}"
    for key in ("width", "height"):
        value = image.get(key)
        if value is not None and not (_number(value) and value >= 0):
            return f"images[{k}].{key}: expected a number of pixels, got {_shown(value)}"
    return None


def annotation_problem(k: int, ann) -> str | None:
    """Why `annotations[k]` cannot be used (the entry and field named), or None. Its image and
    category are looked up by the caller."""
    if not isinstance(ann, dict):
        return f"annotations[{k}]: expected an object, got {_shown(ann)}"
    def where(field: str) -> str:
        return f"annotations[{k}].{field} (id {ann.get('id')})"

    box = ann.get("bbox")
    if not (isinstance(box, list) and len(box) == 4 and all(_number(v) for v in box)):
        return f"{where('bbox')}: bbox must be 4 finite numbers, got {_shown(box)}"
    for field in ("image_id", "category_id"):
        if not is_id(ann.get(field)):
            return f"{where(field)}: expected an integer or a string, got {_shown(ann.get(field))}"
    area = ann.get("area")
    if area is not None and not (_number(area) and area >= 0):
        return f"{where('area')}: expected a finite number >= 0, got {_shown(area)}"
    crowd = ann.get("iscrowd")
    if crowd is not None and crowd not in (0, 1):  # True/False compare equal to 1/0
        return f"{where('iscrowd')}: expected 0 or 1, got {_shown(crowd)}"
    return None
