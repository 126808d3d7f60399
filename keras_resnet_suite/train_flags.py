"""The flags of `keras-resnet-suite train` and their checks, made before any data is read:
counts, the model and recipe names, the data directory and the fine-tuning options
(`--weights`, `--freeze-at`, `--lr-mult`). Light: no TensorFlow import."""

from __future__ import annotations

import argparse
from pathlib import Path

from keras_resnet_suite.schema import LR_MULTIPLIERS, Number, arg_type, check_args

DATASETS = ("cifar10", "cifar100", "imagenet")
FLAG_RULES = {name: Number(int, low=low) for name, low in (  # checked before data is read
    ("epochs", 1), ("steps", 1), ("batch_size", 1), ("save_every", 1), ("num_classes", 1),
    ("seed", 0), ("freeze_at", 0))}


def configure_train(p: argparse.ArgumentParser) -> None:
    """The arguments of `train`."""
    p.add_argument("--model", default="resnet20", help="a name from `keras-resnet-suite models`")
    p.add_argument("--data", default="cifar10", choices=DATASETS)
    p.add_argument("--data-dir", required=True,
                   help="data directory or archive (.tar.gz), or 'tfds' (TensorFlow Datasets)")
    p.add_argument("--num-classes", type=int, help="classes (imagenet-style folders: default all)")
    p.add_argument("--recipe", default="paper-cifar",
                   help="paper-cifar | paper-imagenet | modern | fine-tune (needs --weights)")
    p.add_argument("--weights", help="pretrained weights (a checkpoint name or file) under a new "
                   "--num-classes head: fine-tuning")
    p.add_argument("--freeze-at", type=int, help="freeze the stem and stages conv2_x.."
                   "conv{K}_x (0: none; default: the recipe's)")
    p.add_argument("--lr-mult", action="append", metavar="PATTERNS=FACTOR",
                   type=arg_type(LR_MULTIPLIERS, "--lr-mult"),
                   help="learning-rate multiplier of the layers matching comma-separated "
                   "patterns, e.g. 'conv1,conv2_x=0.1' or '*=0.1;predictions=1' (repeatable; "
                   "the last matching pattern wins; default: the recipe's)")
    p.add_argument("--out", required=True, help="run directory (re-run to resume)")
    length = p.add_mutually_exclusive_group()
    length.add_argument("--epochs", type=int, help="train this many epochs (default: the recipe's)")
    length.add_argument("--steps", type=int, help="train this many iterations")
    p.add_argument("--batch-size", type=int, help="global batch (default: the recipe's; the LR "
                   "scales linearly)")  # fmt: skip
    p.add_argument("--strategy", default="none", choices=["none", "mirrored", "multiworker"])
    p.add_argument("--mixed-precision", choices=["mixed_float16", "mixed_bfloat16"])
    p.add_argument("--jit-compile", default="auto", choices=["auto", "true", "false"])
    p.add_argument("--normalization", choices=["pixel_mean", "channel"],
                   help="input normalisation (default: channel with --weights, nearest to the "
                   "mean/std scaling pretrained checkpoints expect; else pixel_mean, the paper's)")
    p.add_argument("--save-every", type=int, default=200,
                   help="iterations between resumable checkpoints (default: %(default)s)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--verbose", default="auto", help="Keras verbosity: auto | 0 | 1 | 2")


def finetune_options(args) -> dict:
    """The fine-tuning flags given (`weights` resolved to a path where it is a file), for
    run.json; `--lr-mult` groups merged in order (a later pattern wins)."""
    out: dict = {}
    if args.weights:
        path = Path(args.weights)
        out["weights"] = str(path.resolve()) if path.is_file() else args.weights
    if args.freeze_at is not None:
        out["freeze_at"] = args.freeze_at
    if args.lr_mult:
        out["lr_multipliers"] = {k: v for group in args.lr_mult for k, v in group.items()}
    return out


def checked_data_dir(args) -> str:
    """`--data-dir` resolved, after refusing an unknown model or recipe and counts below 1."""
    from keras_resnet_suite import training
    from keras_resnet_suite.specs import available_models

    if args.model not in available_models():
        raise SystemExit(f"error: unknown --model {args.model!r}; see `keras-resnet-suite models`")
    if args.recipe not in training.RECIPES:
        raise SystemExit(f"error: unknown --recipe {args.recipe!r}; valid: "
                         f"{', '.join(training.RECIPES)}")  # fmt: skip
    if args.recipe == "fine-tune" and not args.weights:
        raise SystemExit("error: --recipe fine-tune needs --weights (the pretrained checkpoint)")
    data_dir = args.data_dir if args.data_dir == "tfds" else str(Path(args.data_dir).resolve())
    if data_dir != "tfds" and not Path(data_dir).exists():
        raise SystemExit(f"error: --data-dir {args.data_dir} does not exist")
    check_args(args, FLAG_RULES)
    return data_dir
