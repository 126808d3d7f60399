"""A training run's directory: whether a `run.json` there is this run (so re-running resumes
it) and how its iterations are cut into `fit` epochs. Light: no TensorFlow import."""

from __future__ import annotations

import json
import math
from pathlib import Path

# run.json keys that must match when a run directory is reused (resume)
IDENTITY = ("model", "data", "recipe", "batch_size", "total_steps", "seed", "num_classes")


def fit_schedule(total_steps: int, steps_per_epoch: int) -> tuple[int, int]:
    """`(steps per fit epoch, epochs)` covering exactly `total_steps`: the largest divisor of
    `total_steps` not above the data's epoch (an "epoch" is then one evaluation interval),
    unless that divisor is under half an epoch, in which case the total is rounded up."""
    if total_steps <= steps_per_epoch:
        return total_steps, 1
    div = max(d for d in range(1, steps_per_epoch + 1) if total_steps % d == 0)
    if div >= steps_per_epoch // 2:
        return div, total_steps // div
    return steps_per_epoch, math.ceil(total_steps / steps_per_epoch)


def check_run_dir(out: Path, cfg: dict) -> None:
    """Refuse to resume `out` when its `run.json` describes another run (`IDENTITY` keys)."""
    path = out / "run.json"
    if not path.exists():
        return
    old = json.loads(path.read_text())
    diff = {k: (old.get(k), cfg.get(k)) for k in IDENTITY if old.get(k) != cfg.get(k)}
    if diff:
        changes = ", ".join(f"{k}: {a!r} -> {b!r}" for k, (a, b) in diff.items())
        raise SystemExit(f"error: {out} holds a different run ({changes}); resume it with the "
                         "same arguments or choose another --out")  # fmt: skip
