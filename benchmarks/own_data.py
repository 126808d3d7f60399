"""`python -m benchmarks.own_data`: what the own-data starting config costs on this CPU.

Times, for `python -m detection train --data ...`'s starting config (and the candidates it
was chosen from: the earlier ResNet-18 C4, the paper's design), one training step (batch 2,
all losses, backward, update) and the seconds per evaluated image (batch 1, each photo at its
own size, as `evaluate` runs them), against torchvision's `fasterrcnn_resnet50_fpn` and
`fasterrcnn_mobilenet_v3_large_fpn` on the same photos and canvas (random/seeded weights, no
downloads), as ratios from the same run. Every contender runs in its own process
(`--worker`): torch and TensorFlow must not share one, and OMP_WAIT_POLICY=PASSIVE keeps
torch's idle threads from spinning on a shared machine. Writes JSON and Markdown to
benchmarks/results/own-data-<tag>.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

DATA = "raccoon-voc"
CANVAS = (384, 512)
CLASSES = ["raccoon"]
# name -> the starting config's `model` overrides (applied to `starting_config`'s model)
CANDIDATES = {
    "ours: starting config (R18-FPN-128, 100 test proposals)": {},
    "ours: R18-FPN-256, detectron2's 1000 test proposals": {
        "fpn_channels": None, "rpn_pre_nms_topk": None, "rpn_post_nms_topk": None},
    "ours: earlier start (R18-C4, 1000 test proposals)": {
        "head": "c4", "rpn_pre_nms_topk": None, "rpn_post_nms_topk": None,
        "roi_batch_size": None, "fpn_channels": None},
}
TORCH = ("fasterrcnn_resnet50_fpn", "fasterrcnn_mobilenet_v3_large_fpn")


def data_dir() -> Path:
    root = os.environ.get("KRS_DATA_DIR") or str(Path(__file__).resolve().parents[2] / "shared"
                                                  / "data")
    return Path(root) / DATA


def photos(n: int) -> list[np.ndarray]:
    """The first `n` validation photos of the raccoon set as uint8 [H, W, 3], own sizes."""
    from PIL import Image

    folder = data_dir() / "VOC2007"
    ids = (folder / "ImageSets" / "Main" / "val.txt").read_text().split()[:n]
    return [np.asarray(Image.open(folder / "JPEGImages" / f"{i}.jpg").convert("RGB"))
            for i in ids]


def train_batches(steps: int) -> list[dict]:
    """`steps + 1` real training batches of 2 on the canvas (the training pipeline's own)."""
    from detection.data.build import dataset_from_config
    from detection.data.pipeline import training_batches

    spec = {"loader": "voc", "data_dir": str(data_dir()), "year": 2007, "split": "train"}
    ds = dataset_from_config(spec, CLASSES, verbose=False)
    return [{k: (v.numpy() if hasattr(v, "numpy") else {a: b.numpy() for a, b in v.items()})
             for k, v in b.items()} for b in training_batches(ds, CANVAS, 2).take(steps + 1)]


def _timed(fn, items) -> list[tuple[float, float]]:
    """(wall, CPU) seconds of `fn(item)` for each item: on a shared machine the process's
    CPU seconds (all threads) show the work when the wall clock shows the queue too."""
    out = []
    for item in items:
        wall, cpu = time.perf_counter(), time.process_time()
        fn(item)
        out.append((time.perf_counter() - wall, time.process_time() - cpu))
    return out


def _summary(steps: list[tuple[float, float]], images: list[tuple[float, float]],
             warm: int = 2) -> dict:
    """The first calls (tracing: once per new input shape until the function generalises)
    apart; the medians of the others are the figures."""
    def med(rows, k):
        return round(statistics.median(r[k] for r in rows), 3)

    return {"step_first_s": round(steps[0][0], 3), "step_s": med(steps[1:], 0),
            "step_cpu_s": med(steps[1:], 1),
            "image_first_s": round(sum(r[0] for r in images[:warm]), 3),
            "image_s": med(images[warm:], 0), "image_cpu_s": med(images[warm:], 1),
            "images": len(images) - warm, "steps": len(steps) - 1}


def keras_worker(name: str, n_images: int, steps: int) -> dict:
    import keras

    from detection.config import from_dict
    from detection.data.discover import inspect_data, starting_config
    from detection.engine.train import build_model

    base = starting_config(inspect_data(data_dir()), "bench", backbone_weights="none")
    base["model"] = {k: v for k, v in {**base["model"], **CANDIDATES[name]}.items()
                     if v is not None}
    base["model"]["seed"] = 0
    config = from_dict(base, "benchmark")
    model = build_model(config)
    model.compile(optimizer=keras.optimizers.SGD(0.005, momentum=0.9, global_clipnorm=10.0),
                  jit_compile=False)
    step_s = _timed(lambda b: model.train_on_batch(b, return_dict=True), train_batches(steps))
    image_s = _timed(lambda x: model.predict(x[None].astype("float32"), verbose=0),
                     photos(n_images))
    return {"model": {k: v for k, v in config.model.items() if k != "seed"},
            **_summary(step_s, image_s)}


def torch_worker(name: str, n_images: int, steps: int) -> dict:
    import torch
    import torchvision.models.detection as tvd

    torch.manual_seed(0)
    model = getattr(tvd, name)(weights=None, weights_backbone=None, num_classes=2,
                               min_size=CANVAS[0], max_size=CANVAS[1])
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.SGD(params, lr=0.005, momentum=0.9)

    def step(batch):
        model.train()
        images = [torch.from_numpy(im.astype("float32") / 255).permute(2, 0, 1)
                  for im in batch["images"]]
        targets = []
        for boxes, labels in zip(batch["bounding_boxes"]["boxes"],
                                 batch["bounding_boxes"]["labels"], strict=True):
            keep = labels >= 0
            targets.append({"boxes": torch.from_numpy(boxes[keep].astype("float32")),
                            "labels": torch.from_numpy(labels[keep].astype("int64") + 1)})
        opt.zero_grad(set_to_none=True)
        loss = sum(model(images, targets).values())
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 10.0)
        opt.step()

    def infer(photo):
        model.eval()
        with torch.inference_mode():
            model([torch.from_numpy(photo.astype("float32") / 255).permute(2, 0, 1)])

    step_s = _timed(step, train_batches(steps))
    image_s = _timed(infer, photos(n_images))
    return {"model": f"torchvision {name} (weights=None, min_size={CANVAS[0]}, "
                     f"max_size={CANVAS[1]}, {torch.get_num_threads()} threads)",
            **_summary(step_s, image_s)}


def _run_worker(kind: str, name: str, args) -> dict:
    env = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE", "TF_CPP_MIN_LOG_LEVEL": "2",
           "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    cmd = [sys.executable, "-m", "benchmarks.own_data", "--worker", kind, "--name", name,
           "--images", str(args.images), "--steps", str(args.steps)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if proc.returncode or not lines:
        tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        return {"error": f"worker exited {proc.returncode}: {tail}"}
    return json.loads(lines[-1])


def markdown(result: dict) -> str:
    rows = result["results"]
    ref = rows.get(f"torchvision {TORCH[0]}", {})
    lines = [f"# Own-data starting config on this CPU ({result['tag']})", "",
             f"{result['cpus']} CPUs shared with other work: load average before/after "
             f"{result['load_before']:.1f} / {result['load_after']:.1f}. Canvas "
             f"{CANVAS[0]}x{CANVAS[1]} for every contender; medians of {result['steps']} "
             f"training steps (batch 2, real raccoon-voc batches) and {result['images']} "
             "evaluated photos (batch 1, each at its own size, raccoon-voc val), after the "
             "first step and the first two photos (tracing; their sum is 'first'). Random "
             "seeded weights, every contender from scratch (batch norm, all layers trainable, as "
             "torchvision builds them with weights=None, weights_backbone=None). Wall seconds "
             "include waiting for the shared cores; CPU seconds are the process's own work (all "
             "threads). Ratios: over torchvision fasterrcnn_resnet50_fpn's from the same run, "
             "CPU seconds first (robust to the load, which changes between contenders), wall "
             "seconds in brackets.", "",
             "| contender | step s (CPU s) | per image s (CPU s) | step / tv-R50 | image / tv-R50 "
             "| first step s | first 2 images s |", "|---|---|---|---|---|---|---|"]
    for name, r in rows.items():
        if "error" in r:
            lines.append(f"| {name} | {r['error']} | | | | | |")
            continue

        def ratio(k, r=r):
            return (f"{r[k + '_cpu_s'] / ref[k + '_cpu_s']:.2f}x ({r[k + '_s'] / ref[k + '_s']:.2f}x)"
                    if ref.get(k + "_s") else "n/a")

        lines.append(f"| {name} | {r['step_s']:.2f} ({r['step_cpu_s']:.2f}) | {r['image_s']:.2f} "
                     f"({r['image_cpu_s']:.2f}) | {ratio('step')} | {ratio('image')} | "
                     f"{r['step_first_s']:.1f} | {r['image_first_s']:.1f} |")
    return "\n".join(lines + ["", f"Reproduce: `{result['command']}`", ""])


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.own_data", description=__doc__)
    p.add_argument("--images", type=int, default=6, help="photos to evaluate (default 6)")
    p.add_argument("--steps", type=int, default=3, help="timed training steps (default 3)")
    p.add_argument("--tag", default=f"vm-cpu{os.cpu_count()}-" + time.strftime("%Y-%m-%d"),
                   help="results file name part (strftime codes allowed)")
    p.add_argument("--out", default=str(Path(__file__).resolve().parent / "results"),
                   help="folder for the JSON and Markdown (default: benchmarks/results)")
    p.add_argument("--only", default=None, help="run only contenders whose name has this")
    p.add_argument("--markdown", metavar="JSON", help="only rewrite the Markdown of a results JSON")
    p.add_argument("--worker", choices=("keras", "torch"), help=argparse.SUPPRESS)
    p.add_argument("--name", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.markdown:
        Path(args.markdown).with_suffix(".md").write_text(
            markdown(json.loads(Path(args.markdown).read_text())))
        return 0
    if args.worker:
        work = keras_worker if args.worker == "keras" else torch_worker
        print(json.dumps(work(args.name, args.images + 2, args.steps)), flush=True)
        return 0
    result = {"tag": time.strftime(args.tag), "cpus": os.cpu_count(), "images": args.images,
              "steps": args.steps, "load_before": os.getloadavg()[0], "results": {},
              "command": "python -m benchmarks.own_data " + " ".join(argv or sys.argv[1:])}
    contenders = [("keras", n, n) for n in CANDIDATES] + [
        ("torch", n, f"torchvision {n}") for n in TORCH]
    for kind, name, label in contenders:
        if args.only and args.only not in label:
            continue
        result["results"][label] = _run_worker(kind, name, args)
        print(label, result["results"][label], flush=True)
    result["load_after"] = os.getloadavg()[0]
    out = Path(args.out) / f"own-data-{result['tag']}"
    out.with_suffix(".json").write_text(json.dumps(result, indent=1) + "\n")
    out.with_suffix(".md").write_text(markdown(result))
    print(markdown(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
