"""Training callbacks: NaN stop, atomic checkpoints, step-exact backup/restore, and the
paper's 110-layer warm-up gate.

Files are written atomically (temporary name, fsync, rename, fsync of the directory), so a
process killed at any instant leaves either the previous or the new checkpoint, never a torn one.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
from collections import deque
from collections.abc import Callable
from pathlib import Path

import keras
import numpy as np

from keras_resnet_suite.run_dir import TrainingDiverged  # noqa: F401  (fit_resumable raises it)
from keras_resnet_suite.run_folder import (
    DiskFull,
    Terminated,
    complete_checkpoints,
    is_disk_full,
    stop_requested,
)
from keras_resnet_suite.training.atomic import (  # noqa: F401  (their home before atomic.py)
    atomic_save,
    atomic_write_json,
    atomic_write_text,
    close_h5_handles,
    fsync_path,
    json_safe,
)
from keras_resnet_suite.training.schedules import schedule_of


def weights_finite(model: keras.Model) -> bool:
    """True when every model and optimizer variable is finite (a NaN step poisons both)."""
    variables = list(model.variables)
    if model.optimizer is not None:
        variables += list(model.optimizer.variables)
    for v in variables:
        a = keras.ops.convert_to_numpy(v.value)
        if np.issubdtype(a.dtype, np.floating) and not np.all(np.isfinite(a)):
            return False
    return True


def _loss_finite(logs: dict | None) -> bool:
    loss = (logs or {}).get("loss")
    return loss is None or math.isfinite(float(loss))


def _random_states(model: keras.Model) -> list:
    """The variables `save_weights` leaves out: SeedGenerator states (Dropout, stochastic
    depth, detection sampling), without which a resumed run draws other random numbers."""
    saved = {id(v) for v in model.weights}
    return [v for v in model.variables if id(v) not in saved]


def _global_step(model: keras.Model) -> int:
    return int(keras.ops.convert_to_numpy(model.optimizer.iterations))


class NaNGuard(keras.callbacks.Callback):
    """Stop training at the first non-finite loss, naming the global step (paper-scale runs
    diverge silently otherwise). Checkpoint callbacks here refuse to save non-finite state,
    so the last finite checkpoint survives; `fit_resumable` then raises `TrainingDiverged`
    naming it. `nan_step` holds the step, or None."""

    def __init__(self, print_fn: Callable[[str], None] = print):
        super().__init__()
        self.print_fn = print_fn
        self.nan_step: int | None = None
        self._epoch = 0

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        if self.nan_step is None and not _loss_finite(logs):
            self.nan_step = _global_step(self.model)
            self.model.stop_training = True
            self.message = (
                f"loss became {logs['loss']} at step {self.nan_step} (epoch {self._epoch + 1}, "
                f"batch {batch + 1}); training stopped"
            )
            self.print_fn(self.message)


class AtomicModelCheckpoint(keras.callbacks.Callback):
    """Save the model each epoch to `filepath` (may contain `{epoch}`), atomically; optionally
    only when `monitor` improves. Non-finite states are never saved."""

    def __init__(
        self,
        filepath: str | os.PathLike,
        monitor: str = "val_loss",
        mode: str = "min",
        save_best_only: bool = False,
        weights_only: bool | None = None,
    ):
        super().__init__()
        if mode not in ("min", "max"):
            raise ValueError(f"mode must be 'min' or 'max', got {mode!r}")
        self.filepath, self.monitor, self.mode = str(filepath), monitor, mode
        self.save_best_only, self.weights_only = save_best_only, weights_only
        self.best: float | None = None

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        if not _loss_finite(logs):
            return
        if self.save_best_only:
            value = logs.get(self.monitor)
            if value is None:
                raise KeyError(
                    f"AtomicModelCheckpoint monitors {self.monitor!r}, "
                    f"absent from logs {sorted(logs)}"
                )
            better = self.best is None or (
                value < self.best if self.mode == "min" else value > self.best
            )
            if not better:
                return
            self.best = float(value)
        if weights_finite(self.model):
            atomic_save(self.model, self.filepath.format(epoch=epoch + 1), self.weights_only)


class BackupAndRestore(keras.callbacks.Callback):
    """Step-exact, atomic replacement for `keras.callbacks.BackupAndRestore`.

    Every `save_freq` steps (and at the end of each epoch and of training) it writes
    `backup_dir/step-NNNNNNNN/{state.weights.h5,meta.json}`: model and optimizer variables
    (step counter, momenta, EMA), the global step, the state of a stateful LR schedule and the
    random-number states (Dropout, stochastic depth), so a resumed run is the same run. The
    folder is built under a temporary name and renamed, so it is complete or absent.
    `restore(model)` loads the newest readable one (falling back to older ones) and returns
    its step; `training.fit_resumable` then continues at exactly that step.
    """

    def __init__(
        self,
        backup_dir: str | os.PathLike,
        save_freq: int | str = "epoch",
        keep: int = 2,
        is_chief: bool = True,
    ):
        super().__init__()
        if save_freq != "epoch" and not (isinstance(save_freq, int) and save_freq > 0):
            raise ValueError(f"save_freq must be 'epoch' or a positive int, got {save_freq!r}")
        self.backup_dir = Path(backup_dir)
        self.save_freq, self.keep, self.is_chief = save_freq, max(1, keep), is_chief
        self._last_saved: int | None = None
        self._stopped_bad = False

    @property
    def diverged(self) -> bool:
        """True once a non-finite loss or state was seen (nothing after it is saved)."""
        return self._stopped_bad

    def checkpoints(self) -> list[tuple[int, Path]]:
        """Complete checkpoints, newest first."""
        return complete_checkpoints(self.backup_dir)

    def restore(self, model: keras.Model) -> int:
        """Load the newest readable checkpoint into `model` (compiled); its global step, or 0."""
        if model.optimizer is None:
            raise ValueError(
                "compile the model before restoring: the optimizer state is restored too"
            )
        if not model.optimizer.built:
            # Slots must live where the model's variables do: under a tf.distribute strategy,
            # its scope (Keras records it at construction; other backends have none).
            strategy = getattr(model, "distribute_strategy", None)
            with strategy.scope() if strategy is not None else contextlib.nullcontext():
                model.optimizer.build(model.trainable_variables)
        errors = []
        for step, path in self.checkpoints():
            try:
                meta = json.loads((path / "meta.json").read_text())
                model.load_weights(path / "state.weights.h5")
            except Exception as e:  # a damaged file of any kind: try the previous checkpoint
                errors.append(f"{path}: {type(e).__name__}: {e}")
                continue
            schedule = schedule_of(model.optimizer)
            if meta.get("schedule") and hasattr(schedule, "set_state"):
                schedule.set_state(meta["schedule"])
            # In model order (layer names, hence paths, differ between two builds in one
            # process); a checkpoint of another architecture was refused by load_weights.
            states = _random_states(model)
            saved = [np.asarray(s["value"]) for s in meta.get("random_states", [])]
            if [a.shape for a in saved] == [tuple(v.shape) for v in states]:
                for variable, value in zip(states, saved, strict=True):
                    variable.assign(value.astype(variable.dtype))
            restored = _global_step(model)
            if restored != step:
                raise RuntimeError(f"{path} holds optimizer step {restored}, expected {step}")
            self._last_saved = step
            return step
        if errors:
            raise RuntimeError(
                "no readable checkpoint in " + str(self.backup_dir) + ":\n" + "\n".join(errors)
            )
        return 0

    def save(self) -> Path | None:
        """Write a checkpoint of the current state; skipped (None) when it is not finite."""
        step = _global_step(self.model)
        if not self.is_chief or step == self._last_saved:
            return None
        if not weights_finite(self.model):
            # Non-finite weights under a finite loss (e.g. NaN inputs through batch norm's
            # moving statistics): stop here too, the state can no longer be saved.
            self._stopped_bad = True
            self.model.stop_training = True
            return None
        self.backup_dir.mkdir(parents=True, exist_ok=True)
        final = self.backup_dir / f"step-{step:08d}"
        tmp = self.backup_dir / f".step-{step:08d}.tmp-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        try:
            tmp.mkdir()
            self._write(tmp, step)
        except BaseException as err:  # a full disk, a second SIGTERM: abandon this one
            close_h5_handles(tmp / "state.weights.h5")
            shutil.rmtree(tmp, ignore_errors=True)
            if is_disk_full(err):
                raise DiskFull(f"no space left on device while writing {final}") from None
            raise
        if final.exists():
            shutil.rmtree(final)
        os.rename(tmp, final)
        fsync_path(self.backup_dir)
        self._last_saved = step
        self._prune()
        return final

    def _write(self, tmp: Path, step: int) -> None:
        """The checkpoint's files into the temporary folder `tmp`, flushed to disk."""
        self.model.save_weights(tmp / "state.weights.h5")
        schedule = schedule_of(self.model.optimizer)
        meta = {
            "step": step,
            "schedule": schedule.get_state() if hasattr(schedule, "get_state") else None,
        }
        states = _random_states(self.model)
        if states:
            meta["random_states"] = [{"path": v.path,
                                      "value": keras.ops.convert_to_numpy(v).tolist()}
                                     for v in states]
        (tmp / "meta.json").write_text(json.dumps(meta))
        for f in tmp.iterdir():
            fsync_path(f)
        fsync_path(tmp)

    def _prune(self) -> None:
        for _, path in self.checkpoints()[self.keep :]:
            shutil.rmtree(path, ignore_errors=True)
        for p in self.backup_dir.glob(".step-*.tmp-*"):  # left by a killed writer
            if not p.name.endswith(f".tmp-{os.getpid()}"):
                shutil.rmtree(p, ignore_errors=True)

    def on_train_batch_end(self, batch, logs=None):
        if not _loss_finite(logs):
            # The state is poisoned: stop even without a NaNGuard, nothing more is saved.
            self._stopped_bad = True
            self.model.stop_training = True
            return
        if self.save_freq != "epoch" and _global_step(self.model) % self.save_freq == 0:
            self.save()
        if stop_requested():  # SIGTERM: save this step, then stop before the next one
            self.save()
            if batch + 1 < ((self.params or {}).get("steps") or 0):
                raise Terminated(step=_global_step(self.model))
            # the epoch's last step: its end (history row, validation) is logged first, then
            # fit_resumable raises
            self.model.stop_training = True

    def on_epoch_end(self, epoch, logs=None):
        if not self._stopped_bad and _loss_finite(logs):
            self.save()

    def on_train_end(self, logs=None):
        if not self._stopped_bad:
            self.save()


class WarmupUntilError(keras.callbacks.Callback):
    """Paper Sec. 4.2, 110 layers: keep the warm-up LR until the training error (mean over the
    last `window` batches) is below `threshold`, then switch the `StepDecay` schedule to its
    base LR. Needs an `accuracy`-style metric in the logs."""

    def __init__(
        self,
        threshold: float = 0.8,
        window: int = 20,
        metric: str = "accuracy",
        print_fn: Callable[[str], None] = print,
    ):
        super().__init__()
        self.threshold, self.window, self.metric, self.print_fn = (
            threshold,
            window,
            metric,
            print_fn,
        )
        self._recent: deque[float] = deque(maxlen=window)
        self._prev: tuple[int, float] | None = None
        self.switched_at: int | None = None

    def on_epoch_begin(self, epoch, logs=None):
        self._prev = None

    def on_train_batch_end(self, batch, logs=None):
        schedule = schedule_of(self.model.optimizer)
        if getattr(schedule, "warmup_done", True) or self.metric not in (logs or {}):
            return
        # Keras logs the running mean over the epoch; recover this batch's value from it.
        n, mean = batch + 1, float(logs[self.metric])
        if self._prev is None:
            acc = mean
        else:
            (pn, pmean) = self._prev
            acc = (n * mean - pn * pmean) / max(n - pn, 1)
        self._prev = (n, mean)
        self._recent.append(acc)
        if len(self._recent) == self.window and 1.0 - np.mean(self._recent) < self.threshold:
            schedule.warmup_done = True
            self.switched_at = _global_step(self.model)
            self.model.make_train_function(force=True)  # the schedule is read at trace time
            self.print_fn(
                f"training error below {self.threshold:.0%} at step {self.switched_at}: "
                f"learning rate -> {schedule.base_lr}"
            )
