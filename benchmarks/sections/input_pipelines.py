"""The CIFAR-10 input pipeline against the ResNet-20 step it feeds (the VOC one runs with the
detection section)."""

from __future__ import annotations

from benchmarks import pipelines, settings
from benchmarks.suite import Suite, plan, setting_checks
from benchmarks.targets import TARGETS

BATCH = 128
PIPELINE, STEP = "cifar pipeline", "resnet20 train step"


def cifar(suite: Suite) -> None:
    """Images/s of the pipeline over `cifar_batches` batches against one training step."""
    root = pipelines.data_dir()
    archive = root / "cifar10-jpeg.tar.gz" if root else None
    if archive is None or not archive.is_file():
        suite.skipped.append("CIFAR pipeline: ../shared/data/cifar10-jpeg.tar.gz not found "
                             "(set KRS_DATA_DIR)")
        return
    both, batches = [PIPELINE, STEP], suite.mode.cifar_batches
    rows = suite.compare_remote("input pipeline", "cifar",
                                plan(suite, both, both, [], archive=str(archive), batch=BATCH,
                                     batches=batches),
                                settings.label(STEP, suite.tf_default), model="resnet20 / CIFAR",
                                batch=BATCH, input_size="32x32", dtype="float32",
                                items=lambda n: BATCH * (batches if n == PIPELINE else 1))
    suite.check("CIFAR pipeline / ResNet-20 training step", rows,
                settings.label(PIPELINE, settings.ON), TARGETS["pipeline vs step"],
                versus=settings.label(STEP, settings.ON))
    setting_checks(suite, "CIFAR", rows, both)
