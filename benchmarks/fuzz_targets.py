"""The readers the fuzz harness drives (issue 35), one `Target` each: how an input
(`benchmarks.fuzz_inputs`) is written where a user's file would be, which public reader reads
it, and how the outcome is judged.

Acceptable outcomes: `"error"`, a ValueError/OSError (the library's own error types derive from
them) whose message names the file; `"counted"`, a result whose data report counts a skip or
a repair; `"ok"`, a correct result (checked per reader: finite boxes inside their image,
arrays from a checkpoint, a header size that PIL agrees with). Anything else raises
`FuzzFailure` or escapes as the exception it is (KeyError, TypeError, RecursionError, ...): a
failure, which the tests report with the smallest input Hypothesis finds.
"""

from __future__ import annotations

import functools
import io
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks import fuzz_inputs as inputs

BAD_INPUT = (ValueError, OSError)  # what every reader raises for a bad file, file named


class FuzzFailure(AssertionError):
    """An outcome that is none of: named error, counted skip, correct result."""


def judged(call: Callable[[], Any], *names: str) -> tuple[str, Any]:
    """`("result", value)`, or `("error", None)` for a bad-input error naming one of
    `names`; an unnamed error is a `FuzzFailure`, any other exception passes through."""
    try:
        return "result", call()
    except BAD_INPUT as err:
        text = str(err)
        if not any(name in text for name in names):
            raise FuzzFailure(f"{type(err).__name__} without the file named: {text[:300]}"
                              ) from err
        return "error", None


def _records_outcome(kind: str, value, report) -> str:
    if kind == "error":
        return "error"
    records = value[0] if isinstance(value, tuple) else value
    for r in records:
        boxes = np.asarray(r.boxes, np.float64).reshape(-1, 4)
        if not np.isfinite(boxes).all() or (boxes[:, :2] < 0).any() or \
                (boxes[:, 2] > r.width).any() or (boxes[:, 3] > r.height).any() or \
                (boxes[:, 2:] < boxes[:, :2]).any():
            raise FuzzFailure(f"{r.image_path}: boxes outside the image or not finite: {boxes}")
    return "counted" if report.counts else "ok"


def read_voc(data: bytes, folder: Path) -> str:
    """A VOC XML beside its image, read by `detection.data.voc_records` (labelImg layout)."""
    from detection.data.report import DataReport
    from detection.data.voc import voc_records

    (folder / "img.xml").write_bytes(data)
    (folder / "img.jpg").write_bytes(inputs.image_seeds()["jpeg"])
    report = DataReport()
    kind, value = judged(lambda: voc_records(folder, split="all", report=report), "img.xml",
                         str(folder))
    return _records_outcome(kind, value, report)


def read_coco(data: bytes, folder: Path) -> str:
    """A COCO JSON (masks too) beside its images, read by `detection.data.coco_records`."""
    from detection.data.coco import coco_records
    from detection.data.report import DataReport

    (folder / "a.jpg").write_bytes(inputs.image_seeds()["jpeg"])
    (folder / "b.png").write_bytes(inputs.image_seeds()["png"])
    path = folder / "export.json"
    path.write_bytes(data)
    report = DataReport()
    kind, value = judged(lambda: coco_records(path, report=report, masks=True), "export.json")
    return _records_outcome(kind, value, report)


def read_layout(export: dict, folder: Path) -> str:
    """A labelling tool's export folder, recognised and read by `init-config`'s
    `detection.data.discover.inspect_data`."""
    from detection.data.discover import inspect_data

    annotations, images = inputs.LAYOUTS[export["layout"]]
    for name, data in export["files"].items():
        is_image = name.rsplit(".", 1)[-1].lower() in ("jpg", "png")
        where = folder / (images if is_image else annotations)
        where.mkdir(parents=True, exist_ok=True)
        (where / name).write_bytes(inputs.image_seeds()["jpeg"] if is_image else data)
    kind, info = judged(lambda: inspect_data(folder), str(folder))
    if kind == "error":
        return "error"
    if info.num_images < 0 or not all(isinstance(n, str) for n in info.class_names):
        raise FuzzFailure(f"inspect_data: nonsense result {info}")
    return "ok"


def read_config(data: bytes, folder: Path) -> str:
    """A detection YAML read by `detection.config.load_config`."""
    from detection.config import Config, load_config

    path = folder / "run.yaml"
    path.write_bytes(data)
    kind, config = judged(lambda: load_config(path), "run.yaml")
    if kind == "result" and not isinstance(config, Config):
        raise FuzzFailure(f"load_config returned {type(config).__name__}")
    return "error" if kind == "error" else "ok"


def read_checkpoint(item: tuple[str, bytes], folder: Path) -> str:
    """A `.pth`/`.th`/`.pkl`/`.h5` file through every reader that takes its kind."""
    from detection.checkpoints import readers
    from keras_resnet_suite.convert import formats

    suffix, data = item
    path = folder / f"weights.{suffix}"
    path.write_bytes(data)
    calls = {"pkl": [readers.read_checkpoint], "th": [formats.read_state_dict],
             "pth": [readers.read_checkpoint, formats.read_state_dict],
             "h5": [formats.read_keras_h5]}[suffix]
    outcomes = []
    for call in calls:
        kind, value = judged(lambda call=call: call(str(path)), str(path))
        if kind == "result":
            state = value[1] if isinstance(value, tuple) else value
            arrays = [a for v in state.values() for a in (v if isinstance(v, list) else [v])]
            if not all(isinstance(a, np.ndarray) for a in arrays):
                raise FuzzFailure(f"{call.__qualname__}: non-array values in {path}")
        outcomes.append("error" if kind == "error" else "ok")
    return "error" if "error" in outcomes else "ok"


@functools.cache
def _header_fn():
    import tensorflow as tf

    from keras_resnet_suite.data import image_headers

    @tf.function(input_signature=[tf.TensorSpec([], tf.string)])
    def header(contents):
        return image_headers.inspect(contents)

    return header


def read_header(data: bytes, folder: Path) -> str:
    """`keras_resnet_suite.data.image_headers.inspect` (the SavedModels' header check): never
    raises; a header it passes has the size PIL reads."""
    from PIL import Image

    from keras_resnet_suite.data import image_headers

    header = _header_fn()(data)
    problem = int(header.problem)
    if not 0 <= problem < len(image_headers.PROBLEMS):
        raise FuzzFailure(f"problem code {problem} out of range")
    if problem:
        return "error"
    if data.startswith(b"GIF"):
        return "ok"  # a GIF's screen size (what TF uses) may differ from its frame's (PIL)
    try:
        with Image.open(io.BytesIO(data)) as image:
            size = image.size
    except Exception:  # noqa: BLE001 - PIL refuses what TF may still take; no size to compare
        return "ok"
    if (int(header.width), int(header.height)) != size and size[0] * size[1]:
        raise FuzzFailure(f"header says {int(header.width)}x{int(header.height)}, PIL {size}")
    return "ok"


@functools.cache
def _serving_fn():
    import tensorflow as tf

    from keras_resnet_suite.export import map_decoded

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string)])
    def serve(image_bytes):
        return map_decoded(lambda image: tf.image.resize(image, [4, 4]), image_bytes,
                           tf.TensorSpec([4, 4, 3], tf.float32))

    return serve


def read_serving_bytes(data: bytes, folder: Path) -> str:
    """`serving_bytes`' decoding (`keras_resnet_suite.export.map_decoded`, what both exported
    signatures run) on `[data, a valid JPEG]`: the bad element is named, the good one served."""
    good = inputs.image_seeds()["jpeg"]
    outputs, valid, error = (t.numpy() for t in _serving_fn()([data, good]))
    if not valid[1] or not np.isfinite(outputs).all():
        raise FuzzFailure(f"the valid element beside {data[:20]!r} was not served")
    if valid[0]:
        return "ok"
    if not error[0].decode().startswith("image_bytes[0]: "):
        raise FuzzFailure(f"invalid element without its error: {error[0]!r}")
    return "error"


@dataclass(frozen=True)
class Target:
    """A reader under fuzz: its inputs and how one is read and judged."""

    name: str
    strategy: Any  # a hypothesis strategy
    read: Callable[[Any, Path], str]
    cases: int  # in the short (test) run


TARGETS = {t.name: t for t in (
    Target("voc_xml", inputs.voc_xml(), read_voc, 200),
    Target("coco_json", inputs.coco_json(), read_coco, 250),
    Target("export_layout", inputs.export_layout(), read_layout, 150),
    Target("config_yaml", inputs.config_yaml(), read_config, 300),
    Target("checkpoint", inputs.checkpoint_file(), read_checkpoint, 150),
    Target("image_header", inputs.encoded_image(), read_header, 100),
    Target("serving_bytes", inputs.encoded_image(), read_serving_bytes, 60),
)}


def run_one(target: Target, value: Any, root: Path) -> str:
    """`target.read(value)` in a fresh folder under `root`, removed afterwards."""
    folder = Path(tempfile.mkdtemp(dir=root))
    try:
        return target.read(value, folder)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
