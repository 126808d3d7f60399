"""Train a detector from a YAML config, resumable, and score it on the validation split.

    python -m detection train --config detection/configs/raccoon_tiny.yaml --out runs/raccoon

The run folder gets `checkpoints/` (step-exact kill-and-resume: run the same command again),
`tensorboard/`, `history.csv`, `config.yaml`, `final.weights.h5` and `metrics.json`; the last
line printed is `mAP@0.5 = 0.xxx` on `data.eval`. Learning rate as detectron2: linear warm-up
from `warmup_factor * lr` over `warmup_steps`, then `lr * lr_gamma**k` after the k-th of
`lr_steps`.
"""

from __future__ import annotations

import argparse
import copy
import importlib.util
import json
import math
import time
from pathlib import Path

import keras
import yaml
from keras import ops

STRATEGY_CHOICES = ("auto", "none", "mirrored", "multiworker")


@keras.saving.register_keras_serializable("detection")
class WarmupStepLR(keras.optimizers.schedules.LearningRateSchedule):
    """detectron2's `WarmupMultiStepLR`: `lr * gamma**k * w(step)` where `k` counts the passed
    `steps` and `w` rises linearly from `warmup_factor` to 1 over `warmup_steps`."""

    def __init__(self, base_lr: float, steps=(), gamma: float = 0.1, warmup_steps: int = 0,
                 warmup_factor: float = 0.001):
        if list(steps) != sorted(steps):
            raise ValueError(f"lr_steps must be increasing, got {list(steps)}")
        self.base_lr, self.steps, self.gamma = float(base_lr), [int(s) for s in steps], gamma
        self.warmup_steps, self.warmup_factor = int(warmup_steps), float(warmup_factor)

    def __call__(self, step):
        step = ops.cast(step, "float32")
        lr = ops.convert_to_tensor(self.base_lr, "float32")
        for boundary in self.steps:
            lr = lr * ops.where(step >= boundary, self.gamma, 1.0)
        if self.warmup_steps:
            alpha = ops.minimum(step / self.warmup_steps, 1.0)
            lr = lr * (self.warmup_factor * (1.0 - alpha) + alpha)
        return lr

    def get_config(self) -> dict:
        return {"base_lr": self.base_lr, "steps": self.steps, "gamma": self.gamma,
                "warmup_steps": self.warmup_steps, "warmup_factor": self.warmup_factor}


def load_config(path: str | Path, overrides: dict | None = None) -> dict:
    """A detection YAML (sections `model`, `data`, `train`, `eval`), `overrides` merged in."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"--config {path} does not exist")
    config = yaml.safe_load(path.read_text())
    if not isinstance(config, dict) or "model" not in config or "data" not in config:
        raise ValueError(f"{path}: a detection config needs 'model' and 'data' sections")
    for section, values in (overrides or {}).items():
        config.setdefault(section, {}).update(values)
    return config


def class_names_of(config: dict) -> list[str]:
    """The config's class names (`data.class_names`, checked against `data.num_classes`)."""
    data = config["data"]
    names = data.get("class_names")
    if names is None:
        raise ValueError("config data.class_names is missing (one name per label)")
    if "num_classes" in data and int(data["num_classes"]) != len(names):
        raise ValueError(f"config data.num_classes = {data['num_classes']} but "
                         f"data.class_names has {len(names)} names")
    return [str(n) for n in names]


def build_model(config: dict):
    """`FasterRCNN` from the config's `model` section and class names."""
    from detection.modeling import FasterRCNN

    return FasterRCNN(num_classes=len(class_names_of(config)), **copy.deepcopy(config["model"]))


def _strategy(name: str):
    import os

    import tensorflow as tf

    from keras_resnet_suite.training.distribute import get_strategy

    if name not in STRATEGY_CHOICES:
        raise ValueError(f"train.distribution must be one of {STRATEGY_CHOICES}, got {name!r}")
    if name == "auto":
        if "TF_CONFIG" in os.environ:
            name = "multiworker"
        else:
            name = "mirrored" if len(tf.config.list_logical_devices("GPU")) > 1 else "none"
    return get_strategy(name)


def _optimizer(train: dict, schedule):
    kind = str(train.get("optimizer", "sgd")).lower()
    clip = train.get("clipnorm", 10.0)
    if kind == "sgd":
        from keras_resnet_suite.training.optimizers import SGDL2

        # Coupled L2 as detectron2's SGD; BN parameters are decayed too (its default).
        return SGDL2(schedule, momentum=float(train.get("momentum", 0.9)),
                     l2=float(train.get("weight_decay", 1e-4)), clipnorm=clip)
    if kind == "adamw":
        return keras.optimizers.AdamW(schedule, weight_decay=float(train.get("weight_decay", 0)),
                                      clipnorm=clip)
    raise ValueError(f"train.optimizer must be 'sgd' or 'adamw', got {kind!r}")


def _train_stream(config: dict, class_names: list[str], global_batch: int):
    """`(make_train(start_step), images_in_split)`: an endless, seeded batch stream."""
    from detection.data.augment import augment
    from detection.data.build import dataset_from_config
    from detection.data.pipeline import training_batches

    data = config["data"]
    seed = int(data.get("seed", 0))
    base = dataset_from_config(data["train"], class_names, shuffle=True, seed=seed)
    count = int(getattr(base, "num_examples", 0))
    if count < global_batch:
        raise ValueError(f"data.train has {count} usable images, fewer than one batch of "
                         f"{global_batch}")
    aug = dict(data.get("augment") or {})
    # Flip and colour here; the random shorter side (`augment.sizes`) is drawn where the
    # image meets the fixed canvas, so the canvas fit cannot undo it.
    stream = augment(base.repeat(), sizes=None, max_size=None, flip=bool(aug.get("flip", True)),
                     brightness=aug.get("brightness", 0.0), contrast=aug.get("contrast", 0.0),
                     saturation=aug.get("saturation"), seed=seed)
    image_size = tuple(config["model"]["image_size"])
    batches = training_batches(stream, image_size, global_batch,
                               max_boxes=int(data.get("max_boxes", 50)), flip=False,
                               shorter_sides=aug.get("sizes"), seed=seed)
    return (lambda start: batches.skip(start)), count


def train(config: dict, out_dir: str | Path, verbose: int | str = "auto",
          max_eval_images: int | None = None) -> dict:
    """Train per `config` into `out_dir` (resuming if checkpoints are there), then evaluate.

    Returns `{"history", "metrics", "steps", "seconds", "weights"}`."""
    import tensorflow as tf

    from detection.evaluation.dataset import evaluate_dataset
    from keras_resnet_suite.training.callbacks import NaNGuard
    from keras_resnet_suite.training.loop import fit_resumable

    train_cfg, eval_cfg = config.get("train", {}), config.get("eval", {})
    class_names = class_names_of(config)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    keras.utils.set_random_seed(int(config["data"].get("seed", 0)))
    start = time.time()

    previous_policy = keras.mixed_precision.global_policy()
    if train_cfg.get("mixed_precision", False):
        gpu = bool(tf.config.list_logical_devices("GPU"))
        keras.mixed_precision.set_global_policy("mixed_float16" if gpu else "mixed_bfloat16")
    try:
        strategy = _strategy(str(train_cfg.get("distribution", "auto")))
        global_batch = int(train_cfg.get("batch_size", 2)) * strategy.num_replicas_in_sync
        make_train, count = _train_stream(config, class_names, global_batch)
        total = int(train_cfg["steps"])
        steps_per_epoch = max(1, min(count // global_batch, total))
        epochs = math.ceil(total / steps_per_epoch)
        if epochs * steps_per_epoch != total:
            print(f"train.steps {total} rounded up to {epochs * steps_per_epoch} "
                  f"({epochs} epochs of {steps_per_epoch} steps)")
        schedule = WarmupStepLR(float(train_cfg["learning_rate"]), train_cfg.get("lr_steps", ()),
                                float(train_cfg.get("lr_gamma", 0.1)),
                                int(train_cfg.get("warmup_steps", 0)),
                                float(train_cfg.get("warmup_factor", 0.001)))
        with strategy.scope():
            model = build_model(config)
            model.compile(optimizer=_optimizer(train_cfg, schedule))
        callbacks = [NaNGuard(),
                     keras.callbacks.CSVLogger(str(out_dir / "history.csv"), append=True)]
        if importlib.util.find_spec("tensorboard") is not None:
            callbacks.append(keras.callbacks.TensorBoard(str(out_dir / "tensorboard"),
                                                         update_freq=20))
        else:
            print("tensorboard is not installed: no TensorBoard logs (history.csv still is)")
        history = fit_resumable(
            model, make_train, steps_per_epoch=steps_per_epoch, epochs=epochs,
            backup_dir=out_dir / "checkpoints",
            save_freq=int(train_cfg.get("checkpoint_every", steps_per_epoch)),
            callbacks=callbacks, verbose=verbose)
        weights = out_dir / "final.weights.h5"
        model.save_weights(weights)
        train_seconds = time.time() - start

        metrics = {}
        if "eval" in config["data"]:
            from detection.data.build import dataset_from_config

            eval_ds = dataset_from_config(config["data"]["eval"], class_names)
            metrics = evaluate_dataset(
                model, eval_ds, metric=str(eval_cfg.get("metric", "voc")),
                iou_threshold=float(eval_cfg.get("iou_threshold", 0.5)),
                use_07_metric=bool(eval_cfg.get("use_07_metric", True)),
                class_names=class_names, max_images=max_eval_images, verbose=bool(verbose))
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


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", required=True, help="detection YAML (detection/configs/)")
    parser.add_argument("--out", default=None, help="run folder (default: runs/<config name>)")
    parser.add_argument("--steps", type=int, default=None, help="override train.steps")
    parser.add_argument("--batch-size", type=int, default=None,
                        help="override train.batch_size (per replica)")
    parser.add_argument("--strategy", choices=STRATEGY_CHOICES, default=None,
                        help="override train.distribution")
    parser.add_argument("--mixed-precision", action=argparse.BooleanOptionalAction, default=None,
                        help="override train.mixed_precision")
    parser.add_argument("--eval-images", type=int, default=None,
                        help="evaluate on at most this many validation images")


def run(args: argparse.Namespace) -> int:
    """Train a detector from a config (resumable), then print VOC/COCO AP on data.eval."""
    overrides: dict = {"train": {}}
    for key, name in (("steps", "steps"), ("batch_size", "batch_size"),
                      ("strategy", "distribution"), ("mixed_precision", "mixed_precision")):
        if getattr(args, key) is not None:
            overrides["train"][name] = getattr(args, key)
    config = load_config(args.config, overrides)
    if "steps" not in config.get("train", {}) or "learning_rate" not in config["train"]:
        raise ValueError(f"{args.config}: train.steps and train.learning_rate are required")
    out = Path(args.out or Path("runs") / str(config.get("name", Path(args.config).stem)))
    result = train(config, out, max_eval_images=args.eval_images)
    history = result["history"]
    if history.get("loss"):
        print(f"loss: first epoch {history['loss'][0]:.4f}, last epoch {history['loss'][-1]:.4f}"
              f" ({result['steps']} steps, {result['seconds']:.0f} s); run folder {out}")
    metrics = result["metrics"]
    if "mAP" in metrics:
        iou = float(config.get("eval", {}).get("iou_threshold", 0.5))
        print(f"mAP@{iou:g} = {metrics['mAP']:.3f}")
    elif "AP" in metrics:
        print(f"AP = {metrics['AP']:.3f}, AP50 = {metrics['AP50']:.3f}")
    return 0
