"""A contender process: `python -m benchmarks.worker`, driven by `benchmarks.settings`.

TensorFlow reads `TF_ENABLE_ONEDNN_OPTS` once, at import, so oneDNN on and off can only be
compared across processes. Each worker runs under one setting, builds the contenders of one
figure at a time and times single calls on request, so that the driver can alternate calls of
different processes round by round, exactly as `timing.alternate` does within one.

Protocol: one JSON object per line on stdin, one JSON answer per line on the original stdout
(what the libraries print goes to stderr):
    {"op": "setup", "figure": "classify-infer", "args": {...}} -> {"cases": [names]}
    {"op": "run", "case": name} -> {"wall": s, "cpu": s, "peak_rss_mb": ..., "delta_rss_mb": ...}
    {"op": "call", "fn": "export_serving", "args": {...}} -> {"result": ...}
    {"op": "free"} -> {}      {"op": "quit"} -> (exits)
Errors answer {"error": "..."} and leave the worker serving.
"""

from __future__ import annotations

import gc
import json
import os
import random
import sys
import traceback
from pathlib import Path

import numpy as np

from benchmarks.timing import Case, _call

# The benchmark modules a figure needs are imported inside its function: they load Keras and
# TensorFlow, which must come after torch in the torch worker (see `main`).
ROLE_ENV = "KRS_BENCH_ROLE"  # "torch": import torch/torchvision before TensorFlow


class State:
    """What one worker holds between requests: models by depth, and the figure's cases."""

    def __init__(self) -> None:
        self.models: dict = {}
        self.cases: dict[str, Case] = {}
        self.keep: list = []  # objects the cases need alive (loaded SavedModels, datasets)

    def free(self) -> None:
        self.models, self.cases, self.keep = {}, {}, []
        if "keras" in sys.modules:
            sys.modules["keras"].backend.clear_session()
        gc.collect()


def _keras_models(state: State, depth: int, contenders: list[str]) -> dict:
    from benchmarks import peers

    builders = peers.keras_peers(depth, with_v1=peers.OURS_V1 in contenders,
                                 with_hub=peers.KERAS_HUB in contenders,
                                 with_bf16=peers.OURS_BF16 in contenders)
    for name in contenders:
        if name in builders and (depth, name) not in state.models:
            state.models[(depth, name)] = builders[name]()
    return {n: state.models[(depth, n)] for n in contenders if (depth, n) in state.models}


def classify(state: State, depth: int, batch: int, contenders: list[str], train: bool,
             size: int = 224) -> list[Case]:
    """ResNet inference (`predict_on_batch`) or training steps (`train_on_batch`)."""
    from benchmarks import classify, peers

    cases = []
    torch_names = [n for n in contenders if n in (peers.TORCHVISION, peers.TORCHVISION_BF16)]
    keras_names = [n for n in contenders if n not in torch_names]
    if keras_names:
        models = _keras_models(state, depth, keras_names)
        make = classify.training_cases if train else classify.inference_cases
        cases += make(models, batch, size)
    for name in torch_names:
        cases += classify.torchvision_cases(depth, batch, train=train, size=size,
                                            bf16=name == peers.TORCHVISION_BF16)
    return cases


def serving(state: State, paths: dict[str, str], batch: int, contenders: list[str]) -> list[Case]:
    """Requests of `batch` float images against the exported SavedModels and runtime files
    named `contenders`, and torchvision's eager model where named."""
    from benchmarks import classify, peers
    from benchmarks import serving as exports

    saved = {k: Path(v) for k, v in paths.items() if k in contenders and Path(v).is_dir()}
    files = {k: v for k, v in paths.items() if k in contenders and not Path(v).is_dir()}
    cases, keep = exports.serving_cases(saved, batch)
    more, keep_more = exports.runtime_cases(files, batch)
    state.keep += keep + keep_more
    if peers.TORCHVISION in contenders:
        more += classify.torchvision_cases(50, batch, train=False)
    return cases + more


def cifar(state: State, archive: str, batch: int, batches: int,
          contenders: list[str]) -> list[Case]:
    """The CIFAR-10 stream and the ResNet-20 step it feeds (those named in `contenders`)."""
    from benchmarks import pipelines

    cases = pipelines.cifar_cases(Path(archive), batch, batches)
    return [c for c in cases if c.name in contenders]


def detection(state: State, backbone: str, head: str, contenders: list[str], train: bool,
              voc_dir: str, stream_batches: int = 20) -> list[Case]:
    """Faster R-CNN inference or a training step (ours, torchvision's), and the VOC stream."""
    from benchmarks import detect, pipelines

    voc = pipelines.voc_training_batches(Path(voc_dir), detect.CANVAS, 1)
    real_batch = next(iter(voc))
    state.keep.append(voc)
    cases = []
    if "ours" in contenders:
        key = ("detection", backbone, head)
        if key not in state.models:
            state.models[key] = detect.build(backbone, head)
        model = state.models[key]
        cases.append(detect.train_case("ours", model, real_batch) if train
                     else detect.predict_case("ours", model))
    if "torchvision" in contenders:
        peer = detect.torchvision_cases(real_batch)
        if peer is not None:
            cases.append(Case("torchvision", peer[int(train)].run, items=1))
    if "voc pipeline" in contenders:
        cases.append(pipelines.stream_case("voc pipeline", voc, 1, stream_batches))
    return cases


def mask_rcnn(state: State, contenders: list[str]) -> list[Case]:
    """Mask R-CNN R50-FPN inference on one COCO photo (`benchmarks.mask_rcnn`): ours with and
    without masks under TensorFlow, torchvision's and detectron2's in the torch worker."""
    from benchmarks import mask_rcnn as masks

    return masks.cases(contenders, state.models)


def gemm(state: State, contenders: list[str], n: int = 0) -> list[Case]:
    """The GEMM rate of this worker's framework (`benchmarks.ceiling`)."""
    from benchmarks import ceiling

    n = n or ceiling.GEMM_N
    if os.environ.get(ROLE_ENV) == "torch":
        return ceiling.torch_cases(contenders, n)
    return ceiling.tensorflow_cases(contenders, n)


FIGURES = {
    "classify-infer": lambda s, **a: classify(s, train=False, **a),
    "classify-train": lambda s, **a: classify(s, train=True, **a),
    "serving": serving,
    "cifar": cifar,
    "detection-infer": lambda s, **a: detection(s, train=False, **a),
    "detection-train": lambda s, **a: detection(s, train=True, **a),
    "mask-rcnn-infer": mask_rcnn,
    "gemm": gemm,
}


def export_serving(state: State, workdir: str, hub: bool = False) -> dict[str, str]:
    """Export ours (BN folded and not, and the stride_in_1x1 variant folded), keras.applications
    and keras-hub (when asked and installed) through the project's exporter, and ours and
    keras.applications through Keras' `model.export` into each installed CPU runtime."""
    import keras

    import keras_resnet_suite as krs
    from benchmarks import peers
    from benchmarks import serving as exports

    models = {peers.OURS: krs.build("resnet50"),
              peers.OURS_V1: krs.build("resnet50", stride_in_1x1=True),
              peers.KERAS_APPS: keras.applications.ResNet50(weights=None)}
    variants = {"ours SavedModel, BN folded": (peers.OURS, True),
                "ours SavedModel": (peers.OURS, False),
                "ours (stride_in_1x1) SavedModel, BN folded": (peers.OURS_V1, True),
                "keras.applications SavedModel": (peers.KERAS_APPS, False)}
    builder = peers.keras_peers(50, with_hub=hub).get(peers.KERAS_HUB) if hub else None
    if builder is not None:
        models[peers.KERAS_HUB] = builder()
        variants["keras-hub SavedModel"] = (peers.KERAS_HUB, False)
    paths = exports.export_all(models, variants, Path(workdir))
    pair = {name: models[name] for name in (peers.OURS, peers.KERAS_APPS)}
    runtimes = exports.export_runtimes(pair, Path(workdir))
    paths = {**paths, **runtimes}
    del models
    state.free()
    return {k: str(v) for k, v in paths.items()}


def info(state: State) -> dict:
    """The worker's setting as TensorFlow sees it, and torch's thread count where loaded."""
    out: dict = {"env": os.environ.get("TF_ENABLE_ONEDNN_OPTS")}
    if "tensorflow" in sys.modules:
        from keras_resnet_suite.runtime import onednn_enabled

        out["onednn"] = onednn_enabled()
    if "torch" in sys.modules:
        out["torch_threads"] = sys.modules["torch"].get_num_threads()
    return out


def mask_counts(state: State) -> dict[str, int]:
    """Detections each Mask R-CNN contender of this worker returned on its last call."""
    from benchmarks import mask_rcnn as masks

    return dict(masks.COUNTS)


CALLS = {"export_serving": export_serving, "info": info, "mask_counts": mask_counts}


def handle(state: State, req: dict) -> dict:
    """Answer one request (see the module docstring)."""
    op = req["op"]
    if op == "setup":
        state.cases = {}
        cases = FIGURES[req["figure"]](state, **req.get("args", {}))
        state.cases = {c.name: c for c in cases}
        return {"cases": list(state.cases)}
    if op == "run":
        case = state.cases[req["case"]]
        wall, cpu = _call(case)
        return {"wall": wall, "cpu": cpu, "peak_rss_mb": case.peak_rss_mb,
                "delta_rss_mb": case.delta_rss_mb}
    if op == "call":
        return {"result": CALLS[req["fn"]](state, **req.get("args", {}))}
    if op == "free":
        state.free()
        return {}
    raise ValueError(f"unknown op {op!r}")


def main() -> int:
    # The protocol keeps the real stdout; anything the libraries print goes to stderr.
    channel = os.fdopen(os.dup(sys.stdout.fileno()), "w", buffering=1)
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    if os.environ.get(ROLE_ENV) == "torch":  # the other order segfaults (see run.py)
        import torch
        import torchvision.models  # noqa: F401

        # Keras (and TensorFlow) only where a figure imports it: the Mask R-CNN peers run
        # in a process without TensorFlow. torch cases seed themselves.
        random.seed(0)
        np.random.seed(0)
        torch.manual_seed(0)  # as keras.utils.set_random_seed does where torch is loaded
    else:
        import keras

        keras.utils.set_random_seed(0)
    state = State()
    for line in sys.stdin:
        req = json.loads(line)
        if req.get("op") == "quit":
            break
        try:
            answer = handle(state, req)
        except Exception as exc:  # report, keep serving: the driver skips the figure
            traceback.print_exc()
            answer = {"error": f"{type(exc).__name__}: {exc}"}
        channel.write(json.dumps(answer) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
