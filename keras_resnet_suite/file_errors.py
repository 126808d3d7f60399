"""One rule for every file a user gives either package (COCO JSON, VOC XML, YAML configs, label
files, checkpoints, run records): whatever its parser raises (RecursionError on deep nesting,
MemoryError on absurd sizes, UnicodeDecodeError, struct, zip or pickle errors) becomes one
`UnreadableFile` (a ValueError, so the CLIs print it as one line and exit 2) naming the file
and what is wrong. Standard library only: every reader, light or not, can use it.
"""

from __future__ import annotations

import functools
import json
import os
import pickletools
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

__all__ = ["UnreadableFile", "check_pickle_lengths", "describe", "read_json", "reading",
           "reads"]


class UnreadableFile(ValueError):
    """A file its parser could not read: `path`, and a message that names it."""

    def __init__(self, path: str | os.PathLike, reason: str):
        self.path = os.fspath(path)
        super().__init__(f"{self.path}: {reason}")


def describe(err: BaseException, what: str = "file", limit: int = 300) -> str:
    """What a parser's exception means for a `what` ("COCO annotation file"), on one line:
    the rest of a file's message, or a data report's entry."""
    if isinstance(err, RecursionError):
        return (f"a {what} nested too deeply to parse (more levels than Python's recursion "
                "limit)")
    if isinstance(err, MemoryError):
        return f"too large to parse as a {what} in memory (MemoryError)"
    if isinstance(err, UnicodeDecodeError):
        return f"not a {err.encoding.upper()} text file ({err.reason} at byte {err.start})"
    name = type(err).__name__
    name = f"{type(err).__module__}.{name}" if name == "error" else name  # struct.error, ...
    text = " ".join(str(err).split())
    text = f"{name}: {text}" if text else name
    text = text if len(text) <= limit else text[:limit - 3] + "..."
    return f"not a readable {what} ({text})"


def _names(err: BaseException, path: str) -> bool:
    """Whether `err` is already a clear error about the file: a ValueError or OSError whose
    message names it (not a UnicodeDecodeError, which never does)."""
    if not isinstance(err, (ValueError, OSError)) or isinstance(err, UnicodeError):
        return False
    text = str(err)
    return path in text or (Path(path).name in text and Path(path).name != "")


@contextmanager
def reading(path: str | os.PathLike, what: str = "file") -> Iterator[None]:
    """Parse `path` inside this block: an exception that does not already name the file becomes
    an `UnreadableFile` naming it (`what`: "COCO annotation file", "config", "checkpoint");
    KeyboardInterrupt and SystemExit pass through."""
    path = os.fspath(path)
    try:
        yield
    except UnreadableFile:
        raise
    except Exception as err:  # a parser's failure can be of any type
        if _names(err, path):
            raise
        raise UnreadableFile(path, describe(err, what)) from err


def reads(what: str, arg: int = 0) -> Callable[[Callable], Callable]:
    """Decorator: the function parses the file of its positional argument `arg` (the first by
    default; else its keyword `path`) inside `reading(that file, what)`."""
    def wrap(function: Callable) -> Callable:
        @functools.wraps(function)
        def reader(*args, **kwargs):
            with reading(args[arg] if len(args) > arg else kwargs["path"], what):
                return function(*args, **kwargs)
        return reader
    return wrap


def read_json(path: str | os.PathLike, what: str = "JSON file") -> Any:
    """The parsed UTF-8 JSON file; a syntax error names the file, line and column, any other
    failure is an `UnreadableFile`."""
    with reading(path, what):
        try:
            with open(path, encoding="utf-8") as f:
                return json.load(f)
        except json.JSONDecodeError as err:
            raise UnreadableFile(path, f"malformed JSON at line {err.lineno}, column "
                                 f"{err.colno}: {err.msg}") from err


class _Capped:
    """A binary file seen by `pickletools`: reads never ask for more than the file still holds
    (a counted opcode may declare 2**63 bytes in a 500-byte file)."""

    def __init__(self, file: IO[bytes], end: int):
        self.file, self.end = file, end

    def read(self, n: int = -1) -> bytes:
        left = max(0, self.end - self.file.tell())
        return self.file.read(left if n is None or n < 0 else min(n, left))

    def readline(self) -> bytes:
        return self.file.readline(max(0, self.end - self.file.tell()))

    def tell(self) -> int:
        return self.file.tell()


def check_pickle_lengths(file: IO[bytes], source: str) -> None:
    """Walk the pickle at `file`'s position opcode by opcode (`pickletools`, nothing built) and
    come back: every counted bytes/string/bytearray must fit in what the file holds, so the
    unpickler never allocates for a length the file does not have (a 533-byte `.th` asked
    for gigabytes and the machine ran out of memory: found by fuzzing)."""
    start = file.tell()
    end = file.seek(0, os.SEEK_END)
    file.seek(start)
    try:
        for _ in pickletools.genops(_Capped(file, end)):
            pass
    except (ValueError, EOFError) as err:  # genops: "expected N bytes ... but only M remain"
        raise UnreadableFile(source, f"a damaged pickle ({' '.join(str(err).split())[:200]})"
                             ) from None
    finally:
        file.seek(start)
