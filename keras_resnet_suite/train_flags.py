"""The flags of `keras-resnet-suite train` and their checks, made before any data is read:
counts, the model and recipe names, the data directory and the fine-tuning options
(`--weights`, `--freeze-at`, `--lr-mult`). Light: no TensorFlow import."""

from __future__ import annotations

import argparse
from pathlib import Path

from keras_resnet_suite.schema import LR_MULTIPLIERS, Number, arg_type

DATASETS = ("cifar10", "cifar100", "imagenet")
EVAL_MODES = ("center", "ten-crop", "multiscale")
FLAG_RULES = {name: Number(int, low=low) for name, low in (  # checked before data is read
    ("epochs", 1), ("steps", 1), ("batch_size", 1), ("save_every", 1), ("num_classes", 1),
    ("seed", 0), ("freeze_at", 0), ("limit", 1), ("top_k", 1))}


def _flag(name: str):
    """The argparse `type=` of `--name` by its rule in `FLAG_RULES` (argparse's one-line
    error naming the flag, exit 2)."""
    return arg_type(FLAG_RULES[name.replace("-", "_")], "--" + name)


def configure_train(p: argparse.ArgumentParser) -> None:
    """The arguments of `train`."""
    p.add_argument("--model", default="resnet20", help="a name from `keras-resnet-suite models`")
    p.add_argument("--data", default="cifar10", choices=DATASETS)
    p.add_argument("--data-dir", required=True,
                   help="data directory or archive (.tar.gz), or 'tfds' (TensorFlow Datasets)")
    p.add_argument("--num-classes", type=_flag("num-classes"),
                   help="classes (imagenet-style folders: default all)")
    p.add_argument("--recipe", default="paper-cifar",
                   help="paper-cifar | paper-imagenet | modern | fine-tune (needs --weights)")
    p.add_argument("--weights", help="pretrained weights (a checkpoint name or file) under a new "
                   "--num-classes head: fine-tuning")
    p.add_argument("--freeze-at", type=_flag("freeze-at"), help="freeze the stem and stages "
                   "conv2_x.."
                   "conv{K}_x (0: none; default: the recipe's)")
    p.add_argument("--lr-mult", action="append", metavar="PATTERNS=FACTOR",
                   type=arg_type(LR_MULTIPLIERS, "--lr-mult"),
                   help="learning-rate multiplier of the layers matching comma-separated "
                   "patterns, e.g. 'conv1,conv2_x=0.1' or '*=0.1;predictions=1' (repeatable; "
                   "the last matching pattern wins; default: the recipe's)")
    p.add_argument("--out", required=True, help="run directory (re-run to resume)")
    length = p.add_mutually_exclusive_group()
    length.add_argument("--epochs", type=_flag("epochs"),
                        help="train this many epochs (default: the recipe's)")
    length.add_argument("--steps", type=_flag("steps"), help="train this many iterations")
    p.add_argument("--batch-size", type=_flag("batch-size"), help="global batch (default: the "
                   "recipe's; the LR "
                   "scales linearly)")  # fmt: skip
    p.add_argument("--strategy", default="none", choices=["none", "mirrored", "multiworker"])
    p.add_argument("--mixed-precision", choices=["mixed_float16", "mixed_bfloat16"])
    p.add_argument("--jit-compile", default="auto", choices=["auto", "true", "false"])
    p.add_argument("--normalization", choices=["pixel_mean", "channel"],
                   help="input normalisation (default: channel with --weights, nearest to the "
                   "mean/std scaling pretrained checkpoints expect; else pixel_mean, the paper's)")
    p.add_argument("--save-every", type=_flag("save-every"), default=200,
                   help="iterations between resumable checkpoints (default: %(default)s)")
    p.add_argument("--seed", type=_flag("seed"), default=0)
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


def configure_evaluate(p: argparse.ArgumentParser) -> None:
    """Arguments of `keras-resnet-suite evaluate`."""
    p.add_argument("--run", help="run directory written by `train` (or --model and --weights)")
    p.add_argument("--model", help="with --weights: a CIFAR model name (resnet20, resnet56, ...)")
    p.add_argument("--weights", help="with --model: a checkpoint file (.th/.pth/.safetensors/"
                   ".keras weights) or name (cifar10) to evaluate on --data-dir's test set")
    p.add_argument("--preprocessing", choices=("caffe", "tf", "torch"), help="with --weights: "
                   "input convention (default: the checkpoint's)")
    p.add_argument("--batch-size", type=_flag("batch-size"), default=500)
    p.add_argument("--save-logits", help="with --weights: write the test logits as this .npy")
    p.add_argument("--mode", nargs="+", default=["center"], choices=EVAL_MODES,
                   help="1-crop (center), 10-crop, and/or fully-convolutional multi-scale")
    p.add_argument("--model-file", help="a .keras file instead of RUN/model.keras")
    p.add_argument("--data-dir", help="override the run's data directory")
    p.add_argument("--limit", type=_flag("limit"), help="evaluate only the first N test batches")


def configure_export(p: argparse.ArgumentParser) -> None:
    """Arguments of `keras-resnet-suite export`."""
    p.add_argument("--run", required=True, help="run directory written by `train`")
    p.add_argument("--out", required=True, help="SavedModel directory to write")
    p.add_argument("--model-file", help="a .keras file instead of RUN/model.keras")
    p.add_argument("--fold-bn", action=argparse.BooleanOptionalAction, default=None,
                   help="fold BN into the convolutions (default: wherever a BN follows one)")
    p.add_argument("--top-k", type=_flag("top-k"), default=5)
    # int8/bf16 instead of the float32 SavedModel: quantize_cli.cmd_quantize (export.quantize)
    p.add_argument("--precision", default="float32", choices=["float32", "int8", "bf16"],
                   help="float32: the SavedModel; int8/bf16: a quantized model (export.quantize)")
    p.add_argument("--format", choices=["openvino", "onnx", "litert"],
                   help="runtime of an int8/bf16 model (default openvino)")
    p.add_argument("--calibration", default="300",
                   help="N images of the run's training data, or a .npy of model inputs")
    p.add_argument("--validation",
                   help="N images of the run's test data, or a .npz with x, y: the accuracy gate")
    p.add_argument("--max-drop", type=arg_type(Number(float, low=0.0), "--max-drop"),
                   help="refuse when top-1 drops by more points")
    p.add_argument("--num-samples", type=arg_type(Number(int, low=1), "--num-samples"),
                   default=300, help="calibration images used")
    p.add_argument("--seed", type=arg_type(Number(int, low=0), "--seed"), default=0,
                   help="seed of the calibration sample")


def configure_benchmark(p: argparse.ArgumentParser) -> None:
    """`keras-resnet-suite benchmark`: one CIFAR epoch, input pipeline against training step."""
    p.add_argument("--data", required=True, help="CIFAR-10 directory, archive or 'tfds'")
    p.add_argument("--model", default="resnet20")
    p.add_argument("--recipe", default="paper-cifar")
    p.add_argument("--epochs", type=_flag("epochs"), default=1)
    p.add_argument("--batch-size", type=_flag("batch-size"), default=128)
    p.add_argument("--seed", type=_flag("seed"), default=0)
    p.add_argument("--jit-compile", default="auto", choices=["auto", "true", "false"])
