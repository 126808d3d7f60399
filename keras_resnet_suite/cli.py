"""`keras-resnet-suite` command line: list models, run the demo, train, evaluate, export and
benchmark.

This module stays light (no Keras, no TensorFlow): `main` first chooses TensorFlow's CPU
kernels (`runtime.default_for_our_commands`), then imports the module that runs the command.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Callable
from dataclasses import dataclass

from . import runtime
from .console import LOGS_ENV
from .errors import run_command
from .schema import POSITIVE_INT, arg_type
from .train_flags import (
    configure_benchmark,
    configure_evaluate,
    configure_export,
    configure_train,
)


@dataclass(frozen=True)
class Command:
    """A sub-command: `module.function(args)` runs it, `configure(parser)` adds its arguments."""

    module: str
    function: str
    help: str
    configure: Callable[[argparse.ArgumentParser], None]

    def __call__(self, args: argparse.Namespace):
        return getattr(importlib.import_module(self.module), self.function)(args)


def _configure_models(p: argparse.ArgumentParser) -> None:
    p.add_argument("--size", type=arg_type(POSITIVE_INT, "--size"), default=None,
                   help="input side for MACs (default: 224 ImageNet, 32 CIFAR models)")
    p.add_argument("--names", nargs="*", default=None, help="only these models")


def _configure_demo(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", default="demo_out", help="output directory")
    p.add_argument("--model", default="resnet20")
    p.add_argument("--epochs", type=arg_type(POSITIVE_INT, "--epochs"), default=5)
    p.add_argument("--train-images", type=arg_type(POSITIVE_INT, "--train-images"),
                   default=3000)
    p.add_argument("--test-images", type=arg_type(POSITIVE_INT, "--test-images"), default=600)


COMMANDS = {
    "models": Command("keras_resnet_suite.commands", "cmd_models", "Print every model with its "
                      "parameters and multiply-adds, next to the paper's figures.",
                      _configure_models),
    "demo": Command("keras_resnet_suite.commands", "cmd_demo", "Train, evaluate, save, reload "
                    "and use a small ResNet on built-in synthetic shapes.", _configure_demo),
    "train": Command("keras_resnet_suite.train_cli", "cmd_train", "Train a model with a paper "
                     "recipe; a killed run re-run with the same command resumes.",
                     configure_train),
    "evaluate": Command("keras_resnet_suite.train_cli", "cmd_evaluate", "Evaluate a run (1-crop, "
                        "10-crop, multi-scale test error), or a CIFAR model's --weights.",
                        configure_evaluate),
    "export": Command("keras_resnet_suite.train_cli", "cmd_export", "Export a run's model as a "
                      "SavedModel (float-image and encoded-image signatures).", configure_export),
    "benchmark": Command("keras_resnet_suite.training.benchmark", "run", "One CIFAR-10 epoch: "
                         "input-pipeline images/s against training-step images/s, and the test "
                         "accuracy reached.", configure_benchmark),
}


DESCRIPTION = """\
The ResNet paper's networks in Keras 3, from the shell. Each command's options:
keras-resnet-suite COMMAND --help.

TensorFlow's C++ log lines are hidden; --verbose (before the command) shows them."""

EXAMPLES = """\
examples:
  keras-resnet-suite models --names resnet20 resnet50
  keras-resnet-suite demo --out demo_out --epochs 2
  keras-resnet-suite train --model resnet20 --data cifar10 --data-dir cifar10-jpeg.tar.gz \\
      --out runs/r20 --epochs 1
  keras-resnet-suite evaluate --run runs/r20 --mode center ten-crop
  keras-resnet-suite export --run runs/r20 --out served/resnet20
  keras-resnet-suite benchmark --data cifar10-jpeg.tar.gz
  keras-resnet-suite --verbose train ...   (with TensorFlow's own log lines)

Run folders hold run.json, model.keras, history.csv, error_curves.png and summary.json;
the full guide is docs/training.md."""


def main(argv: list[str] | None = None) -> int:
    """Run `keras-resnet-suite <command>`; a failure is one line on stderr naming the file,
    exit 2 (bad input) or 1."""
    runtime.default_for_our_commands()  # before anything imports TensorFlow
    parser = argparse.ArgumentParser(prog="keras-resnet-suite", description=DESCRIPTION,
                                     epilog=EXAMPLES,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--verbose", dest="tf_logs", action="store_true",
                        help="show TensorFlow's C++ log lines (hidden by default; also "
                             f"{LOGS_ENV}=1 or TF_CPP_MIN_LOG_LEVEL=0)")
    sub = parser.add_subparsers(dest="command", required=True, title="commands",
                                metavar="COMMAND")
    for name, fn in COMMANDS.items():
        text = getattr(fn, "help", fn.__doc__)
        p = sub.add_parser(name, help=text, description=text)
        getattr(fn, "configure", lambda _: None)(p)
    args = parser.parse_args(argv)

    def call() -> int:
        COMMANDS[args.command](args)
        return 0

    return run_command(call)


if __name__ == "__main__":
    sys.exit(main())
