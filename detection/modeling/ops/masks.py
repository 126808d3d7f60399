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
