"""Alternating timers and peak-memory probes shared by every benchmark section."""

from __future__ import annotations

import os
import resource
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field

_STATUS = "/proc/self/status"
_CLEAR_REFS = "/proc/self/clear_refs"


def _status_kb(key: str) -> int | None:
    try:
        with open(_STATUS) as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def rss_mb() -> float | None:
    """Current resident set size of this process in MiB (None off Linux)."""
    kb = _status_kb("VmRSS")
    return None if kb is None else kb / 1024


def reset_peak_rss() -> bool:
    """Reset the kernel's peak-RSS counter (VmHWM) to the current RSS (Linux >= 4.0).

    This lets one process measure the peak of each model in turn instead of the whole run.
    """
    try:
        with open(_CLEAR_REFS, "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def peak_rss_mb() -> float:
    """Peak RSS in MiB since the last `reset_peak_rss` (else since process start)."""
    kb = _status_kb("VmHWM")
    if kb is None:  # not Linux: ru_maxrss is KiB on Linux, bytes on macOS
        kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return kb / 1024


@dataclass
class Case:
    """One contender: `run()` does one timed unit of work (a batch, a step, a request)."""

    name: str
    run: Callable[[], object]
    items: int = 1  # images per `run()`, for throughput
    times: list[float] = field(default_factory=list)
    cpu_times: list[float] = field(default_factory=list)  # process CPU seconds, all threads
    peak_rss_mb: float = 0.0  # process peak during this case's calls
    delta_rss_mb: float = 0.0  # how far above the RSS at call start that peak went


def _call(case: Case) -> tuple[float, float]:
    """Wall and process-CPU seconds of one run, updating the case's peak RSS."""
    reset_peak_rss()
    before = rss_mb() or 0.0
    c, t = time.process_time(), time.perf_counter()
    case.run()
    elapsed, cpu = time.perf_counter() - t, time.process_time() - c
    peak = peak_rss_mb()
    case.peak_rss_mb = max(case.peak_rss_mb, peak)
    case.delta_rss_mb = max(case.delta_rss_mb, peak - before)
    return elapsed, cpu


def alternate(cases: list[Case], warmup: int, repeats: int,
              progress: Callable[[str], None] | None = None,
              call: Callable[[Case], tuple[float, float]] | None = None) -> list[Case]:
    """Warm every case up, then time `repeats` rounds, rotating the order each round.

    Rotation spreads the machine's load drift over all contenders instead of favouring
    whichever always runs first; paired rounds also give per-round ratios. `call(case) ->
    (wall, cpu)` times one call (default: in this process).
    """
    call = call or _call
    if not cases:
        return cases
    for case in cases:
        for _ in range(warmup):
            call(case)
    for r in range(repeats):
        k = r % len(cases)
        for case in cases[k:] + cases[:k]:
            wall, cpu = call(case)
            case.times.append(wall)
            case.cpu_times.append(cpu)
        if progress:
            progress(f"round {r + 1}/{repeats}: " + ", ".join(
                f"{c.name} {c.times[-1]:.3f}s" for c in cases))
    return cases


def median(values: list[float]) -> float:
    return float(statistics.median(values)) if values else float("nan")


def paired_ratio(case: Case, baseline: Case, cpu: bool = False) -> float:
    """Median over rounds of case throughput / baseline throughput: > 1 means `case` is faster.

    Pairing each round's two timings cancels load drift that a ratio of medians would keep.
    `cpu=True` uses process CPU seconds instead of wall time: on a machine shared with other
    jobs, CPU time per image barely depends on how much of the CPU the scheduler granted.
    """
    mine, theirs = (case.cpu_times, baseline.cpu_times) if cpu else (case.times, baseline.times)
    return paired_speed_ratio(mine, theirs, case.items, baseline.items)


def paired_speed_ratio(times: list[float], base_times: list[float], items: int = 1,
                       base_items: int = 1) -> float:
    """Median over rounds of (items / time) / (base_items / base_time), round by round."""
    ratios = [(items / c) / (base_items / b)
              for c, b in zip(times, base_times, strict=False) if c > 0 and b > 0]
    return median(ratios)


def load_average() -> list[float]:
    """1-, 5- and 15-minute load averages (other engineers share this machine)."""
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except OSError:
        return []
