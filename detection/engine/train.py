"""Train a detector from a config, resumable, and score it on the validation split.

    python -m detection train --config detection/configs/raccoon_tiny.yaml --out runs/raccoon

The run folder gets `checkpoints/` (step-exact kill-and-resume: run the same command again),
`tensorboard/`, `history.csv`, `config.yaml`, `final.weights.h5` and `metrics.json`; the last
line printed is `mAP@0.5 = 0.xxx` on `data.eval`. Learning rate as detectron2 (`schedule:
step`): linear warm-up from `warmup_factor * lr` over `warmup_steps`, then `lr * lr_gamma**k`
after the k-th of `lr_steps`; or warm-up then cosine decay to 0 (`schedule: cosine`).
"""

from __future__ import annotations

import contextlib
import copy
import importlib.util
import json
import math
import os
import time
from pathlib import Path

import keras
import yaml

from detection.backbone_weights import choose as choose_weights
from detection.backbone_weights import prefetch
from detection.config import STRATEGIES, Config, from_dict, load_config, merge
from detection.data.augment import augment
from detection.data.build import dataset_from_config
from detection.data.discover import STARTING_MODEL, data_overrides
from detection.data.objects import check_objects
from detection.data.pipeline import training_batches
from detection.data.resume import indexable, per_worker, resumable_elements
from detection.engine.curves import (
    CurvePlot,
    HistoryLog,
    evaluations,
    plot_training_curves,
    run_history,
)
from detection.evaluation.dataset import evaluate_dataset
from detection.modeling import FasterRCNN, MaskRCNN
from keras_resnet_suite.file_errors import reading
from keras_resnet_suite.run_dir import TrainingDiverged, describe_changes, differences
from keras_resnet_suite.run_folder import RunFolder, complete_checkpoints, stop_on_sigterm
from keras_resnet_suite.training.callbacks import (
    NaNGuard,
    atomic_save,
    atomic_write_json,
    atomic_write_text,
    weights_finite,
)
from keras_resnet_suite.training.distribute import enable_multiworker_fit, get_strategy, is_chief
from keras_resnet_suite.training.loop import fit_resumable
from keras_resnet_suite.training.lr_multipliers import scale_trunk
from keras_resnet_suite.training.optimizers import SGDL2
from keras_resnet_suite.training.schedules import WarmupCosine, WarmupStepLR


def build_model(config: Config, load_backbone_weights: bool = True):
    """`FasterRCNN` (`MaskRCNN` with `model.masks: true`) of the config's `model` section and
    class names. With
    `load_backbone_weights=False` the architecture is the same (the checkpoint's options,
    frozen stages, input normalisation) but nothing is downloaded: for loading trained weights
    over it."""
    model = copy.deepcopy(config.model)
    detector = MaskRCNN if model.pop("masks", False) else FasterRCNN
    if not load_backbone_weights and model.get("backbone_weights") is not None:
        model["backbone_kwargs"] = {**(model.get("backbone_kwargs") or {}),
                                    "load_weights": False}
    return detector(num_classes=len(config.class_names()), **model)


def check_run_dir(out_dir: Path, config: Config) -> None:
    """Refuse to resume a run folder that holds another run (any change but `train.steps`).
    A config.yaml beside no trained state (no checkpoint, no final weights: left by a start
    that failed before failed starts removed their record) refuses nothing."""
    path = out_dir / "config.yaml"
    if not path.is_file() or not (complete_checkpoints(out_dir / "checkpoints")
                                  or (out_dir / "final.weights.h5").exists()):
        return
    with reading(path, "run folder's config"):
        old = yaml.safe_load(path.read_text()) or {}
    new = yaml.safe_load(_dump(config))
    for cfg in (old, new):
        cfg.pop("eval", None)  # scoring may change between runs of the same training
        cfg.get("train", {}).pop("steps", None)  # a longer schedule resumes
        if cfg.get("train", {}).get("backbone_lr_mult", 1.0) == 1.0:  # runs from before it
            cfg.get("train", {}).pop("backbone_lr_mult", None)
    diff = differences(old, new)
    if diff:
        raise ValueError(f"{out_dir} holds a different run ({describe_changes(diff)}, against "
                         f"{path}); resume it with the same config (only train.steps may "
                         "grow) or choose another --out")


def _dump(config: Config) -> str:
    return yaml.safe_dump(config.to_dict(), sort_keys=False)


def _strategy(name: str):
    import tensorflow as tf

    if name == "auto":
        if "TF_CONFIG" in os.environ:
            name = "multiworker"
        else:
            name = "mirrored" if len(tf.config.list_logical_devices("GPU")) > 1 else "none"
    if name not in STRATEGIES:
        raise ValueError(f"train.distribution must be one of {STRATEGIES}, got {name!r}")
    return get_strategy(name)


def _schedule(train):
    if train.schedule == "cosine":
        # A run shorter than its warm-up (a smoke test) warms up over the whole run.
        return WarmupCosine(float(train.learning_rate), int(train.steps),
                            min(int(train.warmup_steps), int(train.steps)))
    return WarmupStepLR(float(train.learning_rate), train.lr_steps, float(train.lr_gamma),
                        int(train.warmup_steps), float(train.warmup_factor))


def _optimizer(train, schedule):
    if train.optimizer == "sgd":
        # Coupled L2 as detectron2's SGD; BN parameters are decayed too (its default).
        return SGDL2(schedule, momentum=float(train.momentum), l2=float(train.weight_decay),
                     clipnorm=train.clipnorm)
    return keras.optimizers.AdamW(schedule, weight_decay=float(train.weight_decay),
                                  clipnorm=train.clipnorm)


def _train_stream(config: Config, base, global_batch: int, strategy=None):
    """`make_train(start_step)`: an endless, seeded batch stream over the loaded `base`,
    positioned in constant time where `base` gives random access (detection.data.resume).

    Otherwise (TFDS) each call gets a pipeline never iterated before (the first `base`, later
    ones the split loaded again): a shuffle that reshuffles on every iteration gives a dataset's
    k-th iterator its k-th permutation, so a run resumed mid-epoch (two calls: the epoch's
    rest, then the later epochs) would otherwise train from its second call on with other
    batches than the uninterrupted run."""
    data, aug = config.data, config.data.augment
    count = int(getattr(base, "num_examples", 0))
    if count < global_batch:
        raise ValueError(f"data.train has {count} usable images, fewer than one batch of "
                         f"{global_batch}")

    def batches_of(split, batch: int, repeat: bool = True):
        # Flip and colour here; the random shorter side (`augment.sizes`) is drawn where the
        # image meets the fixed canvas, so the canvas fit cannot undo it.
        stream = augment(split.repeat() if repeat else split, flip=aug.flip,
                         brightness=aug.brightness, contrast=aug.contrast,
                         saturation=aug.saturation, seed=data.seed)
        return training_batches(stream, tuple(config.model["image_size"]), batch,
                                max_boxes=data.max_boxes, flip=False,
                                shorter_sides=aug.sizes, seed=data.seed)

    if indexable(base):
        # Nothing before `start` is decoded; every call reuses the loaded records; a
        # worker `(num_workers, index)` decodes only its share of each global batch.
        def make_positioned(start: int, worker: tuple[int, int] = (1, 0), batch=global_batch):
            if worker[0] > 1 and callable(getattr(base, "for_worker", None)):
                # TFRecord shards: this worker reads only its own files, its own stream
                split = resumable_elements(base.for_worker(*worker), start * batch, data.seed)
                return batches_of(split, batch, repeat=False)
            split = resumable_elements(base, start * global_batch, data.seed,
                                       num_shards=worker[0], shard=worker[1])
            return batches_of(split, batch, repeat=False)

        return per_worker(strategy, make_positioned, global_batch, len(config.class_names()))

    unused = [base]  # the first call takes the split loaded already (no second rendering)

    def make_train(start: int):
        split = unused.pop() if unused else dataset_from_config(
            data.train, config.class_names(), shuffle=True, seed=data.seed, verbose=False)
        return batches_of(split, global_batch).skip(start)

    return make_train


def evaluate_config(model, config: Config, split: str = "eval",
                    max_images: int | None = None, verbose: bool = True, dataset=None) -> dict:
    """VOC mAP, COCO AP or mask AP with box AP beside it (per `config.eval`) of `model` on
    `data.<split>` (or the already loaded `dataset` of that split). A split without objects
    is refused (it has no score)."""
    spec = getattr(config.data, split, None)
    if not isinstance(spec, dict):
        raise ValueError(f"config has no data.{split} section to evaluate on")
    names = config.class_names()
    if dataset is None:
        dataset = dataset_from_config(spec, names)
        check_objects(dataset, spec, split, names)
    return evaluate_dataset(model, dataset, metric=config.eval.metric,
                            iou_threshold=config.eval.iou_threshold,
                            use_07_metric=config.eval.use_07_metric, class_names=names,
                            max_images=max_images, verbose=verbose)


def _fit(config: Config, out_dir: Path, verbose, strategy, base):
    """Build, compile and train on the loaded `base` split (resuming from
    `out_dir/checkpoints`); `model`. A diverged run raises `TrainingDiverged`."""
    train = config.train
    global_batch = int(train.batch_size) * strategy.num_replicas_in_sync
    make_train = _train_stream(config, base, global_batch, strategy)
    count = int(base.num_examples)
    total = int(train.steps)
    steps_per_epoch = max(1, min(count // global_batch, total))
    epochs = math.ceil(total / steps_per_epoch)
    if epochs * steps_per_epoch != total:
        print(f"train.steps {total} rounded up to {epochs * steps_per_epoch} "
              f"({epochs} epochs of {steps_per_epoch} steps)")
    with strategy.scope():
        model = build_model(config)
        model.compile(optimizer=scale_trunk(model, _optimizer(train, _schedule(train)),
                                            train.backbone_lr_mult, "train.backbone_lr_mult"))
    enable_multiworker_fit(model)  # per-replica input batches (detection.data.resume)
    callbacks = [NaNGuard(), HistoryLog(str(out_dir / "history.csv"), append=True),
                 CurvePlot(out_dir, steps_per_epoch)]  # training_curves.png, every epoch
    if importlib.util.find_spec("tensorboard") is not None:
        callbacks.append(keras.callbacks.TensorBoard(str(out_dir / "tensorboard"),
                                                     update_freq=20))
    else:
        print("tensorboard is not installed: no TensorBoard logs (history.csv still is)")
    fit_resumable(
        model, make_train, steps_per_epoch=steps_per_epoch, epochs=epochs,
        backup_dir=out_dir / "checkpoints",
        save_freq=int(train.checkpoint_every or steps_per_epoch), callbacks=callbacks,
        verbose=verbose,  # the run's record once its checkpoint is restored, before any step
        on_start=lambda step: atomic_write_text(out_dir / "config.yaml", _dump(config)))
    return model


def _load_splits(config: Config, evaluate: bool):
    """The training split (shuffled, seeded) and, when scored, the evaluation split, both
    checked for objects before any work starts."""
    names = config.class_names()
    base = dataset_from_config(config.data.train, names, shuffle=True, seed=config.data.seed)
    check_objects(base, config.data.train, "train", names)
    held_out = None
    if evaluate and config.data.eval is not None:
        held_out = dataset_from_config(config.data.eval, names)
        check_objects(held_out, config.data.eval, "eval", names)
    return base, held_out


def _record_divergence(out_dir: Path, err: TrainingDiverged) -> None:
    """metrics.json of a diverged run, unless a finished run's metrics.json is already there
    (it stays: nothing already written is lost)."""
    path = out_dir / "metrics.json"
    if _status(path) not in (None, "diverged"):
        print(f"{path} of the earlier finished run is kept")
        return
    atomic_write_json(path, {"status": "diverged", "diverged_at_step": err.step,
                             "kept_checkpoint": None if err.checkpoint is None
                             else str(err.checkpoint), "message": str(err), "metrics": {}})


def _status(path: Path) -> str | None:
    """The `status` of a metrics.json (None: absent or unreadable); files written before
    statuses existed count as finished."""
    try:
        return json.loads(path.read_text()).get("status", "finished")
    except (OSError, ValueError, AttributeError, RecursionError, MemoryError):
        return None


def train(config: Config, out_dir: str | Path, verbose: int | str = "auto",
          max_eval_images: int | None = None, evaluate: bool = True) -> dict:
    """`_train` in `out_dir` locked for this run (`RunFolder`: a second live run is refused
    naming the first); a run ending before its first checkpoint leaves nothing there but a
    divergence record, so the same or an edited command is not refused afterwards."""
    out_dir = Path(out_dir)
    check_run_dir(out_dir, config)  # before the lock: a refusal creates no folder
    folder = RunFolder(out_dir, out_dir / "checkpoints", keep=("metrics.json",),
                       note=print) if is_chief() else contextlib.nullcontext()
    with folder:
        return _train(config, out_dir, verbose, max_eval_images, evaluate)


def _train(config: Config, out_dir: str | Path, verbose: int | str = "auto",
           max_eval_images: int | None = None, evaluate: bool = True) -> dict:
    """Train per `config` into `out_dir` (resuming if checkpoints are there), then evaluate
    on `data.eval` unless `evaluate=False`.

    Splits without objects are refused before anything is written. A diverged run raises
    `TrainingDiverged` (naming the last finite checkpoint kept, or saying none was) and
    writes no final weights. Returns `{"history", "metrics", "steps", "seconds", "weights",
    "model"}`; `history` is the whole run's (`run_history`), resumed parts included."""
    out_dir = Path(out_dir)
    check_run_dir(out_dir, config)
    keras.utils.set_random_seed(int(config.data.seed))
    start = time.time()
    previous_policy = keras.mixed_precision.global_policy()
    try:
        if config.train.mixed_precision:
            import tensorflow as tf

            gpu = bool(tf.config.list_logical_devices("GPU"))
            keras.mixed_precision.set_global_policy("mixed_float16" if gpu else "mixed_bfloat16")
        # The strategy first: a multi-worker one must exist before TensorFlow runs any op.
        strategy = _strategy(config.train.distribution)
        base, held_out = _load_splits(config, evaluate)
        try:
            model = _fit(config, out_dir, verbose, strategy, base)
        except TrainingDiverged as err:
            _record_divergence(out_dir, err)
            raise
        if not weights_finite(model):  # fit_resumable raises first; never save such weights
            raise TrainingDiverged("training ended with non-finite weights; "
                                   "final.weights.h5 not written", None, None)
        weights = atomic_save(model, out_dir / "final.weights.h5")
        train_seconds = time.time() - start
        metrics = {}
        if held_out is not None:
            metrics = evaluate_config(model, config, max_images=max_eval_images,
                                      verbose=bool(verbose), dataset=held_out)
    finally:
        keras.mixed_precision.set_global_policy(previous_policy)
    history = run_history(out_dir)
    losses = history.get("loss", [])
    summary = {"status": "finished",
               "steps": int(keras.ops.convert_to_numpy(model.optimizer.iterations)),
               "train_seconds": round(train_seconds, 1),
               "loss_first_epoch": losses[0] if losses else None,
               "loss_last_epoch": losses[-1] if losses else None,
               "metrics": {k: (v if not isinstance(v, dict) else {str(c): float(a)
                                                                  for c, a in v.items()})
                           for k, v in metrics.items()}}
    if metrics and not _scored(metrics):
        summary["status"] = "finished, not scored: the evaluated images hold no objects"
    summary["evaluations"] = evaluations(out_dir, summary["steps"], metrics)
    atomic_write_json(out_dir / "metrics.json", summary)
    plot_training_curves(out_dir)
    return {"history": history, "metrics": metrics, "steps": summary["steps"],
            "seconds": time.time() - start, "weights": weights, "model": model}


def _scored(metrics: dict) -> bool:
    headline = metrics.get("mAP", metrics.get("AP"))
    return headline is not None and math.isfinite(float(headline))


def print_metrics(metrics: dict, config: Config) -> None:
    """The closing line: `mAP@0.5 = 0.xxx` (VOC), `AP = ..., AP50 = ...` (COCO) or, for
    `segm`, `box AP = ...` then `mask AP = ..., AP50 = ...`; never a `nan` presented as a
    score."""
    if ("mAP" in metrics or "AP" in metrics) and not _scored(metrics):
        print("no score: the evaluated images hold no ground-truth objects (mAP/AP undefined)")
    elif "mAP" in metrics:
        print(f"mAP@{config.eval.iou_threshold:g} = {metrics['mAP']:.3f}")
    elif "AP" in metrics:
        if metrics.get("area_source") == "box":
            print("note: APs/APm/APl use box areas (w*h); the annotations give no segment area")
        segm = config.eval.metric == "segm"
        if segm and "bbox" in metrics:
            box = metrics["bbox"]
            print(f"box AP = {box['AP']:.3f}, AP50 = {box['AP50']:.3f}, AP75 = {box['AP75']:.3f}")
        print(f"{'mask ' if segm else ''}AP = {metrics['AP']:.3f}, AP50 = {metrics['AP50']:.3f}, "
              f"AP75 = {metrics['AP75']:.3f}")


def run(args) -> int:
    """Train a detector from a config (resumable), then print VOC/COCO AP on data.eval."""
    overrides: dict = {"train": {}}
    for key, name in (("steps", "steps"), ("batch_size", "batch_size"),
                      ("strategy", "distribution"), ("mixed_precision", "mixed_precision")):
        if getattr(args, key) is not None:
            overrides["train"][name] = getattr(args, key)
    # --data PATH / --classes: the data set replaces data.train/eval (and class names); without
    # --config, a starting config for it (see `python -m detection init-config`)
    # --backbone-weights: the starting config's (default: ImageNet only when cached), or
    # replacing a --config's model.backbone_weights when given
    choice = getattr(args, "backbone_weights", None)
    weights, line = (choose_weights(choice, STARTING_MODEL["backbone"]) if args.config is None
                     else (None, None))
    base, overrides["data"] = data_overrides(args.data, args.images, args.classes,
                                             args.val_fraction, weights)
    if args.config is None and base is None:
        raise ValueError("train needs --config FILE, or --data PATH (a starting config for it)")
    config = (load_config(args.config, overrides) if args.config is not None
              else from_dict(merge(base, overrides), f"--data {args.data}"))
    if args.config is not None and choice is not None:
        backbone = config.model.get("backbone", "resnet50")
        weights, line = choose_weights(choice, backbone if isinstance(backbone, str) else "")
        config.model["backbone_weights"] = weights
    if line is not None:
        print(line)
    prefetch(config.model.get("backbone_weights"), config.model.get("backbone"))
    if args.data or args.classes:
        print(f"classes ({len(config.class_names())}): {', '.join(config.class_names())}")
    out = Path(args.out or Path("runs") / str(config.name or Path(args.config).stem))
    with stop_on_sigterm():  # SIGTERM: a checkpoint at the step boundary, then exit 143
        result = train(config, out, max_eval_images=args.eval_images)
    losses = result["history"].get("loss", [])  # the whole run's, from history.csv
    if losses and None not in (losses[0], losses[-1]):
        print(f"loss: first epoch {losses[0]:.4f}, last epoch {losses[-1]:.4f}"
              f" ({result['steps']} steps, {result['seconds']:.0f} s); run folder {out}")
    print_metrics(result["metrics"], config)
    return 0
