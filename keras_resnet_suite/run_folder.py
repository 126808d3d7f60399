"""A training run's folder while a run uses it: one run at a time (a lock file naming the pid,
host and start), nothing left behind by a start that fails before its first checkpoint, a
SIGTERM that stops the run at a step boundary, and a full disk told in one line. Both training
CLIs use it; light (no TensorFlow import), so the CLIs can catch its errors cheaply."""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import re
import shutil
import signal
import socket
import sys
import threading
import time
from collections.abc import Iterable, Iterator
from pathlib import Path

try:
    import fcntl
except ImportError:  # not POSIX: the pid check alone tells a dead holder
    fcntl = None

log = logging.getLogger(__name__)

LOCK_NAME = "run.lock"
SIGTERM_EXIT = 128 + signal.SIGTERM  # 143: what a shell reports for a process SIGTERM ended
_STEP = re.compile(r"^step-(\d{8})$")


class RunFolderBusy(ValueError):
    """Another live run holds the folder's lock (refused before anything is written)."""


class DiskFull(OSError):
    """No space left while writing a run's file; the partial file is already removed."""

    def __init__(self, message: str):
        super().__init__(errno.ENOSPC, message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class Terminated(BaseException):
    """SIGTERM stopped the run. A BaseException (as KeyboardInterrupt), so no `except
    Exception` on the way (a checkpoint reader's fallback, say) takes it for a failure."""

    def __init__(self, message: str = "stopped by SIGTERM", step: int | None = None):
        super().__init__(message)
        self.step = step


def is_disk_full(err: BaseException) -> bool:
    """Whether `err` is an out-of-space error (h5py puts `errno = 28` in its message only)."""
    if isinstance(err, OSError) and err.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    return isinstance(err, OSError) and ("errno = 28" in str(err) or "[Errno 28]" in str(err))


def complete_checkpoints(folder: str | os.PathLike) -> list[tuple[int, Path]]:
    """`(step, path)` of every complete `step-NNNNNNNN` checkpoint in `folder`, newest first."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in folder.iterdir()
             if (m := _STEP.match(p.name)) and (p / "meta.json").is_file()]
    return sorted(found, reverse=True)


def resume_note(checkpoints: str | os.PathLike) -> str:
    """Where the same command will resume: the newest complete checkpoint, or afresh."""
    kept = complete_checkpoints(checkpoints)
    if not kept:
        return f"no checkpoint had been written (nothing in {checkpoints}): the same command " \
               "starts afresh"
    step, path = kept[0]
    return f"the last complete checkpoint is step {step} ({path}): the same command resumes " \
           f"from step {step}"


# ---- SIGTERM -----------------------------------------------------------------------------
_signal = {"pending": None, "defer": 0}


def stop_requested() -> bool:
    """Whether a SIGTERM arrived while training steps ran (`deferred_stop`): the loop saves a
    checkpoint at the step boundary and raises `Terminated`."""
    return _signal["pending"] is not None


@contextlib.contextmanager
def deferred_stop() -> Iterator[None]:
    """Inside, a (first) SIGTERM only asks the loop to stop at the next step boundary, so a
    checkpoint being written is finished and the current step is saved."""
    _signal["defer"] += 1
    try:
        yield
    finally:
        _signal["defer"] -= 1


@contextlib.contextmanager
def stop_on_sigterm() -> Iterator[None]:
    """While inside, SIGTERM raises `Terminated` (within `deferred_stop`: at the next step
    boundary; a second SIGTERM at once). Main thread only; the old handler comes back."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame):
        if _signal["defer"] and _signal["pending"] is None:
            _signal["pending"] = signum
            return
        raise Terminated()

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
        _signal["pending"] = None


# ---- the lock ------------------------------------------------------------------------------
def _process_start(pid: int) -> str | None:
    """The kernel's start time of `pid` (tells a reused pid from the lock's holder)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def _pid_alive(holder: dict) -> bool:
    pid = holder.get("pid")
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        return True
    start = holder.get("pid_start")
    return not (start and _process_start(pid) not in (None, start))


def _read_holder(path: Path) -> dict:
    try:
        holder = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return holder if isinstance(holder, dict) else {}


def _flock_free(path: Path) -> bool | None:
    """True when nobody holds the lock file's flock (its holder is gone), False when a live
    process does, None without flock or the file."""
    if fcntl is None:
        return None
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        return True
    except OSError:
        return False
    finally:
        os.close(fd)


def describe_holder(holder: dict) -> str:
    """`pid 123 on host h since 2026-12-07 21:57:01 UTC` of a lock file's contents."""
    return f"pid {holder.get('pid', '?')} on host {holder.get('host', '?')} since " \
           f"{holder.get('since', '?')}"


class RunFolder:
    """`with RunFolder(out, checkpoints):` locks `out` for this run (creating it), and on the
    way out releases it; when the run ends by an exception before any complete checkpoint
    exists in `checkpoints`, everything it added to `out` (but the names in `keep`) is removed,
    so a failed start leaves no record that would refuse the same or an edited command.
    `Terminated` and `DiskFull` leave with `resume_note` appended."""

    def __init__(self, out: str | os.PathLike, checkpoints: str | os.PathLike,
                 keep: Iterable[str] = (), note=log.warning):
        self.out, self.checkpoints = Path(out), Path(checkpoints)
        self.keep, self.note = set(keep), note
        self.lock = self.out / LOCK_NAME
        self._fd: int | None = None
        self._created = False
        self._before: set[str] = set()

    def __enter__(self) -> RunFolder:
        self._created = not self.out.exists()
        self.out.mkdir(parents=True, exist_ok=True)
        try:
            self._acquire()
        except BaseException:
            self._remove_if_created()
            raise
        self._before = set(os.listdir(self.out))
        return self

    def _acquire(self) -> None:
        holder = {"pid": os.getpid(), "host": socket.gethostname(),
                  "since": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
                  "pid_start": _process_start(os.getpid()),
                  "command": " ".join(getattr(sys, "orig_argv", sys.argv))}
        tmp = self.out / f".{LOCK_NAME}.tmp-{os.getpid()}"
        fd = None
        try:
            tmp.write_text(json.dumps(holder))
            fd = os.open(tmp, os.O_RDONLY)
            if fcntl is not None:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            for _ in range(5):
                try:
                    os.link(tmp, self.lock)  # atomic: fails when a lock is there
                    self._fd, fd = fd, None
                    return
                except FileExistsError:
                    self._refuse_or_take_over()
            raise RunFolderBusy(f"{self.out}: could not take {self.lock} (changing under us)")
        finally:
            if fd is not None:
                os.close(fd)
            tmp.unlink(missing_ok=True)

    def _refuse_or_take_over(self) -> None:
        """Remove a stale lock (its holder gone, on this host) with a note; else refuse."""
        holder = _read_holder(self.lock)
        free = _flock_free(self.lock)
        same_host = holder.get("host") == socket.gethostname()
        stale = (free is True and (same_host or not holder)) or (
            free is None and same_host and not _pid_alive(holder))
        if not self.lock.exists():
            return  # released meanwhile: try again
        if stale:
            self.note(f"note: {self.out} was locked by {describe_holder(holder)}, which is no "
                      f"longer running; taking the lock over")
            with contextlib.suppress(FileNotFoundError):
                self.lock.unlink()
            return
        hint = "" if same_host else f"; if that run is gone, delete {self.lock}"
        raise RunFolderBusy(f"{self.out} is in use by another run ({describe_holder(holder)}, "
                            f"lock file {self.lock}); wait for it to end or choose another "
                            f"--out{hint}")

    def started(self) -> bool:
        """Whether a complete checkpoint exists (the run has something to resume from)."""
        return bool(complete_checkpoints(self.checkpoints))

    def __exit__(self, kind, err, tb) -> None:
        try:
            if err is not None and not self.started():
                self._remove_added()
        finally:
            self._release()
        if is_disk_full(err):  # ours names the file; another writer's (a log) is named too
            what = err if isinstance(err, DiskFull) else \
                f"no space left on device ({' '.join(str(err).split())})"
            note = resume_note(self.checkpoints)
            raise DiskFull(f"{what}; {note.replace('the same', 'free some space, then the same')}"
                           ) from None
        if isinstance(err, Terminated):
            where = f" at step {err.step}" if err.step is not None else ""
            raise Terminated(f"stopped by SIGTERM{where}; {resume_note(self.checkpoints)}",
                             err.step) from None

    def _remove_added(self) -> None:
        for name in set(os.listdir(self.out)) - self._before - self.keep - {LOCK_NAME}:
            path = self.out / name
            log.info("removing %s of a run that ended before its first checkpoint", path)
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)

    def _release(self) -> None:
        if self._fd is None:
            return
        try:
            if os.stat(self.lock).st_ino == os.fstat(self._fd).st_ino:
                self.lock.unlink()
        except FileNotFoundError:
            pass
        finally:
            os.close(self._fd)
            self._fd = None
        self._remove_if_created()

    def _remove_if_created(self) -> None:
        if self._created:
            with contextlib.suppress(OSError):
                self.out.rmdir()  # only when empty
