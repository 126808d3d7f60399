"""The speed targets of the benchmarks, as one table: what is compared and the ratio it must reach.

A check (`benchmarks.suite.Suite.check`) pairs two contenders of one figure round by round and
records the median speed ratio against its target; the report prints each as met or not met.
Must-show targets are the figures the project promises; the others explain them like for like.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Target:
    """A speed ratio one contender must reach against another (>= `ratio`)."""

    compares: str  # what is set against what
    ratio: float
    must_show: bool = True


TARGETS: dict[str, Target] = {
    "inference vs keras.applications": Target(
        "ResNet-50 inference, ours as the library runs it / keras.applications as users get "
        "it (TensorFlow's default on the CPU)", 1.2),
    "inference vs torchvision": Target(
        "ResNet-50 inference, ours as the library runs it / torchvision", 1.3),
    "training vs keras.applications": Target(
        "ResNet-50 training step, ours / keras.applications as users get it", 1.3),
    "training vs torchvision": Target("ResNet-50 training step, ours / torchvision", 1.3),
    "inference vs keras.applications on AVX2": Target(
        "ResNet-50 inference on an AVX-512 CPU, ours / keras.applications with oneDNN off "
        "(as users of AVX2-only CPUs get it)", 1.2, must_show=False),
    "training vs keras.applications on AVX2": Target(
        "ResNet-50 training step on an AVX-512 CPU, ours / keras.applications with oneDNN off",
        1.3, must_show=False),
    "bfloat16 vs peers": Target(
        "ours in mixed_bfloat16 / torchvision under bf16 autocast, and / keras.applications "
        "in float32", 1.3, must_show=False),
    "bfloat16 vs float32": Target("ours in mixed_bfloat16 / ours in float32", 1.0,
                                  must_show=False),
    "same architecture": Target(
        "ours (stride_in_1x1) / keras.applications (both v1); ours / keras-hub (both v1.5)", 1.0,
        must_show=False),
    "oneDNN on vs off": Target("each contender with oneDNN on / itself with it off", 1.0,
                               must_show=False),
    "SavedModel vs keras.applications": Target(
        "our default SavedModel / keras.applications' SavedModel as users get it", 1.1),
    "SavedModel vs torchvision": Target("our default SavedModel / torchvision eager", 1.3),
    "SavedModel vs its fastest path": Target(
        "our default SavedModel / the fastest TensorFlow path of the same model (within 1.1x)",
        round(1 / 1.1, 3)),
    "runtime vs keras.applications": Target(
        "ours / keras.applications inside the same CPU runtime (ONNX Runtime, OpenVINO)", 1.0),
    "SavedModel same architecture": Target(
        "BN-folded SavedModels of the same architecture: ours / keras.applications, "
        "ours / keras-hub", 1.1, must_show=False),
    "pipeline vs step": Target("an input pipeline / the training step it feeds (images/s)", 3.0),
    "detection inference vs torchvision": Target(
        "Faster R-CNN R50-FPN inference, ours / torchvision", 1.0, must_show=False),
    "detection training vs torchvision": Target(
        "Faster R-CNN R50-FPN training step, ours / torchvision", 1.0),
    "mask inference vs torchvision": Target(
        "Mask R-CNN R50-FPN inference at 800 pixels, 100 detections, ours / torchvision", 1.0,
        must_show=False),
    "mask inference vs detectron2": Target(
        "Mask R-CNN R50-FPN inference at 800 pixels, 100 detections, ours / detectron2", 1.0,
        must_show=False),
}
