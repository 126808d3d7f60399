"""The offline main job: train a small ResNet on synthetic shapes, evaluate, save, reload, use."""

from __future__ import annotations

import time
from pathlib import Path

import keras
import numpy as np

from . import models
from .data import shapes
from .flops import count_params


def _plot(history: dict, images, labels, predicted, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig = plt.figure(figsize=(12, 4))
    ax = fig.add_subplot(1, 3, 1)
    ax.plot(history["loss"], label="train")
    ax.plot(history["val_loss"], label="test")
    ax.set(title="loss", xlabel="epoch")
    ax.legend()
    ax = fig.add_subplot(1, 3, 2)
    ax.plot([100 * (1 - a) for a in history["accuracy"]], label="train")
    ax.plot([100 * (1 - a) for a in history["val_accuracy"]], label="test")
    ax.set(title="error (%)", xlabel="epoch")
    ax.legend()
    for i in range(8):
        ax = fig.add_subplot(4, 12, 12 * (i // 4) + 9 + i % 4)
        ax.imshow(images[i])
        ok = predicted[i] == labels[i]
        ax.set_title(shapes.CLASS_NAMES[predicted[i]], fontsize=7, color="green" if ok else "red")
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def run(out: str | Path = "demo_out", model_name: str = "resnet20", epochs: int = 5,
        num_train: int = 3000, num_test: int = 600, batch_size: int = 64,
        seed: int = 0, **overrides) -> dict:
    """Train `model_name` on the built-in shapes task and report what happened.

    `overrides` go to `build` (e.g. `depths=(1, 1, 1)` for a ResNet-8)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    keras.utils.set_random_seed(seed)
    start = time.time()
    print(f"[1/5] rendering {num_train} train + {num_test} test shape images (32x32, 3 classes)")
    x_train, y_train = shapes.classification_arrays(num_train, seed=seed, progress=True)
    x_test, y_test = shapes.classification_arrays(num_test, start=num_train, seed=seed,
                                                  progress=True)

    inputs = keras.Input((32, 32, 3), name="images")
    scaled = keras.layers.Rescaling(1 / 127.5, offset=-1.0, name="scale")(inputs)
    net = models.build(model_name, input_shape=(32, 32, 3), classes=len(shapes.CLASS_NAMES),
                       **overrides)
    model = keras.Model(inputs, net(scaled), name=f"{model_name}_shapes")
    print(f"[2/5] training {model_name} ({count_params(net):,} parameters) for {epochs} epochs")
    steps = epochs * (num_train // batch_size)
    schedule = keras.optimizers.schedules.CosineDecay(0.05, steps, warmup_target=None)
    model.compile(optimizer=keras.optimizers.SGD(schedule, momentum=0.9, nesterov=True),
                  loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    history = model.fit(x_train, y_train, batch_size=batch_size, epochs=epochs,
                        validation_data=(x_test, y_test), verbose=2).history

    print("[3/5] evaluating on held-out images")
    loss, accuracy = model.evaluate(x_test, y_test, batch_size=256, verbose=0)
    path = out / f"{model_name}_shapes.keras"
    print(f"[4/5] saving {path} and reloading it")
    model.save(path)
    reloaded = keras.saving.load_model(path)
    before = model.predict(x_test[:256], verbose=0)
    after = reloaded.predict(x_test[:256], verbose=0)
    max_diff = float(np.abs(before - after).max())
    if max_diff > 1e-5:
        raise RuntimeError(f"reloaded model disagrees with the trained one (max diff {max_diff})")

    print("[5/5] using the reloaded model on new images")
    predicted = after.argmax(-1)
    figure = out / "demo.png"
    _plot(history, x_test, y_test, predicted, figure)
    result = {"model": model_name, "test_accuracy": float(accuracy), "test_loss": float(loss),
              "reload_max_abs_diff": max_diff, "saved_model": str(path), "figure": str(figure),
              "seconds": round(time.time() - start, 1)}
    for i in range(5):
        print(f"  image {num_train + i}: predicted {shapes.CLASS_NAMES[predicted[i]]:8s} "
              f"(truth {shapes.CLASS_NAMES[y_test[i]]}, p={after[i].max():.2f})")
    print(f"test accuracy = {accuracy:.3f} ({model_name}, {epochs} epochs, "
          f"{result['seconds']} s); reload max |diff| = {max_diff:.1e}; "
          f"wrote {path} and {figure}")
    return result
