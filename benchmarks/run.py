"""Run the suite, print the table, write `benchmarks/results/<machine>-<date>.{json,md}`.

    python -m benchmarks            # default mode, about 30 min on 2 cores
    python -m benchmarks --quick    # smoke run, about 6 min: ResNet-50 only, small batches
    python -m benchmarks --onednn on          # one TensorFlow setting instead of both
    python -m benchmarks --only resnet50 serving --max-minutes 30
    python -m benchmarks --only detection --detection   # Faster R-CNN (long on a CPU)
    python -m benchmarks --only mask_rcnn   # Mask R-CNN vs torchvision and detectron2
    KERAS_BACKEND=jax python -m benchmarks --only gpu --gpu    # on a GPU machine (no TF needed)
    python -m benchmarks.fresh_rounds   # ResNet-50, a fresh process per contender and round

Every CPU figure times ours and keras.applications with TensorFlow's oneDNN kernels on and off
side by side, each setting in a worker process of its own since TensorFlow reads
TF_ENABLE_ONEDNN_OPTS at import, and torchvision in a third; calls alternate across the
processes round by round (benchmarks/settings.py, benchmarks/worker.py). Ratios are against
keras.applications as users get it: under TensorFlow's default for this CPU. The sections are
in benchmarks/sections/, the targets each figure is checked against in benchmarks/targets.py.

Faster R-CNN at the 600-pixel canvas costs minutes per image on 2 CPU cores, so it is opt-in
(`--detection`); its figures go to a results file of their own (suffix `-detection`).

The GPU mode (`--gpu`, see benchmarks/gpu.py) is opt-in too and never part of the CPU run:
ResNet-50 training images/s under JAX + XLA + mixed_bfloat16 against torchvision with
channels_last + bf16 autocast on the same GPU, with model-FLOPs utilisation and peak device
memory. Options: `--gpu-batch 256`, `--gpu-size 224`, `--gpu-steps 10` (steps per timed call),
`--peak-tflops` (the device's dense bf16 peak, when not in gpu.PEAK_BF16_TFLOPS),
`--torch-compile`. It refuses to run without KERAS_BACKEND=jax, and without a GPU unless
`--allow-cpu` (a smoke run: batch 2 at 32x32, one step, one round).
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from benchmarks import report, settings
from benchmarks.sections import CPU_SECTIONS, QUICK_SECTIONS, SECTIONS, runner
from benchmarks.suite import MODES, Mode, Suite
from benchmarks.timing import load_average

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# torch's OpenMP workers spin for a while after each call by default, stealing the cores from
# whichever contender runs next (measured: the model timed right after torchvision ran ~2x
# slower). Passive waiting keeps alternating peers independent.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def parser() -> argparse.ArgumentParser:
    """The command line of `python -m benchmarks`."""
    p = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true",
                   help="smoke run (about 6 min): R50, small batches")
    p.add_argument("--only", nargs="+", choices=sorted(SECTIONS), help="run only these sections")
    p.add_argument("--out", type=Path, default=None, help="results folder "
                   "(default benchmarks/results)")
    p.add_argument("--repeats", type=int, default=None, help="timed rounds per figure")
    p.add_argument("--max-minutes", type=float, default=None,
                   help="skip the remaining figures after this long (default 40; quick 6)")
    p.add_argument("--no-torchvision", action="store_true",
                   help="leave torchvision out (its calls slow the TF call that follows them)")
    p.add_argument("--detection", action="store_true",
                   help="also time Faster R-CNN R101-C4 / R50-FPN (minutes per step on a CPU)")
    p.add_argument("--tag", default="", help="appended to the results file names, e.g. "
                   "avx2cap for a run under ONEDNN_MAX_CPU_ISA=AVX2")
    p.add_argument("--onednn", choices=("both", "on", "off"), default="both",
                   help="TensorFlow's oneDNN kernels for our and keras.applications' figures: "
                   "both side by side (default; one worker process per setting), or one")
    g = p.add_argument_group("GPU mode (KERAS_BACKEND=jax)")
    g.add_argument("--gpu", action="store_true", help="run the GPU mode: ResNet-50 training, "
                   "JAX/XLA mixed_bfloat16 vs torchvision AMP, and MFU (alone unless --only)")
    g.add_argument("--allow-cpu", action="store_true", help="let the GPU mode run without a "
                   "GPU as a smoke run (batch 2 at 32x32, 1 step, 1 round)")
    g.add_argument("--gpu-batch", type=int, default=None, help="batch size (default 256)")
    g.add_argument("--gpu-size", type=int, default=None, help="image side (default 224)")
    g.add_argument("--gpu-steps", type=int, default=None,
                   help="training steps per timed call (default 10)")
    g.add_argument("--peak-tflops", type=float, default=None,
                   help="dense bf16 peak of the device in TFLOP/s, for the MFU (default: "
                   "looked up by device name in benchmarks.gpu.PEAK_BF16_TFLOPS)")
    g.add_argument("--torch-compile", action="store_true",
                   help="wrap the torchvision peer in torch.compile (default: eager)")
    return p


def _import_torch_first() -> None:
    """Import torch/torchvision (optional peers) before TensorFlow: the other order segfaults
    in `torch._dynamo`'s import with TF 2.21 + torch 2.14 loaded in one process."""
    from importlib.util import find_spec

    if os.environ.get("KRS_BENCH_NO_TORCHVISION"):
        return
    if find_spec("torch") and find_spec("torchvision") and "tensorflow" not in sys.modules:
        import torch  # noqa: F401
        import torchvision.models  # noqa: F401


def _gpu_options(a: argparse.Namespace, backend: str):
    """(options, smoke run?) of the GPU mode, or (refusal, None) where it cannot run."""
    from benchmarks import gpu  # loads Keras: only once the environment is set

    reason = gpu.refusal(backend, a.allow_cpu)
    if reason:
        return reason, None
    smoke = gpu.jax_accelerator() is None
    return gpu.Options(batch=a.gpu_batch or (2 if smoke else 256),
                       size=a.gpu_size or (32 if smoke else 224),
                       steps=a.gpu_steps or (1 if smoke else 10),
                       peak_tflops=a.peak_tflops, torch_compile=a.torch_compile,
                       allow_cpu=a.allow_cpu), smoke


def _mode(a: argparse.Namespace, smoke: bool) -> Mode:
    mode = replace(MODES["quick" if a.quick else "default"])  # a copy: main() may run twice
    if smoke:  # --allow-cpu without a GPU: plumbing only, one round
        mode.warmup, mode.repeats, mode.repeats_small = 1, 1, 1
    if a.repeats:
        mode.repeats = mode.det_repeats = a.repeats
        if smoke:
            mode.repeats_small = a.repeats
    mode.detection = a.detection
    mode.masks = a.detection or "mask_rcnn" in (a.only or ())
    return mode


def _cpu_setup(suite: Suite, onednn: str) -> None:
    """The worker pool, the settings to compare, TensorFlow's default here, and the notes."""
    suite.pool = settings.Pool()
    suite.settings = {"both": (settings.ON, settings.OFF), "on": (settings.ON,),
                      "off": (settings.OFF,)}[onednn]
    suite.tf_default, how = settings.tensorflow_default()
    suite.notes.append(f"CPU vector extensions: {settings.cpu_flags()}; {how}, so "
                       f"keras.applications 'as users get it' is its {suite.tf_default} "
                       "row. Each setting runs in a worker process of its own (TensorFlow "
                       "reads TF_ENABLE_ONEDNN_OPTS at import), torchvision in a third; "
                       "calls alternate across the processes round by round")
    caps = settings.cap_instruction_sets()
    if caps:  # e.g. an AVX2-only CPU emulated on an AVX-512 one
        suite.notes.append("instruction sets capped for every contender: " + ", ".join(
            f"{k}={v}" for k, v in caps.items()) + " (oneDNN's kernels in TensorFlow and "
            "torch, torch's ATen kernels and MKL GEMM; TensorFlow's own Eigen kernels are "
            "compiled in)")


def _seed(gpu_mode: bool) -> None:
    import keras  # after the environment: TensorFlow and JAX read it at import

    if gpu_mode:  # keras.utils.set_random_seed would import TensorFlow to seed it too
        random.seed(0)  # Keras' default seeds come from Python's `random`
        np.random.seed(0)
    else:
        keras.utils.set_random_seed(0)


def _gpu_note(suite: Suite, info: dict, smoke: bool | None) -> None:
    from benchmarks import gpu  # loads Keras: only once the environment is set

    if smoke:
        suite.notes.append("--allow-cpu smoke run of the GPU mode on the CPU (tiny batch and "
                           "images, one round): checks the plumbing, not a figure to report; "
                           f"on a GPU machine run `{gpu.GPU_COMMAND}`")
    elif not info["accelerators"]:
        suite.notes.append("no GPU on this machine, so the GPU mode (KERAS_BACKEND=jax, bf16, "
                           "XLA vs torchvision AMP, MFU) was not measured here: on a GPU "
                           f"machine run `{gpu.GPU_COMMAND}`")


def _run_sections(suite: Suite, sections: list[str], budget: float, save) -> None:
    """Each section in turn, saving after each; a failing one is recorded, not fatal."""
    try:
        for name in sections:
            t = time.perf_counter()
            if t > suite.deadline:
                suite.skipped.append(f"section {name}: time budget (--max-minutes {budget}) "
                                     "spent")
                continue
            try:
                runner(name)(suite)
            except Exception as exc:  # one broken section must not lose the others' figures
                suite.skipped.append(f"section {name} failed: {type(exc).__name__}: {exc}")
                suite.log(f"section {name} FAILED: {exc!r}")
            suite.log(f"section {name}: {time.perf_counter() - t:.0f} s")
            save()
        if suite.pool is not None and settings.TORCH in suite.pool.workers:
            tinfo = suite.pool.workers[settings.TORCH].request("call", fn="info")["result"]
            suite.notes.append(f"torchvision ran with {tinfo.get('torch_threads')} threads")
    finally:
        if suite.pool is not None:
            suite.pool.close()


def _environment(a: argparse.Namespace, gpu_mode: bool) -> None:
    """What must be set before Keras and its backend load."""
    if a.no_torchvision:
        os.environ["KRS_BENCH_NO_TORCHVISION"] = "1"
    if gpu_mode:  # JAX would otherwise take 75 % of the GPU up front, leaving torch too little
        os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
        _import_torch_first()
    else:  # this command's own default (keras_resnet_suite.runtime); workers set it each
        os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")


def main(argv: list[str] | None = None) -> int:
    """Run the sections asked for and write the results; 2 where the GPU mode is refused."""
    p = parser()
    a = p.parse_args(argv)
    if a.only and "gpu" in a.only and not a.gpu:
        p.error("the gpu section is opt-in: add --gpu (under KERAS_BACKEND=jax on a GPU "
                "machine)")
    sections = a.only or (["gpu"] if a.gpu else QUICK_SECTIONS if a.quick else CPU_SECTIONS)
    gpu_mode = "gpu" in sections
    _environment(a, gpu_mode)
    import keras  # after the environment: TensorFlow and JAX read it at import

    backend = keras.backend.backend()
    gpu_opts = smoke = None
    if gpu_mode:
        gpu_opts, smoke = _gpu_options(a, backend)
        if smoke is None:
            print(f"python -m benchmarks --gpu: refused: {gpu_opts}", file=sys.stderr)
            return 2
    if backend != "tensorflow" and set(sections) - {"gpu"}:
        print("note: the CPU figures are for KERAS_BACKEND=tensorflow; running under "
              f"{backend!r}, SavedModel export may be unavailable", file=sys.stderr)
    mode = _mode(a, bool(smoke))
    start, load_start = time.perf_counter(), load_average()
    budget = a.max_minutes if a.max_minutes is not None else (6 if a.quick else 40)
    suite = Suite(mode, deadline=start + 60 * budget, gpu=gpu_opts)
    if not gpu_mode:
        _cpu_setup(suite, a.onednn)
    _seed(gpu_mode)
    info = report.machine_info()
    suite.log(f"{mode.name} mode on {info['cpu']} ({info['cores']} cores), backend "
              f"{info['backend']}, load {load_start}")
    _gpu_note(suite, info, smoke)
    suffix = "-" + "-".join(sorted(sections)) if a.only or a.gpu else ""
    suffix += f"-{a.tag}" if a.tag else ""
    command = "python -m benchmarks " + " ".join(argv if argv is not None else sys.argv[1:])

    def save() -> tuple[Path, Path]:
        # Rewritten after every section, so an interrupted run keeps what it measured.
        result = {"date": report.today(), "mode": mode.name, "machine": info,
                  "warmup": mode.warmup, "repeats": mode.repeats,
                  "repeats_batch1": mode.repeats_small, "load_start": load_start,
                  "load_end": load_average(), "wall_s": round(time.perf_counter() - start, 1),
                  "command": command, "notes": suite.notes, "rows": suite.rows,
                  "checks": suite.checks, "skipped": suite.skipped}
        return report.write(result, a.out or report.RESULTS_DIR, suffix=suffix)

    _run_sections(suite, sections, budget, save)
    js, md = save()
    print(md.read_text())
    print(f"wrote {js} and {md}")
    return 0
