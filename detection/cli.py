"""`python -m detection <command>`: the shapes demo, plus commands contributed by modules.

`demo` lives here. Other commands (`train`, `evaluate`, `export`, `predict`) are modules
`detection.<command>` exposing `configure(parser)` and `run(args) -> int | None`; they are
listed when importable, so each can land independently.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

PLUGIN_COMMANDS = ("train", "evaluate", "export", "predict")


def _configure_demo(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", default="demo_output",
                        help="folder for detections.png and the weights (default: demo_output)")
    parser.add_argument("--config", default=None,
                        help="demo YAML (default: detection/configs/shapes_demo.yaml)")
    parser.add_argument("--epochs", type=int, default=None, help="override train.epochs")
    parser.add_argument("--train-images", type=int, default=None,
                        help="override data.train_images")
    parser.add_argument("--test-images", type=int, default=None,
                        help="override data.test_images")


def _run_demo(args: argparse.Namespace) -> int:
    from detection import demo

    overrides: dict = {}
    if args.epochs is not None:
        overrides.setdefault("train", {})["epochs"] = args.epochs
    for key in ("train_images", "test_images"):
        if getattr(args, key) is not None:
            overrides.setdefault("data", {})[key] = getattr(args, key)
    config = demo.load_config(args.config or demo.CONFIG, overrides)
    demo.run(args.out, config)
    return 0


def _plugins() -> dict:
    found = {}
    for name in PLUGIN_COMMANDS:
        try:
            module = importlib.import_module(f"detection.{name}")
        except ModuleNotFoundError as err:
            if err.name != f"detection.{name}":
                raise
            continue
        if hasattr(module, "configure") and hasattr(module, "run"):
            found[name] = module
    return found


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m detection",
                                     description="Faster R-CNN with ResNet backbones.")
    sub = parser.add_subparsers(dest="command", required=True)
    demo_parser = sub.add_parser("demo", help="train and evaluate on the synthetic shapes set "
                                 "(CPU, offline); prints mAP@0.5")
    _configure_demo(demo_parser)
    demo_parser.set_defaults(handler=_run_demo)
    for name, module in _plugins().items():
        doc = (module.__doc__ or name).strip().splitlines()[0]
        p = sub.add_parser(name, help=doc)
        module.configure(p)
        p.set_defaults(handler=module.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the process exit code."""
    args = build_parser().parse_args(argv)
    try:
        return int(args.handler(args) or 0)
    except (ValueError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
