"""Tiny detectors and toy batches shared by the detector tests (imported by name)."""

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
