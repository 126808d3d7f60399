"""TFRecord shards: write rate, and training input from shards vs from the COCO JSON.

    python -m benchmarks.records [--images 1000] [--shards 8] [--batches 60] [--fit-steps 20]
                                 [--out benchmarks/results]

A COCO JSON of `--images` 64x48 JPEGs (1-3 polygon objects each) is written to a temporary
folder. Write: the split parsed (`coco_records`, masks as RLE) and written as `--shards` files
(`write_split`: serialise, write, SHA-256, read back with CRCs, count), CPU seconds of this
process (all threads). Training input: the `train` command's stream (`_train_stream`: augment,
multi-scale canvas, batch 4) from the JSON and from the shards, timed to `--batches` batches in
alternating rounds (JSON, shards, JSON, shards) in one process, plus the CPU to open each
(parse + image checks vs the manifest). `--fit-steps`: a tiny detector trained that many steps
from each (Keras `fit`, same model and seed). `run(...) -> dict` is what `benchmarks.scale`
calls. Results: `benchmarks/results/records-<host>-<date>.{json,md}`.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import tempfile
import time
from pathlib import Path

import numpy as np

TARGET_WRITE = 200.0  # images per CPU second (per core), 64x48 images


def cpu_s() -> float:
    """User + system CPU seconds of this process so far (every thread)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def write_coco(root: Path, images: int, seed: int = 0, size: tuple[int, int] = (64, 48)) -> Path:
    """A COCO JSON of `images` random `size` (width, height) JPEGs with 1-3 polygon objects
    each (boxes drawn in the top-left 64x48)."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    entries, annotations = [], []
    for i in range(images):
        pixels = rng.integers(0, 255, (size[1], size[0], 3), np.uint8)
        Image.fromarray(pixels).save(root / f"{i:06d}.jpg", quality=90)
        entries.append({"id": i + 1, "file_name": f"{i:06d}.jpg", "width": size[0],
                        "height": size[1]})
        for _ in range(1 + i % 3):
            x, y = rng.uniform(0, 30, 2)
            w, h = rng.uniform(8, 30, 2)
            annotations.append({"id": len(annotations) + 1, "image_id": i + 1,
                                "category_id": int(rng.integers(1, 4)), "iscrowd": 0,
                                "bbox": [x, y, w, h], "area": float(w * h * 0.75),
                                "segmentation": [[x, y, x + w, y, x + w, y + h, x, y + h / 2]]})
    categories = [{"id": k, "name": n} for k, n in enumerate(("a", "b", "c"), start=1)]
    path = root / "instances.json"
    path.write_text(json.dumps({"images": entries, "annotations": annotations,
                                "categories": categories}))
    return path


def measure_write(data: Path, out: Path, shards: int, masks: bool = True) -> dict:
    """CPU seconds to parse the JSON and to write + verify the shards."""
    from detection.data.shards import write_manifest, write_split
    from detection.data.shards_cli import load_records

    t0 = cpu_s()
    records, meta = load_records({"loader": "coco", "data_dir": str(data), "split": None},
                                 [], masks)
    t1 = cpu_s()
    entry = write_split(records, out, "train", shards, masks=masks)
    t2 = cpu_s()
    write_manifest(out, {"train": entry, "val": entry}, {
        **meta, "source_format": "coco", "source": {"data_dir": str(data)},
        "num_shards": shards, "masks": masks})
    n = len(records)
    size = sum(s["bytes"] for s in entry["shards"])
    return {"images": n, "parse_cpu_s": t1 - t0, "write_cpu_s": t2 - t1,
            "write_images_per_cpu_s": n / (t2 - t1),
            "end_to_end_images_per_cpu_s": n / (t2 - t0), "bytes": size,
            "bytes_per_image": size / n, "source_bytes": sum(
                p.stat().st_size for p in data.parent.glob("*.jpg")) + data.stat().st_size}


def _config(root: Path, spec: dict, steps: int = 10):
    import yaml

    from detection.config import load_config

    config = {
        "name": "records-bench",
        "model": {"backbone": "resnet18", "backbone_kwargs": {
            "depths": [1, 1, 1, 1], "widths": [8, 16, 32, 64], "stem_width": 8},
            "head": "c4", "image_size": [64, 64], "anchor_sizes": [16, 32],
            "rpn_pre_nms_topk": [200, 100], "rpn_post_nms_topk": [32, 16],
            "rpn_batch_size": 64, "roi_batch_size": 16, "roi_pooled_size": 6,
            "max_detections": 10, "fc_dims": [32], "seed": 0},
        "data": {"num_classes": 3, "class_names": ["a", "b", "c"], "train": spec,
                 "augment": {"flip": True, "sizes": [48, 64]}, "max_boxes": 4, "seed": 0},
        "train": {"batch_size": 4, "optimizer": "sgd", "learning_rate": 0.01, "steps": steps,
                  "checkpoint_every": steps, "distribution": "none"},
    }
    path = root / f"config-{spec['loader']}.yaml"
    path.write_text(yaml.safe_dump(config))
    return load_config(path)


def _stream_round(config, batches: int) -> dict:
    from detection.data.build import dataset_from_config
    from detection.engine.train import _train_stream

    t0, w0 = cpu_s(), time.perf_counter()
    base = dataset_from_config(config.data.train, config.class_names(), shuffle=True,
                               seed=0, verbose=False)
    t1, w1 = cpu_s(), time.perf_counter()
    it = iter(_train_stream(config, base, 4)(0))
    next(it)  # tracing and thread pools warm
    t2, w2 = cpu_s(), time.perf_counter()
    for _ in range(batches):
        next(it)
    t3, w3 = cpu_s(), time.perf_counter()
    return {"open_cpu_s": t1 - t0, "open_wall_s": w1 - w0, "first_batch_wall_s": w2 - w1,
            "cpu_per_image_ms": 1e3 * (t3 - t2) / (4 * batches),
            "images_per_wall_s": 4 * batches / (w3 - w2)}


def _fit(config, out: Path) -> dict:
    from detection.engine.train import train

    t0, w0 = cpu_s(), time.perf_counter()
    train(config, out, verbose=0, evaluate=False)
    return {"cpu_s": cpu_s() - t0, "wall_s": time.perf_counter() - w0}


def run(images: int = 1000, shards: int = 8, batches: int = 60, rounds: int = 2,
        fit_steps: int = 0, size: tuple[int, int] = (64, 48)) -> dict:
    """Write rate and training input (and, with `fit_steps`, a tiny fit) JSON vs shards, for
    `images` JPEGs of `size` (width, height)."""
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        data = write_coco(root / "coco", images, size=tuple(size))
        write = measure_write(data, root / "shards", shards)
        specs = {"json": {"loader": "coco", "data_dir": str(data)},
                 "shards": {"loader": "shards", "data_dir": str(root / "shards"),
                            "split": "train"}}
        configs = {k: _config(root, s, max(fit_steps, 1)) for k, s in specs.items()}
        streams: dict = {k: [] for k in specs}
        for _ in range(rounds):
            for key, config in configs.items():
                streams[key].append(_stream_round(config, batches))
        fits = {k: _fit(c, root / f"run-{k}") for k, c in configs.items()} if fit_steps else {}
    best = {k: {m: (min if "ms" in m or "_s" in m else max)(r[m] for r in v) for m in v[0]}
            for k, v in streams.items()}
    ratio = best["json"]["cpu_per_image_ms"] / best["shards"]["cpu_per_image_ms"]
    return {"host": platform.node() or "host", "date": time.strftime("%Y-%m-%d"),
            "cpus": os.cpu_count(), "load_1min": os.getloadavg()[0], "images": images,
            "size": list(size),
            "shards": shards, "write": write, "stream_batches": batches, "batch": 4,
            "rounds": rounds, "streams": streams, "best": best,
            "json_over_shards_cpu_per_image": ratio, "fit_steps": fit_steps, "fit": fits,
            "target_write_images_per_cpu_s": TARGET_WRITE,
            "write_ok": write["write_images_per_cpu_s"] >= TARGET_WRITE,
            "read_ok": ratio >= 1.0}


def markdown(r: dict) -> str:
    w = r["write"]
    width, height = r["size"]
    lines = [f"TFRecord shards, {r['host']} {r['date']} ({r['images']} COCO JPEGs "
             f"{width}x{height} with polygon masks, {r['shards']} shards; {r['cpus']} cores, load "
             f"{r['load_1min']:.1f} at the end)", "",
             "| write | CPU s | images / CPU s |", "|---|---|---|",
             f"| parse JSON + check images (`coco_records`, masks) | {w['parse_cpu_s']:.2f} | "
             f"{w['images'] / w['parse_cpu_s']:.0f} |",
             f"| write shards + verify (SHA-256, CRCs, counts) | {w['write_cpu_s']:.2f} | "
             f"{w['write_images_per_cpu_s']:.0f} |",
             f"| end to end | {w['parse_cpu_s'] + w['write_cpu_s']:.2f} | "
             f"{w['end_to_end_images_per_cpu_s']:.0f} |", "",
             f"write target >= {r['target_write_images_per_cpu_s']:.0f} images / CPU s: "
             f"{'ok' if r['write_ok'] else 'MISSED'} (target stated for 64x48); shards {w['bytes'] / 1e6:.2f} MB "
             f"({w['bytes_per_image']:.0f} B/image; source JPEGs + JSON "
             f"{w['source_bytes'] / 1e6:.2f} MB)", "",
             f"Training input (`train`'s stream, batch {r['batch']}, {r['stream_batches']} "
             f"batches after the first, best of {r['rounds']} alternating rounds):", "",
             "| from | open CPU s | first batch s | CPU ms / image | images / s |",
             "|---|---|---|---|---|"]
    for key, b in r["best"].items():
        lines.append(f"| {key} | {b['open_cpu_s']:.2f} | {b['first_batch_wall_s']:.2f} | "
                     f"{b['cpu_per_image_ms']:.2f} | {b['images_per_wall_s']:.0f} |")
    lines += ["", f"JSON / shards CPU per image: {r['json_over_shards_cpu_per_image']:.2f} "
              f"(target >= 1.0, shards at least as fast): "
              f"{'ok' if r['read_ok'] else 'MISSED'}"]
    if r["fit"]:
        lines += ["", f"Tiny detector, {r['fit_steps']} training steps (`train`, batch 4):", "",
                  "| from | CPU s | wall s |", "|---|---|---|"]
        lines += [f"| {k} | {v['cpu_s']:.1f} | {v['wall_s']:.1f} |" for k, v in r["fit"].items()]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=1000)
    parser.add_argument("--shards", type=int, default=8)
    parser.add_argument("--batches", type=int, default=60)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--fit-steps", type=int, default=20)
    parser.add_argument("--size", type=int, nargs=2, default=(64, 48), metavar=("W", "H"))
    parser.add_argument("--out", default=str(Path(__file__).resolve().parent / "results"))
    args = parser.parse_args(argv)
    result = run(args.images, args.shards, args.batches, args.rounds, args.fit_steps,
                 tuple(args.size))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    tag = "" if tuple(args.size) == (64, 48) else f"-{args.size[0]}x{args.size[1]}"
    stem = f"records-{result['host']}-{result['date']}{tag}"
    (out / f"{stem}.json").write_text(json.dumps(result, indent=1) + "\n")
    (out / f"{stem}.md").write_text(markdown(result))
    print(markdown(result), end="")
    return 0 if result["write_ok"] and result["read_ok"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
