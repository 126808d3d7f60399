"""Train a detector from a config, resumable, and score it on the validation split.

    python -m detection train --config detection/configs/raccoon_tiny.yaml --out runs/raccoon

The run folder gets `checkpoints/` (step-exact kill-and-resume: run the same command again),
`tensorboard/`, `history.csv`, `config.yaml`, `final.weights.h5` and `metrics.json`; the last
line printed is `mAP@0.5 = 0.xxx` on `data.eval`. Learning rate as detectron2 (`schedule:
step`): linear warm-up from `warmup_factor * lr` over `warmup_steps`, then `lr * lr_gamma**k`
after the k-th of `lr_steps`; or warm-up then cosine decay to 0 (`schedule: cosine`).
"""

from __future__ import annotations

import copy
import importlib.util
import json
import math
import time
from pathlib import Path

import keras
import yaml

from detection.config import STRATEGIES, Config
from keras_resnet_suite.training.schedules import WarmupCosine, WarmupStepLR


def build_model(config: Config, load_backbone_weights: bool = True):
    """`FasterRCNN` of the config's `model` section and class names. With
    `load_backbone_weights=False` the architecture is the same (the checkpoint's options,
    frozen stages, input normalisation) but nothing is downloaded: for loading trained weights
    over it."""
    from detection.modeling import FasterRCNN

    model = copy.deepcopy(config.model)
    if not load_backbone_weights and model.get("backbone_weights") is not None:
        model["backbone_kwargs"] = {**(model.get("backbone_kwargs") or {}),
                                    "load_weights": False}
    return FasterRCNN(num_classes=len(config.class_names()), **model)


def check_run_dir(out_dir: Path, config: Config) -> None:
    """Refuse to resume a run folder that holds another run (any change but `train.steps`)."""
    from keras_resnet_suite.run_dir import describe_changes, differences

    path = out_dir / "config.yaml"
    if not path.is_file():
        return
    old, new = yaml.safe_load(path.read_text()) or {}, yaml.safe_load(_dump(config))
    for cfg in (old, new):
        cfg.pop("eval", None)  # scoring may change between runs of the same training
        cfg.get("train", {}).pop("steps", None)  # a longer schedule resumes
    diff = differences(old, new)
    if diff:
        raise ValueError(f"{out_dir} holds a different run ({describe_changes(diff)}, against "
                         f"{path}); resume it with the same config (only train.steps may "
                         "grow) or choose another --out")


def _dump(config: Config) -> str:
    return yaml.safe_dump(config.to_dict(), sort_keys=False)


def _strategy(name: str):
    import os

    import tensorflow as tf

    from keras_resnet_suite.training.distribute import get_strategy

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
        from keras_resnet_suite.training.optimizers import SGDL2

        # Coupled L2 as detectron2's SGD; BN parameters are decayed too (its default).
        return SGDL2(schedule, momentum=float(train.momentum), l2=float(train.weight_decay),
                     clipnorm=train.clipnorm)
    return keras.optimizers.AdamW(schedule, weight_decay=float(train.weight_decay),
                                  clipnorm=train.clipnorm)


def _train_stream(config: Config, class_names: list[str], global_batch: int):
    """`(make_train(start_step), images_in_split)`: an endless, seeded batch stream.

    Each `make_train` call gets a pipeline never iterated before: a shuffle that reshuffles
    on every iteration gives a dataset's k-th iterator its k-th permutation, so a run resumed
    mid-epoch (two calls: the epoch's rest, then the later epochs) would otherwise train from
    its second call on with other batches than the uninterrupted run."""
    from detection.data.augment import augment
    from detection.data.build import dataset_from_config
    from detection.data.pipeline import training_batches

    data, aug = config.data, config.data.augment

    def build(verbose: bool):
        base = dataset_from_config(data.train, class_names, shuffle=True, seed=data.seed,
                                   verbose=verbose)
        # Flip and colour here; the random shorter side (`augment.sizes`) is drawn where the
        # image meets the fixed canvas, so the canvas fit cannot undo it.
        stream = augment(base.repeat(), flip=aug.flip,
                         brightness=aug.brightness, contrast=aug.contrast,
                         saturation=aug.saturation, seed=data.seed)
        batches = training_batches(stream, tuple(config.model["image_size"]), global_batch,
                                   max_boxes=data.max_boxes, flip=False,
                                   shorter_sides=aug.sizes, seed=data.seed)
        return batches, int(getattr(base, "num_examples", 0))

    first, count = build(verbose=True)
    if count < global_batch:
        raise ValueError(f"data.train has {count} usable images, fewer than one batch of "
                         f"{global_batch}")
    unused = [first]  # the first call takes the pipeline built here (no second rendering)

    def make_train(start: int):
        return (unused.pop() if unused else build(verbose=False)[0]).skip(start)

    return make_train, count


def evaluate_config(model, config: Config, split: str = "eval",
                    max_images: int | None = None, verbose: bool = True) -> dict:
    """VOC mAP or COCO AP (per `config.eval`) of `model` on `data.<split>`."""
    from detection.data.build import dataset_from_config
    from detection.evaluation.dataset import evaluate_dataset

    spec = getattr(config.data, split, None)
    if not isinstance(spec, dict):
        raise ValueError(f"config has no data.{split} section to evaluate on")
    names = config.class_names()
    return evaluate_dataset(model, dataset_from_config(spec, names), metric=config.eval.metric,
                            iou_threshold=config.eval.iou_threshold,
                            use_07_metric=config.eval.use_07_metric, class_names=names,
                            max_images=max_images, verbose=verbose)


def _fit(config: Config, out_dir: Path, verbose):
    """Build, compile and train (resuming from `out_dir/checkpoints`); `(model, history)`."""
    import tensorflow as tf

    from keras_resnet_suite.training.callbacks import NaNGuard
    from keras_resnet_suite.training.loop import fit_resumable

    train = config.train
    if train.mixed_precision:
        gpu = bool(tf.config.list_logical_devices("GPU"))
        keras.mixed_precision.set_global_policy("mixed_float16" if gpu else "mixed_bfloat16")
    strategy = _strategy(train.distribution)
    global_batch = int(train.batch_size) * strategy.num_replicas_in_sync
    make_train, count = _train_stream(config, config.class_names(), global_batch)
    total = int(train.steps)
    steps_per_epoch = max(1, min(count // global_batch, total))
    epochs = math.ceil(total / steps_per_epoch)
    if epochs * steps_per_epoch != total:
        print(f"train.steps {total} rounded up to {epochs * steps_per_epoch} "
              f"({epochs} epochs of {steps_per_epoch} steps)")
    with strategy.scope():
        model = build_model(config)
        model.compile(optimizer=_optimizer(train, _schedule(train)))
    callbacks = [NaNGuard(), keras.callbacks.CSVLogger(str(out_dir / "history.csv"), append=True)]
    if importlib.util.find_spec("tensorboard") is not None:
        callbacks.append(keras.callbacks.TensorBoard(str(out_dir / "tensorboard"),
                                                     update_freq=20))
    else:
        print("tensorboard is not installed: no TensorBoard logs (history.csv still is)")
    history = fit_resumable(
        model, make_train, steps_per_epoch=steps_per_epoch, epochs=epochs,
        backup_dir=out_dir / "checkpoints",
        save_freq=int(train.checkpoint_every or steps_per_epoch), callbacks=callbacks,
        verbose=verbose)
    return model, history


def train(config: Config, out_dir: str | Path, verbose: int | str = "auto",
          max_eval_images: int | None = None, evaluate: bool = True) -> dict:
    """Train per `config` into `out_dir` (resuming if checkpoints are there), then evaluate
    on `data.eval` unless `evaluate=False`.

    Returns `{"history", "metrics", "steps", "seconds", "weights", "model"}`."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    check_run_dir(out_dir, config)
    (out_dir / "config.yaml").write_text(_dump(config))
    keras.utils.set_random_seed(int(config.data.seed))
    start = time.time()
    previous_policy = keras.mixed_precision.global_policy()
    try:
        model, history = _fit(config, out_dir, verbose)
        weights = out_dir / "final.weights.h5"
        model.save_weights(weights)
        train_seconds = time.time() - start
        metrics = {}
        if evaluate and config.data.eval is not None:
            metrics = evaluate_config(model, config, max_images=max_eval_images,
                                      verbose=bool(verbose))
    finally:
        keras.mixed_precision.set_global_policy(previous_policy)
    summary = {"steps": int(keras.ops.convert_to_numpy(model.optimizer.iterations)),
               "train_seconds": round(train_seconds, 1),
               "loss_first_epoch": history.get("loss", [None])[0],
               "loss_last_epoch": history.get("loss", [None])[-1],
               "metrics": {k: (v if not isinstance(v, dict) else {str(c): float(a)
                                                                  for c, a in v.items()})
                           for k, v in metrics.items()}}
    (out_dir / "metrics.json").write_text(json.dumps(summary, indent=2, default=float))
    return {"history": history, "metrics": metrics, "steps": summary["steps"],
            "seconds": time.time() - start, "weights": weights, "model": model}


def print_metrics(metrics: dict, config: Config) -> None:
    """The closing line: `mAP@0.5 = 0.xxx` (VOC) or `AP = ..., AP50 = ...` (COCO)."""
    if "mAP" in metrics:
        print(f"mAP@{config.eval.iou_threshold:g} = {metrics['mAP']:.3f}")
    elif "AP" in metrics:
        if metrics.get("area_source") == "box":
            print("note: APs/APm/APl use box areas (w*h); the annotations give no segment area")
        print(f"AP = {metrics['AP']:.3f}, AP50 = {metrics['AP50']:.3f}, "
              f"AP75 = {metrics['AP75']:.3f}")


def run(args) -> int:
    """Train a detector from a config (resumable), then print VOC/COCO AP on data.eval."""
    from detection.config import from_dict, load_config, merge
    from detection.data.discover import data_overrides

    overrides: dict = {"train": {}}
    for key, name in (("steps", "steps"), ("batch_size", "batch_size"),
                      ("strategy", "distribution"), ("mixed_precision", "mixed_precision")):
        if getattr(args, key) is not None:
            overrides["train"][name] = getattr(args, key)
    # --data PATH / --classes: the data set replaces data.train/eval (and class names); without
    # --config, a starting config for it (see `python -m detection init-config`)
    base, overrides["data"] = data_overrides(args.data, args.images, args.classes,
                                             args.val_fraction)
    if args.config is None and base is None:
        raise ValueError("train needs --config FILE, or --data PATH (a starting config for it)")
    config = (load_config(args.config, overrides) if args.config is not None
              else from_dict(merge(base, overrides), f"--data {args.data}"))
    if args.data or args.classes:
        print(f"classes ({len(config.class_names())}): {', '.join(config.class_names())}")
    out = Path(args.out or Path("runs") / str(config.name or Path(args.config).stem))
    result = train(config, out, max_eval_images=args.eval_images)
    history = result["history"]
    if history.get("loss"):
        print(f"loss: first epoch {history['loss'][0]:.4f}, last epoch {history['loss'][-1]:.4f}"
              f" ({result['steps']} steps, {result['seconds']:.0f} s); run folder {out}")
    print_metrics(result["metrics"], config)
    return 0
