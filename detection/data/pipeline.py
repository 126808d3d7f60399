"""Static-shape training batches for the detector (tf.data) and input checks.

Every image is scaled by `min(H / h, W / w)` onto a fixed `H x W` canvas (aspect ratio kept),
or, for multi-scale training, to a shorter side drawn from `shorter_sides` (never beyond that
fit: detectron2's ResizeShortestEdge under a static canvas), optionally flipped left-right
with its boxes (and instance masks), and zero padded at the bottom/right. Boxes are
clipped to the image; degenerate ones (zero or negative size) are dropped and counted in the
element's `"num_dropped_boxes"`; ground truth is padded to `max_boxes` with label -1 so that
images without objects batch and train like any other.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

import numpy as np
import tensorflow as tf

# A check inside a tf.data graph can only fail as a TensorFlow error. Its message is wrapped
# in these markers so `data_error` can turn exactly those failures (and no other) into the
# ValueError the caller is promised, with the text between them; under tf.distribute the
# message travels unchanged through the replicas' errors.
CHECK_TAG, CHECK_END = "krs-batch-check: ", " :krs-end"
_CHECKED = re.compile(re.escape(CHECK_TAG) + "(.*?)" + re.escape(CHECK_END), re.DOTALL)
# Side of the box-relative mask crops training batches carry (TF Model Garden's Mask R-CNN
# input crops at 112): 4x the FPN head's 28x28 targets.
MASK_CROP_SIZE = 112
NON_FINITE = "contains NaN or inf values; clean or drop these images before detection"


def data_error(err: Exception) -> ValueError | None:
    """The ValueError a failed pipeline check means (its own text, one line), or None when
    `err` is not one of these checks."""
    found = _CHECKED.search(getattr(err, "message", None) or str(err))
    if found is None:
        return None
    # TensorFlow prints the string tensor with a backslash before each quote.
    text = found.group(1).replace("\\'", "'").replace('\\"', '"').replace("\\\\", "\\")
    return ValueError(text)


def _checked(condition, *parts) -> tf.Operation:
    """`tf.debugging.Assert` whose message `data_error` recognises; `parts` are strings and
    scalar tensors, formatted into one string only when the check fails."""
    def message():
        return tf.strings.join([CHECK_TAG, *[tf.strings.as_string(p) if isinstance(p, tf.Tensor)
                                             and p.dtype != tf.string else p for p in parts],
                                CHECK_END])

    return tf.debugging.Assert(condition, [tf.cond(condition, lambda: tf.constant(""), message)])


def _element_name(element, index):
    """`image 'ID' (element N of the stream)`, or `element N of the stream` without an id."""
    name = tf.strings.join(["element ", tf.strings.as_string(index), " of the stream"])
    if "image_id" in element:
        image_id = tf.strings.as_string(element["image_id"]) \
            if element["image_id"].dtype != tf.string else element["image_id"]
        name = tf.strings.join(["image '", image_id, "' (", name, ")"])
    return name


def _checked_masks(masks, image, boxes, name) -> tf.Tensor:
    """`masks` after checking it holds one [H, W] mask per box at the image's size (else the
    error `data_error` turns into a ValueError naming the element and both shapes)."""
    masks = tf.convert_to_tensor(masks)
    shape = tf.shape(masks)
    want = tf.concat([tf.shape(boxes)[:1], tf.shape(image)[:2]], 0)
    fits = tf.logical_and(tf.equal(tf.rank(masks), 3),
                          tf.reduce_all(tf.equal(tf.pad(shape, [[0, 3]])[:3], want)))
    with tf.control_dependencies([_checked(
            fits, name, ": masks have shape [", tf.strings.reduce_join(
                tf.strings.as_string(shape), separator=", "),
            "], expected one mask per box at the image's size [",
            tf.strings.reduce_join(tf.strings.as_string(want), separator=", "), "]")]):
        return tf.identity(masks)


def _refuse_mask_spec(spec) -> None:
    """Refuse, before any map is traced, masks whose static shape is not one [H, W] mask per
    box at the image's size (what shapes are known only per element is checked per element)."""
    if not isinstance(spec, Mapping) or "masks" not in spec:
        return
    boxes = tf.TensorShape(spec["bounding_boxes"]["boxes"].shape)
    images = tf.TensorShape(spec["images"].shape)
    want = tf.TensorShape([boxes[0] if boxes.rank else None,
                           *(images[:2] if images.rank else [None, None])])
    masks = tf.TensorShape(spec["masks"].shape)
    if not masks.is_compatible_with(want):
        raise ValueError(f"the dataset's masks have shape {masks.as_list()}, expected one "
                         f"mask per box at the image's size {want.as_list()} ([M, H, W], M "
                         "the number of boxes)")


def _resized_masks(masks, new_hw):
    """`[M, H, W]` masks -> `[new_h, new_w, M]`: resized as channels, nearest neighbour. An
    image without objects (M = 0, a negative image) skips the resize, which refuses images
    of no channels."""
    channels = tf.transpose(masks, [1, 2, 0])
    return tf.cond(tf.shape(masks)[0] > 0,
                   lambda: tf.image.resize(channels, new_hw,
                                           method=tf.image.ResizeMethod.NEAREST_NEIGHBOR),
                   lambda: tf.zeros(tf.concat([new_hw, [0]], 0), channels.dtype))


def _box_crops(masks, boxes, old_hw, new_hw, crop: int):
    """`[M, crop, crop]` uint8: each mask (`[M, h, w]`, the image's own size) read at the
    `crop x crop` pixel centres of its box (`boxes [M, 4]` xyxy on the resized image of size
    `new_hw`): the canvas pixel under each centre, and that pixel's source pixel by
    `tf.image.resize`'s nearest neighbour rule. A crop thus holds canvas pixels, each read at
    least once when the box is at most `crop` pixels a side (the targets are then exact)."""
    ratio = tf.cast(old_hw, tf.float32) / tf.cast(new_hw, tf.float32)  # source px per canvas px
    steps = (tf.range(crop, dtype=tf.float32) + 0.5) / crop  # [S] in (0, 1)

    def source(lo, hi, axis):  # [M, S] source indices along one axis
        centres = lo[:, None] + steps[None, :] * (hi - lo)[:, None]
        pixel = tf.clip_by_value(tf.floor(centres), 0.0, tf.cast(new_hw[axis] - 1, tf.float32))
        index = tf.floor((pixel + 0.5) * ratio[axis])
        return tf.cast(tf.clip_by_value(index, 0.0, tf.cast(old_hw[axis] - 1, tf.float32)),
                       tf.int32)

    rows = tf.gather(masks, source(boxes[:, 1], boxes[:, 3], 0), axis=1, batch_dims=1)
    return tf.gather(rows, source(boxes[:, 0], boxes[:, 2], 1), axis=2, batch_dims=1)


def _canvas_example(element, canvas, max_boxes, flip, seed, sides=None, crop=None):
    image = element["images"]
    index = tf.cast(element.get("_index", 0), tf.int64)
    finite = tf.reduce_all(tf.math.is_finite(tf.cast(image, tf.float32)))
    with tf.control_dependencies([_checked(finite, _element_name(element, index), " ",
                                           NON_FINITE)]):
        image = tf.identity(image)
    boxes = tf.reshape(tf.cast(element["bounding_boxes"]["boxes"], tf.float32), (-1, 4))
    labels = tf.reshape(tf.cast(element["bounding_boxes"]["labels"], tf.int32), (-1,))
    masks = element.get("masks")
    if masks is not None:
        masks = _checked_masks(masks, image, boxes, _element_name(element, index))
    shape = tf.cast(tf.shape(image)[:2], tf.float32)
    scale = tf.minimum(canvas[0] / shape[0], canvas[1] / shape[1])
    if sides:
        # Stateless per element: the same seed picks the same sizes on every run.
        pick = tf.random.stateless_uniform((), seed=tf.stack([tf.cast(seed + 1, tf.int64),
                                                              index]),
                                           maxval=len(sides), dtype=tf.int32)
        side = tf.gather(tf.constant(sides, tf.float32), pick)
        scale = tf.minimum(scale, side / tf.reduce_min(shape))
    new_hw = tf.cast(tf.round(shape * scale), tf.int32)
    new_hw = tf.minimum(new_hw, tf.constant(canvas, tf.int32))
    old_hw = tf.shape(image)[:2]
    image = tf.image.resize(tf.cast(image, tf.float32), new_hw)
    new_hw_f = tf.cast(new_hw, tf.float32)
    boxes = boxes * scale
    lo = tf.zeros(4)
    hi = tf.stack([new_hw_f[1], new_hw_f[0], new_hw_f[1], new_hw_f[0]])
    boxes = tf.clip_by_value(boxes, lo, hi)
    if masks is not None:  # crops: [M, S, S] over each box; else [new_h, new_w, M] pixels
        masks = _box_crops(masks, boxes, old_hw, new_hw, crop) if crop \
            else _resized_masks(masks, new_hw)
    if flip:
        # Stateless so the same seed gives the same flips on every run.
        do_flip = tf.random.stateless_uniform((), seed=tf.stack([tf.cast(seed, tf.int64),
                                                                 index])) < 0.5
        image = tf.cond(do_flip, lambda: tf.image.flip_left_right(image), lambda: image)
        if masks is not None:  # pixels [H, W, M] or crops [M, S, S]: reverse the width
            masks = tf.cond(do_flip, lambda: tf.reverse(masks, [2 if crop else 1]),
                            lambda: masks)
        flipped = tf.stack([new_hw_f[1] - boxes[:, 2], boxes[:, 1],
                            new_hw_f[1] - boxes[:, 0], boxes[:, 3]], axis=1)
        boxes = tf.cond(do_flip, lambda: flipped, lambda: boxes)
    keep = tf.logical_and(boxes[:, 2] > boxes[:, 0], boxes[:, 3] > boxes[:, 1])
    keep = tf.logical_and(keep, labels >= 0)
    dropped = tf.reduce_sum(tf.cast(tf.logical_not(keep), tf.int32))
    boxes = tf.boolean_mask(boxes, keep)[:max_boxes]
    labels = tf.boolean_mask(labels, keep)[:max_boxes]
    pad = max_boxes - tf.shape(labels)[0]
    boxes = tf.pad(boxes, [[0, pad], [0, 0]])
    labels = tf.pad(labels, [[0, pad]], constant_values=-1)
    image = tf.image.pad_to_bounding_box(image, 0, 0, canvas[0], canvas[1])
    out = {
        "images": tf.ensure_shape(image, (canvas[0], canvas[1], 3)),
        "bounding_boxes": {"boxes": tf.ensure_shape(boxes, (max_boxes, 4)),
                           "labels": tf.ensure_shape(labels, (max_boxes,))},
        "num_dropped_boxes": dropped,
    }
    if masks is not None and crop:  # the boxes' keep and padding, as below
        crops = tf.pad(tf.boolean_mask(masks, keep)[:max_boxes], [[0, pad], [0, 0], [0, 0]])
        out["mask_crops"] = tf.ensure_shape(tf.cast(crops, tf.uint8), (max_boxes, crop, crop))
    elif masks is not None:  # the boxes' keep and padding: padded objects get all-zero masks
        masks = tf.boolean_mask(tf.transpose(masks, [2, 0, 1]), keep)[:max_boxes]
        masks = tf.pad(masks, [[0, pad], [0, canvas[0] - new_hw[0]], [0, canvas[1] - new_hw[1]]])
        out["masks"] = tf.ensure_shape(tf.cast(masks, tf.uint8),
                                       (max_boxes, canvas[0], canvas[1]))
    return out


def to_canvas(dataset: tf.data.Dataset, image_size: tuple[int, int], max_boxes: int = 100,
              flip: bool = False, seed: int = 0,
              shorter_sides: tuple[int, ...] | None = None,
              mask_crop_size: int | None = None) -> tf.data.Dataset:
    """Map an unbatched `{"images", "bounding_boxes"}` dataset onto the fixed canvas.

    Instance masks (`"masks"`: [M, H, W], one per box) move with their boxes: resized with
    nearest neighbour (stays 0/1, no threshold to pick), flipped with the image, dropped with
    dropped boxes and zero padded to `[max_boxes, *image_size]`.

    `shorter_sides` (e.g. the paper's (600,) or COCO's 640..800) draws each image's shorter
    side from that list, capped so the image still fits the canvas.
    """
    canvas = (int(image_size[0]), int(image_size[1]))
    sides = tuple(float(s) for s in shorter_sides or ())
    if any(s <= 0 for s in sides):
        raise ValueError(f"shorter_sides must be positive, got {shorter_sides}")
    _refuse_mask_spec(dataset.element_spec)
    if mask_crop_size is not None and int(mask_crop_size) < 1:
        raise ValueError(f"mask_crop_size must be a positive int or None, got {mask_crop_size!r}")
    crop = int(mask_crop_size) if mask_crop_size else None
    # Every element gets its index: the flips and sizes are drawn per index, and a failed check
    # names the element.
    # A positioned stream (detection.data.resume) brings its own `_index`.
    if not (isinstance(dataset.element_spec, Mapping) and "_index" in dataset.element_spec):
        dataset = dataset.enumerate().map(lambda i, e: {**e, "_index": i})
    return dataset.map(lambda e: _canvas_example(e, canvas, max_boxes, flip, seed, sides, crop),
                       num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)


def training_batches(dataset: tf.data.Dataset, image_size: tuple[int, int], batch_size: int,
                     max_boxes: int = 100, flip: bool = True, shuffle: int = 0,
                     seed: int = 0, repeat: bool = False,
                     shorter_sides: tuple[int, ...] | None = None,
                     mask_crop_size: int | None = MASK_CROP_SIZE) -> tf.data.Dataset:
    """Canvas-sized, fixed-shape batches for `FasterRCNN.fit` (`drop_remainder` keeps the
    batch dimension static, which `tf.distribute` and the static-shape ops need). Instance
    masks travel as `"mask_crops"` `[B, max_boxes, S, S]` (`to_canvas`; 1.25 MB per image at
    S = 112 and 100 boxes, whatever the canvas), or as canvas pixels `"masks"`
    `[B, max_boxes, H, W]` with `mask_crop_size=None`."""
    if batch_size < 1:
        raise ValueError(f"training_batches: batch_size must be >= 1, got {batch_size}")
    if shuffle:
        dataset = dataset.shuffle(shuffle, seed=seed, reshuffle_each_iteration=True)
    if repeat:
        dataset = dataset.repeat()
    dataset = to_canvas(dataset, image_size, max_boxes, flip, seed, shorter_sides,
                        mask_crop_size)
    keys = ("images", "bounding_boxes", "masks", "mask_crops")  # masks only where the data has them
    dataset = dataset.map(lambda e: {k: e[k] for k in keys if k in e})
    return dataset.batch(batch_size, drop_remainder=True).prefetch(tf.data.AUTOTUNE)


def _refuse_structure(element) -> None:
    if not isinstance(element, Mapping) or "bounding_boxes" not in element:
        keys = sorted(element) if isinstance(element, Mapping) else type(element).__name__
        raise ValueError("FasterRCNN.fit expects elements {'images', 'bounding_boxes': "
                         f"{{'boxes', 'labels'}}}}; got {keys}")


def checked_training_batches(dataset: tf.data.Dataset, num_classes: int) -> tf.data.Dataset:
    """`dataset` with every batch checked in the pipeline: labels `< num_classes` and finite
    images. A failing batch raises a TensorFlow error that `data_error` turns into a ValueError
    naming the batch (counted from the start of this dataset) and the element in it.

    The check rides along instead of peeking at a first batch: a peek is an extra iteration,
    and the shuffles and augmentation draws, which re-randomise on every iteration, would then
    give `fit` another stream than the step-indexed one a resumed run rebuilds.
    """
    _refuse_structure(dataset.element_spec)

    def check(index, element):
        labels = tf.cast(element["bounding_boxes"]["labels"], tf.int32)
        top = tf.reduce_max(tf.concat([tf.reshape(labels, [-1]), [-1]], 0))
        images = element["images"]
        if images.dtype.is_floating:
            per_image = tf.reduce_all(tf.math.is_finite(tf.reshape(
                images, tf.stack([tf.shape(images)[0], -1]))), axis=1)
        else:
            per_image = tf.ones(tf.shape(images)[:1], tf.bool)
        first_bad = tf.argmin(tf.cast(per_image, tf.int32), output_type=tf.int64)
        with tf.control_dependencies([
                _checked(top < num_classes, "batch ", index, ": num_classes mismatch: the data "
                         "has label ", top,
                         " (so at least ", top + 1, " classes) but the model was built with "
                         f"num_classes={num_classes}"),
                _checked(tf.reduce_all(per_image), "batch ", index, ", element ", first_bad,
                         ": the image ", NON_FINITE)]):
            return tf.nest.map_structure(tf.identity, element)

    return dataset.enumerate().map(check)


def _first_element(data):
    if isinstance(data, tf.data.Dataset):
        for element in data.take(1):
            return element
        raise ValueError("the training dataset is empty")
    return data


def check_images(data) -> None:
    """Refuse images with NaN/inf (numpy, tensors or a dict with 'images')."""
    images = data.get("images") if isinstance(data, Mapping) else data
    if images is None or isinstance(images, tf.data.Dataset):
        return
    try:
        array = np.asarray(images)
    except Exception:  # symbolic or unconvertible inputs are checked elsewhere
        return
    if array.dtype.kind == "f" and not np.isfinite(array).all():
        bad = int((~np.isfinite(array)).sum())
        raise ValueError(f"images contain {bad} NaN or inf values (shape {array.shape}); "
                         "clean or drop these images before detection")


def check_training_batch(data, num_classes: int) -> None:
    """Check the first training batch: structure, labels `< num_classes`, finite images."""
    element = _first_element(data)
    _refuse_structure(element)
    check_images(element)
    labels = np.asarray(element["bounding_boxes"]["labels"])
    if labels.size and labels.max() >= num_classes:
        raise ValueError(f"num_classes mismatch: the data has label {int(labels.max())} "
                         f"(so at least {int(labels.max()) + 1} classes) but the model was "
                         f"built with num_classes={num_classes}")
