"""Serving one request: our SavedModel (BN folded, the exporter's default, and not) against
keras.applications' through the same exporter, each with oneDNN on and off; ours and
keras.applications through Keras' `model.export` in ONNX Runtime and OpenVINO; torchvision
eager."""

from __future__ import annotations

import time
from pathlib import Path

from benchmarks import peers, settings
from benchmarks import serving as exports
from benchmarks.sections.classification import same_architecture_checks
from benchmarks.suite import Suite, plan, setting_checks
from benchmarks.targets import TARGETS
from keras_resnet_suite.runtime import onednn_pays_off

FOLDED, APPS = "ours SavedModel, BN folded", "keras.applications SavedModel"


def serving(suite: Suite) -> None:
    """Export every contender once in a worker, then time each serving batch of the mode."""
    if exports.exporter() is None:
        suite.skipped.append("SavedModel serving: keras_resnet_suite.export.export_saved_model "
                             "does not exist yet")
        return
    for runtime, why in exports.available_runtimes().items():
        suite.skipped.append(f"{runtime} serving: {why}")
    # The peers have no project blocks, so the exporter cannot fold their BNs: they are
    # exported exactly as ours is without folding. The stride_in_1x1 variant has
    # keras.applications' FLOPs (v1); keras-hub, where installed, has our default's (v1.5).
    hub = suite.mode.with_hub and peers.installed("keras_hub")
    with exports.temp_dir() as tmp:
        t = time.perf_counter()
        exporter = suite.pool.get(settings.ON if settings.ON in suite.settings else settings.OFF)
        paths = exporter.request("call", fn="export_serving",
                                 args={"workdir": tmp, "hub": hub})["result"]
        suite.log(f"exported {len(paths)} models in {time.perf_counter() - t:.1f} s")
        for batch in suite.mode.serving_batches:
            serving_batch(suite, paths, batch)


def serving_batch(suite: Suite, paths: dict[str, str], batch: int) -> None:
    """One serving figure: every exported contender at `batch` images per request."""
    saved = [k for k, v in paths.items() if Path(v).is_dir()]
    files = [k for k in paths if k not in saved]
    torch = [peers.TORCHVISION] if peers.torchvision_wanted() else []
    rows = suite.compare_remote(
        "SavedModel serving", "serving",
        plan(suite, saved, [FOLDED, "ours SavedModel", APPS, *files], torch, paths=paths,
             batch=batch), settings.label(APPS, suite.tf_default),
        model="resnet50", batch=batch, input_size="224x224", dtype="float32",
        extra={"latency_ms": None})
    for r in rows:
        r["latency_ms"] = round(r["median_s"] * 1000, 2)
    # Ours as our commands run it: the default export, under the setting the library
    # picks for this batch on this CPU (runtime.onednn_pays_off).
    ours = settings.label(FOLDED, settings.ON if onednn_pays_off(batch) else settings.OFF)
    suite.check(f"SavedModel batch {batch}: {ours} / keras.applications as users get "
                f"it ({suite.tf_default})", rows, ours, TARGETS["SavedModel vs keras.applications"])
    if torch:
        suite.check(f"SavedModel batch {batch}: {ours} / torchvision eager", rows, ours,
                    TARGETS["SavedModel vs torchvision"], versus=peers.TORCHVISION)
    fastest_path_check(suite, f"SavedModel batch {batch}", rows, ours)
    runtime_checks(suite, f"batch {batch}", rows)
    on_label = lambda name: settings.label(name, settings.ON)  # noqa: E731
    same_architecture_checks(
        suite, f"SavedModel batch {batch}, BN-folded", rows, "SavedModel same architecture",
        ours=ours, ours_v1=on_label("ours (stride_in_1x1) SavedModel, BN folded"),
        keras_apps=on_label(APPS), keras_hub=on_label("keras-hub SavedModel"))
    setting_checks(suite, f"SavedModel batch {batch}", rows, [FOLDED, APPS])


def fastest_path_check(suite: Suite, figure: str, rows: list, ours: str) -> None:
    """Our default SavedModel against the fastest TensorFlow way to serve the same model
    (folded or not, oneDNN on or off): within 1.1x, i.e. a speed ratio >= 1 / 1.1."""
    mine = [r for r in rows if r["contender"].startswith("ours SavedModel")]
    if not mine:
        return
    best = min(mine, key=lambda r: r["median_s"])
    suite.check(f"{figure}: {ours} / the fastest TensorFlow path of the same model "
                f"({best['contender']})", rows, ours, TARGETS["SavedModel vs its fastest path"],
                versus=best["contender"])


def runtime_checks(suite: Suite, figure: str, rows: list) -> None:
    """Ours against keras.applications inside each CPU runtime (the same engine for both)."""
    names = {r["contender"] for r in rows}
    for runtime in exports.RUNTIMES:
        ours, theirs = (exports.runtime_label(m, runtime) for m in (peers.OURS, peers.KERAS_APPS))
        if ours in names and theirs in names:
            suite.check(f"{runtime} {figure}: ours / keras.applications in the same runtime",
                        rows, ours, TARGETS["runtime vs keras.applications"], versus=theirs)
