"""Cost to the first batch of a detection training stream resumed at step 10, 1,000, 10,000.

    python -m benchmarks.resume_cost [--images 64] [--old-max 1000] [--out benchmarks/results]

A VOC-layout set of `--images` 64x64 JPEGs is written to a temporary folder; the training
stream of `detection.engine.train` (augmentation, multi-scale canvas, batch 2) is built at
each step and timed to its first batch (median of 3, after one warm-up). "positioned" is the
stream as trained (`detection.data.resume`: the step's epoch and offset are computed);
"skip" is the former `batches(split).skip(step)` (every skipped batch decoded, augmented and
put on the canvas), for steps up to `--old-max`. "indices at COCO size" times the first
(position, image) pair of the seeded order over 118,287 images at batch 16 (one permutation
of the epoch: the part that grows with the data set, not with the step).
Results: `benchmarks/results/resume-cost-<host>-<date>.{json,md}`.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import tempfile
import time
from pathlib import Path

STEPS = (10, 1_000, 10_000)


def _config(root: Path, images: int):
    import yaml

    from detection.config import load_config
    from detection.data.synthetic import CLASS_NAMES, write_voc

    write_voc(root / "VOC2007", images, "train", image_size=64, seed=0)
    config = {"name": "resume-cost", "model": {"backbone": "resnet18", "image_size": [64, 64]},
              "data": {"num_classes": len(CLASS_NAMES), "class_names": list(CLASS_NAMES),
                       "train": {"loader": "voc", "data_dir": str(root), "year": 2007,
                                 "split": "train"},
                       "augment": {"flip": True, "sizes": [48, 64]}, "max_boxes": 8,
                       "seed": 0},
              "train": {"batch_size": 2, "steps": 10, "learning_rate": 0.01}}
    path = root / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return load_config(path)


def _first_batch_s(make, step: int, repeats: int = 3) -> float:
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        next(iter(make(step)))
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def _streams(config):
    from detection.data.build import dataset_from_config
    from detection.engine.train import _train_stream

    def base(positioned: bool):
        ds = dataset_from_config(config.data.train, config.class_names(), shuffle=True,
                                 seed=config.data.seed, verbose=False)
        if not positioned:
            del ds.element_at  # the former stream: batches(split).skip(step)
        return ds

    positioned = _train_stream(config, base(True), 2)

    def skipping(step):  # a fresh split each call, as that stream needed
        return _train_stream(config, base(False), 2)(step)

    return positioned, skipping


def _indices_at_coco_size(steps=(10, 1_000, 10_000, 80_000)) -> dict:
    from detection.data.resume import stream_indices

    out = {}
    for step in steps:
        out[str(step)] = _first_batch_s(
            lambda s: stream_indices(118_287, s * 16, seed=0).take(1), step)
    return out


def measure(images: int = 64, old_max: int = 1_000) -> dict:
    """The timings (seconds to the first batch) per stream and step."""
    with tempfile.TemporaryDirectory() as tmp:
        config = _config(Path(tmp), images)
        positioned, skipping = _streams(config)
        next(iter(positioned(0)))  # warm-up: tracing, thread pools
        new = {str(s): _first_batch_s(positioned, s) for s in STEPS}
        old = {str(s): _first_batch_s(skipping, s, repeats=1) for s in STEPS if s <= old_max}
    spread = max(new.values()) / min(new.values())
    return {"host": platform.node() or "host", "date": time.strftime("%Y-%m-%d"),
            "images": images, "batch": 2, "positioned_s": new, "skip_s": old,
            "positioned_spread": spread, "target_spread": 1.5, "ok": spread <= 1.5,
            "indices_at_coco_size_s": _indices_at_coco_size()}


def markdown(r: dict) -> str:
    lines = [f"Resume cost to the first batch, {r['host']} {r['date']} ({r['images']} images "
             f"64x64, batch {r['batch']}; median of 3, seconds)", "",
             "| step | positioned (as trained) | former .skip(step) |", "|---|---|---|"]
    for step, s in r["positioned_s"].items():
        old = r["skip_s"].get(step)
        lines.append(f"| {int(step):,} | {s:.3f} | {'' if old is None else f'{old:.3f}'} |")
    lines += ["", "(former .skip(step): one run each, re-reading the split's XMLs as that "
              "stream did on every call; the machine's other load shows in both columns)"]
    lines += ["", f"positioned: slowest / fastest = {r['positioned_spread']:.2f} "
              f"(target <= {r['target_spread']}): {'ok' if r['ok'] else 'MISSED'}", "",
              "First (position, image) pair of the seeded order at COCO size (118,287 images, "
              "batch 16):", "", "| step | seconds |", "|---|---|"]
    lines += [f"| {int(k):,} | {v:.3f} |" for k, v in r["indices_at_coco_size_s"].items()]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=64)
    parser.add_argument("--old-max", type=int, default=1_000,
                        help="time the former .skip(step) stream up to this step")
    parser.add_argument("--out", default=str(Path(__file__).resolve().parent / "results"))
    args = parser.parse_args(argv)
    result = measure(args.images, args.old_max)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stem = f"resume-cost-{result['host']}-{result['date']}"
    (out / f"{stem}.json").write_text(json.dumps(result, indent=1) + "\n")
    (out / f"{stem}.md").write_text(markdown(result))
    print(markdown(result), end="")
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
