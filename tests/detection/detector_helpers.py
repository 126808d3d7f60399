"""Tiny detectors and toy batches shared by the detector tests (imported by name)."""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

TINY = {"depths": (1, 1, 1, 1), "widths": (8, 16, 32, 64), "stem_width": 8}


def tiny_detector(head="c4", image_size=(64, 64), num_classes=3, masks=False, **kwargs):
    """A FasterRCNN (with `masks`, a MaskRCNN with a 16-wide mask head) small enough to fit in
    a unit test (8-64 channel ResNet-18 layout)."""
    from detection import FasterRCNN, MaskRCNN

    config = {
        "backbone": "resnet18", "backbone_kwargs": dict(TINY), "head": head,
        "image_size": image_size, "rpn_pre_nms_topk": (200, 100), "rpn_post_nms_topk": (32, 16),
        "rpn_batch_size": 64, "roi_batch_size": 16, "max_detections": 10, "fc_dims": (32,),
        "fpn_channels": 16, "seed": 0,
    }
    if head == "c4":
        config.update(anchor_sizes=(16, 32), roi_pooled_size=6)
    else:
        config.update(anchor_sizes=((8,), (16,), (32,), (64,), (128,)))
    if masks:
        config["mask_head_dim"] = 16
    config.update(kwargs)
    return (MaskRCNN if masks else FasterRCNN)(num_classes, **config)


def toy_batch(batch=2, size=64, max_boxes=4, empty_last=True, masks=False):
    """A fixed-shape training batch of coloured squares with ground truth padded by -1 (with
    `masks`, each square's 0/1 mask: a disc inscribed in its box; padding rows all zero)."""
    import numpy as np

    rng = np.random.default_rng(0)
    images = rng.uniform(0, 60, (batch, size, size, 3)).astype("float32")
    boxes = np.zeros((batch, max_boxes, 4), "float32")
    labels = -np.ones((batch, max_boxes), "int32")
    for b in range(batch - (1 if empty_last else 0)):
        for j in range(2):
            x, y = rng.integers(0, size - 24, 2)
            s = int(rng.integers(12, 24))
            images[b, y:y + s, x:x + s] = [220, 40 + 100 * j, 30]
            boxes[b, j] = [x, y, x + s, y + s]
            labels[b, j] = j
    out = {"images": images, "bounding_boxes": {"boxes": boxes, "labels": labels}}
    if masks:
        ys, xs = np.mgrid[:size, :size] + 0.5
        x0, y0, x1, y1 = (boxes[..., i, None, None] for i in range(4))
        r = np.maximum((x1 - x0) / 2, 1e-6)
        disc = ((xs - (x0 + x1) / 2) ** 2 + (ys - (y0 + y1) / 2) ** 2) <= r**2
        out["masks"] = (disc & (labels[..., None, None] >= 0)).astype("uint8")
    return out


# One training step of a tiny C4 detector (argv[2] == "masks": a MaskRCNN on masked toy data)
# on 2 logical CPUs under MirroredStrategy and on one device, global batch 4; prints each
# run's last losses and per-variable absolute update. Budgets exceed the candidates (every
# anchor / RoI is sampled) and BN is frozen, so both runs do the same maths.
MIRRORED = textwrap.dedent("""
    import json, os, sys
    import tensorflow as tf
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    import keras
    sys.path.insert(0, sys.argv[1])
    from detector_helpers import tiny_detector, toy_batch
    masks = sys.argv[2] == "masks"
    batch = toy_batch(batch=4, empty_last=True, masks=masks)
    ds = tf.data.Dataset.from_tensors(batch)
    results = {}
    # The one-device reference runs eagerly: same maths, and only one graph to trace.
    for name, strategy in (("one", tf.distribute.get_strategy()),
                           ("two", tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"]))):
        keras.utils.set_random_seed(0)
        with strategy.scope():
            model = tiny_detector("c4", norm="frozen", rpn_batch_size=1000, roi_batch_size=64,
                                  masks=masks)
            model.compile(optimizer=keras.optimizers.SGD(0.01), run_eagerly=name == "one")
        before = [w.numpy() for w in model.trainable_weights]
        logs = model.fit(ds.unbatch().batch(4, drop_remainder=True), epochs=1, verbose=0).history
        results[name] = {k: float(v[-1]) for k, v in logs.items()}
        # one SGD step: lr times the gradient of the global batch's loss, per variable
        results[name]["update"] = [float(abs(w.numpy() - b).sum())
                                   for w, b in zip(model.trainable_weights, before)]
        results[name]["variables"] = [w.path for w in model.trainable_weights]
    print("RESULT" + json.dumps(results))
""")


def mixed_size_images(sizes) -> list:
    """uint8 crops of one toy image at each `(height, width)` of `sizes` (serving tests)."""
    import numpy as np

    base = toy_batch(batch=1, size=96, empty_last=False)["images"][0]
    return [np.clip(base[:h, :w], 0, 255).astype("uint8") for h, w in sizes]


def mirrored_and_one_device(tmp_path, masks=False) -> dict:
    """`MIRRORED`'s results in a fresh process (the logical CPUs must be set before TensorFlow
    starts): {"one": {loss: value, "update": [...], "variables": [...]}, "two": ...}."""
    script = tmp_path / "mirrored.py"
    script.write_text(MIRRORED)
    repo = Path(__file__).resolve().parents[2]
    env = {**os.environ, "PYTHONPATH": str(repo), "TF_CPP_MIN_LOG_LEVEL": "2"}
    proc = subprocess.run([sys.executable, str(script), str(Path(__file__).parent),
                           "masks" if masks else "boxes"],
                          capture_output=True, text=True, env=env, timeout=300)
    line = [x for x in proc.stdout.splitlines() if x.startswith("RESULT")]
    assert line, proc.stderr[-3000:]
    return json.loads(line[0][len("RESULT"):])
