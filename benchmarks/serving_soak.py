"""The serving soak of `python -m benchmarks.reliability` (issue 35): does a server's memory level
off when almost every request brings a new image size?

    python -m benchmarks.serving_soak [--calls 10000] [--every 250] [--compare OLD_EXPORT_DIR]

The tiny detector and resnet20 (32x32) SavedModels of `benchmarks.saved_models.export_models`
are served by a fresh process per oneDNN setting (`TF_ENABLE_ONEDNN_OPTS` 1 / 0), `--calls`
calls each, every one with an image size not sent before: the detector's `serving_default`
(uint8 `[1, h, w, 3]`), the detector's and the classifier's `serving_bytes` (a PNG of that
size), in turn. RSS is sampled every `--every` calls, from TensorFlow's own defaults (no
allocator or oneDNN cache variables). `--compare DIR` also soaks the `detector/` and
`classifier/` SavedModels in DIR (e.g. written by an older version) with oneDNN on, drawn
beside. Results: `benchmarks/results/serving-soak-<host>-<date>.{json,md,png}`.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
LEVEL_MIB = 16.0  # "levels off": RSS growth over the second half of the run below this


def distinct_size(i: int) -> tuple[int, int]:
    """The i-th (height, width), all distinct for i < 10,000 (sides 40..139 x 40..139)."""
    return 40 + i % 100, 40 + (i // 100) % 100


def _png(pixels: np.ndarray) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()


def worker(models: Path, calls: int, every: int, out: Path) -> None:
    """One serving process: `calls` calls of distinct sizes; RSS samples written to `out`."""
    import tensorflow as tf

    from benchmarks.timing import rss_mb

    detector = tf.saved_model.load(str(models / "detector")).signatures
    classifier = tf.saved_model.load(str(models / "classifier")).signatures
    rng = np.random.default_rng(0)
    samples, failures, start = [], 0, time.perf_counter()
    for i in range(calls):
        h, w = distinct_size(i)
        pixels = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        try:
            if i % 3 == 0:
                out_ = detector["serving_default"](images=tf.constant(pixels[None]))
                ok = out_["num_detections"].shape == (1,)
            else:
                signature = (detector if i % 3 == 1 else classifier)["serving_bytes"]
                ok = bool(signature(image_bytes=tf.constant([_png(pixels)]))["valid"][0])
            failures += not ok
        except Exception:  # counted: a soak must not stop at the first failure
            failures += 1
        if (i + 1) % every == 0 or i == 0:
            samples.append([i + 1, round(rss_mb(), 1), round(time.perf_counter() - start, 1)])
    out.write_text(json.dumps({"samples": samples, "failures": failures, "calls": calls}))


def _run_worker(models: Path, calls: int, every: int, onednn: str, label: str,
                timeout: float) -> dict:
    env = {**os.environ, "TF_ENABLE_ONEDNN_OPTS": onednn, "TF_CPP_MIN_LOG_LEVEL": "2",
           "PYTHONPATH": str(REPO)}
    for name in ("MALLOC_ARENA_MAX", "MALLOC_TRIM_THRESHOLD_", "ONEDNN_PRIMITIVE_CACHE_CAPACITY"):
        env.pop(name, None)  # TensorFlow's own defaults: what a plain server gets
    with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as f:
        out = Path(f.name)
    cmd = [sys.executable, "-m", "benchmarks.serving_soak", "--worker", str(models), "--calls",
           str(calls), "--every", str(every), "--worker-out", str(out)]
    start = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        raise RuntimeError(f"soak worker ({label}, oneDNN {onednn}) failed:\n"
                           f"{proc.stderr[-2000:]}")
    result = json.loads(out.read_text())
    out.unlink()
    return {**result, "models": label, "onednn": onednn == "1",
            "wall_s": round(time.perf_counter() - start, 1), **levels(result["samples"])}


def levels(samples: list) -> dict:
    """RSS figures of one run: start (first sample after warm-up), end, growth over each half
    of the run after warm-up, and whether it levels off (second half's growth below
    `LEVEL_MIB`)."""
    rss = [s[1] for s in samples]
    if len(rss) < 4:
        return {"rss_start_mb": rss[0], "rss_end_mb": rss[-1], "levels_off": None}
    warm = rss[1:]  # the first sample is the first call: models still warming
    mid = len(warm) // 2
    first, second = warm[mid] - warm[0], warm[-1] - warm[mid]
    return {"rss_start_mb": warm[0], "rss_end_mb": warm[-1], "growth_first_half_mb":
            round(first, 1), "growth_second_half_mb": round(second, 1),
            "levels_off": bool(second < LEVEL_MIB)}


def plot(runs: list[dict], path: Path, calls: int) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4), dpi=110)
    for run in runs:
        x, y = zip(*[(s[0], s[1]) for s in run["samples"]], strict=True)
        style = "-" if run["models"] == "this version" else "--"
        ax.plot(x, y, style, label=f"{run['models']}, oneDNN {'on' if run['onednn'] else 'off'}")
    ax.set_xlabel("serving calls (each a new image size)")
    ax.set_ylabel("RSS (MiB)")
    ax.set_title(f"Serving soak: {calls} calls, tiny detector + resnet20 SavedModels")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def markdown(result: dict) -> str:
    lines = [f"Serving soak, {result['host']} {result['date']} (load average "
             f"{result['load']}): {result['calls']} calls per run, each a new image size",
             "", "| SavedModels | oneDNN | failures | RSS after warm-up (MiB) | growth, 1st half | "
             "growth, 2nd half | levels off | wall (s) |", "| --- | --- | --- | --- | --- | --- "
             "| --- | --- |"]  # fmt: skip
    for r in result["runs"]:
        lines.append(f"| {r['models']} | {'on' if r['onednn'] else 'off'} | {r['failures']} | "
                     f"{r['rss_start_mb']} -> {r['rss_end_mb']} | "
                     f"{r.get('growth_first_half_mb', '-')} | "
                     f"{r.get('growth_second_half_mb', '-')} | {r['levels_off']} | "
                     f"{r['wall_s']} |")  # fmt: skip
    lines += ["", "Reproduce: `python -m benchmarks.serving_soak "
              f"--calls {result['calls']} --every {result['every']}`"]  # fmt: skip
    return "\n".join(lines) + "\n"


def soak(models: dict[str, Path] | None, calls: int, every: int, out_dir: Path,
         compare: Path | None = None, timeout: float = 3600, compare_label: str = "") -> dict:
    """oneDNN on and off (and `compare`'s models, oneDNN on), each in a fresh process; results
    written to `out_dir`."""
    from benchmarks.report import today
    from benchmarks.timing import load_average

    result = {"host": platform.node() or "host", "date": today(), "load": load_average(),
              "calls": calls, "every": every, "runs": []}
    with tempfile.TemporaryDirectory(prefix="krs-soak-") as tmp:
        if models is None:
            from benchmarks.saved_models import export_models

            models = export_models(Path(tmp))
        jobs = [(Path(models["detector"]).parent, "this version", o) for o in ("1", "0")]
        label = compare_label or f"compared: {Path(compare or '.').name}"
        jobs += [(Path(compare), label, "1")] if compare else []
        for folder, label, onednn in jobs:
            run = _run_worker(folder, calls, every, onednn, label, timeout)
            print(f"soak {label} oneDNN {onednn}: RSS {run['rss_start_mb']} -> "
                  f"{run['rss_end_mb']} MiB, levels off {run['levels_off']}", flush=True)
            result["runs"].append(run)
    result["load_after"] = load_average()
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = out_dir / f"serving-soak-{result['host']}-{result['date']}"
    plot(result["runs"], stem.with_suffix(".png"), calls)
    stem.with_suffix(".json").write_text(json.dumps(result, indent=1))
    stem.with_suffix(".md").write_text(markdown(result) + f"\n![RSS]({stem.name}.png)\n")
    result["files"] = [str(stem.with_suffix(s)) for s in (".json", ".md", ".png")]
    return result


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--calls", type=int, default=10000)
    p.add_argument("--every", type=int, default=250, help="calls between RSS samples")
    p.add_argument("--compare", help="also soak the SavedModels in this folder (oneDNN on)")
    p.add_argument("--compare-label", default="", help="their name in the results")
    p.add_argument("--out", default=str(REPO / "benchmarks" / "results"))
    p.add_argument("--worker", help=argparse.SUPPRESS)  # internal: one serving process
    p.add_argument("--worker-out", help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a.calls < 1 or a.every < 1:
        p.error("--calls and --every must be positive")
    if a.worker:
        worker(Path(a.worker), a.calls, a.every, Path(a.worker_out))
        return 0
    result = soak(None, a.calls, a.every, Path(a.out), a.compare and Path(a.compare),
                  compare_label=a.compare_label)
    print(markdown(result) + "written: " + ", ".join(result["files"]))
    return 0 if all(r["failures"] == 0 for r in result["runs"]) else 1


if __name__ == "__main__":
    raise SystemExit(main())
