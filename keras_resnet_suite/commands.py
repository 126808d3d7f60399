"""The bodies of `keras-resnet-suite models` and `keras-resnet-suite demo` (cli.py parses the
arguments and imports this module only after choosing TensorFlow's CPU kernels)."""

from __future__ import annotations

import argparse

import keras

from . import demo
from .flops import count_macs, count_params
from .models import build
from .specs import available_models, get_spec


def cmd_models(args: argparse.Namespace) -> None:
    """Print every model with its parameters and multiply-adds, next to the paper's figures."""
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


def cmd_demo(args: argparse.Namespace) -> None:
    """Train, evaluate, save, reload and use a small ResNet on built-in synthetic shapes."""
    demo.run(args.out, args.model, args.epochs, args.train_images, args.test_images)
