"""Draw detections (boxes, class names, scores, masks) on images and save a PNG.

Each image is drawn at its own size (a photo of 450 x 319 gives a PNG of 450 x 319; several
images are laid out in a grid of such cells), downscaled only when its longer side exceeds
`MAX_SIDE` (1333 px, detectron2's test size). Labels are sized to the image (about 1/40 of its
longer side, at least 12 px), written in white on a box of the detection's colour, and laid
out by `label_layout` so that no two label boxes overlap.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

MAX_SIDE = 1333  # longest side of a drawn image; larger photos are scaled down to it

_COLOURS = ("#e6194b", "#3cb44b", "#4363d8", "#f58231", "#911eb4", "#42d4f4", "#f032e6",
            "#bfef45", "#fabed4", "#469990")

Rect = tuple[float, float, float, float]  # x1, y1, x2, y2 in pixels


def _overlaps(a: Rect, b: Rect) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def label_layout(anchors: Sequence[Sequence[float]], sizes: Sequence[tuple[float, float]],
                 width: float, height: float) -> list[Rect | None]:
    """Where to put each label so that none overlaps another: `anchors` are the detections'
    boxes (x1, y1, x2, y2), `sizes` the labels' (width, height), all in pixels of an image of
    `width` x `height`. Labels are placed in the given order (put the best detections first):
    each goes above its box's top-left corner if free, else just inside the box's top, else
    the nearest free row below or above (stacked), at the box's left or right edge, always
    inside the image. Returns each label's rectangle, or None for a label that finds no free
    place (a crowded image: its box is still drawn)."""
    placed: list[Rect] = []
    out: list[Rect | None] = []
    for (x1, y1, x2, _), (w, h) in zip(anchors, sizes, strict=True):
        w, h = min(float(w), width), min(float(h), height)
        xs = [min(max(0.0, x1), width - w), min(max(0.0, x2 - w), width - w)]
        top = y1 - h if y1 - h >= 0 else y1  # above the box, or inside it at the image's top
        rows = int(height // h) + 1
        ys = [top + k * h for k in range(rows)] + [top - k * h for k in range(1, rows)]
        spot = None
        for y in ys:
            if y < 0 or y + h > height:
                continue
            for x in xs:
                rect = (x, y, x + w, y + h)
                if not any(_overlaps(rect, other) for other in placed):
                    spot = rect
                    break
            if spot is not None:
                break
        if spot is not None:
            placed.append(spot)
        out.append(spot)
    return out


def _font(size: int):
    """A scalable font of `size` px (Pillow's bundled one, else matplotlib's DejaVu Sans)."""
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1: no sized default font
        from matplotlib import font_manager

        return ImageFont.truetype(font_manager.findfont("DejaVu Sans"), size)


def _rgb(colour: str) -> tuple[int, int, int]:
    return tuple(int(colour[i:i + 2], 16) for i in (1, 3, 5))


def _outline(mask: np.ndarray, width: int) -> np.ndarray:
    """The pixels of `mask` within `width` px of its border (the drawn contour)."""
    inner = mask.copy()
    for _ in range(width):
        shrunk = inner.copy()
        shrunk[1:] &= inner[:-1]
        shrunk[:-1] &= inner[1:]
        shrunk[:, 1:] &= inner[:, :-1]
        shrunk[:, :-1] &= inner[:, 1:]
        inner = shrunk
    return mask & ~inner


def _dashed_rectangle(draw, box, fill, width: int, dash: int) -> None:
    x1, y1, x2, y2 = (float(v) for v in box)
    for (ax, ay), (bx, by) in (((x1, y1), (x2, y1)), ((x2, y1), (x2, y2)),
                               ((x2, y2), (x1, y2)), ((x1, y2), (x1, y1))):
        length = max(abs(bx - ax), abs(by - ay))
        for start in np.arange(0.0, length, 2 * dash):
            t0, t1 = start / max(length, 1e-6), min(start + dash, length) / max(length, 1e-6)
            draw.line([(ax + (bx - ax) * t0, ay + (by - ay) * t0),
                       (ax + (bx - ax) * t1, ay + (by - ay) * t1)], fill=fill, width=width)


def _check(i: int, image: np.ndarray, pred: dict) -> tuple[np.ndarray, ...]:
    boxes = np.asarray(pred["boxes"], np.float64).reshape(-1, 4)
    scores = np.asarray(pred["scores"]).reshape(-1)
    classes = np.asarray(pred["classes"]).reshape(-1)
    masks = pred.get("masks")
    if masks is not None:
        masks = np.asarray(masks)
        if masks.shape != (len(boxes), *image.shape[:2]):
            raise ValueError(f"draw_detections: image {i} has masks of shape {masks.shape}; "
                             f"expected [{len(boxes)}, height, width] 0/1 at the image's "
                             f"size {image.shape[:2]} (paste_masks them first)")
    return boxes, scores, classes, masks


def _scale_of(image: np.ndarray, max_side: int | None, min_side: int | None) -> float:
    longest = max(image.shape[:2])
    if max_side and longest > max_side:
        return max_side / longest
    if min_side and longest < min_side:
        return min_side / longest
    return 1.0


def draw_image(image: np.ndarray, pred: dict, class_names: Sequence[str] | None = None,
               ground_truth: dict | None = None, score_threshold: float = 0.5,
               max_side: int | None = MAX_SIDE, min_side: int | None = None, index: int = 0):
    """One image with its detections as a PIL RGB image of the image's size (scaled to
    `max_side` / `min_side` when outside them); see `draw_detections`."""
    image = np.asarray(image)
    boxes, scores, classes, masks = _check(index, image, pred)
    keep = (scores >= score_threshold) & (classes >= 0)
    order = np.flatnonzero(keep)[np.argsort(-scores[keep], kind="stable")]
    scale = _scale_of(image, max_side, min_side)
    canvas = Image.fromarray(image.astype(np.uint8)).convert("RGB")
    size = (max(1, round(canvas.width * scale)), max(1, round(canvas.height * scale)))
    if size != canvas.size:
        canvas = canvas.resize(size, Image.Resampling.LANCZOS if scale < 1 else
                               Image.Resampling.BILINEAR)
    longest = max(size)
    line = max(2, round(longest / 320))
    pixels = np.asarray(canvas, np.float32)
    for k in order[::-1] if masks is not None else ():  # best last: on top
        mask = masks[k] > 0
        if not mask.any():
            continue
        if mask.shape[::-1] != size:
            mask = np.asarray(Image.fromarray(mask).resize(size, Image.Resampling.NEAREST))
        colour = np.array(_rgb(_COLOURS[int(classes[k]) % len(_COLOURS)]), np.float32)
        pixels[mask] = 0.55 * pixels[mask] + 0.45 * colour  # see-through: the object shows
        pixels[_outline(mask, max(1, line // 2))] = colour  # apart from similar colours
    canvas = Image.fromarray(pixels.round().astype(np.uint8))
    draw = ImageDraw.Draw(canvas)
    if ground_truth is not None:
        for box in np.asarray(ground_truth["boxes"], np.float64).reshape(-1, 4) * scale:
            _dashed_rectangle(draw, box, (255, 255, 255), max(1, line // 2), 3 * line)
    boxes = np.concatenate([np.minimum(boxes[:, :2], boxes[:, 2:]),
                            np.maximum(boxes[:, :2], boxes[:, 2:])], 1) * scale
    for k in order[::-1]:
        draw.rectangle(list(boxes[k]), outline=_COLOURS[int(classes[k]) % 10], width=line)
    font = _font(max(12, round(longest / 40)))
    pad = max(2, round(font.size / 6))
    texts = [f"{class_names[int(classes[k])] if class_names is not None else int(classes[k])} "
             f"{scores[k]:.2f}" for k in order]
    sizes = []
    for text in texts:
        left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
        sizes.append((right - left + 2 * pad, bottom - top + 2 * pad))
    spots = label_layout([boxes[k] for k in order], sizes, *size)
    for k, text, spot in zip(order, texts, spots, strict=True):
        if spot is None:
            continue
        draw.rectangle(spot, fill=_COLOURS[int(classes[k]) % len(_COLOURS)])
        left, top, _, _ = draw.textbbox((0, 0), text, font=font)
        draw.text((spot[0] + pad - left, spot[1] + pad - top), text, fill="white", font=font)
    return canvas


def draw_detections(
    images: Sequence[np.ndarray],
    predictions: Sequence[dict],
    path: str | Path,
    class_names: Sequence[str] | None = None,
    ground_truths: Sequence[dict] | None = None,
    score_threshold: float = 0.5,
    columns: int = 4,
    max_side: int | None = MAX_SIDE,
    min_side: int | None = None,
) -> Path:
    """Save a PNG of `images` with predicted boxes (solid, "name score" labels that never
    overlap) and, if given, ground truth (dashed white). One image gives a PNG of exactly its
    size (scaled down to `max_side` px on its longer side if larger, up to `min_side` if
    smaller and given); several are laid out `columns` to a row, each at its own size.
    `predictions` are per-image `{"boxes", "scores", "classes"}` in pixel xyxy, optionally
    `"masks"` `[N, H, W]` 0/1 at the image's size (pasted, see `detection.evaluation.paste`),
    drawn as a semi-transparent fill outlined in the box's colour; detections scoring below
    `score_threshold` are not drawn."""
    if len(images) != len(predictions):
        raise ValueError(f"draw_detections: {len(images)} images but {len(predictions)} "
                         "prediction sets")
    if not len(images):
        raise ValueError("draw_detections: no images to draw")
    drawn = [draw_image(image, pred, class_names,
                        None if ground_truths is None else ground_truths[i], score_threshold,
                        max_side, min_side, index=i)
             for i, (image, pred) in enumerate(zip(images, predictions, strict=True))]
    if len(drawn) == 1:
        sheet = drawn[0]
    else:
        columns = max(1, min(columns, len(drawn)))
        rows = (len(drawn) + columns - 1) // columns
        gap = 4
        cell_w, cell_h = max(d.width for d in drawn), max(d.height for d in drawn)
        sheet = Image.new("RGB", (columns * cell_w + (columns - 1) * gap,
                                  rows * cell_h + (rows - 1) * gap), "white")
        for i, d in enumerate(drawn):
            sheet.paste(d, ((i % columns) * (cell_w + gap), (i // columns) * (cell_h + gap)))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(path)
    return path
