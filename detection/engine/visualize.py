"""Draw detections (boxes, class names, scores) on images and save a PNG grid."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

_COLOURS = ("#e6194b", "#3cb44b", "#4363d8", "#f58231", "#911eb4", "#42d4f4", "#f032e6",
            "#bfef45", "#fabed4", "#469990")


def draw_detections(
    images: Sequence[np.ndarray],
    predictions: Sequence[dict],
    path: str | Path,
    class_names: Sequence[str] | None = None,
    ground_truths: Sequence[dict] | None = None,
    score_threshold: float = 0.5,
    columns: int = 4,
) -> Path:
    """Save a grid PNG of `images` with predicted boxes (solid, "name score") and, if given,
    ground truth (dashed white). `predictions` are per-image `{"boxes", "scores", "classes"}`
    in pixel xyxy, optionally `"masks"` `[N, H, W]` 0/1 at the image's size (pasted, see
    `detection.evaluation.paste`), drawn as a semi-transparent fill outlined in the box's colour;
    detections scoring below `score_threshold` are not drawn."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.colors import to_rgb
    from matplotlib.patches import Rectangle

    if len(images) != len(predictions):
        raise ValueError(f"draw_detections: {len(images)} images but {len(predictions)} "
                         "prediction sets")
    if not len(images):
        raise ValueError("draw_detections: no images to draw")
    columns = max(1, min(columns, len(images)))
    rows = (len(images) + columns - 1) // columns
    fig, axes = plt.subplots(rows, columns, figsize=(3 * columns, 3 * rows), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for i, (image, pred) in enumerate(zip(images, predictions, strict=True)):
        ax = axes.ravel()[i]
        ax.imshow(np.asarray(image).astype(np.uint8))
        if ground_truths is not None:
            for box in np.asarray(ground_truths[i]["boxes"]).reshape(-1, 4):
                ax.add_patch(Rectangle((box[0], box[1]), box[2] - box[0], box[3] - box[1],
                                       fill=False, edgecolor="white", linestyle="--",
                                       linewidth=0.8))
        boxes = np.asarray(pred["boxes"]).reshape(-1, 4)
        scores = np.asarray(pred["scores"]).reshape(-1)
        classes = np.asarray(pred["classes"]).reshape(-1)
        masks = pred.get("masks")
        if masks is not None:
            masks = np.asarray(masks)
            if masks.shape != (len(boxes), *np.asarray(image).shape[:2]):
                raise ValueError(f"draw_detections: image {i} has masks of shape {masks.shape}; "
                                 f"expected [{len(boxes)}, height, width] 0/1 at the image's "
                                 f"size {np.asarray(image).shape[:2]} (paste_masks them first)")
        for k, (box, score, cls) in enumerate(zip(boxes, scores, classes, strict=True)):
            if score < score_threshold or cls < 0:
                continue
            colour = _COLOURS[int(cls) % len(_COLOURS)]
            if masks is not None and masks[k].any():
                fill = np.zeros((*masks[k].shape, 4), np.float32)
                fill[..., :3] = to_rgb(colour)
                fill[..., 3] = 0.45 * (masks[k] > 0)  # see-through, so the object shows
                ax.imshow(fill, interpolation="nearest")
                # and its outline, so the mask reads apart from an object of a similar colour
                ax.contour(masks[k] > 0, levels=[0.5], colors=[colour], linewidths=1.2)
            ax.add_patch(Rectangle((box[0], box[1]), box[2] - box[0], box[3] - box[1],
                                   fill=False, edgecolor=colour, linewidth=1.5))
            name = class_names[int(cls)] if class_names is not None else str(int(cls))
            ax.text(box[0], box[1] - 1, f"{name} {score:.2f}", color="white", fontsize=7,
                    va="bottom", bbox={"facecolor": colour, "alpha": 0.8, "pad": 1,
                                       "edgecolor": "none"})
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
