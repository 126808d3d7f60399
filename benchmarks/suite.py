"""What a benchmark run holds: its mode, its rows, checks, notes and skips, and its workers.

Each section (`benchmarks.sections`) builds its figures in worker processes through
`Suite.compare_remote`, then records paired speed ratios against the table of targets
(`benchmarks.targets`) through `Suite.check`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from benchmarks import settings as workers
from benchmarks.report import rows_from_cases
from benchmarks.targets import TARGETS, Target
from benchmarks.timing import alternate, paired_speed_ratio


@dataclass
class Mode:
    """How much to measure: the default mode gives the figures, `quick` only smoke-tests."""

    name: str
    warmup: int
    repeats: int  # timed rounds of heavy figures (batch 32 and up)
    repeats_small: int  # timed rounds of light ones (batch 1): cheap, and noisier per run
    infer_batches: tuple[int, ...]
    train_batch: int
    serving_batches: tuple[int, ...]
    cifar_batches: int
    detection: bool
    det_repeats: int
    with_v1: bool  # time ours with stride_in_1x1 too (keras.applications' architecture)
    with_hub: bool  # keras-hub where installed (our default's architecture)
    with_bf16: bool = True  # ResNet-50 in bfloat16 too, where the CPU computes it natively
    det_configs: tuple[tuple[str, str], ...] = (("resnet50", "fpn"), ("resnet101", "c4"))
    masks: bool = False  # Mask R-CNN's figures (opt-in: --only mask_rcnn, or --detection)


# Every figure runs five contenders (ours and keras.applications under both oneDNN settings,
# and torchvision).
MODES = {
    "default": Mode("default", warmup=1, repeats=3, repeats_small=5, infer_batches=(1, 16),
                    train_batch=16, serving_batches=(1, 8), cifar_batches=50, detection=False,
                    det_repeats=3, with_v1=True, with_hub=True),
    "quick": Mode("quick", warmup=1, repeats=3, repeats_small=5, infer_batches=(1, 8),
                  train_batch=8, serving_batches=(1,), cifar_batches=50, detection=False,
                  det_repeats=1, with_v1=False, with_hub=False, with_bf16=False,
                  det_configs=(("resnet50", "fpn"),)),
}


@dataclass
class Suite:
    """The state of one run, shared by its sections."""

    mode: Mode
    deadline: float = float("inf")  # perf_counter() after which figures are skipped
    verbose: bool = True
    rows: list = field(default_factory=list)
    notes: list = field(default_factory=list)
    skipped: list = field(default_factory=list)
    checks: list = field(default_factory=list)
    gpu: object = None  # benchmarks.gpu.Options of the GPU mode
    settings: tuple[str, ...] = (workers.ON, workers.OFF)  # TensorFlow's, side by side
    tf_default: str = workers.OFF  # what TensorFlow picks on this CPU, variable unset
    pool: workers.Pool | None = None  # the worker processes (benchmarks.settings)
    gemm: dict | None = None  # best GEMM FLOP/s by dtype (benchmarks.ceiling)

    def log(self, msg: str) -> None:
        if self.verbose:
            print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)

    def _out_of_time(self, what: str) -> bool:
        if time.perf_counter() <= self.deadline:
            return False
        self.skipped.append(f"{what}: time budget (--max-minutes) spent")
        self.log(self.skipped[-1])
        return True

    def _repeats(self, batch: int) -> int:
        return self.mode.repeats_small if batch <= 8 else self.mode.repeats

    def compare(self, section: str, cases, baseline, repeats=None, warmup=None, **meta) -> list:
        """Time `cases` alternating in this process, add one row per case, return those rows."""
        if self._out_of_time(f"{section} {meta.get('model')} batch {meta.get('batch')}"):
            return []
        repeats = self._repeats(meta.get("batch", 99)) if repeats is None else repeats
        self.log(f"{section}: {meta.get('model')} batch {meta.get('batch')} "
                 f"({', '.join(c.name for c in cases)})")
        alternate(cases, self.mode.warmup if warmup is None else warmup, repeats,
                  progress=self.log)
        rows = rows_from_cases(section, cases, baseline, **meta)
        self.rows += rows
        for r in rows:
            self.log(f"  {r['contender']:<24} {r['median_s']:.4f} s  {r['throughput']} "
                     f"{r['unit']}  ratio {r['ratio']}  peak RSS {r['peak_rss_mb']} MiB")
        return rows

    def compare_remote(self, section: str, figure: str, plan: dict, baseline: str | None,
                       repeats: int | None = None, items=None, extra: dict | None = None,
                       **meta) -> list:
        """`compare` across worker processes (benchmarks.settings): build `figure` in each
        worker of `plan`, alternate single calls of all contenders, add one row per case."""
        what = f"{section} {meta.get('model')} batch {meta.get('batch')}"
        if self._out_of_time(what):
            return []
        repeats = self._repeats(meta.get("batch", 99)) if repeats is None else repeats
        batch = meta.get("batch", 1)
        t = time.perf_counter()
        try:
            cases = workers.setup(self.pool, figure, plan, items or (lambda _name: batch))
            self.log(f"{what}: built {', '.join(c.name for c in cases)} in "
                     f"{time.perf_counter() - t:.0f} s")
            workers.alternate(cases, self.mode.warmup, repeats, progress=self.log)
        except workers.WorkerError as exc:
            self.skipped.append(f"{what}: {exc}")
            self.log(f"{what} FAILED: {exc}")
            self.pool.close()  # a fresh set of workers for the next figure
            return []
        rows = rows_from_cases(section, cases, baseline, extra=extra, **meta)
        for r, c in zip(rows, cases, strict=True):
            r["setting"], r["peer"], r["items"] = c.setting, c.peer, c.items
        self.rows += rows
        for r in rows:
            self.log(f"  {r['contender']:<36} {r['median_s']:.4f} s  {r['throughput']} "
                     f"{r['unit']}  ratio {r['ratio']}  CPU ratio {r['cpu_ratio']}")
        workers.free(self.pool)
        return rows

    def check(self, name: str, rows: list, contender: str, target: Target,
              versus: str | None = None) -> None:
        """Record `contender`'s paired speed ratio against the rows' baseline, or against
        the `versus` contender of the same rows, with the `target` it must reach."""
        row = next((r for r in rows if r["contender"] == contender), None)
        base = row if versus is None else next((r for r in rows if r["contender"] == versus),
                                               None)
        if row is None or base is None or row.get("ratio") is None:
            self.skipped.append(f"check '{name}': no figure")
            return
        value, cpu = row["ratio"], row.get("cpu_ratio")
        if versus is not None:
            items = row.get("items", 1), base.get("items", 1)  # per call: a stream vs a step
            value = round(paired_speed_ratio(row["times_s"], base["times_s"], *items), 3)
            cpu = round(paired_speed_ratio(row["cpu_times_s"], base["cpu_times_s"], *items), 3)
        self.checks.append({"check": name, "value": value, "cpu_value": cpu,
                            "target": f">= {target.ratio}", "passed": bool(value >= target.ratio),
                            "cpu_passed": None if cpu is None else bool(cpu >= target.ratio),
                            "must_show": target.must_show})


def plan(suite: Suite, on: list[str], off: list[str], torch: list[str], **args) -> dict:
    """Which contenders each worker builds (the settings `--onednn` asks for)."""
    want = suite.settings
    return {workers.ON: (on if workers.ON in want else [], args),
            workers.OFF: (off if workers.OFF in want else [], args),
            workers.TORCH: (torch, args)}


def setting_checks(suite: Suite, figure: str, rows: list, peers: list[str]) -> None:
    """Like-for-like ratios behind the must-show ones: each peer with oneDNN on against itself
    with it off (what the setting alone is worth)."""
    for peer in peers:
        suite.check(f"{figure}: {peer}, oneDNN on / off", rows,
                    workers.label(peer, workers.ON), TARGETS["oneDNN on vs off"],
                    versus=workers.label(peer, workers.OFF))
