"""One-epoch CIFAR benchmark: input-pipeline images/s against training-step images/s, and the
test accuracy reached (issue 4, "must show": resnet20 / paper-cifar, >= 40% after one epoch).

    keras-resnet-suite benchmark --data ../shared/data/cifar10-jpeg.tar.gz

It runs through the command line (`keras_resnet_suite.cli`), which chooses TensorFlow's CPU
kernels before TensorFlow loads; this module imports Keras, so it is not an entry point itself.
"""

from __future__ import annotations

import argparse
import json
import time

import keras

from keras_resnet_suite import data, training
from keras_resnet_suite.models import build
from keras_resnet_suite.train_flags import configure_benchmark


class _StepTimer(keras.callbacks.Callback):
    """Wall time of training steps after the first `skip` (tracing and compilation)."""

    def __init__(self, skip: int = 5):
        super().__init__()
        self.skip, self.count, self.start, self.elapsed = skip, 0, None, 0.0

    def on_train_batch_begin(self, batch, logs=None):
        if self.count == self.skip:
            self.start = time.perf_counter()

    def on_train_batch_end(self, batch, logs=None):
        self.count += 1

    def on_train_end(self, logs=None):
        if self.start is not None:
            self.elapsed = time.perf_counter() - self.start


def pipeline_rate(dataset, batch_size: int, batches: int = 200) -> float:
    """Images per second the training stream delivers on its own."""
    it = iter(dataset)
    next(it)  # start-up (threads, buffers) is not throughput
    t = time.perf_counter()
    for _ in range(batches):
        next(it)
    return batches * batch_size / (time.perf_counter() - t)


def main(argv: list[str] | None = None) -> dict:
    """Parse `argv` and run the benchmark in this process (TensorFlow's kernels as loaded)."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    configure_benchmark(p)
    return run(p.parse_args(argv))


def run(a: argparse.Namespace) -> dict:
    """One epoch of `a.model` on CIFAR-10: the figures as a dict, also printed as JSON."""
    jit = {"auto": "auto", "true": True, "false": False}[a.jit_compile]

    keras.utils.set_random_seed(a.seed)
    ds = data.cifar(a.data, batch_size=a.batch_size, seed=a.seed)
    print(ds.report.summary())
    pipe = pipeline_rate(ds.train, a.batch_size)
    recipe = training.get_recipe(
        a.recipe,
        global_batch_size=a.batch_size,
        steps_per_epoch=ds.steps_per_epoch,
        jit_compile=jit,
    )
    recipe.apply_precision()
    model = build(a.model, classes=ds.num_classes)
    recipe.compile(model)
    # Tracing and compilation fill the first steps; a run too short to skip 5 times 1 step.
    timer = _StepTimer(skip=min(5, max(ds.steps_per_epoch * a.epochs - 1, 0)))
    t = time.perf_counter()
    model.fit(
        recipe.prepare(ds.train, ds.num_classes),
        steps_per_epoch=ds.steps_per_epoch,
        epochs=a.epochs,
        callbacks=[timer, *recipe.callbacks()],
        verbose=2,
        shuffle=False,
    )
    fit_s = time.perf_counter() - t
    train_rate = (timer.count - timer.skip) * a.batch_size / max(timer.elapsed, 1e-9)
    scores = model.evaluate(ds.test, return_dict=True, verbose=0)
    result = {
        "model": a.model,
        "recipe": a.recipe,
        "epochs": a.epochs,
        "batch_size": a.batch_size,
        "test_accuracy": round(float(scores["accuracy"]), 4),
        "fit_seconds": round(fit_s, 1),
        "pipeline_images_per_s": round(pipe),
        "train_images_per_s": round(train_rate),
        "pipeline_over_train": round(pipe / train_rate, 2),
    }
    print(json.dumps(result, indent=2))
    return result
