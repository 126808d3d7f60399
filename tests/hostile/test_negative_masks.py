"""Mask R-CNN on negative images (issue 35): an image without objects, or whose every
segmentation was counted as `bad_segmentation`, trains as a negative (RPN and box losses, no
mask loss), through the loaders, `training_batches`, `model.fit` and `detection train`."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import keras
import numpy as np
import pytest
from PIL import Image

pytestmark = pytest.mark.skipif(keras.backend.backend() != "tensorflow",
                                reason="tf.data pipelines and the training loops are TF-only")

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "detection"))
from detector_helpers import tiny_detector  # noqa: E402

SHAPES = [{"id": 1, "name": "circle"}, {"id": 2, "name": "square"}, {"id": 3, "name": "triangle"}]
SQUARE = [[8, 8, 28, 8, 28, 28, 8, 28]]


def write_coco(folder: Path, n: int = 10, empty=(2, 5, 7), broken=(9,), size: int = 64) -> Path:
    """`n` JPEGs and a COCO JSON: images `empty` have no annotation, `broken` only one with a
    segmentation the loader counts as `bad_segmentation` (a 2-point polygon)."""
    folder.mkdir(parents=True, exist_ok=True)
    images, annotations = [], []
    for i in range(n):
        Image.fromarray(np.full((size, size, 3), 20 * i, np.uint8)).save(folder / f"{i}.jpg")
        images.append({"id": i + 1, "file_name": f"{i}.jpg", "width": size, "height": size})
        if i not in empty:
            annotations.append({"id": 100 + i, "image_id": i + 1, "category_id": 1 + i % 3,
                                "bbox": [8, 8, 20, 20], "area": 400, "iscrowd": 0,
                                "segmentation": [[8, 8, 28, 8]] if i in broken else SQUARE})
    path = folder / "instances.json"
    path.write_text(json.dumps({"images": images, "annotations": annotations,
                                "categories": SHAPES}))
    return path


@pytest.fixture(scope="module")
def model():
    """One tiny C4 Mask R-CNN for the fit cases (SGD without momentum: no gradient, no step)."""
    keras.utils.set_random_seed(0)
    detector = tiny_detector("c4", masks=True)
    detector.compile(optimizer=keras.optimizers.SGD(0.01))
    return detector


def test_coco_negatives_batch_and_train_with_masks(tmp_path, model):
    """3 of 10 images without objects and 1 emptied by a bad segmentation: every batch has
    one zero-padded mask crop per box slot, and `fit` (flip and colour augmentation on) trains."""
    import detection
    from detection.data.augment import augment
    from detection.data.pipeline import training_batches

    ds = detection.data.coco(write_coco(tmp_path / "coco"), masks=True, verbose=False)
    assert ds.report.counts.get("bad_segmentation") == 1
    batches = training_batches(augment(ds, flip=True, brightness=0.1, seed=0), (64, 64),
                               batch_size=2, max_boxes=4, flip=True)
    seen = list(batches)
    assert len(seen) == 5
    for batch in seen:
        masks, labels = batch["mask_crops"].numpy(), batch["bounding_boxes"]["labels"].numpy()
        assert masks.shape == (2, 4, 112, 112)  # box-relative crops (training_batches' default)
        assert not masks[labels < 0].any()  # padding and negatives: all-zero masks
        assert (masks[labels >= 0].reshape(-1, 112 * 112).sum(1) > 0).all()
    logs = model.fit(batches, epochs=1, verbose=0).history
    assert all(np.isfinite(v[-1]) for v in logs.values()), logs


def test_all_negative_batch_gives_no_mask_loss_and_no_mask_update(model):
    """A batch of shapes images without objects: mask_loss 0 and the mask head unchanged;
    the RPN and box classifier still learn from the background."""
    from detection.data import shapes
    from detection.data.pipeline import training_batches

    data = shapes(2, image_size=64, masks=True, min_objects=0, max_objects=0)
    batches = training_batches(data, (64, 64), batch_size=2, max_boxes=4)
    before = [w.numpy().copy() for w in model.mask_head.weights]
    backbone = [w.numpy().copy() for w in model.rpn.trainable_weights]
    logs = model.fit(batches, epochs=1, verbose=0).history
    assert logs["mask_loss"] == [0.0] and logs["rpn_box_loss"] == [0.0]
    assert np.isfinite(logs["rpn_cls_loss"][0]) and logs["rpn_cls_loss"][0] > 0
    for old, new in zip(before, model.mask_head.weights, strict=True):
        np.testing.assert_array_equal(new.numpy(), old)
    assert any(np.abs(w.numpy() - b).max() > 0
               for w, b in zip(model.rpn.trainable_weights, backbone, strict=True))


def test_mask_loss_of_a_negative_image_is_zero_with_a_zero_gradient():
    """Per image, then averaged: an image (or a replica's share) without positives adds 0
    with a finite zero gradient, and a [positive, negative] batch is the mean of the two."""
    import tensorflow as tf

    from detection.modeling.ops.masks import mask_loss

    rng = np.random.default_rng(0)
    logits = tf.Variable(rng.normal(size=(2, 3, 4, 5, 5)).astype("float32") * 50)
    targets = tf.constant(rng.integers(0, 2, (2, 3, 5, 5)).astype("float32"))
    labels = tf.constant([[0, 3, 1], [2, 0, 1]])
    positive = tf.constant([[True, True, False], [False, False, False]])
    with tf.GradientTape() as tape:
        loss = mask_loss(logits, targets, labels, positive)
        negative = mask_loss(logits[1:], targets[1:], labels[1:], positive[1:])
        first = mask_loss(logits[:1], targets[:1], labels[:1], positive[:1])
    grad = tape.gradient(negative, logits).numpy()
    assert float(negative) == 0.0 and np.isfinite(grad).all() and not grad.any()
    assert float(loss) == pytest.approx(float(first) / 2, rel=1e-6)


def test_detection_train_with_masks_on_coco_with_negatives(tmp_path, capsys):
    """`detection train` of a `model.masks: true` config on that COCO JSON: two steps, exit 0,
    the bad segmentation in the data report (the CLI path of `--config shapes_demo_masks
    --data <json>`)."""
    from train_helpers import tiny_config, write_config

    from detection import cli

    data = write_coco(tmp_path / "coco")
    raw = tiny_config(tmp_path, steps=2, checkpoint_every=2)
    raw["model"].update(masks=True, mask_head_dim=16)
    coco = {"loader": "coco", "data_dir": str(data)}
    raw["data"].update(class_names="auto", train={**coco, "split": "all"})
    del raw["data"]["eval"], raw["eval"]  # training is the case; evaluation costs a trace
    code = cli.main(["train", "--config", str(write_config(tmp_path, raw)),
                     "--out", str(tmp_path / "run")])
    out = capsys.readouterr()
    assert code == 0, out.err[-2000:]
    assert "bad_segmentation" in out.out and "2 steps" in out.out
    assert (tmp_path / "run" / "final.weights.h5").is_file()
