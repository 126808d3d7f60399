"""Shared by the interop tests: one `fit` step, `predict`, `.keras` save, and a reload in a
fresh process that must give identical outputs and hold the backbone's trained weights."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import keras
import numpy as np

TINY = {"depths": (1, 1, 1, 1), "widths": (8, 16, 16, 16), "stem_width": 8}

# The child imports what a user writes (the host library and keras_resnet_suite, in the order
# given), never the adapter module: the detector's config alone must find the adapter class
# and rebuild the backbone (with load_weights=False: no download).
CHILD = textwrap.dedent("""
    import importlib, json, sys
    for name in sys.argv[6].split(","):
        importlib.import_module(name)
    import keras, numpy as np
    assert sys.argv[4] not in sys.modules, "the adapter module was imported before loading"
    model = keras.saving.load_model(sys.argv[1])
    module = sys.modules[sys.argv[4]]
    data = np.load(sys.argv[2])
    out = model.predict(data["images"], verbose=0)
    flat = {"out/" + k: np.asarray(v) for k, v in out.items()}
    weights = {f"w/{i}": np.asarray(w) for i, w in enumerate(model.weights)}
    np.savez(sys.argv[3], **flat, **weights)

    def walk(layer, seen):
        # Functional graphs list their layers; keras-hub keeps an encoder as an attribute.
        if id(layer) in seen:
            return
        seen.add(id(layer))
        yield layer
        children = list(getattr(layer, "layers", [])) + list(vars(layer).values())
        for sub in children:
            if isinstance(sub, keras.layers.Layer):
                yield from walk(sub, seen)

    print(json.dumps(sorted({type(l).__name__ for l in walk(model, set())
                            if isinstance(l, getattr(module, sys.argv[5]))})))
""")


def boxes_batch(images: int = 2, size: int = 64) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Random images, two xyxy pixel boxes each and their labels (the second image pads with -1)."""
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 255, (images, size, size, 3)).astype("float32")
    boxes = np.tile(np.array([[[4, 6, 40, 44], [20, 10, 60, 50]]], "float32"), (images, 1, 1))
    labels = np.tile(np.array([[1, 2]], "float32"), (images, 1))
    boxes[-1, 1], labels[-1, 1] = -1, -1
    return x, boxes, labels


def converted_shapes(convert) -> tuple[np.ndarray, dict]:
    """One batch of two 64x64 `detection.data.shapes` images through `training_batches` and
    the host's documented conversion (`to_keras_hub` / `to_keras_cv`), as numpy."""
    import detection.data

    batches = detection.data.pipeline.training_batches(
        detection.data.shapes(2, image_size=64, max_objects=2), (64, 64), 2, max_boxes=3,
        flip=False)
    x, y = next(iter(convert(batches)))
    return np.asarray(x), {k: np.asarray(v) for k, v in y.items()}


def reload_in_fresh_process(model: keras.Model, images: np.ndarray, tmp_path: Path,
                            module: str, cls: str, imports: tuple[str, ...]
                            ) -> tuple[dict, list, list[str]]:
    """Save `model` as .keras, reload it in a new Python that imports only `imports` (not the
    adapter `module`); its predictions on `images`, its weights and the adapter classes in it."""
    path, data, result = tmp_path / "detector.keras", tmp_path / "in.npz", tmp_path / "out.npz"
    model.save(path)
    np.savez(data, images=images)
    run = subprocess.run([sys.executable, "-c", CHILD, str(path), str(data), str(result),
                          module, cls, ",".join(imports)], capture_output=True, text=True, cwd=tmp_path,
                         timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    saved = np.load(result)
    outputs = {k[4:]: saved[k] for k in saved.files if k.startswith("out/")}
    weights = [saved[f"w/{i}"] for i in range(sum(k.startswith("w/") for k in saved.files))]
    return outputs, weights, json.loads(run.stdout.strip().splitlines()[-1])


def count_found(backbone: keras.Model, weights: list[np.ndarray]) -> int:
    """How many of `backbone`'s weight arrays occur, exactly, among `weights`."""
    by_shape: dict[tuple, list[np.ndarray]] = {}
    for w in weights:
        by_shape.setdefault(w.shape, []).append(w)
    return sum(any(np.array_equal(np.asarray(b), w) for w in by_shape.get(tuple(b.shape), []))
               for b in backbone.weights)


def assert_same_outputs(before: dict, after: dict) -> None:
    """Identical arrays under identical keys (NaN where NaN was)."""
    assert sorted(before) == sorted(after)
    for key in before:
        np.testing.assert_array_equal(np.asarray(before[key]), after[key], err_msg=key)
