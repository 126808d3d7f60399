"""oneDNN on and off side by side: paired rounds across worker processes.

TensorFlow fixes its oneDNN setting at import, so each setting runs in a worker process of its
own (`benchmarks.worker`), and torchvision in a third one. The driver alternates single calls
of all of them round by round, rotating the order as `timing.alternate` does in one process,
so every round pairs the same moment of the machine's load across contenders and the ratios
stay paired (the machine is shared).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from benchmarks import timing
from benchmarks.timing import Case

REPO = Path(__file__).resolve().parents[1]
ONEDNN_ENV = "TF_ENABLE_ONEDNN_OPTS"
ON, OFF, TORCH = "oneDNN on", "oneDNN off", "torch"
RUNTIME_SUFFIXES = (", ONNX Runtime", ", OpenVINO")  # benchmarks.serving.RUNTIMES' labels


class WorkerError(RuntimeError):
    """A worker answered a request with an error, or died."""


@dataclass
class Worker:
    """One contender process under one setting (`ON`, `OFF`) or torch's (`TORCH`)."""

    setting: str
    proc: subprocess.Popen | None = None

    def start(self) -> Worker:
        env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONPATH": str(REPO)}
        env[ONEDNN_ENV] = "0" if self.setting == OFF else "1"
        if self.setting == TORCH:
            env["KRS_BENCH_ROLE"] = "torch"
            env.pop("KRS_BENCH_NO_TORCHVISION", None)
        else:  # keep torch out of the TensorFlow workers (and their import order)
            env["KRS_BENCH_NO_TORCHVISION"] = "1"
        self.proc = subprocess.Popen([sys.executable, "-m", "benchmarks.worker"], cwd=REPO,
                                     env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     text=True, bufsize=1)
        return self

    def request(self, op: str, **fields) -> dict:
        if self.proc is None:
            self.start()
        try:
            self.proc.stdin.write(json.dumps({"op": op, **fields}) + "\n")
            self.proc.stdin.flush()
            line = self.proc.stdout.readline()
        except (BrokenPipeError, OSError) as exc:
            raise WorkerError(f"{self.setting} worker died: {exc}") from exc
        if not line:
            raise WorkerError(f"{self.setting} worker exited (code {self.proc.poll()})")
        answer = json.loads(line)
        if "error" in answer:
            raise WorkerError(f"{self.setting} worker: {answer['error']}")
        return answer

    def close(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            try:
                self.proc.stdin.write(json.dumps({"op": "quit"}) + "\n")
                self.proc.stdin.flush()
                self.proc.wait(timeout=60)
            except (OSError, subprocess.TimeoutExpired):
                self.proc.kill()
        self.proc = None


@dataclass
class Pool:
    """The workers of a run, started on first use and kept across figures."""

    workers: dict[str, Worker] = field(default_factory=dict)

    def get(self, setting: str) -> Worker:
        if setting not in self.workers:
            self.workers[setting] = Worker(setting).start()
        return self.workers[setting]

    def close(self) -> None:
        for w in self.workers.values():
            w.close()
        self.workers.clear()


@dataclass
class RemoteCase(Case):
    """A case that lives in a worker; the driver keeps its timings."""

    worker: Worker | None = None
    remote: str = ""
    setting: str | None = None  # ON / OFF for TensorFlow contenders, None for torch's
    peer: str = ""  # the contender without its setting: "ours", "keras.applications", ...


def label(peer: str, setting: str | None) -> str:
    """`ours, oneDNN on`; torchvision (no TensorFlow setting) keeps its name."""
    return peer if setting in (None, TORCH) else f"{peer}, {setting}"


def setup(pool: Pool, figure: str, plan: dict[str, tuple[list[str], dict]],
          items: Callable[[str], int]) -> list[RemoteCase]:
    """Build `figure` in each worker: `plan` maps setting -> (contenders, figure arguments)."""
    cases = []
    for setting, (contenders, args) in plan.items():
        if not contenders:
            continue
        worker = pool.get(setting)
        names = worker.request("setup", figure=figure,
                               args={**args, "contenders": contenders})["cases"]
        for name in names:
            # torchvision and the non-TensorFlow runtimes do not depend on TensorFlow's setting
            s = None if setting == TORCH or name.endswith(RUNTIME_SUFFIXES) else setting
            cases.append(RemoteCase(label(name, s), run=lambda: None, items=items(name),
                                    worker=worker, remote=name, setting=s, peer=name))
    return cases


def _call(case: RemoteCase) -> tuple[float, float]:
    answer = case.worker.request("run", case=case.remote)
    case.peak_rss_mb = max(case.peak_rss_mb, answer["peak_rss_mb"])
    case.delta_rss_mb = max(case.delta_rss_mb, answer["delta_rss_mb"])
    return answer["wall"], answer["cpu"]


def alternate(cases: list[RemoteCase], warmup: int, repeats: int,
              progress: Callable[[str], None] | None = None) -> list[RemoteCase]:
    """`timing.alternate` across processes: warm-up, then rounds in a rotating order."""
    return timing.alternate(cases, warmup, repeats, progress, call=_call)


def free(pool: Pool) -> None:
    for w in pool.workers.values():
        w.request("free")


def tensorflow_default() -> tuple[str, str]:
    """(`ON` or `OFF`, how it was found): what TensorFlow does on this CPU with the variable
    unset, asked of a fresh interpreter (the answer is fixed at import)."""
    cap = os.environ.get("ONEDNN_MAX_CPU_ISA", "")
    if cap.upper().startswith("AVX2"):  # TensorFlow decides from the CPU, not from the cap
        return OFF, (f"emulating an AVX2-only CPU (ONEDNN_MAX_CPU_ISA={cap}), where "
                     f"TensorFlow with {ONEDNN_ENV} unset runs oneDNN off")
    env = {k: v for k, v in os.environ.items() if k != ONEDNN_ENV}
    env.update({"TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONPATH": str(REPO)})
    code = ("import tensorflow\nfrom tensorflow.python.util import _pywrap_util_port as p\n"
            "print(p.IsMklEnabled())")
    t = time.perf_counter()
    try:
        out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                             text=True, timeout=300, cwd=REPO).stdout.split()
    except (OSError, subprocess.TimeoutExpired) as exc:
        return OFF, f"probe failed ({exc}); assumed off"
    on = bool(out) and out[-1] == "True"
    return (ON if on else OFF), (f"TensorFlow with {ONEDNN_ENV} unset reports oneDNN "
                                 f"{'on' if on else 'off'} on this CPU "
                                 f"({time.perf_counter() - t:.0f} s probe)")


def cpu_flags() -> str:
    """The vector extensions that decide TensorFlow's default: AVX2, AVX-512 (and VNNI)."""
    try:
        with open("/proc/cpuinfo") as f:
            flags = next((ln.split(":", 1)[1].split() for ln in f if ln.startswith("flags")), [])
    except OSError:
        return "unknown"
    wanted = ["avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile"]
    return ", ".join(w for w in wanted if w in flags) or "none of AVX2/AVX-512"


CAP_VARIABLES = ("ONEDNN_MAX_CPU_ISA", "ATEN_CPU_CAPABILITY", "MKL_ENABLE_INSTRUCTIONS")


def cap_instruction_sets() -> dict[str, str]:
    """Under an AVX2 cap on oneDNN (`ONEDNN_MAX_CPU_ISA=AVX2`, an AVX2-only CPU emulated on an
    AVX-512 one), cap torch's ATen kernels and its MKL GEMM too, which ignore oneDNN's cap;
    return the caps in force, for the results' notes."""
    if os.environ.get("ONEDNN_MAX_CPU_ISA", "").upper().startswith("AVX2"):
        os.environ.setdefault("ATEN_CPU_CAPABILITY", "avx2")
        os.environ.setdefault("MKL_ENABLE_INSTRUCTIONS", "AVX2")
    return {k: os.environ[k] for k in CAP_VARIABLES if os.environ.get(k)}


def fresh_process(command: list[str], env: dict[str, str] | None = None, what: str = "",
                  timeout: float = 3600, starts: str = "{") -> dict | list:
    """Run `command` (an interpreter and its arguments) in a process of its own at the
    repository root, the environment plus `env`; the last line of its stdout that starts with
    `starts`, parsed as JSON. A failure raises WorkerError in one line: `what`, the exit code
    and the last line of the process' stderr (the exception, for a Python traceback)."""
    what = what or " ".join(command[1:4])
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONPATH": str(REPO), **(env or {})}
    try:
        proc = subprocess.run(command, capture_output=True, text=True, env=env, cwd=REPO,
                              timeout=timeout)
    except subprocess.TimeoutExpired as exc:
        raise WorkerError(f"{what}: no answer after {timeout:.0f} s") from exc
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith(starts)]
    if proc.returncode != 0 or not lines:
        last = proc.stderr.strip().splitlines()[-1:] or ["no output"]
        raise WorkerError(f"{what}: exit {proc.returncode}: {last[0]}")
    return json.loads(lines[-1])
