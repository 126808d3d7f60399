"""ResNet-50/101 inference and training steps: ours and keras.applications with oneDNN on and
off (worker processes of their own), and torchvision, alternating round by round; each figure
also against the CPU's GEMM rate."""

from __future__ import annotations

import functools
from dataclasses import dataclass

import keras_resnet_suite as krs
from benchmarks import ceiling as gemm_ceiling
from benchmarks import peers, settings
from benchmarks.suite import Mode, Suite, plan, setting_checks
from benchmarks.targets import TARGETS
from keras_resnet_suite.runtime import onednn_pays_off


@dataclass
class Contenders:
    """Who runs in each worker for one depth; `users` is keras.applications as users get it."""

    on: list[str]
    off: list[str]
    torch: list[str]
    bf16: bool
    users: str


def contenders(suite: Suite, depth: int) -> Contenders:
    """The contenders of a depth, and skips for the optional peers left out."""
    mode = suite.mode
    hub = mode.with_hub and depth == 50 and peers.installed("keras_hub")
    if depth == 50:
        if not mode.with_hub:
            suite.skipped.append(f"keras-hub ResNetBackbone: left out in {mode.name} mode")
        elif not hub:
            suite.skipped.append("keras-hub ResNetBackbone: keras_hub not installed "
                                 "(optional peer: pip install keras-hub)")
    torch = [peers.TORCHVISION] if peers.torchvision_wanted() else []
    if not torch and depth == 50:
        suite.skipped.append("torchvision ResNet-50/101: torch/torchvision not installed or left "
                             "out (optional peer)")
    # Our stride_in_1x1 variant and keras-hub explain the inference figures like for like
    # (same architecture as keras.applications / as ours); oneDNN on only, to save time.
    on = [peers.OURS] + ([peers.OURS_V1] if mode.with_v1 and depth == 50 else [])
    on += [peers.KERAS_APPS] + ([peers.KERAS_HUB] if hub else [])
    bf16, why_not = (False, "") if depth != 50 else bf16_wanted(mode)
    if why_not:
        suite.skipped.append(f"ResNet-50 in bfloat16: {why_not}")
    return Contenders(on, [peers.OURS, peers.KERAS_APPS], torch, bf16,
                      settings.label(peers.KERAS_APPS, suite.tf_default))


def classification(suite: Suite, depth: int) -> None:
    """Inference at each batch of the mode, then the training step."""
    who = contenders(suite, depth)
    for batch in suite.mode.infer_batches:
        inference(suite, depth, batch, who, last=batch == max(suite.mode.infer_batches))
    training(suite, depth, who)


def _with_bf16(who: Contenders, names: list[str], bf16_name: str) -> list[str]:
    # bfloat16 (ours under mixed_bfloat16, torchvision under autocast) where the CPU has bf16
    # instructions: the largest inference batch and the training step, oneDNN on.
    return names + [bf16_name] if who.bf16 and names else names


def inference(suite: Suite, depth: int, batch: int, who: Contenders, last: bool) -> None:
    """One inference figure; ResNet-50's must-show checks at every batch."""
    name = f"resnet{depth}"
    on = _with_bf16(who, who.on, peers.OURS_BF16) if last else who.on
    torch = _with_bf16(who, who.torch, peers.TORCHVISION_BF16) if last else who.torch
    rows = suite.compare_remote("inference", "classify-infer",
                                plan(suite, on, who.off, torch, depth=depth, batch=batch),
                                who.users, model=name, batch=batch, input_size="224x224",
                                dtype="float32")
    mark_bf16(rows)
    if last:
        ceiling(suite, rows, depth, who.torch)
    if depth == 50:
        # Ours as the library runs it: the setting `onednn_pays_off` picks for this batch
        # on this CPU (oneDNN off for one image without AVX-512), both batches must-show.
        mine = settings.label(peers.OURS, settings.ON if onednn_pays_off(batch) else settings.OFF)
        fig = f"ResNet-50 inference batch {batch}"
        suite.check(f"{fig}: {mine} / keras.applications as users get it "
                    f"({suite.tf_default}, TF's default here)", rows, mine,
                    TARGETS["inference vs keras.applications"])
        suite.check(f"{fig}: {mine} / torchvision", rows, mine,
                    TARGETS["inference vs torchvision"], versus=peers.TORCHVISION)
        avx2_user_check(suite, fig, rows, "inference vs keras.applications on AVX2", mine)
        on_label = functools.partial(settings.label, setting=settings.ON)
        same_architecture_checks(suite, fig, rows, ours=on_label(peers.OURS),
                                 ours_v1=on_label(peers.OURS_V1),
                                 keras_apps=on_label(peers.KERAS_APPS),
                                 keras_hub=on_label(peers.KERAS_HUB))
        bf16_checks(suite, fig, rows, who.users)
    setting_checks(suite, f"{name} inference batch {batch}", rows,
                   [peers.OURS, peers.KERAS_APPS])


def training(suite: Suite, depth: int, who: Contenders) -> None:
    """The training step; ResNet-50's must-show checks."""
    name, batch = f"resnet{depth}", suite.mode.train_batch
    ours = settings.label(peers.OURS, settings.ON)
    # the like-for-like variants would double the longest figure
    on = _with_bf16(who, [peers.OURS, peers.KERAS_APPS], peers.OURS_BF16)
    torch = _with_bf16(who, who.torch, peers.TORCHVISION_BF16)
    rows = suite.compare_remote("train step", "classify-train",
                                plan(suite, on, who.off, torch, depth=depth, batch=batch),
                                who.users, model=name, batch=batch, input_size="224x224",
                                dtype="float32")
    mark_bf16(rows)
    fig = f"ResNet-{depth} training batch {batch}"
    ceiling(suite, rows, depth, who.torch)
    if depth == 50:
        suite.check(f"{fig}: {ours} / keras.applications as users get it "
                    f"({suite.tf_default}, TF's default here)", rows, ours,
                    TARGETS["training vs keras.applications"])
        suite.check(f"{fig}: {ours} / torchvision", rows, ours,
                    TARGETS["training vs torchvision"], versus=peers.TORCHVISION)
        avx2_user_check(suite, fig, rows, "training vs keras.applications on AVX2")
        bf16_checks(suite, fig, rows, who.users)
    setting_checks(suite, f"{name} training batch {batch}", rows,
                   [peers.OURS, peers.KERAS_APPS])


def avx2_user_check(suite: Suite, figure: str, rows: list, target: str,
                    ours: str | None = None) -> None:
    """Where TensorFlow's default is already oneDNN on (AVX-512 CPUs), also compare with
    keras.applications as users of AVX2-only CPUs get it: oneDNN off."""
    if suite.tf_default == settings.ON:
        ours = ours or settings.label(peers.OURS, settings.ON)
        suite.check(f"{figure}: {ours} / keras.applications, oneDNN off (as users of "
                    "AVX2-only CPUs get it)", rows, ours, TARGETS[target],
                    versus=settings.label(peers.KERAS_APPS, settings.OFF))


def bf16_wanted(mode: Mode) -> tuple[bool, str]:
    """Whether to time bfloat16 contenders, and why not when not."""
    if not mode.with_bf16:
        return False, f"left out in {mode.name} mode"
    return (True, "") if gemm_ceiling.native_bf16() else (False, gemm_ceiling.NO_BF16)


def bf16_checks(suite: Suite, figure: str, rows: list, users: str) -> None:
    """bfloat16 against torchvision in bfloat16 (same precision), and what switching to it is
    worth against keras.applications as users get it and against our float32."""
    ours = settings.label(peers.OURS_BF16, settings.ON)
    if not any(r["contender"] == ours for r in rows):
        return
    target = TARGETS["bfloat16 vs peers"]
    suite.check(f"{figure}, bfloat16: {ours} / {peers.TORCHVISION_BF16}", rows, ours, target,
                versus=peers.TORCHVISION_BF16)
    suite.check(f"{figure}: {ours} / keras.applications as users get it (float32)", rows,
                ours, target, versus=users)
    suite.check(f"{figure}: {ours} / ours, float32", rows, ours, TARGETS["bfloat16 vs float32"],
                versus=settings.label(peers.OURS, settings.ON))


def mark_bf16(rows: list) -> list:
    """The bfloat16 contenders' rows say so (the figure's dtype is float32)."""
    for r in rows:
        if r.get("peer") in (peers.OURS_BF16, peers.TORCHVISION_BF16):
            r["dtype"] = "mixed bfloat16"
    return rows


@functools.cache
def _macs(depth: int, stride_in_1x1: bool) -> int:
    """Multiply-adds of one 224x224 image through our ResNet-`depth` (v1 or v1.5)."""
    return krs.count_macs(krs.build(f"resnet{depth}", stride_in_1x1=stride_in_1x1),
                          (224, 224, 3))


def _measure_gemm(suite: Suite, torch: list[str]) -> None:
    """Each framework's best GEMM rate by dtype, once per run, into `suite.gemm`."""
    tf_gemm = [gemm_ceiling.TF_GEMM] + ([gemm_ceiling.TF_GEMM_BF16]
                                        if gemm_ceiling.native_bf16() else [])
    n = gemm_ceiling.GEMM_N
    gemm_rows = suite.compare_remote(
        "CPU ceiling", "gemm",
        plan(suite, tf_gemm, [gemm_ceiling.TF_GEMM], [gemm_ceiling.TORCH_GEMM] if torch else []),
        None, repeats=5, items=lambda _n: gemm_ceiling.gemm_flops() / 1e9,
        model=f"GEMM {n}^3", batch=1, input_size=f"{n}x{n}", dtype="float32", unit="GFLOP/s")
    suite.gemm = {}
    for r in gemm_rows:
        r["dtype"] = "bfloat16" if r.get("peer") == gemm_ceiling.TF_GEMM_BF16 else "float32"
        suite.gemm[r["dtype"]] = max(suite.gemm.get(r["dtype"], 0.0), r["throughput"] * 1e9)


def ceiling(suite: Suite, rows: list, depth: int, torch: list[str]) -> None:
    """Measure each framework's GEMM rate once (float32, and bfloat16 in TensorFlow), then give
    every inference and training row its model FLOP/s and their share of the best GEMM rate of
    its dtype."""
    if suite.gemm is None:
        _measure_gemm(suite, torch)
    if not suite.gemm:
        return
    v15, v1 = _macs(depth, False), _macs(depth, True)
    # torchvision's ResNets stride the 3x3 too (v1.5), keras.applications' the 1x1 (v1);
    # bf16 changes no multiply-add
    macs = {peers.OURS: v15, peers.TORCHVISION: v15, peers.OURS_BF16: v15,
            peers.TORCHVISION_BF16: v15, peers.KERAS_APPS: v1, peers.OURS_V1: v1}
    for r in rows:
        peak = suite.gemm.get("bfloat16" if "bfloat16" in r["dtype"] else "float32")
        if r.get("peer") not in macs or not r.get("median_s") or not peak:
            continue
        per_image = (gemm_ceiling.step_flops(macs[r["peer"]], 1) if r["section"] == "train step"
                     else gemm_ceiling.inference_flops(macs[r["peer"]], 1))
        flops = per_image * r["batch"] / r["median_s"]
        r["model_gflops_s"] = round(flops / 1e9, 1)
        r["of_gemm_rate"] = round(flops / peak, 3)


def same_architecture_checks(suite: Suite, figure: str, rows: list,
                             target: str = "same architecture", ours: str = peers.OURS,
                             ours_v1: str = peers.OURS_V1, keras_apps: str = peers.KERAS_APPS,
                             keras_hub: str = peers.KERAS_HUB) -> None:
    """Like-for-like ratios behind a must-show one: our v1 variant against keras.applications
    (both v1, 3.86 GMACs) and our default against keras-hub (both v1.5, 4.09 GMACs)."""
    names = {c["contender"] for c in rows}
    if ours_v1 in names:
        suite.check(f"{figure}: ours (stride_in_1x1) / keras.applications, both v1",
                    rows, ours_v1, TARGETS[target], versus=keras_apps)
    if keras_hub in names:
        suite.check(f"{figure}: ours / keras-hub, both v1.5", rows, ours, TARGETS[target],
                    versus=keras_hub)


def resnet50(suite: Suite) -> None:
    """The ResNet-50 section: the must-show figures."""
    classification(suite, 50)


def resnet101(suite: Suite) -> None:
    """The ResNet-101 section."""
    classification(suite, 101)
