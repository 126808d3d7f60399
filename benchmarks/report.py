"""Results as JSON and a Markdown table: one row per contender, ratios against the baseline."""

from __future__ import annotations

import json
import math
import platform
import re
import socket
from datetime import datetime, timezone
from pathlib import Path

from benchmarks.timing import Case, load_average, median, paired_ratio

RESULTS_DIR = Path(__file__).resolve().parent / "results"
COLUMNS = ("section", "contender", "model", "batch", "input", "dtype", "median_s", "throughput",
           "ratio", "peak_rss_mb", "delta_rss_mb")


def machine_info() -> dict:
    """What the numbers were measured on: host, CPU, cores, Python, framework versions, GPUs.

    TensorFlow is imported only under its own backend: the GPU machine runs the GPU mode
    under JAX and may have no TensorFlow at all.
    """
    import os

    import keras

    cpu = platform.processor() or ""
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((ln.split(":", 1)[1].strip() for ln in f
                        if ln.startswith("model name")), cpu)
    except OSError:
        pass
    backend = keras.backend.backend()
    return {"host": socket.gethostname(), "cpu": cpu, "cores": os.cpu_count(),
            "platform": platform.platform(), "python": platform.python_version(),
            "keras": keras.__version__, "tensorflow": _version("tensorflow"),
            "jax": _version("jax"), "torch": _version("torch"),
            "backend": backend, "accelerators": _accelerators(backend)}


def _version(dist: str) -> str | None:
    """An installed distribution's version, without importing it (None when absent)."""
    from importlib import metadata

    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def _accelerators(backend: str | None = None) -> list[str]:
    """Names of the GPUs/TPUs the run can use, e.g. "NVIDIA H100 80GB HBM3 (gpu:0)".

    Asks the current backend's framework (TensorFlow only under its own backend), then
    torch where it is already loaded; an empty list means CPU only.
    """
    import sys

    names: list[str] = []
    if backend is None:
        import keras

        backend = keras.backend.backend()
    if backend == "jax" or "jax" in sys.modules:
        try:
            import jax

            from benchmarks.peers import jax_device_name

            names += [jax_device_name(d) for d in jax.devices() if d.platform != "cpu"]
        except Exception:  # a broken CUDA plugin must not lose the results
            pass
    if backend == "tensorflow" and not names:
        try:
            import tensorflow as tf

            for d in tf.config.list_physical_devices():
                if d.device_type != "CPU":
                    details = tf.config.experimental.get_device_details(d)
                    names.append(f"{details.get('device_name', d.name)} ({d.name})")
        except ImportError:
            pass
    if not names and "torch" in sys.modules:
        torch = sys.modules["torch"]
        try:
            if torch.cuda.is_available():
                names += [f"{torch.cuda.get_device_name(i)} (cuda:{i})"
                          for i in range(torch.cuda.device_count())]
        except Exception:
            pass
    return names


def machine_slug(info: dict) -> str:
    """`<machine>` of the result file name: host and core count, filesystem-safe."""
    host = re.sub(r"[^A-Za-z0-9]+", "-", info.get("host", "host")).strip("-")[:24] or "host"
    kind = "gpu" if info.get("accelerators") else "cpu"
    return f"{host}-{kind}{info.get('cores', 0)}"


def rows_from_cases(section: str, cases: list[Case], baseline: str | None, *, model: str,
                    batch: int, input_size: str, dtype: str, unit: str = "images/s",
                    extra: dict | None = None) -> list[dict]:
    """One row per timed case; `ratio` = this case's speed / the baseline's (paired rounds)."""
    base = next((c for c in cases if c.name == baseline), None)
    load = load_average()
    rows = []
    for case in cases:
        t = median(case.times)
        rows.append({
            "section": section, "contender": case.name, "model": model, "batch": batch,
            "input": input_size, "dtype": dtype, "median_s": round(t, 5),
            "throughput": round(case.items / t, 2) if t > 0 else None, "unit": unit,
            "ratio": round(paired_ratio(case, base), 3) if base is not None else None,
            "median_cpu_s": round(median(case.cpu_times), 5),
            "cpu_ratio": (round(paired_ratio(case, base, cpu=True), 3)
                          if base is not None else None),
            "baseline": baseline, "runs": len(case.times),
            "times_s": [round(x, 5) for x in case.times],
            "cpu_times_s": [round(x, 5) for x in case.cpu_times],
            "peak_rss_mb": round(case.peak_rss_mb, 1), "delta_rss_mb": round(case.delta_rss_mb, 1),
            "load_avg": load, **(extra or {})})
    return rows


def _cell(value) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if isinstance(value, float):
        return f"{value:.3f}" if abs(value) < 10 else f"{value:.1f}"
    return str(value)


def markdown(result: dict) -> str:
    """The committed table: header with machine, backend and load; one line per figure."""
    m = result["machine"]
    lines = [f"# Benchmarks {result['date']} ({result['mode']} mode)", "",
             f"- machine: `{m['host']}`, {m['cpu']}, {m['cores']} cores; accelerators: "
             f"{', '.join(m['accelerators']) or 'none'}",
             f"- backend: {m['backend']} ({_frameworks(m)}), Python {m['python']}",
             f"- load average (1/5/15 min) at start {result['load_start']}, at end "
             f"{result['load_end']}; the machine is shared, so compare ratios (paired, "
             "alternating rounds), not absolute speeds",
             f"- each figure: median of {result['repeats']} timed runs after {result['warmup']} "
             "warm-up run(s); `ratio` = speed / baseline speed, median over rounds "
             "(> 1 is faster than the baseline); `CPU ratio` is the same on process CPU seconds "
             "(all threads), which depends far less on the machine's load",
             f"- wall time of the suite: {result['wall_s']:.0f} s", ""]
    for note in result.get("notes", []):
        lines.append(f"- note: {note}")
    if result.get("notes"):
        lines.append("")
    header = ["section", "contender", "model", "batch", "input", "dtype", "median s",
              "throughput", "ratio (vs)", "CPU ratio", "peak RSS MiB", "+RSS MiB"]
    lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for r in result["rows"]:
        ratio = "-" if r.get("ratio") is None else f"{r['ratio']:.3f} ({r['baseline']})"
        thr = "-" if r.get("throughput") is None else f"{_cell(r['throughput'])} {r['unit']}"
        lines.append("| " + " | ".join([
            r["section"], r["contender"], r["model"], _cell(r["batch"]), r["input"], r["dtype"],
            _cell(r["median_s"]), thr, ratio, _cell(r.get("cpu_ratio")),
            _cell(r.get("peak_rss_mb")),
            _cell(r.get("delta_rss_mb"))]) + " |")
    lines += settings_table(result["rows"])
    gpu_rows = [r for r in result["rows"] if "mfu" in r]
    if gpu_rows:
        lines += ["", "## GPU: model-FLOPs utilisation and device memory", "",
                  "MFU = images/s x 3 x 2 x MACs/image / dense bf16 peak of the device "
                  "(training = 3x the forward multiply-adds).", "",
                  "| contender | device | images/s | MACs/image | bf16 peak TFLOP/s | MFU "
                  "| peak device MiB |", "|---|---|---|---|---|---|---|"]
        for r in gpu_rows:
            peak = r.get("peak_bf16_tflops")
            peak = "-" if peak is None else f"{peak:g} ({r.get('peak_source')})"
            mfu = "-" if r.get("mfu") is None else f"{100 * r['mfu']:.1f} %"
            lines.append(f"| {r['contender']} | {r.get('device')} | {_cell(r['throughput'])} "
                         f"| {r['macs_per_image'] / 1e9:.3f} G | {peak} | {mfu} "
                         f"| {_cell(r.get('peak_device_mb'))} |")
    lines += ceiling_table(result["rows"])
    checks = result.get("checks", [])
    titles = {True: "Must-show checks",
              False: "Like-for-like checks (explain the must-show ones: same stride "
                     "placement, same multiply-adds, same precision; and bfloat16)"}
    for must_show, title in titles.items():
        group = [c for c in checks if c.get("must_show", True) is must_show]
        if not group:
            continue
        lines += ["", f"## {title}", "",
                  "| check | wall ratio | CPU-time ratio | target | pass (wall / CPU) |",
                  "|---|---|---|---|---|"]
        for c in group:
            cpu_pass = {None: "-", True: "yes", False: "NO"}[c.get("cpu_passed")]
            lines.append(f"| {c['check']} | {_cell(c['value'])} | {_cell(c.get('cpu_value'))} "
                         f"| {c['target']} | {'yes' if c['passed'] else 'NO'} / {cpu_pass} |")
    skipped = result.get("skipped", [])
    if skipped:
        lines += ["", "## Not measured", ""] + [f"- {s}" for s in skipped]
    return "\n".join(lines) + "\n"


def ceiling_table(rows: list[dict]) -> list[str]:
    """Inference and training against the CPU's ceiling (`benchmarks.ceiling`): model FLOP/s
    and their share of the best GEMM rate of their precision, measured on the same cores in
    the same run."""
    gemm = [r for r in rows if r["section"] == "CPU ceiling"]
    figures = [r for r in rows if "of_gemm_rate" in r]
    if not gemm or not figures:
        return []
    lines = ["", "## Against the CPU's ceiling", "",
             "Each framework's GEMM rate on these cores (one n x n x n product per call), and "
             "each figure's model FLOP/s (2 x multiply-adds x batch / time for inference, 6 x "
             "for a training step: forward and both backward products) as a share of the best "
             "GEMM rate of its precision. A figure near 100 % cannot get much faster at the "
             "same precision and multiply-adds.", "",
             "| GEMM | dtype | GFLOP/s (median) |", "|---|---|---|"]
    lines += [f"| {r['contender']} | {r['dtype']} | {_cell(r['throughput'])} |" for r in gemm]
    lines += ["", "| figure | contender | batch | dtype | median s | model GFLOP/s | of the "
              "GEMM rate |", "|---|---|---|---|---|---|---|"]
    lines += [f"| {r['section']}, {r['model']} | {r['contender']} | {r['batch']} | {r['dtype']} | "
              f"{_cell(r['median_s'])} | {_cell(r['model_gflops_s'])} | "
              f"{100 * r['of_gemm_rate']:.0f} % |" for r in figures]
    return lines


# Columns of the side-by-side table: which contender of a figure plays "ours" / "keras.apps".
SIDE_BY_SIDE = {"ours": ("ours", "ours SavedModel, BN folded", "resnet20 train step"),
                "keras.applications": ("keras.applications", "keras.applications SavedModel"),
                "torchvision": ("torchvision",)}


def settings_table(rows: list[dict]) -> list[str]:
    """oneDNN on / off side by side: one line per figure, cells `ratio (median s)` against
    that figure's baseline (rows from benchmarks.settings carry `setting` and `peer`)."""
    tagged = [r for r in rows if "setting" in r]
    if not tagged:
        return []
    cols = [("ours", "oneDNN on"), ("ours", "oneDNN off"), ("keras.applications", "oneDNN on"),
            ("keras.applications", "oneDNN off"), ("torchvision", None)]
    groups: dict[tuple, dict] = {}
    for r in tagged:
        key = (r["section"], r["model"], r["batch"])
        for col, peers in SIDE_BY_SIDE.items():
            if r["peer"] in peers and (col, r["setting"]) in cols:
                groups.setdefault(key, {})[(col, r["setting"])] = r
    if not groups:
        return []
    lines = ["", "## oneDNN on / off side by side", "",
             "Paired ratio against the figure's baseline (> 1 is faster), and the median "
             "seconds per call; SavedModel figures show ours BN-folded, the CIFAR figure the "
             "ResNet-20 step.", "",
             "| figure | baseline | " + " | ".join(
                 f"{c} {s}" if s else c for c, s in cols) + " |",
             "|---|---|" + "---|" * len(cols)]
    for (section, model, batch), cells in groups.items():
        base = next(iter(cells.values()))["baseline"]
        out = []
        for col in cols:
            r = cells.get(col)
            out.append("-" if r is None else f"{_cell(r['ratio'])} ({_cell(r['median_s'])} s)")
        lines.append(f"| {section}, {model}, batch {batch} | {base} | " + " | ".join(out) + " |")
    return lines


def _frameworks(m: dict) -> str:
    names = {"tensorflow": "TensorFlow", "jax": "JAX", "torch": "PyTorch"}
    main = names.get(m["backend"], m["backend"])
    parts = [f"{main} {m.get(m['backend'], '?')}", f"Keras {m['keras']}"]
    if m["backend"] != "torch" and m.get("torch"):
        parts.append(f"PyTorch {m['torch']}")
    return ", ".join(parts)


def write(result: dict, out_dir: Path = RESULTS_DIR, suffix: str = "") -> tuple[Path, Path]:
    """Write `<machine>-<date>[-quick][suffix].json` and `.md` and return both paths."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = f"{machine_slug(result['machine'])}-{result['date']}"
    stem += ("-quick" if result.get("mode") == "quick" else "") + suffix
    js, md = out_dir / f"{stem}.json", out_dir / f"{stem}.md"
    js.write_text(json.dumps(result, indent=1) + "\n")
    md.write_text(markdown(result))
    return js, md


def today() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%d")
