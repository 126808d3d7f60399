"""How close inference and a training step come to what the CPU can do: the float32 (and bfloat16) GEMM rate
of each framework on the same cores, and each figure's model FLOP/s as a share of the best one.

A ResNet-50 step at batch 16 is ~87 % convolution op time (TensorFlow's profiler, oneDNN on), and
oneDNN computes those convolutions in TensorFlow and in torch alike. Where a step already runs
near the GEMM rate, no library can be much faster at the same precision and multiply-adds;
this section measures that instead of asserting it.
"""

from __future__ import annotations

import numpy as np

from benchmarks.timing import Case

GEMM_N = 2048  # 2 * 2048^3 = 17.2 GFLOP per call: ~0.1-0.3 s on 2 cores, well past the caches
TF_GEMM, TF_GEMM_BF16, TORCH_GEMM = ("TensorFlow matmul", "TensorFlow matmul bf16",
                                     "torch mm")


def gemm_flops(n: int = GEMM_N) -> float:
    """Floating-point operations of one n x n x n matrix product (a multiply-add is two)."""
    return 2.0 * n ** 3


def tensorflow_cases(contenders: list[str], n: int = GEMM_N) -> list[Case]:
    """`tf.matmul` of two n x n matrices, float32 and bfloat16 (oneDNN's kernels when on)."""
    import tensorflow as tf

    rng = np.random.default_rng(0)
    a = tf.constant(rng.standard_normal((n, n)), tf.float32)
    b = tf.constant(rng.standard_normal((n, n)), tf.float32)
    cases = []
    for name, dtype in ((TF_GEMM, tf.float32), (TF_GEMM_BF16, tf.bfloat16)):
        if name not in contenders:
            continue
        x, y = tf.cast(a, dtype), tf.cast(b, dtype)
        product = tf.function(lambda x=x, y=y: tf.matmul(x, y))
        cases.append(Case(name, lambda f=product: f().numpy(), items=1))
    return cases


def torch_cases(contenders: list[str], n: int = GEMM_N) -> list[Case]:
    """`torch.mm` of two n x n float32 matrices on torch's threads."""
    if TORCH_GEMM not in contenders:
        return []
    import torch

    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(n, n, generator=g), torch.randn(n, n, generator=g)
    return [Case(TORCH_GEMM, lambda: torch.mm(a, b), items=1)]


def inference_flops(macs_per_image: float, batch: int) -> float:
    """Model FLOPs of one forward pass: 2 per multiply-add."""
    return 2.0 * macs_per_image * batch


def step_flops(macs_per_image: float, batch: int) -> float:
    """Model FLOPs of one training step: forward (2 per multiply-add) and backward (twice the
    forward: gradients of inputs and of weights), the convention of MFU figures."""
    return 6.0 * macs_per_image * batch


NO_BF16 = ("this CPU has no bfloat16 instructions (AVX512_BF16 or AMX), or oneDNN is capped "
           "below them (ONEDNN_MAX_CPU_ISA): bf16 would be emulated, slower than float32")


def native_bf16() -> bool:
    """Whether oneDNN may compute bfloat16 natively here: AVX512_BF16 or AMX in the CPU flags,
    and no `ONEDNN_MAX_CPU_ISA` cap below them."""
    from keras_resnet_suite.runtime import onednn_may_use

    return onednn_may_use(("avx512_bf16", "amx_tile"), ("BF16", "AMX"), unknown=False)
