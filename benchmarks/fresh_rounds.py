"""ResNet-50 against the peers with every contender in a fresh process per round.

    python -m benchmarks.fresh_rounds [--rounds 5] [--steps 5] [--warmup 2] [--tag avx2cap]
    ONEDNN_MAX_CPU_ISA=AVX2 python -m benchmarks.fresh_rounds --tag avx2cap   # AVX2-only CPU

The suite (`python -m benchmarks`) keeps one worker process per setting alive and alternates
single calls across them, so a contender's idle thread pools sit beside another's timed call.
Here nothing does: each round starts each contender afresh, one at a time, in an order that
rotates round by round (ABC, BCA, CAB, ...); the process builds its model, warms up, times
`--steps` steps and reports their wall and process-CPU seconds, then exits. Figures: ResNet-50
inference at batch 1 and 16 and the training step at batch 16 (224x224), for

- ours under the setting the library picks for the batch (`runtime.onednn_pays_off`),
- keras.applications as users get it: TensorFlow's default on this CPU (oneDNN off on an
  AVX2-only CPU, and under an `ONEDNN_MAX_CPU_ISA=AVX2` cap),
- torchvision (where installed), in a process without TensorFlow.

Each round pairs ours with each peer (per-step median of each process); the figure is the
median over rounds of those ratios, checked against `benchmarks.targets`. Results:
`benchmarks/results/fresh-rounds-<machine>-<date>[-tag].{json,md}`, with the machine's load
at start and end.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from importlib.util import find_spec
from pathlib import Path

from benchmarks import report, settings
from benchmarks.targets import TARGETS
from benchmarks.timing import load_average, paired_speed_ratio

REPO = Path(__file__).resolve().parents[1]
OURS, KERAS_APPS, TORCHVISION = "ours", "keras.applications", "torchvision"  # benchmarks.peers
CHILD_TIMEOUT_S = 1800
# Left as the user has them (torch's OpenMP threads spin between calls by default, which
# costs nobody here: nothing else runs); recorded with the results.
THREAD_VARIABLES = ("OMP_NUM_THREADS", "OMP_WAIT_POLICY", "TF_NUM_INTRAOP_THREADS",
                    "TF_NUM_INTEROP_THREADS")


@dataclass(frozen=True)
class Figure:
    """One measured figure: inference or the training step at a batch size."""

    train: bool
    batch: int

    @property
    def name(self) -> str:
        return f"{'training step' if self.train else 'inference'}, batch {self.batch}"

    @property
    def kind(self) -> str:  # the targets' name for it
        return "training" if self.train else "inference"


@dataclass(frozen=True)
class Contender:
    """Who runs and how its process is set up: TensorFlow's oneDNN setting, or torch's."""

    name: str
    setting: str  # settings.ON / settings.OFF, or settings.TORCH

    @property
    def label(self) -> str:
        return settings.label(self.name, self.setting)


def child(name: str, figure: Figure, depth: int, size: int, steps: int, warmup: int) -> dict:
    """In the contender's own process: build, warm up, time `steps` steps; wall and CPU s."""
    from benchmarks import classify, peers  # Keras: after the process' environment is set
    from benchmarks.timing import _call

    if name == TORCHVISION:
        cases = classify.torchvision_cases(depth, figure.batch, train=figure.train, size=size)
    else:
        model = {name: peers.keras_peers(depth, with_hub=False, size=size)[name]()}
        make = classify.training_cases if figure.train else classify.inference_cases
        cases = make(model, figure.batch, size)
    if not cases:
        raise RuntimeError(f"{name}: not available in this process")
    case = cases[0]
    for _ in range(warmup):
        _call(case)
    timed = [_call(case) for _ in range(steps)]
    out = {"wall_s": [w for w, _ in timed], "cpu_s": [c for _, c in timed],
           "peak_rss_mb": round(case.peak_rss_mb, 1)}
    if name == TORCHVISION:
        out["torch_threads"] = sys.modules["torch"].get_num_threads()
    else:
        from keras_resnet_suite.runtime import onednn_enabled

        out["onednn"], out["machine"] = onednn_enabled(), report.machine_info()
    return out


def child_env(contender: Contender) -> dict[str, str]:
    """The environment of a contender's process: TensorFlow's setting, or no TensorFlow."""
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONPATH": str(REPO)}
    if contender.setting == settings.TORCH:
        env["KERAS_BACKEND"] = "torch"  # keeps TensorFlow out of torch's process
        env.pop("KRS_BENCH_NO_TORCHVISION", None)
    else:
        env["KERAS_BACKEND"] = "tensorflow"
        env[settings.ONEDNN_ENV] = "1" if contender.setting == settings.ON else "0"
        env["KRS_BENCH_NO_TORCHVISION"] = "1"
    return env


def run_child(contender: Contender, figure: Figure, a: argparse.Namespace) -> dict:
    """One fresh process of `contender` timing `figure`; its JSON answer."""
    args = [sys.executable, "-m", "benchmarks.fresh_rounds", "--child", contender.name,
            "--batch", str(figure.batch), "--steps", str(a.steps), "--warmup", str(a.warmup),
            "--size", str(a.size), "--depth", str(a.depth)] + (["--train"] if figure.train else [])
    return settings.fresh_process(args, child_env(contender), timeout=CHILD_TIMEOUT_S,
                                  what=f"{contender.label}, {figure.name}")


def library_settings(batches: list[int]) -> dict[int, bool]:
    """`runtime.onednn_pays_off(batch)` for each batch, asked of a fresh interpreter so that
    this driver never loads TensorFlow."""
    code = ("import json\nfrom keras_resnet_suite.runtime import onednn_pays_off\n"
            f"print(json.dumps({{b: onednn_pays_off(b) for b in {sorted(set(batches))}}}))")
    answer = settings.fresh_process([sys.executable, "-c", code], timeout=600,
                                    what="probing runtime.onednn_pays_off")
    return {int(k): v for k, v in answer.items()}


def contenders(figure: Figure, pays_off: dict[int, bool], users: str,
               torch: bool) -> list[Contender]:
    """Ours as the library runs it, keras.applications as users get it, and torchvision."""
    ours = settings.ON if pays_off[figure.batch] else settings.OFF
    return ([Contender(OURS, ours), Contender(KERAS_APPS, users)]
            + ([Contender(TORCHVISION, settings.TORCH)] if torch else []))


def rounds(figures: list[Figure], lineup: dict[Figure, list[Contender]], n: int,
           run: Callable[[Contender, Figure], dict], log: Callable[[str], None]) -> dict:
    """`n` rounds; in each, every figure's contenders one after another, in an order that
    rotates round by round. Returns {"answers": {figure: {label: [answer per round]}},
    "failed": [one line each]}; a failed process ends its contender's figure, so each answer
    list is a prefix of the rounds and pairs stay aligned."""
    answers: dict = {f: {c.label: [] for c in lineup[f]} for f in figures}
    failed: dict = {}
    for r in range(n):
        for figure in figures:
            line = lineup[figure]
            for contender in line[r % len(line):] + line[:r % len(line)]:
                if (figure, contender.label) in failed:
                    continue
                try:
                    got = run(contender, figure)
                except settings.WorkerError as exc:
                    failed[(figure, contender.label)] = str(exc)
                    log(f"round {r + 1}: {exc}")
                    continue
                answers[figure][contender.label].append(got)
                log(f"round {r + 1}: {figure.name}: {contender.label} "
                    f"{statistics.median(got['wall_s']):.3f} s/step")
    return {"answers": answers, "failed": list(failed.values())}


def figure_rows(figure: Figure, line: list[Contender], answers: dict) -> list[dict]:
    """One row per contender: per-round step medians, and ours / it per round (speed)."""
    ours = line[0].label
    steps = {c.label: [statistics.median(a["wall_s"]) for a in answers[c.label]] for c in line}
    cpu = {c.label: [statistics.median(a["cpu_s"]) for a in answers[c.label]] for c in line}
    rows = []
    for c in line:
        per_round = [round(t / o, 3) for o, t in zip(steps[ours], steps[c.label], strict=False)]
        rows.append({"figure": figure.name, "contender": c.label, "setting": c.setting,
                     "batch": figure.batch, "rounds": len(steps[c.label]),
                     "step_s": steps[c.label], "cpu_step_s": cpu[c.label],
                     "median_step_s": _median(steps[c.label]),
                     "median_cpu_step_s": _median(cpu[c.label]),
                     "ours_over_this": _ratio(steps[ours], steps[c.label]),
                     "ours_over_this_cpu": _ratio(cpu[ours], cpu[c.label]),
                     "ours_over_this_per_round": per_round,
                     "onednn": sorted({str(a.get("onednn")) for a in answers[c.label]})})
    return rows


def _median(values: list[float]) -> float | None:
    return round(statistics.median(values), 4) if values else None


def _ratio(ours: list[float], theirs: list[float]) -> float | None:
    """Median over rounds of this round's speed ratio, ours over theirs (> 1: ours faster)."""
    pairs = min(len(ours), len(theirs))
    return round(paired_speed_ratio(ours[:pairs], theirs[:pairs]), 3) if pairs else None


def checks(figure: Figure, rows: list[dict]) -> list[dict]:
    """The targets of a figure against keras.applications and torchvision, met or not."""
    out = []
    for row in rows[1:]:
        peer = row["contender"].split(",")[0]
        target = TARGETS[f"{figure.kind} vs {peer}"]
        value, cpu = row["ours_over_this"], row["ours_over_this_cpu"]
        out.append({"check": f"ResNet-50 {figure.name}: {rows[0]['contender']} / "
                             f"{row['contender']}", "value": value, "cpu_value": cpu,
                    "target": f">= {target.ratio}", "met": value is not None
                    and value >= target.ratio, "cpu_met": cpu is not None
                    and cpu >= target.ratio})
    return out


def markdown(result: dict) -> str:
    """The results as a short Markdown page: steps per contender, then targets met or not."""
    m = result["machine"]
    lines = [f"# ResNet-50, fresh process per contender and round ({result['date']})", "",
             f"- machine: {m.get('cpu', '?')}, {m.get('cores', '?')} cores; "
             f"{result['cpu_flags']}; {result['tf_default']}",
             f"- command: `{result['command']}`",
             f"- {result['rounds']} rounds x {result['steps']} timed steps after "
             f"{result['warmup']} warm-up, {result['size']}x{result['size']}; load at start "
             f"{result['load_start']}, at end {result['load_end']}"]
    lines += [f"- {k}={v}" for k, v in {**result["caps"],
                                          **result.get("thread_environment", {})}.items()]
    lines += [f"- failed: {f}" for f in result["failed"]]
    lines += ["", "| figure | contender | s / step (median of rounds) | CPU s / step | "
              "ours / this | CPU ratio | per round |", "| --- | --- | --- | --- | --- | --- | --- |"]
    lines += [f"| {r['figure']} | {r['contender']} | {_cell(r['median_step_s'])} | "
              f"{_cell(r['median_cpu_step_s'])} | {_cell(r['ours_over_this'])} | "
              f"{_cell(r['ours_over_this_cpu'])} | "
              f"{', '.join(f'{v:.2f}' for v in r['ours_over_this_per_round'])} |"
              for r in result["rows"]]
    lines += ["", "| target | wall ratio | CPU ratio | target | met (wall / CPU) |",
              "| --- | --- | --- | --- | --- |"]
    lines += [f"| {c['check']} | {_cell(c['value'])} | {_cell(c['cpu_value'])} | "
              f"{c['target']} | {'met' if c['met'] else 'not met'} / "
              f"{'met' if c['cpu_met'] else 'not met'} |" for c in result["checks"]]
    return "\n".join(lines) + "\n"


def _cell(value) -> str:
    return "-" if value is None else f"{value:.3f}"


def parser() -> argparse.ArgumentParser:
    """The command line of `python -m benchmarks.fresh_rounds`."""
    p = argparse.ArgumentParser(prog="python -m benchmarks.fresh_rounds",
                                description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=5, help="rounds of every contender")
    p.add_argument("--steps", type=int, default=5, help="timed steps per process")
    p.add_argument("--warmup", type=int, default=2, help="untimed steps per process first")
    p.add_argument("--infer-batches", type=int, nargs="*", default=[1, 16],
                   help="inference batch sizes (none: no inference figure)")
    p.add_argument("--train-batch", type=int, default=16,
                   help="training step batch size (0: no training figure)")
    p.add_argument("--size", type=int, default=224, help="image side")
    p.add_argument("--depth", type=int, default=50, choices=(50, 101))
    p.add_argument("--no-torchvision", action="store_true", help="leave torchvision out")
    p.add_argument("--out", type=Path, default=report.RESULTS_DIR, help="results folder")
    p.add_argument("--tag", default="", help="appended to the results file names")
    p.add_argument("--child", choices=(OURS, KERAS_APPS, TORCHVISION), help=argparse.SUPPRESS)
    p.add_argument("--batch", type=int, default=1, help=argparse.SUPPRESS)
    p.add_argument("--train", action="store_true", help=argparse.SUPPRESS)
    return p


def _log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def measure(a: argparse.Namespace, run: Callable[[Contender, Figure], dict] | None = None,
            log: Callable[[str], None] = _log) -> dict:
    """Every figure's rounds, rows and checks, with the machine and its load around them."""
    figures = [Figure(False, b) for b in a.infer_batches]
    figures += [Figure(True, a.train_batch)] if a.train_batch else []
    caps = settings.cap_instruction_sets()
    users, how = settings.tensorflow_default()
    torch = not a.no_torchvision and all(find_spec(m) for m in ("torch", "torchvision"))
    pays_off = library_settings([f.batch for f in figures])
    lineup = {f: contenders(f, pays_off, users, torch) for f in figures}
    load_start, start = load_average(), time.perf_counter()
    got = rounds(figures, lineup, a.rounds, run or (lambda c, f: run_child(c, f, a)), log)
    rows = [r for f in figures for r in figure_rows(f, lineup[f], got["answers"][f])]
    machine = next((x["machine"] for f in figures for answers in got["answers"][f].values()
                    for x in answers if "machine" in x), {})
    threads = {k: os.environ[k] for k in THREAD_VARIABLES if os.environ.get(k)}
    return {"date": report.today(), "machine": machine, "cpu_flags": settings.cpu_flags(),
            "tf_default": how, "caps": caps, "thread_environment": threads, "rounds": a.rounds, "steps": a.steps,
            "warmup": a.warmup, "size": a.size, "load_start": load_start,
            "load_end": load_average(), "wall_s": round(time.perf_counter() - start, 1),
            "rows": rows, "checks": [c for f in figures
                                     for c in checks(f, [r for r in rows
                                                         if r["figure"] == f.name])],
            "failed": got["failed"], "host": platform.node()}


def _refusal(a: argparse.Namespace) -> str | None:
    """What is wrong with the command line, in one line, or None."""
    for flag, value, least in (("--rounds", a.rounds, 1), ("--steps", a.steps, 1),
                               ("--warmup", a.warmup, 0), ("--size", a.size, 32),
                               ("--batch", a.batch, 1), ("--train-batch", a.train_batch, 0)):
        if value < least:
            return f"{flag} must be at least {least}, got {value}"
    if any(b < 1 for b in a.infer_batches):
        return f"--infer-batches must be at least 1 each, got {a.infer_batches}"
    if not a.infer_batches and not a.train_batch:
        return "nothing to measure: no --infer-batches and --train-batch 0"
    return None


def main(argv: list[str] | None = None) -> int:
    """Measure, write the JSON and Markdown results, print the Markdown."""
    p = parser()
    a = p.parse_args(argv)
    if (why := _refusal(a)) is not None:
        p.error(why)
    if a.child:
        figure = Figure(a.train, a.batch)
        print(json.dumps(child(a.child, figure, a.depth, a.size, a.steps, a.warmup)), flush=True)
        return 0
    result = measure(a)
    result["command"] = "python -m benchmarks.fresh_rounds " + " ".join(
        argv if argv is not None else sys.argv[1:])
    slug = report.machine_slug({"host": result["host"], "cores": os.cpu_count()})
    stem = f"fresh-rounds-{slug}-{result['date']}" + (f"-{a.tag}" if a.tag else "")
    a.out.mkdir(parents=True, exist_ok=True)
    js, md = a.out / f"{stem}.json", a.out / f"{stem}.md"
    js.write_text(json.dumps(result, indent=1) + "\n")
    md.write_text(markdown(result))
    print(md.read_text())
    print(f"wrote {js} and {md}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
