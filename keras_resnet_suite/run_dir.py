"""A training run's directory: whether a `run.json` there is this run (so re-running resumes
it) and how its iterations are cut into `fit` epochs. Light: no TensorFlow import."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from pathlib import Path

from keras_resnet_suite.run_folder import complete_checkpoints

# run.json keys that must match when a run directory is reused (resume)
IDENTITY = ("model", "data", "recipe", "batch_size", "total_steps", "seed", "num_classes",
            "weights", "freeze_at", "lr_multipliers")  # the last three: fine-tuning, if given


class TrainingDiverged(RuntimeError):
    """Training stopped at a non-finite loss or weights. `step` is where; `checkpoint` the last
    finite checkpoint kept on disk (None when none had been written yet). Defined here, in a
    module without TensorFlow, so the CLIs can catch it cheaply."""

    def __init__(self, message: str, step: int | None, checkpoint: Path | None):
        super().__init__(message)
        self.step, self.checkpoint = step, checkpoint


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


def differences(old: Mapping, new: Mapping, prefix: str = "") -> dict[str, tuple]:
    """`{dotted.key: (old, new)}` for every value that differs between two nested configs
    (what stops a run folder from being resumed by another run)."""
    out = {}
    for key in sorted(set(old) | set(new), key=str):
        a, b = old.get(key), new.get(key)
        if isinstance(a, Mapping) and isinstance(b, Mapping):
            out.update(differences(a, b, f"{prefix}{key}."))
        elif a != b:
            out[f"{prefix}{key}"] = (a, b)
    return out


def describe_changes(diff: Mapping[str, tuple]) -> str:
    """`key: old -> new, ...` of `differences`."""
    return ", ".join(f"{k}: {a!r} -> {b!r}" for k, (a, b) in diff.items())


def check_run_dir(out: Path, cfg: dict) -> None:
    """Refuse to resume `out` when its `run.json` describes another run (`IDENTITY` keys).
    A run.json beside no trained state (no checkpoint in `backup/`, no `model.keras`: left by
    a start that failed before failed starts removed their record) refuses nothing."""
    path = out / "run.json"
    if not path.exists() or not (complete_checkpoints(out / "backup")
                                 or (out / "model.keras").exists()):
        return
    old = json.loads(path.read_text())
    diff = differences({k: old.get(k) for k in IDENTITY}, {k: cfg.get(k) for k in IDENTITY})
    if diff:
        changes = describe_changes(diff)
        raise SystemExit(f"error: {out} holds a different run ({changes}); resume it with the "
                         "same arguments or choose another --out")  # fmt: skip
