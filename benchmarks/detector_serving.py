"""The detector's SavedModel, one photo per request: oneDNN on and off, against torchvision.

    python -m benchmarks.detector_serving [--rounds 3] [--repeats 2] [--case tv_r50_fpn_v1]
    python -m benchmarks.detector_serving --masks   # the Mask R-CNN, detection_masks served

Our R50-FPN with the parity tests' seeded weights (`benchmarks.pretrained.seeded_detector`) is
exported once with `detection.export.export_saved_model`, then served from
`tf.saved_model.load` (`serving_default`, uint8 photo, its reference canvas) in one process
per TensorFlow setting; torchvision runs the same weights in a torch-only process. Every
round starts the three contenders afresh in a rotating order and times `--repeats` requests
of each after one warm-up request, so a noisy neighbour or a spinning thread pool of one
contender never sits beside another's timed calls. Results:
`benchmarks/results/detector-serving-<host>-<date>.{json,md}` (`mask-serving-...` with `--masks`:
the Mask R-CNN of the same parts with torchvision's seeded Mask R-CNN weights, against
`maskrcnn_resnet50_fpn`; the same detections on both sides, so each mask head runs as often).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.settings import fresh_process

REPO = Path(__file__).resolve().parents[1]
SETTINGS = {"ours SavedModel, oneDNN on": "1", "ours SavedModel, oneDNN off": "0"}
PEER = "torchvision 0.29 (eager)"
MASKS = {"tv_r50_fpn_v1": "tv_mask_r50_fpn_v1"}  # --masks: the Mask R-CNN of the same parts


def _export(case: str, out: str, masks: bool) -> None:
    from benchmarks.pretrained import seeded_detector
    from detection import MaskRCNN
    from detection.export import export_saved_model

    model, _pixels, size = (seeded_detector(case, MaskRCNN, masks=MASKS[case]) if masks
                            else seeded_detector(case))
    export_saved_model(model, out)
    print(json.dumps({"canvas": list(size)}), flush=True)


def _serve(case: str, path: str, repeats: int) -> None:
    import tensorflow as tf

    from benchmarks.pretrained import photo
    from keras_resnet_suite import runtime

    serve = tf.saved_model.load(path).signatures["serving_default"]
    images = tf.constant(photo(case)[None])
    serve(images=images)  # warm-up: graph optimisation
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        serve(images=images)["num_detections"].numpy()
        times.append(time.perf_counter() - start)
    print(json.dumps({"times_s": times, "tensorflow": runtime.describe()}), flush=True)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--case", default="tv_r50_fpn_v1", choices=["tv_r50_fpn_v1"])
    p.add_argument("--rounds", type=int, default=3, help="rounds of the three contenders")
    p.add_argument("--repeats", type=int, default=2, help="timed requests per contender and round")
    p.add_argument("--python", default=os.environ.get("KRS_TORCH_PYTHON", sys.executable),
                   help="interpreter with torch and torchvision")
    p.add_argument("--masks", action="store_true",
                   help="the Mask R-CNN (with detection_masks) against torchvision's")
    p.add_argument("--out", default=str(REPO / "benchmarks" / "results"))
    p.add_argument("--export", help=argparse.SUPPRESS)  # worker modes
    p.add_argument("--serve", help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a.export:
        return _export(a.case, a.export, a.masks) or 0
    if a.serve:
        return _serve(a.case, a.serve, a.repeats) or 0
    from benchmarks.pretrained import reference_times

    module = ["-m", "benchmarks.detector_serving", "--case", a.case, "--repeats", str(a.repeats),
              *(["--masks"] if a.masks else [])]
    reference = MASKS[a.case] if a.masks else a.case
    times: dict[str, list[float]] = {name: [] for name in [*SETTINGS, PEER]}
    described = {}
    with tempfile.TemporaryDirectory(prefix="krs-det-serving-") as tmp:
        path = str(Path(tmp) / "saved_model")
        canvas = fresh_process([sys.executable, *module, "--export", path],
                               {"TF_ENABLE_ONEDNN_OPTS": "1"})["canvas"]
        print(f"exported {a.case} at canvas {canvas[0]}x{canvas[1]}", flush=True)
        names = list(times)
        for r in range(a.rounds):
            for name in names[r % 3:] + names[: r % 3]:
                if name == PEER:
                    times[name] += reference_times(reference, a.repeats, a.python)
                else:
                    got = fresh_process([sys.executable, *module, "--serve", path],
                                        {"TF_ENABLE_ONEDNN_OPTS": SETTINGS[name]})
                    times[name] += got["times_s"]
                    described[name] = got["tensorflow"]
                print(f"round {r + 1}: {name} {statistics.median(times[name]):.2f} s", flush=True)
    medians = {k: statistics.median(v) for k, v in times.items()}
    on, off = SETTINGS
    rows = [{"contender": k, "median_s": m, "times_s": times[k],
             "peer_over_ours": medians[PEER] / m if k != PEER else 1.0,
             "tensorflow": described.get(k, "")} for k, m in medians.items()]
    result = {"case": reference, "canvas": canvas, "rounds": a.rounds, "repeats": a.repeats,
              "rows": rows, "off_over_on": medians[off] / medians[on],
              "cpu": cpu_isa(), "load": os.getloadavg()}
    kind = "mask-serving" if a.masks else "detector-serving"
    stem = f"{kind}-{platform.node() or 'host'}-{datetime.date.today()}"
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{stem}.json").write_text(json.dumps(result, indent=2))
    lines = [f"Detector SavedModel, {reference}, one photo at {canvas[0]}x{canvas[1]}, "
             f"{result['cpu']}; medians of {a.rounds} x {a.repeats} requests",
             "", "| contender | s / image | torchvision / this |", "| --- | --- | --- |"]
    lines += [f"| {r['contender']} | {r['median_s']:.2f} | {r['peer_over_ours']:.2f}x |"
              for r in rows]
    (out / f"{stem}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


def cpu_isa() -> str:
    """What oneDNN may use here: the CPU's AVX-512 or AVX2, and an ONEDNN_MAX_CPU_ISA cap."""
    from keras_resnet_suite.runtime import onednn_has_avx512

    cap = os.environ.get("ONEDNN_MAX_CPU_ISA")
    isa = "AVX-512" if onednn_has_avx512() else "AVX2"
    return f"oneDNN ISA {isa}" + (f" (capped: ONEDNN_MAX_CPU_ISA={cap})" if cap else "")


if __name__ == "__main__":
    raise SystemExit(main())
