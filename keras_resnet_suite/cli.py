"""`keras-resnet-suite` command line: list models, run the demo, train, evaluate and export."""

from __future__ import annotations

import argparse
import sys

from keras_resnet_suite.run_dir import TrainingDiverged

COMMANDS = {}


def command(fn):
    """Register `fn(args)` as a sub-command; its `configure(parser)` attribute adds arguments."""
    COMMANDS[fn.__name__.removeprefix("cmd_").replace("_", "-")] = fn
    return fn


def _configure_models(p: argparse.ArgumentParser) -> None:
    p.add_argument("--size", type=int, default=None,
                   help="input side for MACs (default: 224 ImageNet, 32 CIFAR models)")
    p.add_argument("--names", nargs="*", default=None, help="only these models")


@command
def cmd_models(args) -> None:
    """Print every model with its parameters and multiply-adds, next to the paper's figures."""
    import keras

    from . import build, count_macs, count_params, get_spec
    from .specs import available_models

    names = args.names or available_models()
    print(f"{'model':18s} {'layers':>6s} {'params':>12s} {'paper':>7s} {'GMACs':>7s} "
          f"{'paper':>6s}  input")
    for name in names:
        spec = get_spec(name)
        size = args.size or spec.input_shape[0]
        model = build(name, input_shape=(size, size, 3))
        paper = spec.paper
        gmacs_paper = f"{paper['gflops']:.1f}" if "gflops" in paper else "-"
        print(f"{name:18s} {spec.num_layers:6d} {count_params(model):12,d} "
              f"{paper.get('params', '-'):>7s} {count_macs(model) / 1e9:7.3f} {gmacs_paper:>6s}  "
              f"{size}x{size}", flush=True)
        del model
        keras.backend.clear_session()
    print("GMACs: multiply-adds of one image with the stride on the 3x3 (v1.5, torchvision); the "
          "paper's Table 1 strides the first 1x1 (build(..., stride_in_1x1=True)).")


cmd_models.configure = _configure_models


def _configure_demo(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", default="demo_out", help="output directory")
    p.add_argument("--model", default="resnet20")
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--train-images", type=int, default=3000)
    p.add_argument("--test-images", type=int, default=600)


@command
def cmd_demo(args) -> None:
    """Train, evaluate, save, reload and use a small ResNet on built-in synthetic shapes."""
    from . import demo

    demo.run(args.out, args.model, args.epochs, args.train_images, args.test_images)


cmd_demo.configure = _configure_demo


def _register_training_commands() -> None:
    # train/evaluate/export live in train_cli.py; importing it is cheap (TF loads on use)
    from . import train_cli

    for fn in (train_cli.cmd_train, train_cli.cmd_evaluate, train_cli.cmd_export):
        command(fn)


_register_training_commands()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="keras-resnet-suite", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    for name, fn in COMMANDS.items():
        p = sub.add_parser(name, help=fn.__doc__, description=fn.__doc__)
        getattr(fn, "configure", lambda _: None)(p)
    args = parser.parse_args(argv)
    try:
        COMMANDS[args.command](args)
    except TrainingDiverged as e:  # exit 1 with one line naming what is kept
        raise SystemExit(f"error: {e}") from None
    return 0


if __name__ == "__main__":
    sys.exit(main())
