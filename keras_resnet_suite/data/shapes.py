"""Deterministic synthetic shapes: circles, squares and triangles on textured backgrounds.

The one generator behind the offline classification demo and the detection demo: each
image comes with tight pixel boxes (xyxy) and labels. Image `i` of seed `s` is always the
same, whatever the number of images asked for, so splits are reproducible by index.
"""

from __future__ import annotations

import numpy as np
from tqdm.auto import tqdm

CLASS_NAMES = ("circle", "square", "triangle")


def _background(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """A textured background: a colour gradient plus low-frequency noise or stripes."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    base = rng.uniform(40, 200, size=3)
    direction = rng.uniform(-1, 1, size=2)
    gradient = (direction[0] * yy / h + direction[1] * xx / w)[..., None] * rng.uniform(-50, 50, 3)
    coarse = rng.normal(0, 1, size=(h // 8 + 2, w // 8 + 2, 3))
    noise = np.kron(coarse, np.ones((8, 8, 1)))[:h, :w] * rng.uniform(4, 16)
    texture = noise
    if rng.random() < 0.5:
        period = rng.uniform(4, 12)
        angle = rng.uniform(0, np.pi)
        stripes = np.sin((xx * np.cos(angle) + yy * np.sin(angle)) * 2 * np.pi / period)
        texture = texture + stripes[..., None] * rng.uniform(5, 20)
    image = base + gradient + texture + rng.normal(0, 3, size=(h, w, 3))
    return image


def _mask(kind: int, h: int, w: int, cx: float, cy: float, r: float) -> np.ndarray:
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32) + 0.5
    if kind == 0:  # circle of radius r
        return (xx - cx) ** 2 + (yy - cy) ** 2 <= r * r
    if kind == 1:  # axis-aligned square of half-side r
        return (np.abs(xx - cx) <= r) & (np.abs(yy - cy) <= r)
    # upright isosceles triangle inscribed in the 2r x 2r box
    top, bottom = cy - r, cy + r
    t = (yy - top) / (2 * r)  # 0 at the apex, 1 at the base
    return (yy >= top) & (yy <= bottom) & (np.abs(xx - cx) <= t * r)


def _colour(rng: np.random.Generator, avoid: np.ndarray) -> np.ndarray:
    """A saturated colour far enough from the local background to be visible."""
    for _ in range(20):
        c = rng.uniform(0, 255, size=3)
        c[rng.integers(3)] = rng.choice([rng.uniform(0, 40), rng.uniform(215, 255)])
        if np.abs(c - avoid).sum() > 160:
            return c
    return 255.0 - avoid


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def render(index: int, *, image_size: int | tuple[int, int] = 64, min_objects: int = 1,
           max_objects: int = 3, size_range: tuple[float, float] = (0.15, 0.45),
           seed: int = 0, max_overlap: float = 0.1, masks: bool = False) -> dict:
    """Draw image `index`: {"image": uint8 [H, W, 3], "boxes": float32 [N, 4] xyxy pixels,
    "labels": int32 [N]} with N in [min_objects, max_objects]; `size_range` is the object's
    extent as a fraction of the shorter image side. `masks=True` adds "masks": uint8 0/1
    [N, H, W], each shape's own pixels (whole, as drawn), so a mask's bounding box is its box."""
    h, w = (image_size, image_size) if isinstance(image_size, int) else image_size
    if not 0 <= min_objects <= max_objects:
        raise ValueError(f"need 0 <= min_objects <= max_objects, got {min_objects}, {max_objects}")
    rng = np.random.default_rng([seed, index])
    image = _background(rng, h, w)
    boxes, labels, shape_masks = [], [], []
    for _ in range(int(rng.integers(min_objects, max_objects + 1))):
        for _attempt in range(30):
            r = rng.uniform(*size_range) * min(h, w) / 2
            cx, cy = rng.uniform(r, w - r), rng.uniform(r, h - r)
            kind = int(rng.integers(len(CLASS_NAMES)))
            mask = _mask(kind, h, w, cx, cy, r)
            if mask.sum() < 4:
                continue
            ys, xs = np.nonzero(mask)
            box = np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], np.float32)
            if all(_iou(box, b) <= max_overlap for b in boxes):
                break
        else:
            continue
        colour = _colour(rng, image[int(cy), int(cx)])
        image[mask] = colour + rng.normal(0, 4, size=(int(mask.sum()), 3))
        boxes.append(box)
        labels.append(kind)
        if masks:
            shape_masks.append(mask)
    out = {
        "image": np.clip(image, 0, 255).astype(np.uint8),
        "boxes": np.array(boxes, np.float32).reshape(-1, 4),
        "labels": np.array(labels, np.int32),
    }
    if masks:
        out["masks"] = np.array(shape_masks, np.uint8).reshape(-1, h, w)
    return out


def generate(num_images: int, *, start: int = 0, progress: bool = False, **kwargs) -> list[dict]:
    """Images `start` ... `start + num_images - 1` (see `render` for the arguments)."""
    indices = range(start, start + num_images)
    if progress:
        indices = tqdm(indices, desc="rendering shapes", unit="img")
    return [render(i, **kwargs) for i in indices]


def classification_arrays(num_images: int, *, image_size: int = 32, start: int = 0,
                          seed: int = 0, progress: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """One shape per image, labelled by its kind: (uint8 [N, H, W, 3], int32 [N])."""
    samples = generate(num_images, start=start, image_size=image_size, min_objects=1,
                       max_objects=1, size_range=(0.35, 0.8), seed=seed, progress=progress)
    images = np.stack([s["image"] for s in samples])
    labels = np.array([s["labels"][0] for s in samples], np.int32)
    return images, labels
