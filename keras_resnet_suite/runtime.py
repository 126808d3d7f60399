"""The CPU fast path: TensorFlow's oneDNN kernels, and whether a process runs with them.

TensorFlow reads `TF_ENABLE_ONEDNN_OPTS` once, when it is imported. Left unset, it turns its
oneDNN kernels on only on CPUs with neural-network instructions (AVX512_VNNI, AVX512_BF16, AMX);
on an AVX2-only x86 CPU they stay off, although they make a ResNet-50 training step 1.4x
faster there (docs/benchmarks.md).

- The processes this project starts (`keras-resnet-suite ...`, `python -m keras_resnet_suite`,
  `python -m detection ...`, `python -m benchmarks`, `python examples/*.py`) turn oneDNN on
  before TensorFlow loads, unless the variable is already set: `TF_ENABLE_ONEDNN_OPTS=0` keeps
  it off. The one-image command (`python -m detection predict`) turns it off instead where
  oneDNN lacks AVX-512 (`onednn_pays_off`). Their entry points call
  `default_for_our_commands()` first thing; importing the library sets nothing.
- Library users choose with the same variable, set before TensorFlow is imported (in the shell,
  or `os.environ["TF_ENABLE_ONEDNN_OPTS"] = "1"` at the top of the script), and ask
  `onednn_enabled()` whether it took effect. `enable_fast_cpu()` sets it where that is still
  possible and says so otherwise.

This module imports nothing heavy: it must run before TensorFlow.
"""

from __future__ import annotations

import os
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path

from keras_resnet_suite.console import quiet_tensorflow

ONEDNN_ENV = "TF_ENABLE_ONEDNN_OPTS"
_TRUE = ("1", "true")  # TensorFlow also accepts "0" and "false"
# `python -m <module>` for these packages (and their submodules) and this console script
# are this project's commands; `examples/` beside the package holds its example scripts.
_OUR_MODULES = ("keras_resnet_suite", "detection", "benchmarks")
_OUR_SCRIPTS = ("keras-resnet-suite",)
_EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def _setting() -> bool | None:
    """The choice made in the environment: True for on, False for anything else that is set
    (TensorFlow rejects other spellings), None when the variable is unset or empty."""
    value = os.environ.get(ONEDNN_ENV, "").strip().lower()
    return None if not value else value in _TRUE


def enable_fast_cpu() -> bool:
    """Turn TensorFlow's oneDNN kernels on for this process, if that is still possible.

    Sets `TF_ENABLE_ONEDNN_OPTS=1` when the variable is unset and TensorFlow is not imported
    yet. An explicit setting is respected (`0` keeps oneDNN off). Once TensorFlow is loaded
    the choice is made: this only warns when oneDNN ended up off. Returns whether oneDNN is
    (or will be) in effect.
    """
    choice = _setting()
    if choice is not None:
        return choice if "tensorflow" not in sys.modules else onednn_enabled()
    if "tensorflow" in sys.modules:
        enabled = onednn_enabled()
        if not enabled:
            warnings.warn("enable_fast_cpu(): TensorFlow is already imported with oneDNN off; "
                          f"set {ONEDNN_ENV}=1 before TensorFlow is imported", RuntimeWarning,
                          stacklevel=2)
        return enabled
    os.environ[ONEDNN_ENV] = "1"
    return True


def onednn_enabled() -> bool:
    """Whether TensorFlow runs its oneDNN kernels in this process (imports TensorFlow).

    Asks TensorFlow itself, which also knows its default for this CPU when the variable is
    unset; falls back to the variable where that private entry point is missing.
    """
    import tensorflow  # noqa: F401  (the answer is fixed at this import)

    try:
        from tensorflow.python.util import _pywrap_util_port
    except ImportError:  # pragma: no cover - other TensorFlow builds
        return bool(_setting())
    return bool(_pywrap_util_port.IsMklEnabled())


def onednn_may_use(flags: Sequence[str], isa_words: Sequence[str], unknown: bool) -> bool:
    """Whether oneDNN may use an instruction set here: the CPU reports one of `flags` (Linux
    `/proc/cpuinfo` names, e.g. "avx512f") and `ONEDNN_MAX_CPU_ISA`, where set, names an ISA
    containing one of `isa_words` (e.g. "AVX512"). `unknown` answers where the flags cannot be
    read (not Linux)."""
    cap = os.environ.get("ONEDNN_MAX_CPU_ISA", "").strip().upper()
    if cap and cap != "ALL" and not any(word in cap for word in isa_words):
        return False
    try:
        with open("/proc/cpuinfo") as f:
            found = next((ln.split(":", 1)[1].split() for ln in f if ln.startswith("flags")),
                         [])
    except OSError:
        return unknown
    return any(flag in found for flag in flags)


def _entry(argv: Sequence[str]) -> tuple[str, str, list[str]] | None:
    """("module", name, args) for `-m name args`, ("script", path, args), or None (`-c`,
    interactive)."""
    i = 0
    while i < len(argv):
        arg = argv[i]
        i += 1
        if arg.startswith("--"):  # --check-hash-based-pycs takes a value; the rest exit
            i += arg == "--check-hash-based-pycs"
            continue
        if not arg.startswith("-") or arg == "-":
            return ("script", arg, list(argv[i:]))
        for k, flag in enumerate(arg[1:], start=2):  # a cluster of short options, e.g. -Bm
            rest = arg[k:]
            if flag == "c":
                return None
            if flag == "m":
                name = rest or (argv[i] if i < len(argv) else "")
                return ("module", name, list(argv[i + (not rest):]))
            if flag in "WX":  # they take a value: the rest of the cluster, or the next arg
                i += not rest
                break
    return None


def started_by_our_command(argv: Sequence[str] | None = None) -> bool:
    """Whether the interpreter command line `argv` (default `sys.orig_argv`) runs one of this
    project's commands: its console script, `-m` one of its packages, or an example script."""
    entry = _entry(list(sys.orig_argv if argv is None else argv)[1:])
    if entry is None:
        return False
    kind, name, _args = entry
    if kind == "module":
        return name.split(".")[0] in _OUR_MODULES
    script = Path(name)
    if script.name.removesuffix(".exe").removesuffix("-script.py") in _OUR_SCRIPTS:
        return True
    try:
        return script.resolve().parent == _EXAMPLES
    except OSError:
        return False


def onednn_pays_off(batch: int | None) -> bool:
    """Whether oneDNN beats TensorFlow's Eigen kernels for inputs of `batch` images here.

    Everywhere but one case: a single image on a CPU whose oneDNN lacks AVX-512 (AVX2-only
    CPUs such as AMD Zen 2/3, or under an `ONEDNN_MAX_CPU_ISA` cap below AVX-512). There
    oneDNN's GEMM convolution makes one ResNet-50 image ~1.35x slower than Eigen even on its
    best BN path (0.144 s vs 0.107 s on a 2-core EPYC; issue 25), while from a few images on,
    and for training, oneDNN wins. `None` (unknown, e.g. training) counts as a batch.
    """
    return batch != 1 or onednn_has_avx512()


def onednn_has_avx512() -> bool:
    """Whether oneDNN may use AVX-512 here: the CPU has it and `ONEDNN_MAX_CPU_ISA` allows it.
    Not Linux: no evidence of the slow paths of AVX2, so the AVX-512 answer."""
    return onednn_may_use(("avx512f",), ("AVX512", "AMX"), unknown=True)


def one_image_command(argv: Sequence[str] | None = None) -> bool:
    """Whether `argv` (default `sys.orig_argv`) runs one of this project's commands that feed
    the model one image per call: `python -m detection predict`."""
    entry = _entry(list(sys.orig_argv if argv is None else argv)[1:])
    if entry is None:
        return False
    kind, name, args = entry
    return kind == "module" and name == "detection" and args[:1] == ["predict"]


def default_for_our_commands() -> None:
    """Called by the entry points (cli.main, the `__main__` modules, the examples) before
    anything imports TensorFlow: the project's own commands run with oneDNN on unless the user
    set the variable, except a one-image command where oneDNN does not pay off
    (`onednn_pays_off`): off there; and TensorFlow's C++ log lines are hidden
    (`keras_resnet_suite.console`). Elsewhere (a library user's script, pytest) it does
    nothing."""
    if not started_by_our_command():
        return
    if _setting() is None and "tensorflow" not in sys.modules:
        one = one_image_command()
        os.environ[ONEDNN_ENV] = "1" if onednn_pays_off(1 if one else None) else "0"
    entry = _entry(list(sys.orig_argv)[1:])
    quiet_tensorflow(entry[2] if entry else ())  # TensorFlow's C++ log lines hidden


def describe() -> str:
    """One line for logs: whether oneDNN is in effect and why (imports TensorFlow)."""
    value = os.environ.get(ONEDNN_ENV)
    why = (f"{ONEDNN_ENV}={value}" if value else
           f"{ONEDNN_ENV} unset: TensorFlow's default for this CPU")
    return f"TensorFlow oneDNN kernels {'on' if onednn_enabled() else 'off'} ({why})"
