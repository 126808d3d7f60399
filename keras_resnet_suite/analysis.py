"""Looking inside training: layer-response statistics (paper Sec. 4.2, Fig. 7), per-block
gradient norms, and training/test error curves (Fig. 6), as arrays and PNG plots.

    stats = analysis.layer_responses(model, images)      # {"names": [...], "std": array}
    analysis.plot_layer_responses({"plain-20": stats, "resnet-20": other}, "fig7.png")
    grads = analysis.GradientNormLogger(probe_images, probe_labels, every=50)
    model.fit(..., callbacks=[grads]); analysis.plot_gradient_norms(grads, "grads.png")
"""

from __future__ import annotations

import contextlib
import csv
import os
from collections.abc import Mapping
from pathlib import Path

import keras
import numpy as np

from keras_resnet_suite import compat
from keras_resnet_suite.layers import BatchNormalization


def _matplotlib():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, ax, path: str | os.PathLike, legend_size: float | None = None) -> Path:
    """Grid, legend and a tight layout, written to `path` (PNG, 80 dpi); the figure is closed."""
    ax.grid(alpha=0.3)
    ax.legend(fontsize=legend_size)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    _matplotlib().close(fig)
    return Path(path)


@contextlib.contextmanager
def _record_bn_after_conv(records: list, kernel_size: tuple[int, int]):
    """Record `(bn_layer_path, output)` for every BN call whose input came straight from a
    `kernel_size` Conv2D (calls are recorded in execution order, also inside nested blocks)."""
    # Keras' BN and ours (whose TensorFlow path does not go through Keras' call).
    bn_classes = (keras.layers.BatchNormalization, BatchNormalization)
    last = {}

    def conv(conv_call):
        def call(self, inputs, *args, **kwargs):
            out = conv_call(self, inputs, *args, **kwargs)
            last["conv"], last["out"] = self, out
            return out
        return call

    def bn(bn_call):
        def call(self, inputs, *args, **kwargs):
            out = bn_call(self, inputs, *args, **kwargs)
            source = last.get("conv")
            if source is not None and last.get("out") is inputs and \
                    source.kernel_size == kernel_size:
                records.append((self.path, keras.ops.convert_to_numpy(out)))
                last["conv"] = None  # once, even when our call goes through Keras' call
            return out
        return call

    with compat.wrapped_calls({keras.layers.Conv2D: conv, **dict.fromkeys(bn_classes, bn)}):
        yield records


def layer_responses(model: keras.Model, images, kernel_size: int = 3,
                    batch_size: int = 64) -> dict[str, np.ndarray | list[str]]:
    """Std of the responses of every `kernel_size` conv layer, after its BN and before the
    ReLU or the residual addition, by layer index in forward order (paper Fig. 7).

    The std is taken per channel over images and positions, then averaged over channels, in
    inference mode. Returns `{"names": [BN path per layer], "std": float64 [num_layers]}`.
    """
    images = np.asarray(images, np.float32)
    if images.ndim != 4:
        raise ValueError(f"images must be [N, H, W, C], got shape {images.shape}")
    batches = []
    for i in range(0, len(images), batch_size):
        records: list = []
        with _record_bn_after_conv(records, (kernel_size, kernel_size)):
            model(images[i : i + batch_size], training=False)
        batches.append(records)
    if not batches or not batches[0]:
        raise ValueError(f"{model.name} has no {kernel_size}x{kernel_size} Conv2D followed by a "
                         "BatchNormalization")  # fmt: skip
    names = [name for name, _ in batches[0]]
    stds = []
    for j in range(len(names)):
        out = np.concatenate([b[j][1] for b in batches]).astype(np.float64)
        stds.append(out.reshape(-1, out.shape[-1]).std(axis=0).mean())
    return {"names": names, "std": np.asarray(stds)}


def plot_layer_responses(results: Mapping[str, Mapping], path: str | os.PathLike,
                         sort: bool = False) -> Path:
    """Fig. 7: response std against layer index for each model (`sort`: descending, the
    paper's bottom panel)."""
    plt = _matplotlib()
    fig, ax = plt.subplots(figsize=(6, 3.2))
    for label, r in results.items():
        std = np.sort(r["std"])[::-1] if sort else r["std"]
        ax.plot(np.arange(1, len(std) + 1), std, marker=".", label=label)
    ax.set_xlabel("layer index" + (" (sorted by magnitude)" if sort else ""))
    ax.set_ylabel("std")
    ax.set_title("responses of 3x3 layers after BN, before the nonlinearity")
    return _save(fig, ax, path)


def block_of(variable_path: str) -> str:
    """The block a variable belongs to: `conv2_x/block1/conv1/kernel` -> `conv2_x/block1`;
    variables outside blocks group by their top layer (`conv1`, `predictions`)."""
    parts = variable_path.split("/")
    if len(parts) > 2 and parts[1].startswith("block"):
        return "/".join(parts[:2])
    return parts[0]


def gradient_norms(model: keras.Model, images, labels, loss=None) -> dict[str, float]:
    """L2 norm of the loss gradient per block (train-mode forward pass, no state changes:
    BN moving statistics are left as they were). `loss` defaults to the compiled loss."""
    loss = loss or model.loss
    if loss is None:
        raise ValueError("gradient_norms needs a `loss` or a compiled model")
    loss = keras.losses.get(loss) if isinstance(loss, str) else loss
    x = keras.ops.convert_to_tensor(np.asarray(images, np.float32))
    y = keras.ops.convert_to_tensor(np.asarray(labels))
    trainable = [v.value for v in model.trainable_variables]
    frozen = [v.value for v in model.non_trainable_variables]

    def compute(tv):
        out, _ = model.stateless_call(tv, frozen, x, training=True)
        return keras.ops.mean(loss(y, out))

    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        with tf.GradientTape() as tape:
            tape.watch(trainable)
            value = compute(trainable)
        grads = tape.gradient(value, trainable)
    elif backend == "jax":
        import jax

        grads = jax.grad(compute)(trainable)
    else:
        raise RuntimeError(f"gradient_norms supports the tensorflow and jax backends, not {backend}")
    sums: dict[str, float] = {}
    for v, g in zip(model.trainable_variables, grads, strict=True):
        if g is not None:
            block = block_of(v.path)
            sums[block] = sums.get(block, 0.0) + float(np.sum(np.square(np.asarray(g, np.float64))))
    return {k: float(np.sqrt(s)) for k, s in sums.items()}


class GradientNormLogger(keras.callbacks.Callback):
    """Per-block gradient norms on a fixed probe batch every `every` training steps.

    `steps` and `norms` (float64 [records, blocks], columns in `blocks` order) hold the
    record; `save(path)` writes them as `.npz`. A fixed batch makes the records comparable
    across steps (the training batches themselves change every step).
    """

    def __init__(self, images, labels, every: int = 100, loss=None):
        super().__init__()
        if every <= 0:
            raise ValueError(f"every must be positive, got {every}")
        self.images, self.labels, self.every, self.loss = images, labels, every, loss
        self.steps: list[int] = []
        self.blocks: list[str] = []
        self._rows: list[dict[str, float]] = []

    def _record(self, step: int) -> None:
        row = gradient_norms(self.model, self.images, self.labels, self.loss)
        if not self.blocks:
            self.blocks = list(row)
        self.steps.append(step)
        self._rows.append(row)

    def on_train_begin(self, logs=None):
        self._record(int(self.model.optimizer.iterations))

    def on_train_batch_end(self, batch, logs=None):
        step = int(self.model.optimizer.iterations)
        if step % self.every == 0:
            self._record(step)

    @property
    def norms(self) -> np.ndarray:
        return np.array([[r.get(b, np.nan) for b in self.blocks] for r in self._rows], np.float64)

    def save(self, path: str | os.PathLike) -> Path:
        np.savez(path, steps=np.asarray(self.steps), norms=self.norms,
                 blocks=np.asarray(self.blocks))  # fmt: skip
        return Path(path)


def plot_gradient_norms(logger: GradientNormLogger, path: str | os.PathLike) -> Path:
    """Gradient norm per block against block index, one line per recorded step."""
    plt = _matplotlib()
    norms = logger.norms
    fig, ax = plt.subplots(figsize=(7, 3.2))
    for step, row in zip(logger.steps, norms, strict=True):
        ax.semilogy(np.arange(len(row)), row, marker=".", label=f"step {step}")
    ax.set_xticks(np.arange(len(logger.blocks)), logger.blocks, rotation=90, fontsize=6)
    ax.set_ylabel("gradient L2 norm")
    return _save(fig, ax, path, legend_size=7)


def read_history(csv_path: str | os.PathLike) -> dict[str, np.ndarray]:
    """A Keras `CSVLogger` file as columns; a resumed run's repeated epochs keep the last row."""
    rows: dict[int, dict[str, str]] = {}
    with open(csv_path, newline="") as f:
        for row in csv.DictReader(f):
            if row.get("epoch", "epoch") != "epoch":  # header lines repeated by appends
                rows[int(row["epoch"])] = row
    epochs = sorted(rows)
    keys = [k for k in (rows[epochs[0]] if epochs else {}) if k != "epoch"]
    cols = {"epoch": np.asarray(epochs)}
    for k in keys:
        cols[k] = np.asarray([float(rows[e].get(k) or "nan") for e in epochs])
    return cols


def plot_error_curves(csv_path: str | os.PathLike, png_path: str | os.PathLike,
                      steps_per_epoch: int) -> Path | None:
    """Fig. 6 for one run: training error (dashed) and test error (bold) against iterations,
    and beside it the training and test loss when history.csv has them."""
    if not Path(csv_path).is_file():
        return None
    h = read_history(csv_path)
    if "accuracy" not in h or not len(h["epoch"]):
        return None
    plt = _matplotlib()
    steps = (h["epoch"] + 1) * steps_per_epoch
    fig, axes = plt.subplots(1, 2 if "loss" in h else 1, figsize=(9 if "loss" in h else 5, 3.2),
                             squeeze=False)
    ax = axes[0, 0]
    ax.plot(steps, 100 * (1 - h["accuracy"]), "--", label="training error")
    if "val_accuracy" in h:
        ax.plot(steps, 100 * (1 - h["val_accuracy"]), "-", lw=2, label="test error")
    ax.set_xlabel("iterations")
    ax.set_ylabel("error (%)")
    if "loss" in h:
        loss = axes[0, 1]
        loss.plot(steps, h["loss"], "--", label="training loss")
        if "val_loss" in h:
            loss.plot(steps, h["val_loss"], "-", lw=2, label="test loss")
        loss.set_xlabel("iterations")
        loss.set_ylabel("loss")
        loss.grid(alpha=0.3)
        loss.legend()
    return _save(fig, ax, png_path)


class ErrorCurvePlot(keras.callbacks.Callback):
    """Redraw `plot_error_curves` after every epoch (after the CSVLogger has written it)."""

    def __init__(self, csv_path: str | os.PathLike, png_path: str | os.PathLike,
                 steps_per_epoch: int):
        super().__init__()
        self.csv_path, self.png_path, self.steps_per_epoch = csv_path, png_path, steps_per_epoch

    def on_epoch_end(self, epoch, logs=None):
        plot_error_curves(self.csv_path, self.png_path, self.steps_per_epoch)
