"""Input pipelines against the training step they feed.

CIFAR-10 (keras_resnet_suite.data, paper augmentation) feeds a ResNet-20 step at batch 128;
the raccoon VOC set (detection.data, decode + canvas resize + flip) feeds a Faster R-CNN step.
"""

from __future__ import annotations

import os
from pathlib import Path

from benchmarks.timing import Case

REPO = Path(__file__).resolve().parents[1]


def data_dir() -> Path | None:
    """`$KRS_DATA_DIR`, else `../shared/data` beside the repository (as the tests look)."""
    env = os.environ.get("KRS_DATA_DIR")
    path = Path(env) if env else REPO.parent / "shared" / "data"
    return path if path.is_dir() else None


def stream_case(name: str, dataset, batch: int, batches: int) -> Case:
    """Pull `batches` batches from one long-lived iterator per run (start-up is not throughput)."""
    it = iter(dataset.repeat())
    next(it)

    def run():
        for _ in range(batches):
            next(it)

    return Case(name, run, items=batch * batches)


def cifar_cases(archive: Path, batch: int, batches: int) -> list[Case]:
    """The CIFAR-10 training stream and the ResNet-20 training step it feeds (paper Sec. 4.2)."""
    import keras

    import keras_resnet_suite as krs
    from keras_resnet_suite import data

    ds = data.cifar(str(archive), batch_size=batch, seed=0)
    x, y = next(iter(ds.train))
    model = krs.build("resnet20", classes=ds.num_classes)
    model.compile(optimizer=keras.optimizers.SGD(0.1, momentum=0.9),
                  loss="sparse_categorical_crossentropy", jit_compile=False)
    return [stream_case("cifar pipeline", ds.train, batch, batches),
            Case("resnet20 train step", lambda: model.train_on_batch(x, y), items=batch)]


def voc_training_batches(voc_dir: Path, canvas: tuple[int, int], batch: int):
    """The raccoon train split as FasterRCNN.fit receives it: decoded, on the canvas, flipped."""
    from detection.data import voc
    from detection.data.pipeline import training_batches

    ds = voc(str(voc_dir), year=2007, split="train", class_names=["raccoon"], shuffle=True,
             seed=0, verbose=False)
    return training_batches(ds, canvas, batch, flip=True, shuffle=64, seed=0, repeat=True)
