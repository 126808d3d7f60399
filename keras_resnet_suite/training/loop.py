"""`fit_resumable`: `model.fit` that resumes, after a crash or SIGKILL, at the exact step."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence

import keras

from keras_resnet_suite.run_folder import Terminated, deferred_stop, stop_requested
from keras_resnet_suite.training import distribute
from keras_resnet_suite.training.callbacks import BackupAndRestore, NaNGuard, TrainingDiverged


def fit_resumable(
    model: keras.Model,
    make_train: Callable[[int], object],
    *,
    steps_per_epoch: int,
    epochs: int,
    backup_dir: str | os.PathLike,
    save_freq: int | str = "epoch",
    callbacks: Sequence[keras.callbacks.Callback] = (),
    validation_data=None,
    verbose: int | str = "auto",
    is_chief: bool | None = None,
    on_start: Callable[[int], None] | None = None,
) -> dict[str, list]:
    """Train a compiled model for `epochs * steps_per_epoch` steps in total, resuming from the
    newest checkpoint in `backup_dir` if there is one.

    `make_train(start_step)` returns the training stream positioned at global step
    `start_step` (e.g. `lambda s: data.cifar(..., start_step=s).train`), so a resumed run sees
    the same batches, step count, optimizer state and LR position as an uninterrupted one.
    It is called once per `model.fit` (twice when resuming mid-epoch) and must build a new
    stream each time: a reshuffling tf.data pipeline iterated again draws its next permutation.
    A resumed, partly done epoch runs only its remaining steps. Returns the merged history.

    A non-finite loss or state stops training and raises `TrainingDiverged` naming the step and
    the last finite checkpoint in `backup_dir` (or saying that none had been written yet); the
    model in memory is then not finite, so the caller must not save it as a result.

    A checkpoint further than the `total` asked for is refused (`ValueError`): a finished run
    is never presented as a shorter one. `on_start(start_step)`, once the checkpoint is restored
    and before any step, is where a caller writes its run record (nothing is written for a run
    refused here). Under `run_folder.stop_on_sigterm`, a SIGTERM saves a checkpoint at the
    next step boundary and raises `Terminated`.
    """
    if is_chief is None:  # only one multi-worker process may write the shared backup
        is_chief = distribute.is_chief()
    backup = BackupAndRestore(backup_dir, save_freq=save_freq, is_chief=is_chief)
    start = backup.restore(model)
    total = epochs * steps_per_epoch
    history: dict[str, list] = {}
    if not _begin(backup, start, total, on_start):
        return history
    epoch, done = divmod(start, steps_per_epoch)
    runs = []
    if done:  # finish the interrupted epoch first
        runs.append((epoch, epoch + 1, steps_per_epoch - done))
        epoch += 1
    if epoch < epochs:
        runs.append((epoch, epochs, steps_per_epoch))
    step = start
    for first, last, spe in runs:
        if stop_requested():
            break
        with deferred_stop():  # a SIGTERM now stops at the next step boundary, saved
            h = model.fit(
                make_train(step),
                initial_epoch=first,
                epochs=last,
                steps_per_epoch=spe,
                callbacks=[backup, *callbacks],
                validation_data=validation_data,
                verbose=verbose,
                shuffle=False,  # the stream is already permuted per epoch
            )
        for k, v in h.history.items():
            history.setdefault(k, []).extend(v)
        if model.stop_training:
            break
        step += (last - first) * spe
    if backup.diverged:
        raise _diverged(model, backup, callbacks)
    if stop_requested():  # arrived after the last step (or at an epoch's end): all saved
        backup.save()
        raise Terminated(step=int(keras.ops.convert_to_numpy(model.optimizer.iterations)))
    return history


def _begin(backup: BackupAndRestore, start: int, total: int, on_start) -> bool:
    """Refuse a checkpoint past `total`, call `on_start`, say where training starts; whether
    any step is left to train."""
    if start > total:
        raise ValueError(f"{backup.backup_dir} holds a run trained for {start} steps, more than "
                         f"the {total} asked for; a finished run is not shortened: ask for at "
                         f"least {start} steps (the same run, or longer) or choose another "
                         "folder")
    if on_start is not None:
        on_start(start)
    if start == total:
        print(f"{backup.backup_dir}: already trained for {start} of {total} steps; nothing to do")
        return False
    if start:
        print(f"resuming from step {start} of {total} ({backup.checkpoints()[0][1]})")
    return True


def _diverged(model: keras.Model, backup: BackupAndRestore, callbacks) -> TrainingDiverged:
    """The error of a diverged run: where it happened and exactly what is kept on disk."""
    guard = next((c for c in callbacks if isinstance(c, NaNGuard) and c.nan_step is not None),
                 None)
    step = int(keras.ops.convert_to_numpy(model.optimizer.iterations))
    if guard is not None:
        what, step = guard.message, guard.nan_step
    else:
        what = f"the loss or the weights became non-finite by step {step}; training stopped"
    kept = backup.checkpoints()
    if kept:
        where = (f"the last finite checkpoint is kept: {kept[0][1]} (step {kept[0][0]}); "
                 "nothing non-finite was saved")
    else:
        where = (f"no checkpoint had been written yet (nothing in {backup.backup_dir}), so no "
                 "trained state is kept; nothing non-finite was saved")
    return TrainingDiverged(f"training diverged: {what}; {where}. Lower the learning rate or "
                            "check the data for NaN/inf values",
                            step, kept[0][1] if kept else None)
