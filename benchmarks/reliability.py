"""Reliability figures, re-measured: kill-and-resume of both training CLIs and a
serving load on the exported SavedModels (`benchmarks.serving_requests`).

    python -m benchmarks.reliability [--calls 1000] [--out benchmarks/results] [--skip-train]
                                     [--faults-only] [--soak-calls 10000]

Training-run faults (`benchmarks.run_faults`, unless --skip-train): two runs on one folder,
SIGTERM and resume, a full disk during a checkpoint and resume, on the detection CLI.

Kill and resume: `python -m detection train` (a tiny C4 detector on the built-in shapes data,
derived from `detection/configs/shapes_demo.yaml`) and `python -m keras_resnet_suite train`
(resnet20 on a 10-class folder of 160 32x32 PNGs) are each run three times from the shell: once
uninterrupted; once SIGKILLed mid-epoch after their first checkpoint (the step is read off the
Keras progress bar); once more, the same command, which resumes. The resumed final weights are
compared with the uninterrupted run's, array by array (bit-identical or the max abs diff), and
the time lost is the killed plus the resumed run's wall time minus the uninterrupted one's.

Serving load: the tiny detector (`detection.export.export_saved_model`) and resnet20 at 32x32
(`keras_resnet_suite.export.export_saved_model`) are exported, loaded back with plain
`tf.saved_model.load`, and sent `--calls` requests: `serving_default` with random batches of
1-4 random-size images, and `serving_bytes` with batches of JPEGs/PNGs of several sizes (some
with an EXIF orientation) among which a few bad uploads (garbage, a truncated JPEG, a header
declaring 8000x8000 pixels). Counted: exceptions, and every `valid`/`error` answer against the
element sent (each bad one must be answered `valid` False naming its index, each good one
True). Latency p50/p95 and RSS every `--every` calls. Nothing touches the network.
Results: `benchmarks/results/reliability-<host>-<date>[-onednn-off].{json,md}` (the suffix
when run under TF_ENABLE_ONEDNN_OPTS=0).
`--soak-calls N` adds the serving soak (`benchmarks.serving_soak`): N calls, each a new image
size, oneDNN on and off in fresh processes, RSS curve as `serving-soak-<host>-<date>.png`.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import re
import signal
import subprocess
import sys
import tempfile
import time
import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np

from benchmarks.report import today
from benchmarks.run_faults import faults_ok, markdown_rows, run_faults
from benchmarks.saved_models import CLASSES, export_models, tiny_detector_config
from benchmarks.serving_requests import serving_load
from benchmarks.timing import load_average

REPO = Path(__file__).resolve().parents[1]

# ---- kill and resume -------------------------------------------------------------------------


def tiny_cifar_folder(root: Path, per_class: int = 8) -> Path:
    """`root/{train,test}/<class>/*.png`: 10 classes of class-dependent 32x32 noise."""
    from PIL import Image

    rng = np.random.default_rng(0)
    for split, n in (("train", per_class), ("test", 2)):
        for c, name in enumerate(CLASSES):
            folder = root / split / name
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                pixels = rng.integers(0, 256, (32, 32, 3)) // 4 + 24 * c
                Image.fromarray(pixels.astype(np.uint8)).save(folder / f"{i}.png")
    return root


def _h5_arrays(source) -> dict[str, np.ndarray]:
    import h5py

    out: dict[str, np.ndarray] = {}
    with h5py.File(source, "r") as f:
        f.visititems(lambda k, v: out.__setitem__(k, v[()]) if hasattr(v, "shape") else None)
    return out


def detector_weights(run: Path) -> dict[str, np.ndarray]:
    """Every array of a detection run's `final.weights.h5`, by its HDF5 path."""
    return _h5_arrays(run / "final.weights.h5")


def classifier_weights(run: Path) -> dict[str, np.ndarray]:
    """Every array of the weights inside a classifier run's `model.keras` (a zip)."""
    with zipfile.ZipFile(run / "model.keras") as z:
        return _h5_arrays(io.BytesIO(z.read("model.weights.h5")))


def compare_weights(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> dict:
    """`{"arrays", "identical", "max_abs_diff"}` of two runs' weights (same names required)."""
    if a.keys() != b.keys():
        raise ValueError(f"different weight names: {sorted(a.keys() ^ b.keys())[:5]}")
    diff = max((float(np.max(np.abs(a[k].astype(np.float64) - b[k].astype(np.float64))))
                for k in a if a[k].size), default=0.0)  # fmt: skip
    return {"arrays": len(a), "identical": all(np.array_equal(a[k], b[k]) for k in a),
            "max_abs_diff": diff}


_PROGRESS = re.compile(r"(\d+)/(\d+)\x1b\[0m")  # Keras' progress bar: "\x1b[1m 5/16\x1b[0m"
_EPOCH = re.compile(r"^Epoch (\d+)/\d+")


def _env() -> dict:
    path = [str(REPO), *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))]
    return {**os.environ, "PYTHONUNBUFFERED": "1", "TF_CPP_MIN_LOG_LEVEL": "3",
            "PYTHONPATH": os.pathsep.join(path)}


def _run(cmd: list[str], timeout: float) -> tuple[str, float]:
    """Run `cmd` to the end; its output and wall time. A failing run raises, naming it."""
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=_env(), cwd=REPO,
                          timeout=timeout)  # fmt: skip
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} exited {proc.returncode}:\n{proc.stderr[-2000:]}")
    return proc.stdout, time.perf_counter() - start


def run_until_step(cmd: list[str], kill_at: int, checkpoints: Path,
                   timeout: float) -> tuple[int, float]:
    """Start `cmd` (a fresh training run) and SIGKILL it once its progress bar shows global
    step `kill_at` or later and a checkpoint exists; `(steps done by the kill, wall seconds)`.

    On a loaded machine this reader may be scheduled a few steps late, so the run is first
    frozen (SIGSTOP) and the rest of its output read; the bar is redrawn at most every 50 ms,
    so the steps done are the larger of the last step drawn and the newest checkpoint's step:
    a lower bound, exact to within the steps of one redraw."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                            env=_env(), cwd=REPO)  # fmt: skip
    fd, state = proc.stdout.fileno(), {"epoch": 1, "step": 0, "buffer": b""}

    def parse(chunk: bytes) -> None:
        *pieces, state["buffer"] = re.split(rb"[\r\n]", state["buffer"] + chunk)
        for piece in pieces:
            text = piece.decode(errors="replace")
            if m := _EPOCH.match(text):
                state["epoch"] = int(m.group(1))
            elif m := _PROGRESS.search(text):
                step = (state["epoch"] - 1) * int(m.group(2)) + int(m.group(1))
                state["step"] = max(state["step"], step)

    try:
        while time.perf_counter() - start < timeout:
            chunk = os.read(fd, 65536)
            if not chunk:
                raise RuntimeError(f"{' '.join(cmd)} ended before step {kill_at}")
            parse(chunk)
            if state["step"] >= kill_at and any(checkpoints.glob("step-*")):
                os.kill(proc.pid, signal.SIGSTOP)
                os.set_blocking(fd, False)
                while chunk := _read_ready(fd):
                    parse(chunk)
                newest = max(int(p.name.split("-")[1]) for p in checkpoints.glob("step-*"))
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait(timeout=60)
                return max(state["step"], newest), time.perf_counter() - start
        raise RuntimeError(f"{' '.join(cmd)} did not reach step {kill_at} in {timeout:.0f} s")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=60)
        proc.stdout.close()


def _read_ready(fd: int) -> bytes:
    """What a non-blocking pipe holds now (b"" when empty)."""
    try:
        return os.read(fd, 65536)
    except BlockingIOError:
        return b""


def kill_and_resume(name: str, command: Callable[[Path], list[str]], checkpoints: str,
                    weights: Callable[[Path], dict], kill_at: int, work: Path,
                    timeout: float = 900) -> dict:
    """One CLI's kill-and-resume figures: uninterrupted vs. killed at `kill_at` and re-run."""
    whole, split = work / f"{name}-whole", work / f"{name}-split"
    _, whole_s = _run(command(whole), timeout)
    killed_step, killed_s = run_until_step(command(split), kill_at, split / checkpoints, timeout)
    kept = sorted(int(p.name.split("-")[1]) for p in (split / checkpoints).glob("step-*"))
    # a checkpoint being written at the kill is a temporary folder the resume ignores
    log, resumed_s = _run(command(split), timeout)
    m = re.search(r"resuming from step (\d+) of (\d+)", log)
    if not m:
        raise RuntimeError(f"{name}: the re-run did not resume:\n{log[-2000:]}")
    resumed_from, total = int(m.group(1)), int(m.group(2))
    result = {"name": name, "command": " ".join(command(Path("RUN"))).replace(sys.executable, "python")
              .replace(str(work), "WORK"), "total_steps": total,
              "killed_at_step": killed_step, "checkpoints_at_kill": kept,
              "resumed_from_step": resumed_from, "steps_redone": killed_step - resumed_from,
              "uninterrupted_s": round(whole_s, 1), "killed_s": round(killed_s, 1),
              "resumed_s": round(resumed_s, 1),
              "time_lost_s": round(killed_s + resumed_s - whole_s, 1),
              **compare_weights(weights(whole), weights(split))}  # fmt: skip
    print(f"{name}: killed at step {killed_step}, resumed from {resumed_from} of {total}; "
          f"final weights {'bit-identical' if result['identical'] else 'differ'} "
          f"(max abs diff {result['max_abs_diff']:.3g}); time lost {result['time_lost_s']} s",
          flush=True)  # fmt: skip
    return result


def kill_and_resume_all(work: Path) -> list[dict]:
    """Both training CLIs, each killed mid-epoch a few steps after its first checkpoint (the
    progress bar is read late on a loaded machine, so the kill is aimed early in the interval
    between the first and second checkpoint)."""
    config = tiny_detector_config(work / "detector.yaml")
    folder = tiny_cifar_folder(work / "tiny-cifar", per_class=16)  # 20 steps an epoch
    detector = kill_and_resume(
        "python -m detection train",
        lambda out: [sys.executable, "-m", "detection", "train", "--config", str(config),
                     "--out", str(out), "--eval-images", "1"],
        "checkpoints", detector_weights, kill_at=10, work=work)  # fmt: skip
    classifier = kill_and_resume(
        "python -m keras_resnet_suite train",
        lambda out: [sys.executable, "-m", "keras_resnet_suite", "train", "--model", "resnet20",
                     "--data", "cifar10", "--data-dir", str(folder), "--recipe", "paper-cifar",
                     "--out", str(out), "--steps", "40", "--batch-size", "8",
                     "--save-every", "10", "--verbose", "1", "--jit-compile", "false"],
        "backup", classifier_weights, kill_at=12, work=work)  # fmt: skip
    return [detector, classifier]


# ---- results ---------------------------------------------------------------------------------


def markdown(result: dict) -> str:
    """The results as two small tables."""
    lines = [f"Reliability, {result['host']} {result['date']} (load average "
             f"{', '.join(f'{v:g}' for v in result['load'])}); "
             f"{result.get('tensorflow', 'TensorFlow')}", ""]
    if result.get("kill_and_resume"):
        lines += ["| training CLI | SIGKILL at step | resumed from | steps redone | final weights "
                  "vs uninterrupted run | time lost (s) / uninterrupted run (s) |",
                  "| --- | --- | --- | --- | --- | --- |"]
        for r in result["kill_and_resume"]:
            same = ("bit-identical" if r["identical"]
                    else f"max abs diff {r['max_abs_diff']:.3g}")
            lines.append(f"| `{r['name']}` | {r['killed_at_step']} of {r['total_steps']} | "
                         f"{r['resumed_from_step']} | {r['steps_redone']} | {same} "
                         f"({r['arrays']} arrays) | {r['time_lost_s']} / "
                         f"{r['uninterrupted_s']} |")
        lines.append("")
    if result.get("run_faults"):
        lines += [*markdown_rows(result["run_faults"]), ""]
    s = result.get("serving")
    if s:
        growth = "n/a" if s["rss_growth_mb"] is None else f"{s['rss_growth_mb']:+.1f} MiB"
        lines += ["| serving calls | failures | bad elements sent / answered invalid | "
                  "accounting errors | p50 / p95 (ms) | RSS growth (call "
                  f"{s['rss_growth_from_call']} to {s['calls']}) |",
                  "| --- | --- | --- | --- | --- | --- |",
                  f"| {s['calls']} | {s['failures']} | {s['bad_elements_sent']} / "
                  f"{s['invalid_answers']} | {s['accounting_errors']} | "
                  f"{s['latency_ms']['p50']:.0f} / {s['latency_ms']['p95']:.0f} | {growth} |"]
        shapes = ", ".join(f"{m} {n}" for m, n in s["distinct_image_shapes"].items())
        lines += ["", f"Distinct `images` shapes sent to `serving_default`: {shapes} (oneDNN "
                  "keeps compiled kernels per input shape, up to its cache capacity)."]
    if result.get("kill_and_resume"):
        lines += ["", "SIGKILL step: the last one the progress bar drew (a lower bound); time "
                  "lost: killed + resumed run minus the uninterrupted one (mostly the restart: "
                  "imports, graph building)."]
    command = "python -m benchmarks.reliability"
    if not result.get("onednn", True):
        command = "TF_ENABLE_ONEDNN_OPTS=0 " + command
    if s and s["calls_asked"] != 1000:
        command += f" --calls {s['calls_asked']}"
    if not result.get("kill_and_resume"):
        command += " --faults-only" if result.get("run_faults") else " --skip-train"
    lines += ["", f"Reproduce: `{command}`"]
    return "\n".join(lines) + "\n"


def write_results(result: dict, out_dir: Path) -> tuple[Path, Path]:
    """Write `reliability-<host>-<date>.json` and `.md` into `out_dir`; both paths."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    # a run with oneDNN off (TF_ENABLE_ONEDNN_OPTS=0) is kept beside the default one
    off = "" if result.get("onednn", True) else "-onednn-off"
    faults_only = result.get("run_faults") and "serving" not in result  # --faults-only
    off += "-faults" if faults_only else ""
    stem = f"reliability-{result['host']}-{result['date']}{off}"
    js, md = out_dir / f"{stem}.json", out_dir / f"{stem}.md"
    js.write_text(json.dumps(result, indent=1) + "\n")
    md.write_text(markdown(result))
    return js, md


def _write_faults_only(result: dict, out: Path) -> int:
    """Results of `--faults-only`; 0 when every fault case behaved."""
    result["load_after"] = load_average()
    js, md = write_results(result, out)
    print(md.read_text() + f"written: {js}, {md}")
    return 0 if all(faults_ok(r) for r in result["run_faults"]) else 1


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--calls", type=int, default=1000, help="serving requests (default 1000)")
    p.add_argument("--every", type=int, default=100, help="calls between RSS samples")
    p.add_argument("--max-seconds", type=float, default=1800, help="serving time bound")
    p.add_argument("--skip-train", action="store_true", help="only the serving load")
    p.add_argument("--faults-only", action="store_true", help="only the training-run faults")
    p.add_argument("--soak-calls", type=int, default=0, help="also the serving soak "
                   "(`benchmarks.serving_soak`, e.g. 10000 calls of distinct image sizes)")
    p.add_argument("--out", default=str(REPO / "benchmarks" / "results"))
    a = p.parse_args(argv)
    if a.calls < 1 or a.every < 1:
        p.error("--calls and --every must be positive")
    from keras_resnet_suite import runtime

    result = {"host": platform.node() or "host", "date": today(), "load": load_average(),
              "tensorflow": runtime.describe(), "onednn": runtime.onednn_enabled()}
    with tempfile.TemporaryDirectory(prefix="krs-reliability-") as tmp:
        work = Path(tmp)
        if not (a.skip_train or a.faults_only):
            result["kill_and_resume"] = kill_and_resume_all(work)
        if not a.skip_train:
            result["run_faults"] = run_faults(tiny_detector_config(work / "detector.yaml"), work)
        if a.faults_only:
            return _write_faults_only(result, Path(a.out))
        models = export_models(work)
        serving = serving_load(models, a.calls, a.every, max_seconds=a.max_seconds)
        if a.soak_calls > 0:
            from benchmarks.serving_soak import soak

            result["soak"] = soak(models, a.soak_calls, max(1, a.soak_calls // 40), Path(a.out))
    result["serving"] = serving
    result["load_after"] = load_average()
    print(f"serving: {serving['calls']} calls, {serving['failures']} failures, "
          f"{serving['bad_elements_sent']} bad elements sent, {serving['invalid_answers']} "
          f"answered invalid, {serving['accounting_errors']} accounting errors, RSS growth "
          f"{serving['rss_growth_mb']} MiB", flush=True)  # fmt: skip
    js, md = write_results(result, Path(a.out))
    print(md.read_text() + f"written: {js}, {md}")
    return 0 if serving["failures"] == serving["accounting_errors"] == 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
