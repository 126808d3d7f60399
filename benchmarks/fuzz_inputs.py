"""Hypothesis strategies for the fuzz harness (issue 35): what a hostile or broken user file
can hold, per reader. Shared by the short fuzz tests (`tests/hostile/test_fuzz_readers.py`) and
the long run (`python -m benchmarks.fuzz`), so both draw from the same inputs.

Each strategy mixes well-formed files with hostile values (NaN, infinity, huge, negative,
wrong types, empty and unicode text) and byte-level damage of valid seeds (truncation, flipped
and inserted bytes), so the readers see both their checks' edges and broken files.
"""

from __future__ import annotations

import functools
import io
import json
import pickle
import zipfile

import numpy as np
from hypothesis import strategies as st

# Numbers and values a hand-edited or machine-written file may hold.
NUMBERS = st.one_of(
    st.integers(-(2**70), 2**70), st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([0, 1, -1, 0.5, 1e308, -1e-308, 2**31, 2**63, float("nan"), float("inf")]))
TEXT = st.one_of(st.text(max_size=12), st.sampled_from(["", " ", "abc", "1e3", "NaN", "-0",
                                                        "../x", "\u00e9\u6f22", "\x00"]))
SCALARS = st.one_of(NUMBERS, TEXT, st.booleans(), st.none())
JSON_VALUES = st.recursive(SCALARS, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(TEXT, inner, max_size=4)), max_leaves=8)


def _maybe(strategy, other=SCALARS):
    """Mostly `strategy` (7 in 8), sometimes `other`: a value of the wrong type or range."""
    return st.integers(0, 7).flatmap(lambda k: other if k == 0 else strategy)


@st.composite
def damaged(draw, seed: bytes) -> bytes:
    """`seed` as stored, truncated, with bytes flipped, inserted or deleted."""
    data = bytearray(seed)
    for _ in range(draw(st.integers(0, 4))):
        kind = draw(st.sampled_from(["truncate", "flip", "insert", "delete", "keep"]))
        pos = draw(st.integers(0, max(len(data) - 1, 0)))
        if kind == "truncate":
            del data[pos:]
        elif kind == "flip" and data:
            data[pos] = draw(st.integers(0, 255))
        elif kind == "insert":
            data[pos:pos] = draw(st.binary(min_size=1, max_size=8))
        elif kind == "delete":
            del data[pos:pos + draw(st.integers(1, 8))]
    return bytes(data)


# -- VOC XML (labelImg, CVAT, Roboflow "Pascal VOC" exports) -------------------------------

_XML_TEXT = st.one_of(NUMBERS.map(str), TEXT.map(
    lambda t: "".join(c for c in t if c.isprintable() and c not in "<&")))


@st.composite
def voc_objects(draw) -> str:
    parts = []
    for _ in range(draw(st.integers(0, 4))):
        coordinate = _maybe(st.integers(0, 6).map(str), _XML_TEXT)  # the image is 5x3
        box = "".join(f"<{c}>{draw(coordinate)}</{c}>" for c in ("xmin", "ymin", "xmax", "ymax")
                      if draw(st.integers(0, 19)))  # a coordinate sometimes missing
        name = draw(_maybe(st.sampled_from(["cat", "dog"]), _XML_TEXT))
        difficult = draw(st.sampled_from(["", "<difficult>1</difficult>",
                                          "<difficult>x</difficult>"]))
        parts.append(f"<object><name>{name}</name>{difficult}<bndbox>{box}</bndbox></object>")
    return "".join(parts)


@st.composite
def voc_xml(draw) -> bytes:
    """One VOC annotation: fuzzed values in a well-formed document, or a damaged one."""
    size = (f"<size><width>{draw(_maybe(st.just('5'), _XML_TEXT))}</width>"
            f"<height>{draw(_maybe(st.just('3'), _XML_TEXT))}</height><depth>3</depth></size>")
    filename = draw(st.one_of(st.just("img.jpg"), st.just(""), _XML_TEXT))
    doc = (f"<annotation><filename>{filename}</filename>{size}{draw(voc_objects())}"
           "</annotation>").encode()
    return draw(st.one_of(st.just(doc), st.just(doc), damaged(doc), st.binary(max_size=64)))


# -- COCO JSON ------------------------------------------------------------------------------

_IDS = _maybe(st.integers(0, 3))


@st.composite
def coco_json(draw) -> bytes:
    """A COCO instances file: fuzzed entries in the right structure, a damaged structure, or
    damaged text."""
    images = [{"id": draw(_IDS), "file_name": draw(_maybe(st.sampled_from(["a.jpg", "b.png"]))),
               "width": draw(_maybe(st.just(5))), "height": draw(_maybe(st.just(3)))}
              for _ in range(draw(st.integers(0, 3)))]
    categories = [{"id": draw(_IDS), "name": draw(_maybe(st.sampled_from(["cat", "dog"])))}
                  for _ in range(draw(st.integers(0, 3)))]
    segmentation = st.one_of(
        st.lists(st.lists(_maybe(st.floats(0, 5)), min_size=6, max_size=8), min_size=1,
                 max_size=2),
        st.fixed_dictionaries({"size": _maybe(st.just([3, 5])),
                               "counts": _maybe(st.one_of(st.just([0, 15]), TEXT))}),
        JSON_VALUES)
    annotations = [{"id": draw(_IDS), "image_id": draw(_IDS), "category_id": draw(_IDS),
                    "bbox": draw(_maybe(st.lists(_maybe(st.floats(0, 3)), min_size=4,
                                                 max_size=4), JSON_VALUES)),
                    "area": draw(_maybe(st.floats(0, 15))), "iscrowd": draw(_maybe(
                        st.sampled_from([0, 1]))), "segmentation": draw(segmentation)}
                   for _ in range(draw(st.integers(0, 4)))]
    data = {"images": images, "annotations": annotations, "categories": categories}
    for _ in range(draw(st.sampled_from([0, 0, 0, 1]))):  # a section replaced/removed/added
        section = draw(st.sampled_from(["images", "annotations", "categories", "info"]))
        if draw(st.booleans()):
            data.pop(section, None)
        else:
            data[section] = draw(JSON_VALUES)
    text = json.dumps(data if draw(st.integers(0, 9)) else draw(JSON_VALUES)).encode()
    return draw(st.one_of(st.just(text), st.just(text), damaged(text)))


# -- Folder layouts of labelling tools -------------------------------------------------------

LAYOUTS = {  # folder of the annotations, folder of the images ("" = the root)
    "labelImg": ("", ""), "annots/images": ("annots", "images"),
    "xmls/images": ("xmls", "images"), "labels/images": ("labels", "images"),
    "CVAT": ("Annotations", "JPEGImages"), "Roboflow VOC": ("train", "train"),
    "Roboflow COCO": ("train", "train"), "COCO root": ("annotations", "train2017"),
}


@st.composite
def export_layout(draw) -> dict:
    """A labelling tool's export: its layout, annotation files and image names."""
    layout = draw(st.sampled_from(sorted(LAYOUTS)))
    coco = "COCO" in layout
    names = draw(st.lists(st.sampled_from(["img", "IMG", "a b", "x.y", "\u00e9"]), min_size=0,
                          max_size=3, unique=True))
    files = {}
    for name in names:
        if not coco:
            files[f"{name}.xml"] = draw(voc_xml())
        files[f"{name}.{draw(st.sampled_from(['jpg', 'JPG', 'png', 'txt']))}"] = b"image"
    if coco:
        json_name = ("_annotations.coco.json" if layout.startswith("Roboflow")
                     else "instances_train2017.json")
        files[json_name] = draw(coco_json())
    return {"layout": layout, "files": files}


# -- Detection configs (YAML) ----------------------------------------------------------------

_CONFIG = {"model": {"backbone": "resnet18", "head": "c4", "image_size": [64, 64]},
           "data": {"train": {"loader": "shapes", "num_images": 4}, "num_classes": 3},
           "train": {"steps": 2, "learning_rate": 0.01}}
_KEYS = [("model", "score_threshold"), ("model", "rpn_nms_threshold"),
         ("model", "resize_min_size"), ("model", "anchor_ratios"), ("model", "max_detections"),
         ("model", "pixel_std"), ("model", "rpn_positive_fraction"), ("train", "learning_rate"),
         ("train", "momentum"), ("train", "batch_size"), ("train", "lr_steps"),
         ("data", "augment"), ("data", "class_names"), ("eval", "iou_threshold"),
         ("data", "train"), ("model", "masks"), ("name", None)]


@st.composite
def config_yaml(draw) -> bytes:
    """A detection config: a valid one with some keys given hostile values, or damaged text."""
    import copy

    import yaml

    config = copy.deepcopy(_CONFIG)
    for section, key in draw(st.lists(st.sampled_from(_KEYS), max_size=3)):
        value = draw(JSON_VALUES)
        if key is None:
            config[section] = value
        else:
            config.setdefault(section, {})[key] = value
    text = yaml.safe_dump(config, allow_unicode=True).encode("utf-8")
    return draw(st.one_of(st.just(text), st.just(text), damaged(text)))


# -- Checkpoints ----------------------------------------------------------------------------


@functools.cache
def checkpoint_seeds() -> dict[str, bytes]:
    """Small valid checkpoints of each kind a reader takes (built here, no download)."""
    state = {"conv1.weight": np.arange(12, dtype=np.float32).reshape(3, 1, 2, 2),
             "fc.bias": np.zeros(2, np.float32)}
    seeds = {"pkl": pickle.dumps({"model": state}, protocol=2),
             "pkl4": pickle.dumps({"model": state, "__author__": "x"}, protocol=4)}
    try:
        import torch

        for name, zipped in (("pth", True), ("th", False)):
            buffer = io.BytesIO()
            torch.save({k: torch.from_numpy(v) for k, v in state.items()}, buffer,
                       _use_new_zipfile_serialization=zipped)
            seeds[name] = buffer.getvalue()
    except ImportError:  # the zip layout by hand: enough for the torch-free reader's paths
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w") as archive:
            archive.writestr("archive/data.pkl", pickle.dumps({}, protocol=2))
        seeds["pth"] = seeds["th"] = buffer.getvalue()
    seeds["h5"] = _keras_h5(state)
    return seeds


def _keras_h5(state: dict) -> bytes:
    import h5py

    buffer = io.BytesIO()
    with h5py.File(buffer, "w") as f:
        f.attrs["layer_names"] = [b"conv1"]
        group = f.create_group("conv1")
        group.attrs["weight_names"] = [b"conv1/kernel:0"]
        group.create_dataset("conv1/kernel:0", data=state["conv1.weight"])
    return buffer.getvalue()


@st.composite
def checkpoint_file(draw) -> tuple[str, bytes]:
    """(suffix, bytes): a checkpoint damaged, a pickle of odd objects, or random bytes."""
    seeds = checkpoint_seeds()
    kind = draw(st.sampled_from(sorted(seeds)))
    suffix = {"pkl4": "pkl"}.get(kind, kind)
    odd = st.builds(lambda v, p: pickle.dumps(v, protocol=p), JSON_VALUES, st.integers(0, 5))
    data = draw(st.one_of(damaged(seeds[kind]), damaged(seeds[kind]), odd,
                          st.binary(max_size=64)))
    return suffix, data


# -- Encoded images (headers, serving_bytes) -------------------------------------------------


@functools.cache
def image_seeds() -> dict[str, bytes]:
    """Tiny images of every format the signatures accept."""
    from PIL import Image

    rgb = Image.new("RGB", (5, 3), (200, 30, 90))
    out = {}
    for name, image, kwargs in (
            ("jpeg", rgb, {"format": "JPEG"}),
            ("jpeg_progressive", rgb, {"format": "JPEG", "progressive": True}),
            ("jpeg_gray", rgb.convert("L"), {"format": "JPEG"}),
            ("png", rgb, {"format": "PNG"}), ("png_rgba", rgb.convert("RGBA"), {"format": "PNG"}),
            ("png_palette", rgb.convert("P"), {"format": "PNG"}),
            ("gif", rgb.convert("P"), {"format": "GIF"}), ("bmp", rgb, {"format": "BMP"})):
        buffer = io.BytesIO()
        image.save(buffer, **kwargs)
        out[name] = buffer.getvalue()
    return out


@st.composite
def encoded_image(draw) -> bytes:
    """A valid small image, a damaged one, a magic number with garbage, or random bytes."""
    seed = image_seeds()[draw(st.sampled_from(sorted(image_seeds())))]
    magic = st.sampled_from([b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n", b"GIF89a", b"BM"])
    return draw(st.one_of(st.just(seed), damaged(seed), damaged(seed),
                          st.builds(bytes.__add__, magic, st.binary(max_size=48)),
                          st.binary(max_size=32)))
