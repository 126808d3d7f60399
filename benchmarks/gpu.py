"""GPU mode of the benchmarks: ResNet-50 training throughput on one accelerator, and its MFU.

On a GPU machine (JAX with CUDA; torch + torchvision with CUDA for the peer; TensorFlow is
not needed and not imported):

    KERAS_BACKEND=jax python -m benchmarks --only gpu --gpu
    KERAS_BACKEND=jax python -m benchmarks --only gpu --gpu --gpu-batch 128 --peak-tflops 989

Contenders, both on the same device, alternating round by round in one process
(`Suite.compare`; `ratio` = ours / torchvision):

- ours: `keras_resnet_suite.build("resnet50")` under KERAS_BACKEND=jax, Keras policy
  `mixed_bfloat16` (bf16 compute, float32 variables and classifier), `jit_compile=True` (XLA),
  SGD momentum 0.9, sparse categorical cross-entropy, timed with `train_on_batch` (which
  returns the loss as a Python float, so every step waits for the device);
- torchvision `resnet50`: channels_last, `torch.autocast(<device>, dtype=torch.bfloat16)`,
  `cudnn.benchmark = True`, SGD momentum 0.9, cross-entropy; eager by default
  (`--torch-compile` wraps it in `torch.compile`); `torch.cuda.synchronize()` ends each timed
  call.

Inputs are one synthetic batch (224x224, batch 256 by default), placed on the device once, so
no host-to-device copy is timed. Each timed call runs `--gpu-steps` training steps (10).

Model-FLOPs utilisation: MFU = images/s * 3 * 2 * MACs_per_image / peak_bf16_flops (training
= 3x the forward multiply-adds, 2 FLOPs each), with MACs from
`keras_resnet_suite.count_macs(model, (size, size, 3))` (torchvision's ResNet-50 is the same
v1.5 network, 4.09 GMACs at 224x224) and the dense (no sparsity) bf16 peak of the device from
`PEAK_BF16_TFLOPS` by name, or `--peak-tflops`; an unknown device gets no MFU, with a note.
Peak device memory: JAX `memory_stats()["peak_bytes_in_use"]` (ours); torch
`max_memory_allocated()` (torchvision). JAX preallocation is turned off
(XLA_PYTHON_CLIENT_PREALLOCATE=false) so that both frameworks fit on the one device.

Without a GPU the section refuses to run, unless `--allow-cpu`: a smoke run (batch 2 at
32x32, one step, one round) that checks the plumbing, not a figure to report.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from benchmarks import peers
from benchmarks.classify import synthetic_batch
from benchmarks.timing import Case, median

GPU_COMMAND = "KERAS_BACKEND=jax python -m benchmarks --only gpu --gpu"

# Dense bf16 tensor-core peaks (TFLOP/s, no 2:4 sparsity) from the vendors' data sheets,
# matched in order against the device name (lower case): the first hit wins.
PEAK_BF16_TFLOPS: tuple[tuple[str, float], ...] = (
    (r"gh200|h200", 989.0),
    (r"h100.*nvl", 835.0),
    (r"h100.*pcie", 756.0),
    (r"h100|h800", 989.0),  # SXM ("NVIDIA H100 80GB HBM3")
    (r"b200", 2250.0),
    (r"a100|a800", 312.0),
    (r"l40s", 362.0),
    (r"\bl40\b", 181.0),
    (r"\bl4\b", 121.0),
    (r"\ba10\b", 125.0),
    (r"tpu v5p", 459.0),
    (r"tpu v5 lite|tpu v5e", 197.0),
    (r"tpu v4", 275.0),
)

OURS, TORCHVISION = "ours (jax, xla, mixed_bfloat16)", "torchvision (amp bf16, channels_last)"


@dataclass
class Options:
    batch: int = 256
    size: int = 224
    steps: int = 10  # training steps per timed call
    peak_tflops: float | None = None  # overrides the table
    torch_compile: bool = False
    allow_cpu: bool = False


def peak_bf16_tflops(device_name: str) -> float | None:
    """The device's dense bf16 peak in TFLOP/s, or None when the name is not in the table."""
    name = device_name.lower()
    return next((peak for pattern, peak in PEAK_BF16_TFLOPS if re.search(pattern, name)), None)


def mfu(images_per_s: float, macs_per_image: float, peak_flops: float) -> float:
    """Model-FLOPs utilisation of training: forward + backward = 3 x forward, 2 FLOPs per MAC."""
    return images_per_s * 3 * 2 * macs_per_image / peak_flops


def jax_accelerator():
    """The first non-CPU JAX device, or None."""
    import jax

    return next((d for d in jax.devices() if d.platform != "cpu"), None)


def refusal(backend: str, allow_cpu: bool) -> str | None:
    """Why the GPU mode cannot run here (None when it can)."""
    if backend != "jax":
        return (f"the GPU mode runs under KERAS_BACKEND=jax (XLA, mixed_bfloat16); this run "
                f"is under {backend!r}. Run: {GPU_COMMAND}")
    if jax_accelerator() is None and not allow_cpu:
        return ("no GPU here (JAX sees only the CPU), so the GPU mode was not run: run "
                f"`{GPU_COMMAND}` on a GPU machine, or add --allow-cpu for a tiny smoke run "
                "on the CPU (batch 2 at 32x32; not a figure to report)")
    return None


def ours_case(opts: Options) -> tuple[Case, object, int, str]:
    """Our ResNet-50 under JAX + XLA + mixed_bfloat16: (case, model, MACs/image, device name)."""
    import jax
    import keras

    import keras_resnet_suite as krs

    previous = keras.config.dtype_policy()
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    try:
        model = krs.build("resnet50", input_shape=(opts.size, opts.size, 3))
    finally:
        keras.mixed_precision.set_global_policy(previous)
    macs = krs.count_macs(model, (opts.size, opts.size, 3))
    model.compile(optimizer=keras.optimizers.SGD(0.01, momentum=0.9),
                  loss="sparse_categorical_crossentropy", jit_compile=True)
    # The default device (the GPU where there is one). Left uncommitted, as Keras' own
    # variables are: a committed input makes the second step compile the graph again.
    device = jax.devices()[0]
    x, y = (jax.device_put(a) for a in synthetic_batch(opts.batch, opts.size))

    def run():
        for _ in range(opts.steps):
            loss = float(model.train_on_batch(x, y))  # a host float: waits for the device
        return loss

    case = Case(OURS, run, items=opts.batch * opts.steps)
    return case, model, macs, peers.jax_device_name(device)


def jax_peak_mb() -> float | None:
    """JAX's peak device memory in use (MiB) since the process started, where reported."""
    device = jax_accelerator()
    stats = device.memory_stats() if device is not None else None
    if not stats or "peak_bytes_in_use" not in stats:
        return None
    return stats["peak_bytes_in_use"] / 2**20


def torchvision_case(opts: Options) -> tuple[Case, str] | None:
    """torchvision ResNet-50 with channels_last + bf16 autocast, or None without torch."""
    if not peers.torchvision_wanted():
        return None
    import torch
    import torchvision

    cuda = torch.cuda.is_available()
    device = torch.device("cuda" if cuda else "cpu")
    if cuda:
        torch.backends.cudnn.benchmark = True
        torch.cuda.reset_peak_memory_stats()
    model = torchvision.models.resnet50(weights=None).to(device, memory_format=torch.channels_last)
    model.train()
    if opts.torch_compile:
        model = torch.compile(model)
    xn, yn = synthetic_batch(opts.batch, opts.size)
    x = torch.from_numpy(xn).permute(0, 3, 1, 2).to(device).contiguous(
        memory_format=torch.channels_last)
    y = torch.from_numpy(yn.astype("int64")).to(device)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    loss_fn = torch.nn.CrossEntropyLoss()

    def run():
        for _ in range(opts.steps):
            opt.zero_grad(set_to_none=True)
            with torch.autocast(device.type, dtype=torch.bfloat16):
                loss = loss_fn(model(x), y)
            loss.backward()
            opt.step()
        if cuda:
            torch.cuda.synchronize()
        return loss

    name = torch.cuda.get_device_name(device) if cuda else "cpu"
    return Case(TORCHVISION, run, items=opts.batch * opts.steps), name


def torch_peak_mb() -> float | None:
    import torch

    return torch.cuda.max_memory_allocated() / 2**20 if torch.cuda.is_available() else None


def section(suite) -> None:
    """Time ours against torchvision (where installed) and add MFU and device memory, with the
    suite's GPU options (`suite.gpu`, the defaults where unset)."""
    opts = suite.gpu or Options()
    ours, model, macs, device = ours_case(opts)
    suite.log(f"gpu: ours on {device}, {macs / 1e9:.3f} GMACs/image at {opts.size}x{opts.size}")
    cases, probes, devices = [ours], {OURS: jax_peak_mb}, {OURS: device}
    peer = torchvision_case(opts)
    if peer is None:
        suite.skipped.append("torchvision ResNet-50 (gpu): torch/torchvision not installed or "
                             "left out (optional peer)")
    else:
        cases.append(peer[0])
        probes[TORCHVISION], devices[TORCHVISION] = torch_peak_mb, peer[1]
        suite.notes.append(f"gpu: torchvision {'with' if opts.torch_compile else 'without'} "
                           "torch.compile (--torch-compile)"
                           f"{', cudnn.benchmark on' if peer[1] != 'cpu' else ''}; MFU of both "
                           "uses our MAC count (same ResNet-50 v1.5 network)")
    peak = opts.peak_tflops
    source = "--peak-tflops" if peak is not None else "table"
    if peak is None:
        peak = peak_bf16_tflops(device)
        if peak is None:
            suite.notes.append(f"gpu: no bf16 peak known for {device!r}, so no MFU: pass "
                               "--peak-tflops <dense bf16 TFLOP/s of the device>")
    suite.notes.append(f"gpu: {opts.steps} training step(s) per timed call, one synthetic batch "
                       "kept on the device; ours waits for each step's loss (train_on_batch)")
    rows = suite.compare("gpu train step", cases, TORCHVISION if peer else None,
                         model="resnet50", batch=opts.batch,
                         input_size=f"{opts.size}x{opts.size}", dtype="mixed bfloat16")
    by_name = {c.name: c for c in cases}
    for r in rows:
        mem = probes[r["contender"]]()
        t = median(by_name[r["contender"]].times)
        images_per_s = by_name[r["contender"]].items / t if t > 0 else None
        r.update({"device": devices[r["contender"]], "steps_per_call": opts.steps,
                  "macs_per_image": int(macs), "peak_bf16_tflops": peak,
                  "peak_source": source if peak is not None else None,
                  "peak_device_mb": None if mem is None else round(mem, 1),
                  "mfu": (round(mfu(images_per_s, macs, peak * 1e12), 5)
                          if peak is not None and images_per_s else None)})
        suite.log(f"  {r['contender']:<40} MFU {r['mfu']}  peak device memory "
                  f"{r['peak_device_mb']} MiB")
