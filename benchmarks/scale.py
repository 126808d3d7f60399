"""COCO at scale (issue 30): annotation loading growth vs pycocotools, the mask vs box input
pipeline, the compact masks' targets against the canvas pixels', per-worker input work, and
resume cost.

    python -m benchmarks.scale [--sections growth pipeline tolerance workers resume]
                               [--sizes 1000 10000 30000] [--out benchmarks/results]

- growth: a COCO JSON of N images (640x480, ~7.3 polygon objects each, as train2017's 863,241
  over 118,287) is generated with one symlinked JPEG per image; `coco_records(masks=True)` and
  pycocotools (`COCO(json)` plus `annToRLE` of every annotation: the same rasterisation) each
  load it in a fresh process: CPU seconds and the peak RSS above the process's RSS after its
  imports.
- pipeline: COCO-mini train (real photos and masks, `KRS_DATA_DIR` or ../shared/data) through
  `training_batches` at 512x512 and 800x1333, batch 2: boxes only, masks as 112x112 crops (the
  default), masks as canvas pixels (`mask_crop_size=None`); images/s and mask bytes per image.
- tolerance: on the same images, the 28x28 mask targets of RoIs jittered around every box, from
  the crops and from the canvas pixels, and `mask_loss` of seeded logits on both.
- workers: `benchmarks.worker_decodes` with 1, 2 and 4 localhost workers.
- resume: `benchmarks.resume_cost.measure`.
Results: `benchmarks/results/scale-<host>-<date>.{json,md}`.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SECTIONS = ("growth", "pipeline", "tolerance", "workers", "resume")
CANVASES = ((512, 512), (800, 1333))
PIXELS_UP_TO = 512 * 512  # canvas pixels up to which the pixel-mask pipeline is run

CHILD = r"""
import json, resource, sys, time
tool, root = sys.argv[1], sys.argv[2]
if tool == "ours":
    from detection.data.coco import coco_records
    import pycocotools.mask  # noqa: imported by the masks path; counted as an import
else:
    from pycocotools.coco import COCO
def rss_mb():
    return int(open("/proc/self/statm").read().split()[1]) * 4096 / 2**20
base, cpu = rss_mb(), time.process_time()
if tool == "ours":
    records = coco_records(root, "train2017", masks=True)[0]
    objects = sum(len(r.masks) for r in records)
else:
    coco = COCO(root + "/annotations/instances_train2017.json")
    rles = [coco.annToRLE(a) for a in coco.dataset["annotations"]]
    objects = len(rles)
cpu = time.process_time() - cpu
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print("RESULT", json.dumps({"cpu_s": cpu, "peak_mb": peak - base, "objects": objects}))
"""


def write_coco(root: Path, images: int, seed: int = 0) -> Path:
    """A COCO-layout set of `images` 640x480 images (one JPEG, symlinked) with polygon objects."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    (root / "annotations").mkdir(parents=True)
    (root / "train2017").mkdir()
    jpeg = root / "one.jpg"
    Image.new("RGB", (640, 480), (90, 120, 150)).save(jpeg, quality=80)
    cats = [{"id": i + 1 + i // 8, "name": f"class{i}"} for i in range(80)]
    counts = rng.poisson(7.3, images)
    anns, image_list, aid = [], [], 1
    for i, n in enumerate(counts):
        name = f"{i:012d}.jpg"
        os.symlink(jpeg, root / "train2017" / name)
        image_list.append({"id": i + 1, "file_name": name, "width": 640, "height": 480})
        for _ in range(n):
            k = int(rng.integers(8, 31))
            w, h = rng.uniform(8, 300), rng.uniform(8, 220)
            x, y = rng.uniform(0, 640 - w), rng.uniform(0, 480 - h)
            t = np.sort(rng.uniform(0, 2 * np.pi, k))
            r = rng.uniform(0.6, 1.0, k)
            px = x + w / 2 * (1 + r * np.cos(t))
            py = y + h / 2 * (1 + r * np.sin(t))
            poly = np.round(np.stack([px, py], 1).reshape(-1), 2).tolist()
            anns.append({"id": aid, "image_id": i + 1, "category_id": cats[aid % 80]["id"],
                         "bbox": [round(float(px.min()), 2), round(float(py.min()), 2),
                                  round(float(px.max() - px.min()), 2),
                                  round(float(py.max() - py.min()), 2)],
                         "area": float(w * h * 0.7), "iscrowd": 0, "segmentation": [poly]})
            aid += 1
    path = root / "annotations" / "instances_train2017.json"
    path.write_text(json.dumps({"images": image_list, "annotations": anns, "categories": cats}))
    return path


def _child(tool: str, root: Path) -> dict:
    out = subprocess.run([sys.executable, "-c", CHILD, tool, str(root)], capture_output=True,
                         text=True, timeout=3600, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    line = next((ln for ln in out.stdout.splitlines() if ln.startswith("RESULT")), None)
    if line is None:
        raise RuntimeError(f"{tool} load failed: {out.stderr.strip().splitlines()[-1:]}")
    return json.loads(line.split(" ", 1)[1])


def growth(sizes) -> list[dict]:
    """Per size: our loader's and pycocotools' CPU seconds and peak MB, and their ratios."""
    rows = []
    for n in sizes:
        with tempfile.TemporaryDirectory() as tmp:
            path = write_coco(Path(tmp), int(n))
            mb = path.stat().st_size / 2**20
            ours, ref = _child("ours", Path(tmp)), _child("pycocotools", Path(tmp))
        rows.append({"images": int(n), "objects": ref["objects"], "json_mb": mb, "ours": ours,
                     "pycocotools": ref, "cpu_ratio": ours["cpu_s"] / ref["cpu_s"],
                     "memory_ratio": ours["peak_mb"] / max(ref["peak_mb"], 1e-9)})
        print(f"growth {n}: {rows[-1]['cpu_ratio']:.2f}x CPU", file=sys.stderr)
    return rows


def coco_mini() -> Path | None:
    env = os.environ.get("KRS_DATA_DIR")
    base = Path(env) if env else Path(__file__).resolve().parents[1].parent / "shared" / "data"
    path = base / "coco-mini"
    return path if (path / "annotations" / "instances_train2017.json").is_file() else None


def _rate(dataset, batches: int) -> dict:
    """Images/s (wall and per CPU second) of `batches` batches after a 3-batch warm-up."""
    it = iter(dataset)
    for _ in range(3):
        first = next(it)
    wall, cpu = time.perf_counter(), time.process_time()
    for _ in range(batches):
        next(it)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    images = batches * int(first["images"].shape[0])
    key = "mask_crops" if "mask_crops" in first else "masks" if "masks" in first else None
    per_image = 0 if key is None else first[key][0].numpy().nbytes
    return {"images_per_s": images / wall, "images_per_cpu_s": images / cpu,
            "mask_bytes_per_image": per_image}


def pipeline(root: Path, batches: int = 20, rounds: int = 2) -> dict:
    """Box, crop-mask and pixel-mask pipelines at each canvas; rounds alternate the variants."""
    import detection
    from detection.data.pipeline import training_batches

    boxes = detection.data.coco(root, "train2017", verbose=False)
    masked = detection.data.coco(root, "train2017", masks=True, verbose=False)
    out = {}
    for canvas in CANVASES:
        variants = {
            "boxes": lambda c=canvas: training_batches(boxes, c, 2, repeat=True, shuffle=80),
            "mask crops": lambda c=canvas: training_batches(masked, c, 2, repeat=True,
                                                           shuffle=80),
            "mask pixels": lambda c=canvas: training_batches(masked, c, 2, repeat=True,
                                                            shuffle=80, mask_crop_size=None)}
        if canvas[0] * canvas[1] > PIXELS_UP_TO:  # ~107 MB per image: not on a shared machine
            del variants["mask pixels"]
        runs = {name: [] for name in variants}
        for _ in range(rounds):
            for name, make in variants.items():
                runs[name].append(_rate(make(), batches))
        best = {name: max(r, key=lambda x: x["images_per_s"]) for name, r in runs.items()}
        box = best["boxes"]["images_per_s"]
        pixels = best.get("mask pixels", {"images_per_s": float("nan")})
        out["x".join(map(str, canvas))] = {
            **best, "crops_vs_boxes": best["mask crops"]["images_per_s"] / box,
            "pixels_vs_boxes": pixels["images_per_s"] / box}
        print(f"pipeline {canvas}: crops {out['x'.join(map(str, canvas))]['crops_vs_boxes']:.2f}"
              " of boxes", file=sys.stderr)
    return out


def tolerance(root: Path, rois_per_box: int = 4, seed: int = 0) -> dict:
    """Crop-made vs pixel-made 28x28 targets and mask losses on COCO-mini, per canvas."""
    import numpy as np
    from keras import ops

    import detection
    from detection.data.pipeline import MASK_CROP_SIZE, to_canvas
    from detection.modeling.ops.masks import crop_mask_targets, mask_loss, mask_targets

    ds = detection.data.coco(root, "train2017", masks=True, verbose=False)
    out = {}
    for canvas in CANVASES:
        rng = np.random.default_rng(seed)
        opts = dict(max_boxes=100, flip=True, seed=seed)
        pixels = to_canvas(ds, canvas, **opts).as_numpy_iterator()
        crops = to_canvas(ds, canvas, mask_crop_size=MASK_CROP_SIZE, **opts).as_numpy_iterator()
        diffs, flips, losses, big, total = [], 0, [], 0, 0
        for p, c in zip(pixels, crops, strict=True):
            boxes = c["bounding_boxes"]["boxes"]
            n = int((c["bounding_boxes"]["labels"] >= 0).sum())
            if n == 0:
                continue
            sides = np.maximum(boxes[:n, 2:] - boxes[:n, :2], 1.0)
            big += int((sides.max(1) > MASK_CROP_SIZE).sum())
            total += n
            matched = np.repeat(np.arange(n), rois_per_box)[None]
            jitter = rng.normal(0, 0.1, (n * rois_per_box, 4)) * np.tile(sides, (rois_per_box, 2))
            rois = (boxes[matched[0]] + jitter).astype("float32")[None]
            want = ops.convert_to_numpy(mask_targets(p["masks"][None], matched, rois, 28))
            got = ops.convert_to_numpy(crop_mask_targets(c["mask_crops"][None], boxes[None],
                                                         matched, rois, canvas, 28))
            diffs.append(np.abs(got - want).reshape(-1))
            flips += int(((got > 0.5) != (want > 0.5)).sum())
            logits = rng.normal(0, 2, (matched.shape[1], 1, 28, 28)).astype("float32")
            labels, positive = np.zeros(matched.shape[1], "int32"), np.ones(matched.shape[1], bool)
            losses.append([float(mask_loss(logits, t[0], labels, positive)) for t in (want, got)])
        d, losses = np.concatenate(diffs), np.array(losses)
        out["x".join(map(str, canvas))] = {
            "objects": total, "boxes_over_crop": big, "target_max_abs": float(d.max()),
            "target_mean_abs": float(d.mean()), "binarised_disagree": flips / d.size,
            "loss_max_rel": float(np.max(np.abs(losses[:, 1] - losses[:, 0]) / losses[:, 0])),
            "loss_mean_rel": float(np.mean(np.abs(losses[:, 1] - losses[:, 0]) / losses[:, 0]))}
    return out


def workers(counts=(1, 2, 4), steps=(4, 20)) -> dict:
    """Images decoded per step per worker (`benchmarks.worker_decodes`), global batch 4."""
    from benchmarks.worker_decodes import decodes

    out = {}
    for w in counts:
        try:
            a, b = decodes(steps[0], w), decodes(steps[1], w)
        except StopIteration:  # a worker died before printing its count (seen under load)
            out[str(w)] = "failed: a worker process ended without its count"
            continue
        out[str(w)] = [(y - x) / (steps[1] - steps[0]) for x, y in zip(a, b, strict=True)]
        print(f"workers {w}: {out[str(w)]}", file=sys.stderr)
    return out


def run(sections=SECTIONS, sizes=(1_000, 10_000, 30_000), worker_counts=(1, 2, 4)) -> dict:
    """The chosen sections' figures (what `main` writes; for the lead's combined runs)."""
    result = {"host": platform.node() or "host", "date": time.strftime("%Y-%m-%d"),
              "cpus": os.cpu_count(), "load_at_start": os.getloadavg()[0]}
    mini = coco_mini()
    if "growth" in sections:
        result["growth"] = growth(sizes)
    for name, fn in (("pipeline", pipeline), ("tolerance", tolerance)):
        if name in sections:
            result[name] = fn(mini) if mini else "skipped: coco-mini not found (KRS_DATA_DIR)"
    if "workers" in sections:
        result["workers"] = workers(worker_counts)
    if "resume" in sections:
        from benchmarks.resume_cost import measure

        result["resume"] = measure(old_max=10)
    result["load_at_end"] = os.getloadavg()[0]
    return result


def _growth_md(rows) -> list[str]:
    lines = ["## Annotation loading, masks included (fresh process each; CPU s, peak MB above "
             "the process after imports)", "",
             "| images | objects | JSON MB | ours CPU s | pycocotools CPU s | CPU ratio (target "
             "<= 1.5) | ours MB | pycocotools MB | memory ratio |", "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        o, p = r["ours"], r["pycocotools"]
        lines.append(f"| {r['images']:,} | {r['objects']:,} | {r['json_mb']:.0f} | "
                     f"{o['cpu_s']:.2f} | {p['cpu_s']:.2f} | {r['cpu_ratio']:.2f} | "
                     f"{o['peak_mb']:.0f} | {p['peak_mb']:.0f} | {r['memory_ratio']:.2f} |")
    return lines + [""]


def _pipeline_md(res) -> list[str]:
    lines = ["## Input pipeline, COCO-mini train (80 real images), batch 2 (best of the rounds)",
             "", "| canvas | variant | images/s | images per CPU s | mask bytes / image |",
             "|---|---|---|---|---|"]
    for canvas, row in res.items():
        for name in ("boxes", "mask crops", "mask pixels"):
            if name not in row:
                lines.append(f"| {canvas} | {name} | not run (100 x {canvas} bytes per image "
                             "on a shared 24 GiB machine) | | |")
                continue
            v = row[name]
            lines.append(f"| {canvas} | {name} | {v['images_per_s']:.1f} | "
                         f"{v['images_per_cpu_s']:.1f} | {v['mask_bytes_per_image']:,} |")
        lines.append(f"| {canvas} | crops / boxes (target >= 0.5) | {row['crops_vs_boxes']:.2f} "
                     f"| | (pixels / boxes {row['pixels_vs_boxes']:.2f}) |")
    return lines + [""]


def _tolerance_md(res) -> list[str]:
    lines = ["## 112x112 crops vs canvas pixels: 28x28 mask targets of jittered RoIs, COCO-mini",
             "", "| canvas | objects | boxes > 112 px | target max abs | target mean abs | "
             "binarised pixels differing | mask_loss max rel | mean rel |",
             "|---|---|---|---|---|---|---|---|"]
    for canvas, r in res.items():
        lines.append(f"| {canvas} | {r['objects']} | {r['boxes_over_crop']} | "
                     f"{r['target_max_abs']:.3f} | {r['target_mean_abs']:.2e} | "
                     f"{r['binarised_disagree']:.2e} | {r['loss_max_rel']:.2e} | "
                     f"{r['loss_mean_rel']:.2e} |")
    return lines + [""]


def markdown(r: dict) -> str:
    """The result as Markdown tables."""
    lines = [f"# Scale benchmark, {r['host']} {r['date']} ({r['cpus']} CPUs, load "
             f"{r['load_at_start']:.1f} at start, {r['load_at_end']:.1f} at end)", ""]
    for key, fn in (("growth", _growth_md), ("pipeline", _pipeline_md),
                    ("tolerance", _tolerance_md)):
        if isinstance(r.get(key), (list, dict)):
            lines += fn(r[key])
        elif key in r:
            lines += [f"## {key}: {r[key]}", ""]
    if "workers" in r:
        lines += ["## Images decoded per step per worker (global batch 4)", "",
                  "| workers | per worker |", "|---|---|"]
        lines += [f"| {w} | {per if isinstance(per, str) else ', '.join(f'{v:.2f}' for v in per)}"
                  " |" for w, per in r["workers"].items()] + [""]
    if "resume" in r:
        lines += ["## Resume: seconds to the first batch (positioned stream)", "",
                  "| step | seconds |", "|---|---|"]
        lines += [f"| {int(k):,} | {v:.3f} |" for k, v in r["resume"]["positioned_s"].items()]
        lines += ["", f"slowest / fastest {r['resume']['positioned_spread']:.2f} (target <= 1.5)"]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sections", nargs="+", choices=SECTIONS, default=list(SECTIONS))
    parser.add_argument("--sizes", type=int, nargs="+", default=[1_000, 10_000, 30_000])
    parser.add_argument("--out", default=str(Path(__file__).resolve().parent / "results"))
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--name", default="", help="suffix of the results file names")
    args = parser.parse_args(argv)
    result = run(args.sections, args.sizes, args.workers)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stem = f"scale-{result['host']}-{result['date']}" + (f"-{args.name}" if args.name else "")
    (out / f"{stem}.json").write_text(json.dumps(result, indent=1) + "\n")
    (out / f"{stem}.md").write_text(markdown(result))
    print(markdown(result), end="")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
