"""A Keras callback that scores a detector on a validation set every N epochs."""

from __future__ import annotations

from collections.abc import Sequence

import keras

from detection.evaluation.dataset import evaluate_dataset


class EvaluationCallback(keras.callbacks.Callback):
    """Runs VOC, COCO box or mask evaluation every `every_n_epochs`; adds the figures to the logs.

    Logged keys: `<prefix>mAP` (VOC), `<prefix>AP`, `AP50`, `AP75`, `APs`, `APm`, `APl`
    (COCO) or `<prefix>segm_AP`, ... (metric="segm": mask AP, with the same detections' box AP
    under the COCO names), so checkpoints and TensorBoard can follow them. `predictor` defaults
    to the model being trained; any object with `predict(images)` returning the detection
    dict works.
    """

    def __init__(
        self, dataset, every_n_epochs: int = 1, metric: str = "voc", predictor=None,
        class_names: Sequence[str] | None = None, prefix: str = "val_", batch_size: int = 1,
        max_images: int | None = None, pad_to: tuple[int, int] | None = None, verbose: int = 1,
        **metric_kwargs,
    ) -> None:
        super().__init__()
        if every_n_epochs < 1:
            raise ValueError(f"every_n_epochs must be >= 1, got {every_n_epochs}")
        if metric not in {"voc", "coco", "segm"}:
            raise ValueError(f"metric must be 'voc', 'coco' or 'segm', got {metric!r}")
        self.dataset, self.every_n_epochs, self.metric = dataset, every_n_epochs, metric
        self.predictor, self.class_names, self.prefix = predictor, class_names, prefix
        self.batch_size, self.max_images, self.verbose = batch_size, max_images, verbose
        self.pad_to = pad_to
        self.metric_kwargs = metric_kwargs
        self.history: list[tuple[int, dict]] = []

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        if (epoch + 1) % self.every_n_epochs:
            return
        result = evaluate_dataset(
            self.predictor if self.predictor is not None else self.model, self.dataset,
            metric=self.metric, class_names=self.class_names, batch_size=self.batch_size,
            max_images=self.max_images, verbose=bool(self.verbose), pad_to=self.pad_to,
            **self.metric_kwargs)
        self.history.append((epoch, result))
        keys = ["mAP"] if self.metric == "voc" else ["AP", "AP50", "AP75", "APs", "APm", "APl"]
        kind = "segm_" if self.metric == "segm" else ""  # mask AP never passes for box AP
        figures = {f"{self.prefix}{kind}{k}": result[k] for k in keys}
        if "bbox" in result:  # segm: the same detections' box AP, under the box names
            figures.update({f"{self.prefix}{k}": result["bbox"][k] for k in keys})
        if logs is not None:
            logs.update(figures)
        if self.verbose:
            print(f"epoch {epoch + 1}: " + ", ".join(f"{k} = {v:.4f}" for k, v in figures.items()))
