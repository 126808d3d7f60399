"""`--backbone-weights imagenet|none|PATH` of `train` and `init-config`: which weights the
backbone of a starting config starts from, decided without touching the network.

The default (no flag) takes ImageNet weights only when they are already in the weights cache
(`$KRS_WEIGHTS_DIR`, see `keras_resnet_suite.weights.cache_dir`) and otherwise trains from
scratch, saying so: nothing is downloaded unless asked for by name. `imagenet` asks for the
download (a failed one is one line naming the file to fetch), `none` trains from scratch, and
a PATH reads a local torchvision `.pth`/`.safetensors` or Keras weights file.
"""

from __future__ import annotations

import os
from pathlib import Path

from keras_resnet_suite import weights as weights_lib

CHOICES = ("imagenet", "none")
SCRATCH_COST = ("training from scratch, which needs many more steps (thousands rather than "
                "hundreds) for a useful model")


def _imagenet(backbone: str):
    """The backbone's ImageNet checkpoint, or None when it has none."""
    try:
        return weights_lib.get_checkpoint(backbone, "imagenet")
    except ValueError:
        return None


def download_path(checkpoint) -> str:
    """Where `keras_resnet_suite.weights.fetch` keeps (and looks for) the checkpoint's file."""
    return os.path.join(weights_lib.cache_dir(), "downloads", checkpoint.filename)


def cached(checkpoint) -> bool:
    """Whether the checkpoint loads without the network: downloaded or already converted."""
    return (os.path.isfile(download_path(checkpoint))
            or os.path.isfile(weights_lib.converted_path(checkpoint)))


def choose(choice: str | None, backbone: str) -> tuple[str | None, str]:
    """(`model.backbone_weights` value, one line for the console) for `--backbone-weights
    choice` (None: the default, ImageNet only when cached) and a named `backbone`."""
    if choice is not None and not isinstance(choice, str):
        raise ValueError(f"--backbone-weights must be imagenet, none or a file, got {choice!r}")
    checkpoint = _imagenet(backbone)
    if choice == "none":
        return None, f"backbone: no pretrained weights (--backbone-weights none); {SCRATCH_COST}"
    if choice == "imagenet":
        if checkpoint is None:
            raise ValueError(f"--backbone-weights imagenet: {backbone} has no ImageNet "
                             f"checkpoint (it has: {weights_lib.available_weights(backbone) or 'none'})"
                             "; pass none or a weights file")
        where = "in the cache" if cached(checkpoint) else "downloaded once"
        return "imagenet", f"backbone: ImageNet weights ({checkpoint.name}), {where}: " \
                           f"{download_path(checkpoint)}"
    if choice is not None:
        path = Path(choice).expanduser()
        if not path.is_file():
            raise ValueError(f"--backbone-weights {choice}: no such file (expected imagenet, none "
                             "or a torchvision .pth/.safetensors or Keras weights file)")
        return str(path.resolve()), f"backbone: weights from {path}"
    if checkpoint is None:
        return None, f"backbone: {backbone} has no ImageNet checkpoint; {SCRATCH_COST}"
    if cached(checkpoint):
        return "imagenet", f"backbone: ImageNet weights from the cache ({download_path(checkpoint)})"
    return None, (f"no ImageNet weights in the cache ({download_path(checkpoint)}); "
                  f"{SCRATCH_COST}; fetch {checkpoint.url} to that path, or pass "
                  "--backbone-weights imagenet (downloads it) or --backbone-weights PATH")


def prefetch(value, backbone) -> None:
    """Download a named checkpoint now, before a run folder exists, so that an offline start
    fails with one line naming the file to fetch and leaves nothing behind."""
    if not isinstance(value, str) or not isinstance(backbone, str) or os.path.exists(value):
        return
    try:
        checkpoint = weights_lib.get_checkpoint(backbone, value)
    except ValueError:
        return  # not a checkpoint name: the model's builder refuses it by name
    if not os.path.isfile(weights_lib.converted_path(checkpoint)):
        weights_lib.fetch(checkpoint)


__all__ = ["CHOICES", "cached", "choose", "download_path", "prefetch"]
