"""Instance masks (Mask R-CNN, He et al. 2017, sec. 3): training targets cropped from the
ground-truth masks at the positive RoIs and the per-class binary cross-entropy, keras.ops with
static shapes (tf.function, jax.jit). Pasting the box-relative predictions back into the image
is `detection.evaluation.paste.paste_masks`.
"""

from __future__ import annotations

from keras import ops

from detection.modeling.ops.roi_align import _axis_taps


def mask_targets(gt_masks, matched_idx, rois, size: int = 28, aligned: bool = False,
                 sampling_ratio: int = 0):
    """`[B, P, size, size]` float targets: each RoI's matched ground-truth mask RoIAligned
    inside the RoI (torchvision `project_masks_on_boxes`: `roi_align(mask, roi, size, 1.0)`,
    i.e. `aligned=False` and adaptive sampling; detectron2 crops with `aligned=True` and then
    thresholds at 0.5).

    `gt_masks [B, M, H, W]` (0/1, static `H`, `W`), `matched_idx [B, P]` indices into `M`,
    `rois [B, P, 4]` xyxy pixels of the same image. Only each bin's bilinear taps are gathered
    from the masks (no `[P, H, W]` copy). Adaptive sampling (`sampling_ratio=0`) takes at most
    `roi_align.MAX_ADAPTIVE_SAMPLES` samples per bin side, so it equals torchvision for RoIs up
    to `6 * size` pixels per side and averages fewer samples of larger ones.
    """
    height, width = int(gt_masks.shape[2]), int(gt_masks.shape[3])
    num_masks, num_rois = int(gt_masks.shape[1]), int(rois.shape[1])
    boxes = ops.cast(rois, "float32")
    if aligned:
        boxes = boxes - 0.5
    yi, wy = _axis_taps(boxes[..., 1], boxes[..., 3], size, float(height), sampling_ratio,
                        aligned)
    xi, wx = _axis_taps(boxes[..., 0], boxes[..., 2], size, float(width), sampling_ratio,
                        aligned)
    side = yi.shape[-2] * 2
    yi, wy = (ops.reshape(t, (-1, size, 1, side, 1)) for t in (yi, wy))
    xi, wx = (ops.reshape(t, (-1, 1, size, 1, side)) for t in (xi, wx))
    image = ops.arange(ops.shape(rois)[0], dtype="int32")[:, None] * num_masks
    first = (image + ops.cast(matched_idx, "int32")) * (height * width)  # [B, P]
    index = ops.reshape(first, (-1, 1, 1, 1, 1)) + yi * width + xi
    table = ops.reshape(gt_masks, (-1,))  # cast after the gather: masks may be large uint8
    taps = ops.reshape(ops.cast(ops.take(table, ops.reshape(index, (-1,))), "float32"),
                       ops.shape(index))
    out = ops.sum(taps * (wy * wx), axis=(-2, -1))
    return ops.stop_gradient(ops.reshape(out, (-1, num_rois, size, size)))


def crop_mask_targets(crops, crop_boxes, matched_idx, rois, canvas_hw, size: int = 28,
                      aligned: bool = False, sampling_ratio: int = 0):
    """`mask_targets` from box-relative crops instead of canvas-sized masks: the same RoIAlign
    taps on the `canvas_hw` canvas, each tap's canvas pixel read from the matched box's crop
    (the crop pixel holding that pixel's centre; zero outside the box), so nothing of canvas
    size is built.

    `crops [B, M, S, S]` (0/1, `detection.data.pipeline` `mask_crop_size`), `crop_boxes
    [B, M, 4]` the xyxy canvas boxes the crops cover. Equal to `mask_targets` on the canvas
    masks where each crop pixel is one canvas pixel; otherwise it differs only along mask
    edges (tolerance in docs/training.md).
    """
    height, width = (float(v) for v in canvas_hw)
    num_masks, crop = int(crops.shape[1]), int(crops.shape[2])
    num_rois = int(rois.shape[1])
    boxes = ops.cast(rois, "float32")
    if aligned:
        boxes = boxes - 0.5
    yi, wy = _axis_taps(boxes[..., 1], boxes[..., 3], size, height, sampling_ratio, aligned)
    xi, wx = _axis_taps(boxes[..., 0], boxes[..., 2], size, width, sampling_ratio, aligned)
    owner = ops.take_along_axis(ops.cast(crop_boxes, "float32"),
                                ops.cast(matched_idx, "int32")[..., None], axis=1)  # [B, P, 4]

    def in_crop(taps, lo, hi):  # canvas pixel -> crop pixel, and whether it is inside
        # A pixel whose centre is on the box's edge is in the crop (its first or last pixel
        # read it): the closed interval keeps a flipped box's crop equal to the flipped mask.
        lo, hi = (ops.reshape(t, tuple(ops.shape(t)) + (1, 1, 1)) for t in (lo, hi))
        centre = ops.cast(taps, "float32") + 0.5
        pos = ops.floor((centre - lo) * crop / ops.maximum(hi - lo, 1e-6))
        inside = ops.logical_and(centre >= lo, centre <= hi)
        return ops.cast(ops.clip(pos, 0.0, crop - 1.0), "int32"), ops.cast(inside, "float32")

    cy, iy = in_crop(yi, owner[..., 1], owner[..., 3])
    cx, ix = in_crop(xi, owner[..., 0], owner[..., 2])
    side = yi.shape[-2] * 2
    cy, wy = (ops.reshape(t, (-1, size, 1, side, 1)) for t in (cy, wy * iy))
    cx, wx = (ops.reshape(t, (-1, 1, size, 1, side)) for t in (cx, wx * ix))
    image = ops.arange(ops.shape(rois)[0], dtype="int32")[:, None] * num_masks
    first = (image + ops.cast(matched_idx, "int32")) * (crop * crop)  # [B, P]
    index = ops.reshape(first, (-1, 1, 1, 1, 1)) + cy * crop + cx
    table = ops.reshape(crops, (-1,))
    taps = ops.reshape(ops.cast(ops.take(table, ops.reshape(index, (-1,))), "float32"),
                       ops.shape(index))
    out = ops.sum(taps * (wy * wx), axis=(-2, -1))
    return ops.stop_gradient(ops.reshape(out, (-1, num_rois, size, size)))


def mask_loss(logits, targets, labels, positive):
    """Per-class binary cross-entropy (Mask R-CNN sec. 3, `L_mask`): each RoI's mask of its
    ground-truth class only, averaged over the positive RoIs' pixels (as torchvision and
    detectron2); 0 (with a gradient path) when there is no positive RoI.

    `logits [R, C, S, S]`, `targets [R, S, S]` in [0, 1], `labels [R]` int class of each RoI,
    `positive [R]` bool: one image, or RoIs pooled from anywhere. With a batch axis
    (`[B, R, ...]`) the average is per image, then over images, as `losses.box_head_losses`
    does: the same as the batch's average when the images have as many positives, and
    unchanged however the batch is split across replicas (a replica's count of positives
    would otherwise differ from the global one, and so would the gradient).
    """
    num_classes, size = int(logits.shape[-3]), int(logits.shape[-1])
    # [images, RoIs]: the batch axis may be unknown (a replica's share), the RoIs' is static
    lead = (-1, int(positive.shape[1])) if len(positive.shape) == 2 else (1, -1)
    logits = ops.reshape(ops.cast(logits, "float32"), lead + (num_classes, size, size))
    targets = ops.reshape(ops.cast(targets, "float32"), lead + (size, size))
    labels = ops.clip(ops.reshape(ops.cast(labels, "int32"), lead), 0, num_classes - 1)
    weight = ops.cast(ops.reshape(positive, lead), "float32")
    picked = ops.sum(logits * ops.one_hot(labels, num_classes)[..., None, None], axis=2)
    # log(1 + exp(-|x|)) form: finite for any logit.
    bce = ops.maximum(picked, 0.0) - picked * targets + ops.log1p(ops.exp(-ops.abs(picked)))
    pixels = ops.maximum(ops.sum(weight, axis=1), 1.0) * float(size * size)  # [B]
    return ops.mean(ops.sum(bce * weight[..., None, None], axis=(1, 2, 3)) / pixels)
