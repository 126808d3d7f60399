"""Write the stored classification parity references (tests/weights/reference/<case>.npz).

Each case is a reference library's model (torchvision, timm or keras.applications) whose
weights and BN statistics are drawn by `seeded_state` (tests/detection/parity/seeded.py, pure
numpy) in the library's own format: a torch state dict, or keras.applications' per-layer weight
lists (`keras_state`). The input pair is drawn by `inputs()`. Only the reference's logits and its
weight skeleton (names, shapes, dtypes; JSON) are stored, a few KB per case, so the parity test
regenerates the same weights and inputs without torch, converts them with this library's
converter and compares logits in every CI pass.

Run by hand where torch, torchvision, timm and TensorFlow are installed (each library runs in
its own child process: torch and TensorFlow crash in one process):
    python tests/weights/make_references.py [--library torchvision|timm|keras] [OUT_DIR]
OUT_DIR defaults to tests/weights/reference; the parity test's "live" cases write to a
temporary folder and compare with the stored files.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import subprocess
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "detection", "parity"))
import seeded  # noqa: E402

SEED = 0
# Res2Net shrunk to 2-2-1-1 blocks of widths 16-32-64-128 keeps every code path (a chained
# non-first block in conv2_x and conv3_x, strided first blocks with the pooled last split, a
# stride-1 first block, grouped 3x3s) at a fraction of the cost; our build() takes the same.
RES2NET_SHRINK = {"layers": (2, 2, 1, 1), "channels": (16, 32, 64, 128), "num_classes": 10}
# case -> (library, architecture, image side, reference constructor options)
# 72 px for timm: 72 -> 18 -> 9 -> 5 -> 3, odd sizes exercise the average-pooled (ResNet-D)
# shortcut's and Res2Net's strided pools' partial windows.
CASES = {
    "torchvision_resnet18": ("torchvision", "resnet18", 64, {}),
    "torchvision_resnet50": ("torchvision", "resnet50", 64, {}),
    "torchvision_resnext50_32x4d": ("torchvision", "resnext50_32x4d", 64, {}),
    "torchvision_wide_resnet50_2": ("torchvision", "wide_resnet50_2", 64, {}),
    "timm_resnet18d": ("timm", "resnet18d", 72, {}),
    "timm_resnet50d": ("timm", "resnet50d", 72, {}),
    "timm_res2net50_26w_4s": ("timm", "res2net50_26w_4s", 72, RES2NET_SHRINK),
    "timm_res2next50": ("timm", "res2next50", 72, RES2NET_SHRINK),
    "timm_res2net50d": ("timm", "res2net50d", 72, RES2NET_SHRINK),
    # ResNet-RS: the convolutional stem pool and SE (biased 1x1s) at full size: 72 -> 18 -> 3.
    "timm_resnetrs50": ("timm", "resnetrs50", 72, {}),
    # EfficientNet-B0 as ported from TensorFlow ("same" padding): 72 -> 36 -> ... -> 3, odd
    # sizes exercise the asymmetric padding of its strided depthwise convolutions.
    "timm_tf_efficientnet_b0": ("timm", "tf_efficientnet_b0", 72, {}),
    "keras_ResNet50": ("keras", "ResNet50", 64, {}),
    "keras_ResNet50V2": ("keras", "ResNet50V2", 64, {}),
}
LIBRARIES = ("torchvision", "timm", "keras")
# keras.applications weight name -> the torch leaf name seeded.py's rules key on
_KERAS_LEAF = {"kernel": "weight", "bias": "bias", "gamma": "weight", "beta": "bias",
               "moving_mean": "running_mean", "moving_variance": "running_var"}


def inputs(size: int) -> np.ndarray:
    """The input pair, NHWC float32 in [-1, 1)."""
    return np.random.default_rng(SEED).uniform(-1, 1, (2, size, size, 3)).astype("float32")


def _torch_view(shape: tuple[int, ...]) -> tuple[int, ...]:
    """A Keras kernel's shape in torch order (HWIO -> OIHW, (in, out) -> (out, in))."""
    if len(shape) == 4:
        return (shape[3], shape[2], shape[0], shape[1])
    return tuple(reversed(shape)) if len(shape) == 2 else tuple(shape)


def keras_state(skeleton: list, seed: int = SEED) -> dict[str, list[np.ndarray]]:
    """Seeded keras.applications weights, layer name -> arrays in the layer's own order, for a
    skeleton `[[layer, [[weight, shape, dtype], ...]], ...]`: seeded.py's rules applied to the
    torch view of each tensor (same fan-in, same BN statistics), transposed back."""
    torch_skeleton = [(f"{layer}.{_KERAS_LEAF[w]}", _torch_view(tuple(s)), t)
                      for layer, ws in skeleton for w, s, t in ws]
    state = seeded.seeded_state(torch_skeleton, seed, calibrated=False)
    out = {}
    for layer, ws in skeleton:
        arrays = []
        for w, s, _ in ws:
            x = state[f"{layer}.{_KERAS_LEAF[w]}"]
            arrays.append(x.transpose(2, 3, 1, 0) if len(s) == 4 else x.T if len(s) == 2 else x)
        out[layer] = arrays
    return out


def torch_reference(case: str) -> dict[str, np.ndarray]:
    """torchvision's / timm's logits for `inputs()` and its state dict's `skeleton` (JSON)."""
    import torch  # only here: the parity test imports this module without torch

    library, arch, size, options = CASES[case]
    lib = importlib.import_module(library)
    if library == "timm":
        model = lib.create_model(arch, pretrained=False, **options)
    else:
        model = getattr(lib.models, arch)(weights=None, **options)
    model.eval()
    skeleton = [(k, tuple(v.shape), str(v.numpy().dtype)) for k, v in model.state_dict().items()]
    state = seeded.seeded_state(skeleton, SEED, calibrated=False)
    model.load_state_dict({k: torch.from_numpy(v) for k, v in state.items()})
    with torch.no_grad():
        logits = model(torch.from_numpy(inputs(size).transpose(0, 3, 1, 2))).numpy()
    return {"logits": logits, "skeleton": np.array(json.dumps(skeleton))}


def keras_reference(case: str) -> dict[str, np.ndarray]:
    """keras.applications' logits for `inputs()` and its per-layer weight `skeleton` (JSON)."""
    import keras  # only here: torch and TensorFlow must not share a process

    _, arch, size, options = CASES[case]
    model = getattr(keras.applications, arch)(weights=None, input_shape=(size, size, 3),
                                              classifier_activation=None, **options)
    skeleton = [[layer.name, [[w.name, list(w.shape), w.dtype] for w in layer.weights]]
                for layer in model.layers if layer.weights]
    for layer, arrays in keras_state(skeleton).items():
        model.get_layer(layer).set_weights(arrays)
    logits = keras.ops.convert_to_numpy(model(inputs(size), training=False))
    return {"logits": logits, "skeleton": np.array(json.dumps(skeleton))}


def write(library: str, out: str) -> None:
    """Every case of one library, in this process."""
    os.makedirs(out, exist_ok=True)
    make = keras_reference if library == "keras" else torch_reference
    for case, (lib, *_) in CASES.items():
        if lib == library:
            np.savez_compressed(os.path.join(out, f"{case}.npz"), **make(case))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", nargs="?", default=os.path.join(HERE, "reference"))
    parser.add_argument("--library", choices=LIBRARIES,
                        help="write this library's cases here (default: each in a child)")
    args = parser.parse_args(argv)
    if args.library:
        write(args.library, args.out)
        return
    for library in LIBRARIES:
        subprocess.run([sys.executable, __file__, "--library", library, args.out], check=True)


if __name__ == "__main__":
    main()
