"""A detection run's records: `history.csv` without invented columns, and its training curves
(`training_curves.png`: the losses per epoch and each evaluation's mAP/AP), redrawn after
every epoch and after every evaluation."""

from __future__ import annotations

import csv
import json
import math
import os
from pathlib import Path

import keras

CURVES = "training_curves.png"


class HistoryLog(keras.callbacks.CSVLogger):
    """`CSVLogger` that writes the columns the logs have. Keras' adds a `val_<name>` column
    for every metric when the first epoch has no validation figures (so that later ones
    fit); a detection run validates after training (mAP on `data.eval`, in metrics.json), so
    those columns were always `NA`. Appending to an existing file keeps its header, so rows
    stay aligned with the columns of the run's earlier calls."""

    def on_epoch_end(self, epoch, logs=None):
        if self.keys is None:
            header = _header(self.filename) if self.append else None
            self.keys = header or sorted((logs or {}).keys())
        super().on_epoch_end(epoch, logs)


def _header(path: str | os.PathLike) -> list[str] | None:
    try:
        with open(path, newline="") as f:
            row = next(csv.reader(f), None)
    except OSError:
        return None
    return [k for k in row if k != "epoch"] if row else None


class CurvePlot(keras.callbacks.Callback):
    """Redraw `plot_training_curves` after every epoch (after the `HistoryLog` of the same
    callbacks list has written the epoch's row)."""

    def __init__(self, run_dir: str | os.PathLike, steps_per_epoch: int):
        super().__init__()
        self.run_dir, self.steps_per_epoch = Path(run_dir), int(steps_per_epoch)

    def on_epoch_end(self, epoch, logs=None):
        plot_training_curves(self.run_dir, self.steps_per_epoch)


def _history(path: Path) -> dict[str, list[float | None]]:
    """`{column: [value per epoch]}` of a history.csv (None for `NA` or a missing value)."""
    history: dict[str, list[float | None]] = {}
    try:
        with path.open(newline="") as f:
            for row in csv.DictReader(f):
                for name, text in row.items():
                    try:
                        value = float(text)
                    except (TypeError, ValueError):
                        value = None
                    history.setdefault(name, []).append(value)
    except OSError:
        pass
    return history


def _metrics(run_dir: Path) -> dict:
    try:
        value = json.loads((run_dir / "metrics.json").read_text())
    except (OSError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}


def _evaluations(run_dir: Path) -> list[dict]:
    value = _metrics(run_dir).get("evaluations", [])
    return [e for e in value if isinstance(e, dict)] if isinstance(value, list) else []


def evaluations(run_dir: str | os.PathLike, step: int, metrics: dict) -> list[dict]:
    """metrics.json's `evaluations`: the earlier calls' of the run (a resumed run keeps
    them) and this one's headline score `{"step", "metric": "mAP" | "AP", "value"}`."""
    kept = [e for e in _evaluations(Path(run_dir)) if e.get("step") != step]
    name = "mAP" if "mAP" in metrics else "AP"
    if name in metrics:
        value = float(metrics[name])
        kept.append({"step": int(step), "metric": name,
                     "value": value if math.isfinite(value) else None})
    return kept


def plot_training_curves(run_dir: str | os.PathLike,
                         steps_per_epoch: int | None = None) -> Path | None:
    """`run_dir/training_curves.png`: the training losses of `history.csv` against steps (the
    total solid, its parts thin) and, on a second axis, the score of every evaluation listed
    in `metrics.json` (`evaluations`: `{"step", "metric", "value"}`). None (nothing drawn)
    while the run has no finished epoch. Without `steps_per_epoch` it is metrics.json's
    `steps` over the epochs in history.csv (a finished run trains whole epochs)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    run_dir = Path(run_dir)
    history = _history(run_dir / "history.csv")
    losses = {k: v for k, v in history.items() if k.endswith("loss") and not k.startswith("val_")}
    if not losses.get("loss"):
        return None
    if steps_per_epoch is None:
        steps_per_epoch = max(1, int(_metrics(run_dir).get("steps") or 0) // len(losses["loss"]))
    fig, ax = plt.subplots(figsize=(7, 4), dpi=100)
    for name, values in sorted(losses.items()):
        steps = [(i + 1) * steps_per_epoch for i, v in enumerate(values) if v is not None]
        ax.plot(steps, [v for v in values if v is not None], "o-" if len(steps) < 3 else "-",
                lw=2 if name == "loss" else 0.8, label=name, ms=3)
    ax.set_xlabel("training step")
    ax.set_ylabel("loss")
    ax.grid(alpha=0.3)
    evaluations = [e for e in _evaluations(run_dir) if e.get("value") is not None]
    handles, labels = ax.get_legend_handles_labels()
    if evaluations:
        score = ax.twinx()
        metric = evaluations[-1].get("metric", "score")
        line = score.plot([e["step"] for e in evaluations], [e["value"] for e in evaluations],
                          "s--", color="black", label=f"val {metric}")
        score.set_ylabel(f"val {metric}")
        score.set_ylim(0, 1)
        handles, labels = handles + line, labels + [f"val {metric}"]
    ax.legend(handles, labels, fontsize=8, loc="best")
    ax.set_title(f"{run_dir.name}: training losses" + (" and validation score" if evaluations
                                                       else ""))
    fig.tight_layout()
    path = run_dir / CURVES
    tmp = path.with_name(path.name + ".tmp.png")  # a viewer never sees half a file
    fig.savefig(tmp)
    plt.close(fig)
    os.replace(tmp, path)
    return path


def run_history(out_dir: Path) -> dict[str, list[float | None]]:
    """`{metric: [one value per epoch]}` of the whole run in `out_dir`, from its `history.csv`
    (every resumed process appends to it, so its first row is the run's first epoch, where
    this process's `History` starts at the resumed one)."""
    path = Path(out_dir) / "history.csv"
    history: dict[str, list[float | None]] = {}
    if path.is_file():
        with path.open(newline="") as f:
            for row in csv.DictReader(f):
                for name, value in row.items():
                    if name != "epoch":  # CSVLogger writes "NA" for a metric it lacks
                        history.setdefault(name, []).append(_number(value))
    return history


def _number(text: str | None) -> float | None:
    try:
        return float(text)
    except (TypeError, ValueError):
        return None
