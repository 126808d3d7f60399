"""A quiet console for this project's commands: TensorFlow's C++ log lines hidden.

TensorFlow's C++ side logs through absl to file descriptor 2, and part of it ignores
`TF_CPP_MIN_LOG_LEVEL`: absl's "WARNING: All log messages before absl::InitializeLog() is
called are written to STDERR", then `I0000 ... port.cc] oneDNN custom operations are on`,
`E0000 ... cuInit`, "oneDNN supports DT_INT64 only on platforms with AVX-512" appear with the
variable at 2. The commands (`keras-resnet-suite`, `python -m keras_resnet_suite`,
`python -m detection`, `python -m benchmarks`, the examples) call `quiet_tensorflow()` before
TensorFlow is imported: it sets `TF_CPP_MIN_LOG_LEVEL=3` and `GRPC_VERBOSITY=ERROR` and sends
fd 2 through a filter that drops lines in absl's format (`[IWEF]mmdd hh:mm:ss.uuuuuu pid
file:line] ...`) and absl's pre-InitializeLog notice; everything else (our messages, Python
tracebacks, progress bars) passes unchanged, as it is written.

Shown again by `--verbose` before the command (`python -m detection --verbose train ...`),
`KRS_TF_LOGS=1`, or `TF_CPP_MIN_LOG_LEVEL` set to 0 or 1 by the user. A library user's
process is never touched. This module imports nothing heavy.
"""

from __future__ import annotations

import atexit
import os
import re
import sys
import threading
from collections.abc import Sequence

try:  # POSIX: a filtered terminal stays a terminal
    import pty
    import tty
except ImportError:  # Windows: a pipe
    pty = tty = None

LOGS_ENV = "KRS_TF_LOGS"
# absl / glog C++ lines, e.g. "I0000 00:00:1796680709.883692    7871 port.cc:153] oneDNN ..."
_ABSL = re.compile(rb"^[IWEF]\d{4} [\d:.]+\s+\d+ [^\s:]+:\d+\] ")
_DROP = (b"WARNING: All log messages before absl::InitializeLog() is called",
         b"To enable the following instructions:")  # cpu_feature_guard's second line
_HOLD = 64  # an unfinished line this short that may become a dropped one waits for its end


def wants_tf_logs(args: Sequence[str]) -> bool:
    """Whether the user asked for TensorFlow's logs: `--verbose` among the options before the
    command in `args` (the command's own `--verbose`, e.g. Keras' progress, does not count),
    `KRS_TF_LOGS` set (not 0), or `TF_CPP_MIN_LOG_LEVEL` 0 or 1."""
    for arg in args:
        if not arg.startswith("-"):
            break
        if arg == "--verbose":
            return True
    if os.environ.get(LOGS_ENV, "").strip() not in ("", "0"):
        return True
    return os.environ.get("TF_CPP_MIN_LOG_LEVEL", "").strip() in ("0", "1")


def dropped(line: bytes) -> bool:
    """Whether a line of fd 2 (without its end) is TensorFlow C++ logging."""
    return bool(_ABSL.match(line)) or line.startswith(_DROP)


def _may_become_dropped(tail: bytes) -> bool:
    if len(tail) > _HOLD:
        return False
    return (bool(re.match(rb"^[IWEF]\d{0,4}( [\d:.]*)?$", tail)) or bool(_ABSL.match(tail))
            or any(d.startswith(tail) or tail.startswith(d) for d in _DROP))


class _Filter:
    """A thread that copies what is written to fd 2 to the real stderr, less dropped lines.
    Line ends are `\\n` or `\\r` (a progress bar's redraw passes at once)."""

    def __init__(self) -> None:
        self.saved = os.dup(2)
        if pty is not None and os.isatty(self.saved):  # keep isatty() true for progress bars and colours
            read, write = pty.openpty()
            tty.setraw(write)  # no \n -> \r\n translation, no echo
        else:
            read, write = os.pipe()
        self.read = read
        os.dup2(write, 2)
        os.close(write)
        self.thread = threading.Thread(target=self._pump, name="krs-stderr-filter", daemon=True)
        self.thread.start()

    def _emit(self, data: bytes) -> None:
        while data:
            data = data[os.write(self.saved, data):]

    def _pump(self) -> None:
        pending = b""
        while True:
            try:
                chunk = os.read(self.read, 65536)
            except OSError:  # a pty reads EIO once every writer is closed
                chunk = b""
            if not chunk:
                break
            try:
                pending = self._lines(pending + chunk)
            except Exception:  # never lose output: pass the rest through unfiltered
                self._emit(pending)
                pending = b""
        if pending and not dropped(pending):
            self._emit(pending)

    def _lines(self, data: bytes) -> bytes:
        """Write the finished lines of `data` that are kept; return what must wait."""
        out, start = [], 0
        for match in re.finditer(rb"\r\n|\n|\r", data):
            line = data[start:match.start()]
            if not dropped(line):
                out.append(data[start:match.end()])
            start = match.end()
        tail = data[start:]
        if tail and not _may_become_dropped(tail):
            out.append(tail)
            tail = b""
        if out:
            self._emit(b"".join(out))
        return tail

    def close(self) -> None:
        """Put the real stderr back on fd 2 and let the thread write what is left."""
        try:
            sys.stderr.flush()
        except (OSError, ValueError):
            pass
        os.dup2(self.saved, 2)  # the last writer of the pipe/pty (but for child processes)
        self.thread.join(timeout=2)


_active: _Filter | None = None


def quiet_tensorflow(args: Sequence[str] = ()) -> bool:
    """Hide TensorFlow's C++ logging for this process unless the user asked for it
    (`wants_tf_logs(args)`); returns whether it is hidden. Call before TensorFlow is imported
    (the variables are read then; the fd 2 filter also catches what is logged later)."""
    global _active
    if wants_tf_logs(args):
        return False
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
    os.environ.setdefault("GRPC_VERBOSITY", "ERROR")
    if _active is None:
        try:
            _active = _Filter()
        except OSError:  # no fd 2 to filter (a closed stderr): the variables still apply
            return True
        atexit.register(_active.close)
    return True
