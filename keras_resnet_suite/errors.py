"""How both command lines answer a failure: one line on stderr that names the file or key and
the problem, never a traceback (`$KRS_TRACEBACK=1` shows it, for bug reports)."""

from __future__ import annotations

import os
import sys
import traceback
from collections.abc import Callable

from keras_resnet_suite.run_dir import TrainingDiverged
from keras_resnet_suite.run_folder import SIGTERM_EXIT, DiskFull, Terminated

# Bad input: every reader here raises these with the file named (h5py and PIL raise OSError).
BAD_INPUT = (ValueError, OSError)
BAD_INPUT_EXIT = 2
UNEXPECTED_EXIT = 1
TRACEBACK_ENV = "KRS_TRACEBACK"


def one_line(err: BaseException, limit: int = 1000) -> str:
    """The exception's message on one line (Keras and TensorFlow messages span many)."""
    text = " ".join(str(err).split()) or type(err).__name__
    return text if len(text) <= limit else text[:limit - 3] + "..."


def run_command(call: Callable[[], int | None]) -> int:
    """`call()`'s exit code (None is 0); bad input prints `error: <message>` and gives 2, a
    diverged training run or a full disk `error: <message>` (what was kept) and 1, a run
    stopped by SIGTERM `stopped: <message>` (where it resumes) and 143, any other exception
    `error: <type>: <message>` and 1. KeyboardInterrupt passes through."""
    try:
        return int(call() or 0)
    except Terminated as err:
        print(f"stopped: {one_line(err)}", file=sys.stderr, flush=True)
        return SIGTERM_EXIT
    except (TrainingDiverged, DiskFull) as err:
        print(f"error: {one_line(err)}", file=sys.stderr)
        return UNEXPECTED_EXIT
    except BAD_INPUT as err:
        if os.environ.get(TRACEBACK_ENV):
            traceback.print_exc()
        print(f"error: {one_line(err)}", file=sys.stderr)
        return BAD_INPUT_EXIT
    except Exception as err:  # the last line of defence: still one line, never a traceback
        if os.environ.get(TRACEBACK_ENV):
            traceback.print_exc()
        print(f"error: {type(err).__name__}: {one_line(err)} (unexpected; set "
              f"{TRACEBACK_ENV}=1 to see where)", file=sys.stderr)
        return UNEXPECTED_EXIT
