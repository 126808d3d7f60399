"""Run the suite, print the table, write `benchmarks/results/<machine>-<date>.{json,md}`.

    python -m benchmarks            # default mode, about 30 min on 2 cores
    python -m benchmarks --quick    # smoke run, about 6 min: ResNet-50 only, small batches
    python -m benchmarks --onednn on          # one TensorFlow setting instead of both
    python -m benchmarks --only resnet50 serving --max-minutes 30
    python -m benchmarks --only detection --detection   # Faster R-CNN (long on a CPU)
    KERAS_BACKEND=jax python -m benchmarks --only gpu --gpu    # on a GPU machine (no TF needed)

Every CPU figure times ours and keras.applications with TensorFlow's oneDNN kernels on and off
side by side (issue 14), each setting in a worker process of its own since TensorFlow reads
TF_ENABLE_ONEDNN_OPTS at import, and torchvision in a third; calls alternate across the
processes round by round (benchmarks/settings.py, benchmarks/worker.py). Ratios are against
keras.applications as users get it: under TensorFlow's default for this CPU.

Faster R-CNN at the 600-pixel canvas costs minutes per image on 2 CPU cores, so it is opt-in
(`--detection`); its figures go to a results file of their own (suffix `-detection`).

The GPU mode (`--gpu`, see benchmarks/gpu.py) is opt-in too and never part of the CPU run:
ResNet-50 training images/s under JAX + XLA + mixed_bfloat16 against torchvision with
channels_last + bf16 autocast on the same GPU, with model-FLOPs utilisation and peak device
memory. Options: `--gpu-batch 256`, `--gpu-size 224`, `--gpu-steps 10` (steps per timed call),
`--peak-tflops` (the device's dense bf16 peak, when not in gpu.PEAK_BF16_TFLOPS),
`--torch-compile`. It refuses to run without KERAS_BACKEND=jax, and without a GPU unless
`--allow-cpu` (a smoke run: batch 2 at 32x32, one step, one round).
"""

from __future__ import annotations

import argparse
import functools
import gc
import os
import sys
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# torch's OpenMP workers spin for a while after each call by default, stealing the cores from
# whichever contender runs next (measured: the model timed right after torchvision ran ~2x
# slower). Passive waiting keeps alternating peers independent.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


@dataclass
class Mode:
    """How much to measure: the default mode answers the issue, `quick` only smoke-tests."""

    name: str
    warmup: int
    repeats: int  # timed rounds of heavy figures (batch 32 and up)
    repeats_small: int  # timed rounds of light ones (batch 1): cheap, and noisier per run
    infer_batches: tuple[int, ...]
    train_batch: int
    serving_batches: tuple[int, ...]
    cifar_batches: int
    detection: bool
    det_repeats: int
    with_v1: bool  # time ours with stride_in_1x1 too (keras.applications' architecture)
    with_hub: bool  # keras-hub where installed (our default's architecture)
    with_bf16: bool = True  # ResNet-50 in bfloat16 too, where the CPU computes it natively
    det_configs: tuple[tuple[str, str], ...] = (("resnet50", "fpn"), ("resnet101", "c4"))


# Batch 16 is the figure (oneDNN on/off, issue 14); every figure runs five contenders
# (ours and keras.applications under both settings, and torchvision).
MODES = {
    "default": Mode("default", warmup=1, repeats=3, repeats_small=5, infer_batches=(1, 16),
                    train_batch=16, serving_batches=(1, 8), cifar_batches=50, detection=False,
                    det_repeats=3, with_v1=True, with_hub=True),
    "quick": Mode("quick", warmup=1, repeats=3, repeats_small=5, infer_batches=(1, 8),
                  train_batch=8, serving_batches=(1,), cifar_batches=50, detection=False,
                  det_repeats=1, with_v1=False, with_hub=False, with_bf16=False,
                  det_configs=(("resnet50", "fpn"),)),
}


@dataclass
class Suite:
    mode: Mode
    deadline: float = float("inf")  # perf_counter() after which figures are skipped
    verbose: bool = True
    rows: list = field(default_factory=list)
    notes: list = field(default_factory=list)
    skipped: list = field(default_factory=list)
    checks: list = field(default_factory=list)
    gpu: object = None  # benchmarks.gpu.Options of the GPU mode
    settings: tuple[str, ...] = ("oneDNN on", "oneDNN off")  # TensorFlow's, side by side
    tf_default: str = "oneDNN off"  # what TensorFlow picks on this CPU, variable unset
    pool: object = None  # benchmarks.settings.Pool: the worker processes
    gemm: dict | None = None  # best GEMM FLOP/s by dtype (benchmarks.ceiling)

    def log(self, msg: str) -> None:
        if self.verbose:
            print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)

    def compare(self, section: str, cases, baseline, repeats=None, warmup=None, **meta) -> list:
        """Time `cases` alternating, add one row per case, return those rows."""
        from benchmarks.report import rows_from_cases
        from benchmarks.timing import alternate

        if time.perf_counter() > self.deadline:
            self.skipped.append(f"{section} {meta.get('model')} batch {meta.get('batch')}: "
                                "time budget (--max-minutes) spent")
            self.log(self.skipped[-1])
            return []
        if repeats is None:
            repeats = self.mode.repeats_small if meta.get("batch", 99) <= 8 else self.mode.repeats
        self.log(f"{section}: {meta.get('model')} batch {meta.get('batch')} "
                 f"({', '.join(c.name for c in cases)})")
        alternate(cases, self.mode.warmup if warmup is None else warmup, repeats,
                  progress=self.log)
        rows = rows_from_cases(section, cases, baseline, **meta)
        self.rows += rows
        for r in rows:
            self.log(f"  {r['contender']:<24} {r['median_s']:.4f} s  {r['throughput']} "
                     f"{r['unit']}  ratio {r['ratio']}  peak RSS {r['peak_rss_mb']} MiB")
        return rows

    def compare_remote(self, section: str, figure: str, plan: dict, baseline: str | None,
                       repeats: int | None = None, items=None, extra: dict | None = None,
                       **meta) -> list:
        """`compare` across worker processes (benchmarks.settings): build `figure` in each
        worker of `plan`, alternate single calls of all contenders, add one row per case."""
        from benchmarks import settings as W
        from benchmarks.report import rows_from_cases

        what = f"{section} {meta.get('model')} batch {meta.get('batch')}"
        if time.perf_counter() > self.deadline:
            self.skipped.append(f"{what}: time budget (--max-minutes) spent")
            self.log(self.skipped[-1])
            return []
        if repeats is None:
            repeats = self.mode.repeats_small if meta.get("batch", 99) <= 8 else self.mode.repeats
        batch = meta.get("batch", 1)
        t = time.perf_counter()
        try:
            cases = W.setup(self.pool, figure, plan, items or (lambda _name: batch))
            self.log(f"{what}: built {', '.join(c.name for c in cases)} in "
                     f"{time.perf_counter() - t:.0f} s")
            W.alternate(cases, self.mode.warmup, repeats, progress=self.log)
        except W.WorkerError as exc:
            self.skipped.append(f"{what}: {exc}")
            self.log(f"{what} FAILED: {exc}")
            self.pool.close()  # a fresh set of workers for the next figure
            return []
        rows = rows_from_cases(section, cases, baseline, extra=extra, **meta)
        for r, c in zip(rows, cases, strict=True):
            r["setting"], r["peer"], r["items"] = c.setting, c.peer, c.items
        self.rows += rows
        for r in rows:
            self.log(f"  {r['contender']:<36} {r['median_s']:.4f} s  {r['throughput']} "
                     f"{r['unit']}  ratio {r['ratio']}  CPU ratio {r['cpu_ratio']}")
        W.free(self.pool)
        return rows

    def check(self, name: str, rows: list, contender: str, target: float,
              versus: str | None = None, must_show: bool = True) -> None:
        """Record `contender`'s paired speed ratio against the rows' baseline, or against
        the `versus` contender of the same rows; `must_show=False` marks a like-for-like
        comparison that explains a must-show figure rather than being one."""
        from benchmarks.timing import paired_speed_ratio

        row = next((r for r in rows if r["contender"] == contender), None)
        base = row if versus is None else next((r for r in rows if r["contender"] == versus),
                                               None)
        if row is None or base is None or row.get("ratio") is None:
            self.skipped.append(f"check '{name}': no figure")
            return
        value, cpu = row["ratio"], row.get("cpu_ratio")
        if versus is not None:
            items = row.get("items", 1), base.get("items", 1)  # per call: a stream vs a step
            value = round(paired_speed_ratio(row["times_s"], base["times_s"], *items), 3)
            cpu = round(paired_speed_ratio(row["cpu_times_s"], base["cpu_times_s"], *items), 3)
        self.checks.append({"check": name, "value": value, "cpu_value": cpu,
                            "target": f">= {target}", "passed": bool(value >= target),
                            "cpu_passed": None if cpu is None else bool(cpu >= target),
                            "must_show": must_show})


def _free(*objects) -> None:
    import keras

    del objects
    keras.backend.clear_session()
    gc.collect()


def _gmacs(model) -> str:
    import keras_resnet_suite as krs

    try:
        return f"{krs.count_macs(model, (224, 224, 3)) / 1e9:.2f} G"
    except Exception:  # a peer's layer the counter does not know: leave it blank, not fail
        return "?"


def _plan(suite: Suite, on: list[str], off: list[str], torch: list[str], **args) -> dict:
    """Which contenders each worker builds (the settings `--onednn` asks for)."""
    from benchmarks import settings as S

    want = suite.settings
    return {S.ON: (on if S.ON in want else [], args), S.OFF: (off if S.OFF in want else [], args),
            S.TORCH: (torch, args)}


def _setting_checks(suite: Suite, figure: str, rows: list, peers: list[str], target: float = 1.0
                    ) -> None:
    """Like-for-like ratios behind the must-show ones: each peer with oneDNN on against itself
    with it off (what the setting alone is worth)."""
    from benchmarks import settings as S

    for peer in peers:
        suite.check(f"{figure}: {peer}, oneDNN on / off", rows, S.label(peer, S.ON), target,
                    versus=S.label(peer, S.OFF), must_show=False)


def _avx2_user_check(suite: Suite, figure: str, rows: list, target: float,
                     ours: str | None = None) -> None:
    """Where TensorFlow's default is already oneDNN on (AVX-512 CPUs), also compare with
    keras.applications as users of AVX2-only CPUs get it: oneDNN off."""
    from benchmarks import peers as P
    from benchmarks import settings as S

    if suite.tf_default == S.ON:
        ours = ours or S.label(P.OURS, S.ON)
        suite.check(f"{figure}: {ours} / keras.applications, oneDNN off (as users of "
                    "AVX2-only CPUs get it)", rows, ours, target,
                    versus=S.label(P.KERAS_APPS, S.OFF), must_show=False)


def classification(suite: Suite, depth: int) -> None:
    """ResNet-50/101 inference and training steps: ours and keras.applications with oneDNN on
    and off (separate processes), and torchvision, alternating round by round."""
    from benchmarks import peers as P
    from benchmarks import settings as S
    from keras_resnet_suite.runtime import onednn_pays_off

    m = suite.mode
    name = f"resnet{depth}"
    hub = m.with_hub and depth == 50 and P.installed("keras_hub")
    if depth == 50:
        if not m.with_hub:
            suite.skipped.append(f"keras-hub ResNetBackbone: left out in {m.name} mode")
        elif not hub:
            suite.skipped.append("keras-hub ResNetBackbone: keras_hub not installed "
                                 "(optional peer: pip install keras-hub)")
    tv = [P.TORCHVISION] if P.torchvision_wanted() else []
    if not tv and depth == 50:
        suite.skipped.append("torchvision ResNet-50/101: torch/torchvision not installed or left "
                             "out (optional peer)")
    # Our stride_in_1x1 variant and keras-hub explain the inference figures like for like
    # (same architecture as keras.applications / as ours); oneDNN on only, to save time.
    on = [P.OURS] + ([P.OURS_V1] if m.with_v1 and depth == 50 else []) + [P.KERAS_APPS]
    on += [P.KERAS_HUB] if hub else []
    off = [P.OURS, P.KERAS_APPS]
    # bfloat16 (ours under mixed_bfloat16, torchvision under autocast) where the CPU has bf16
    # instructions: the largest inference batch and the training step, oneDNN on.
    bf16, why_not = (False, "") if depth != 50 else _bf16_wanted(m)
    if why_not:
        suite.skipped.append(f"ResNet-50 in bfloat16: {why_not}")
    on_bf16 = on + [P.OURS_BF16] if bf16 else on
    tv_bf16 = tv + [P.TORCHVISION_BF16] if bf16 and tv else tv
    users = S.label(P.KERAS_APPS, suite.tf_default)  # keras.applications as users get it
    ours = S.label(P.OURS, S.ON)
    for batch in m.infer_batches:
        last = batch == max(m.infer_batches)
        rows = suite.compare_remote("inference", "classify-infer",
                                    _plan(suite, on_bf16 if last else on, off,
                                          tv_bf16 if last else tv, depth=depth, batch=batch),
                                    users,
                                    model=name, batch=batch, input_size="224x224",
                                    dtype="float32")
        _mark_bf16(rows)
        if last:
            ceiling(suite, rows, depth, tv)
        if depth == 50:
            # Ours as the library runs it: the setting `onednn_pays_off` picks for this batch
            # on this CPU (oneDNN off for one image without AVX-512), both batches must-show.
            mine = S.label(P.OURS, S.ON if onednn_pays_off(batch) else S.OFF)
            fig = f"ResNet-50 inference batch {batch}"
            suite.check(f"{fig}: {mine} / keras.applications as users get it "
                        f"({suite.tf_default}, TF's default here)", rows, mine, 1.2)
            suite.check(f"{fig}: {mine} / torchvision", rows, mine, 1.3, versus=P.TORCHVISION)
            _avx2_user_check(suite, fig, rows, 1.2, mine)
            _same_architecture_checks(suite, fig, rows, ours=ours,
                                      ours_v1=S.label(P.OURS_V1, S.ON),
                                      keras_apps=S.label(P.KERAS_APPS, S.ON),
                                      keras_hub=S.label(P.KERAS_HUB, S.ON))
            _bf16_checks(suite, fig, rows, users, 1.3)
        _setting_checks(suite, f"{name} inference batch {batch}", rows, [P.OURS, P.KERAS_APPS])
    on = [P.OURS, P.KERAS_APPS]  # the like-for-like variants would double the longest figure
    on += [P.OURS_BF16] if bf16 else []
    rows = suite.compare_remote("train step", "classify-train",
                                _plan(suite, on, off, tv_bf16, depth=depth,
                                      batch=m.train_batch),
                                users, model=name, batch=m.train_batch, input_size="224x224",
                                dtype="float32")
    _mark_bf16(rows)
    fig = f"ResNet-{depth} training batch {m.train_batch}"
    ceiling(suite, rows, depth, tv)
    if depth == 50:
        suite.check(f"{fig}: {ours} / keras.applications as users get it "
                    f"({suite.tf_default}, TF's default here)", rows, ours, 1.3)
        suite.check(f"{fig}: {ours} / torchvision", rows, ours, 1.3, versus=P.TORCHVISION)
        _avx2_user_check(suite, fig, rows, 1.3)
        _bf16_checks(suite, fig, rows, users, 1.3)
    _setting_checks(suite, f"{name} training batch {m.train_batch}", rows,
                    [P.OURS, P.KERAS_APPS])


def _bf16_wanted(mode: Mode) -> tuple[bool, str]:
    """Whether to time bfloat16 contenders, and why not when not."""
    from benchmarks import ceiling as G

    if not mode.with_bf16:
        return False, f"left out in {mode.name} mode"
    return (True, "") if G.native_bf16() else (False, G.NO_BF16)


def _bf16_checks(suite: Suite, figure: str, rows: list, users: str, target: float) -> None:
    """bfloat16 against torchvision in bfloat16 (same precision), and what switching to it is
    worth against keras.applications as users get it and against our float32."""
    from benchmarks import peers as P
    from benchmarks import settings as S

    ours = S.label(P.OURS_BF16, S.ON)
    if not any(r["contender"] == ours for r in rows):
        return
    suite.check(f"{figure}, bfloat16: {ours} / {P.TORCHVISION_BF16}", rows, ours, target,
                versus=P.TORCHVISION_BF16, must_show=False)
    suite.check(f"{figure}: {ours} / keras.applications as users get it (float32)", rows,
                ours, target, versus=users, must_show=False)
    suite.check(f"{figure}: {ours} / ours, float32", rows, ours, 1.0,
                versus=S.label(P.OURS, S.ON), must_show=False)


def _mark_bf16(rows: list) -> list:
    """The bfloat16 contenders' rows say so (the figure's dtype is float32)."""
    from benchmarks import peers as P

    for r in rows:
        if r.get("peer") in (P.OURS_BF16, P.TORCHVISION_BF16):
            r["dtype"] = "mixed bfloat16"
    return rows


@functools.cache
def _macs(depth: int, stride_in_1x1: bool) -> int:
    """Multiply-adds of one 224x224 image through our ResNet-`depth` (v1 or v1.5)."""
    import keras_resnet_suite as krs

    return krs.count_macs(krs.build(f"resnet{depth}", stride_in_1x1=stride_in_1x1),
                          (224, 224, 3))


def ceiling(suite: Suite, rows: list, depth: int, tv: list[str]) -> None:
    """Measure each framework's GEMM rate once (float32, and bfloat16 in TensorFlow), then give
    every inference and training row its model FLOP/s and their share of the best GEMM rate of
    its dtype."""
    from benchmarks import ceiling as G
    from benchmarks import peers as P

    if suite.gemm is None:
        tf_gemm = [G.TF_GEMM] + ([G.TF_GEMM_BF16] if G.native_bf16() else [])
        plan = _plan(suite, tf_gemm, [G.TF_GEMM], [G.TORCH_GEMM] if tv else [])
        gemm_rows = suite.compare_remote(
            "CPU ceiling", "gemm", plan, None, repeats=5, items=lambda _n: G.gemm_flops() / 1e9,
            model=f"GEMM {G.GEMM_N}^3", batch=1, input_size=f"{G.GEMM_N}x{G.GEMM_N}",
            dtype="float32", unit="GFLOP/s")
        suite.gemm = {}
        for r in gemm_rows:
            r["dtype"] = "bfloat16" if r.get("peer") == G.TF_GEMM_BF16 else "float32"
            suite.gemm[r["dtype"]] = max(suite.gemm.get(r["dtype"], 0.0),
                                         r["throughput"] * 1e9)
    if not suite.gemm:
        return
    v15, v1 = _macs(depth, False), _macs(depth, True)
    # torchvision's ResNets stride the 3x3 too (v1.5), keras.applications' the 1x1 (v1);
    # bf16 changes no multiply-add
    macs = {P.OURS: v15, P.TORCHVISION: v15, P.OURS_BF16: v15, P.TORCHVISION_BF16: v15,
            P.KERAS_APPS: v1, P.OURS_V1: v1}
    for r in rows:
        peak = suite.gemm.get("bfloat16" if "bfloat16" in r["dtype"] else "float32")
        if r.get("peer") not in macs or not r.get("median_s") or not peak:
            continue
        per_image = (G.step_flops(macs[r["peer"]], 1) if r["section"] == "train step"
                     else G.inference_flops(macs[r["peer"]], 1))
        flops = per_image * r["batch"] / r["median_s"]
        r["model_gflops_s"] = round(flops / 1e9, 1)
        r["of_gemm_rate"] = round(flops / peak, 3)


def _same_architecture_checks(suite: Suite, figure: str, rows: list, target: float = 1.0,
                              ours: str | None = None, ours_v1: str | None = None,
                              keras_apps: str | None = None, keras_hub: str | None = None):
    """Like-for-like ratios behind a must-show one: our v1 variant against keras.applications
    (both v1, 3.86 GMACs) and our default against keras-hub (both v1.5, 4.09 GMACs)."""
    from benchmarks import peers as P

    names = {c["contender"] for c in rows}
    ours, ours_v1 = ours or P.OURS, ours_v1 or P.OURS_V1
    keras_apps, keras_hub = keras_apps or P.KERAS_APPS, keras_hub or P.KERAS_HUB
    if ours_v1 in names:
        suite.check(f"{figure}: ours (stride_in_1x1) / keras.applications, both v1",
                    rows, ours_v1, target, versus=keras_apps, must_show=False)
    if keras_hub in names:
        suite.check(f"{figure}: ours / keras-hub, both v1.5", rows, ours, target,
                    versus=keras_hub, must_show=False)


def serving(suite: Suite) -> None:
    """Serving one request: our SavedModel (BN folded, the exporter's default, and not) vs
    keras.applications' through the same exporter, each with oneDNN on and off; ours and
    keras.applications through Keras' `model.export` in ONNX Runtime and OpenVINO; and
    torchvision eager."""
    from benchmarks import peers as P
    from benchmarks import serving as S
    from benchmarks import settings as W
    from keras_resnet_suite.runtime import onednn_pays_off

    if S.exporter() is None:
        suite.skipped.append("SavedModel serving: keras_resnet_suite.export.export_saved_model "
                             "does not exist yet")
        return
    for runtime, why in S.available_runtimes().items():
        suite.skipped.append(f"{runtime} serving: {why}")
    # The peers have no project blocks, so the exporter cannot fold their BNs: they are
    # exported exactly as ours is without folding. The stride_in_1x1 variant has
    # keras.applications' FLOPs (v1); keras-hub, where installed, has our default's (v1.5).
    hub = suite.mode.with_hub and P.installed("keras_hub")
    folded, apps = "ours SavedModel, BN folded", "keras.applications SavedModel"
    tv = [P.TORCHVISION] if P.torchvision_wanted() else []
    with S.temp_dir() as tmp:
        t = time.perf_counter()
        exporter = suite.pool.get(W.ON if W.ON in suite.settings else W.OFF)
        paths = exporter.request("call", fn="export_serving",
                                 args={"workdir": tmp, "hub": hub})["result"]
        suite.log(f"exported {len(paths)} models in {time.perf_counter() - t:.1f} s")
        saved = [k for k, v in paths.items() if Path(v).is_dir()]
        files = [k for k in paths if k not in saved]
        users = W.label(apps, suite.tf_default)
        for batch in suite.mode.serving_batches:
            rows = suite.compare_remote(
                "SavedModel serving", "serving",
                _plan(suite, saved, [folded, "ours SavedModel", apps, *files], tv, paths=paths,
                      batch=batch), users,
                model="resnet50", batch=batch, input_size="224x224", dtype="float32",
                extra={"latency_ms": None})
            for r in rows:
                r["latency_ms"] = round(r["median_s"] * 1000, 2)
            # Ours as our commands run it: the default export, under the setting the library
            # picks for this batch on this CPU (runtime.onednn_pays_off).
            ours = W.label(folded, W.ON if onednn_pays_off(batch) else W.OFF)
            suite.check(f"SavedModel batch {batch}: {ours} / keras.applications as users get "
                        f"it ({suite.tf_default})", rows, ours, 1.1)
            if tv:
                suite.check(f"SavedModel batch {batch}: {ours} / torchvision eager", rows, ours,
                            1.3, versus=P.TORCHVISION)
            _fastest_path_check(suite, f"SavedModel batch {batch}", rows, ours)
            _runtime_checks(suite, f"batch {batch}", rows)
            _same_architecture_checks(
                suite, f"SavedModel batch {batch}, BN-folded", rows, 1.1, ours=ours,
                ours_v1=W.label("ours (stride_in_1x1) SavedModel, BN folded", W.ON),
                keras_apps=W.label(apps, W.ON),
                keras_hub=W.label("keras-hub SavedModel", W.ON))
            _setting_checks(suite, f"SavedModel batch {batch}", rows, [folded, apps])


def _fastest_path_check(suite: Suite, figure: str, rows: list, ours: str) -> None:
    """Our default SavedModel against the fastest TensorFlow way to serve the same model
    (folded or not, oneDNN on or off): within 1.1x, i.e. a speed ratio >= 1 / 1.1."""
    mine = [r for r in rows if r["contender"].startswith("ours SavedModel")]
    if not mine:
        return
    best = min(mine, key=lambda r: r["median_s"])
    suite.check(f"{figure}: {ours} / the fastest TensorFlow path of the same model "
                f"({best['contender']})", rows, ours, round(1 / 1.1, 3),
                versus=best["contender"])


def _runtime_checks(suite: Suite, figure: str, rows: list) -> None:
    """Ours against keras.applications inside each CPU runtime (the same engine for both)."""
    from benchmarks import peers as P
    from benchmarks import serving as S

    names = {r["contender"] for r in rows}
    for runtime in S.RUNTIMES:
        ours, theirs = (S.runtime_label(m, runtime) for m in (P.OURS, P.KERAS_APPS))
        if ours in names and theirs in names:
            suite.check(f"{runtime} {figure}: ours / keras.applications in the same runtime",
                        rows, ours, 1.0, versus=theirs)


def pipelines(suite: Suite) -> None:
    """CIFAR pipeline vs the ResNet-20 step it feeds (the VOC one runs with detection)."""
    from benchmarks import pipelines as D
    from benchmarks import settings as W

    root = D.data_dir()
    archive = root / "cifar10-jpeg.tar.gz" if root else None
    if archive is None or not archive.is_file():
        suite.skipped.append("CIFAR pipeline: ../shared/data/cifar10-jpeg.tar.gz not found "
                             "(set KRS_DATA_DIR)")
        return
    batch, both = 128, ["cifar pipeline", "resnet20 train step"]
    step = W.label("resnet20 train step", suite.tf_default)
    rows = suite.compare_remote("input pipeline", "cifar",
                                _plan(suite, both, both, [], archive=str(archive), batch=batch,
                                      batches=suite.mode.cifar_batches),
                                step, model="resnet20 / CIFAR", batch=batch,
                                input_size="32x32", dtype="float32",
                                items=lambda n: batch * (suite.mode.cifar_batches
                                                         if n == "cifar pipeline" else 1))
    suite.check("CIFAR pipeline / ResNet-20 training step", rows,
                W.label("cifar pipeline", W.ON), 3.0, versus=W.label(both[1], W.ON))
    _setting_checks(suite, "CIFAR", rows, both)


def detection(suite: Suite) -> None:
    """Faster R-CNN R101-C4 and R50-FPN at the 600-pixel canvas, oneDNN on and off, against
    torchvision's R50-FPN; raccoon VOC pipeline."""
    from benchmarks import detect as T
    from benchmarks import pipelines as D
    from benchmarks import settings as W

    root = D.data_dir()
    voc_dir = root / "raccoon-voc" if root else None
    if voc_dir is None or not voc_dir.is_dir():
        suite.skipped.append("VOC pipeline and detection steps: ../shared/data/raccoon-voc "
                             "not found")
        return
    canvas = f"{T.CANVAS[0]}x{T.CANVAS[1]}"
    reason = (T.detection_available() if suite.mode.detection
              else "opt-in: python -m benchmarks --only detection --detection")
    if reason:
        suite.skipped.append(f"Faster R-CNN timings: {reason}")
        return
    from benchmarks import peers as P

    tv = ["torchvision"] if P.torchvision_wanted() else []
    if not tv:
        suite.skipped.append("torchvision fasterrcnn_resnet50_fpn: torch/torchvision not "
                             "installed or left out (optional peer)")
    photo = f"{T.PHOTO[0]}x{T.PHOTO[1]} -> {canvas}"
    ours_on, ours_users = W.label("ours", W.ON), W.label("ours", suite.tf_default)
    for backbone, head in suite.mode.det_configs:
        label = f"{backbone}-{head}"
        peer = tv if head == "fpn" else []
        args = {"backbone": backbone, "head": head, "voc_dir": str(voc_dir)}
        meta = {"model": f"faster_rcnn {label}", "batch": 1, "dtype": "float32",
                "repeats": suite.mode.det_repeats}  # compare_remote takes `repeats` itself
        base = "torchvision" if peer else ours_users
        rows = suite.compare_remote("detection inference", "detection-infer",
                                    _plan(suite, ["ours"], ["ours"], peer, **args), base,
                                    input_size=photo, **meta)
        _setting_checks(suite, f"Faster R-CNN {label} inference", rows, ["ours"])
        if head == "fpn":
            suite.check(f"Faster R-CNN {label} inference: {ours_on} / torchvision", rows,
                        ours_on, 1.0, must_show=False)
        # The VOC stream alternates with the R101-C4 step it would feed.
        on = ["ours"] + (["voc pipeline"] if head == "c4" else [])
        rows = suite.compare_remote("detection train step", "detection-train",
                                    _plan(suite, on, ["ours"], peer, **args), base,
                                    input_size=canvas, items=lambda n: STREAM if n ==
                                    "voc pipeline" else 1, **meta)
        for r in rows:
            if r["contender"].startswith("voc pipeline"):
                r["section"] = "input pipeline"
        if head == "fpn":
            suite.check(f"Faster R-CNN {label} training step: {ours_on} / torchvision", rows,
                        ours_on, 1.0)
        else:
            suite.check("VOC pipeline / Faster R-CNN R101-C4 training step", rows,
                        W.label("voc pipeline", W.ON), 3.0, versus=ours_on)
        _setting_checks(suite, f"Faster R-CNN {label} training step", rows, ["ours"])


STREAM = 20  # batches the VOC stream pulls per timed call (benchmarks.worker.detection)


def gpu(suite: Suite) -> None:
    """ResNet-50 training on one GPU: JAX/XLA mixed_bfloat16 vs torchvision AMP, and MFU."""
    from benchmarks import gpu as G

    G.section(suite, suite.gpu or G.Options())


# In priority order: when the time budget runs out, the last ones are skipped. "gpu" is
# opt-in (--gpu) and never in the default run.
SECTIONS = {"resnet50": lambda s: classification(s, 50), "serving": serving,
            "pipelines": pipelines, "resnet101": lambda s: classification(s, 101),
            "detection": detection, "gpu": gpu}
CPU_SECTIONS = [name for name in SECTIONS if name != "gpu"]
S_TORCH = "torch"  # benchmarks.settings.TORCH, without importing it here


def _import_torch_first() -> None:
    """Import torch/torchvision (optional peers) before TensorFlow: the other order segfaults
    in `torch._dynamo`'s import with TF 2.21 + torch 2.14 loaded in one process."""
    from importlib.util import find_spec

    if os.environ.get("KRS_BENCH_NO_TORCHVISION"):
        return
    if find_spec("torch") and find_spec("torchvision") and "tensorflow" not in sys.modules:
        import torch  # noqa: F401
        import torchvision.models  # noqa: F401


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="smoke run (< 3 min): R50, small batches")
    p.add_argument("--only", nargs="+", choices=sorted(SECTIONS), help="run only these sections")
    p.add_argument("--out", type=Path, default=None, help="results folder "
                   "(default benchmarks/results)")
    p.add_argument("--repeats", type=int, default=None, help="timed rounds per figure")
    p.add_argument("--max-minutes", type=float, default=None,
                   help="skip the remaining figures after this long (default 15; quick 3)")
    p.add_argument("--no-torchvision", action="store_true",
                   help="leave torchvision out (its calls slow the TF call that follows them)")
    p.add_argument("--detection", action="store_true",
                   help="also time Faster R-CNN R101-C4 / R50-FPN (minutes per step on a CPU)")
    p.add_argument("--tag", default="", help="appended to the results file names, e.g. "
                   "avx2cap for a run under ONEDNN_MAX_CPU_ISA=AVX2")
    p.add_argument("--onednn", choices=("both", "on", "off"), default="both",
                   help="TensorFlow's oneDNN kernels for our and keras.applications' figures: "
                   "both side by side (default; one worker process per setting), or one")
    g = p.add_argument_group("GPU mode (KERAS_BACKEND=jax)")
    g.add_argument("--gpu", action="store_true", help="run the GPU mode: ResNet-50 training, "
                   "JAX/XLA mixed_bfloat16 vs torchvision AMP, and MFU (alone unless --only)")
    g.add_argument("--allow-cpu", action="store_true", help="let the GPU mode run without a "
                   "GPU as a smoke run (batch 2 at 32x32, 1 step, 1 round)")
    g.add_argument("--gpu-batch", type=int, default=None, help="batch size (default 256)")
    g.add_argument("--gpu-size", type=int, default=None, help="image side (default 224)")
    g.add_argument("--gpu-steps", type=int, default=None,
                   help="training steps per timed call (default 10)")
    g.add_argument("--peak-tflops", type=float, default=None,
                   help="dense bf16 peak of the device in TFLOP/s, for the MFU (default: "
                   "looked up by device name in benchmarks.gpu.PEAK_BF16_TFLOPS)")
    g.add_argument("--torch-compile", action="store_true",
                   help="wrap the torchvision peer in torch.compile (default: eager)")
    a = p.parse_args(argv)
    if a.only and "gpu" in a.only and not a.gpu:
        p.error("the gpu section is opt-in: add --gpu (under KERAS_BACKEND=jax on a GPU "
                "machine)")
    sections = a.only or (["gpu"] if a.gpu else
                          ["resnet50", "serving", "pipelines"] if a.quick else CPU_SECTIONS)
    gpu_mode = "gpu" in sections

    if a.no_torchvision:
        os.environ["KRS_BENCH_NO_TORCHVISION"] = "1"
    if gpu_mode:  # JAX would otherwise take 75 % of the GPU up front, leaving torch too little
        os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
        _import_torch_first()
    else:  # this command's own default (keras_resnet_suite.runtime); workers set it each
        os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")
    import keras

    from benchmarks import report
    from benchmarks.timing import load_average

    gpu_opts = smoke = None
    if gpu_mode:
        from benchmarks import gpu as G

        reason = G.refusal(keras.backend.backend(), a.allow_cpu)
        if reason:
            print(f"python -m benchmarks --gpu: refused: {reason}", file=sys.stderr)
            return 2
        smoke = G.jax_accelerator() is None
        gpu_opts = G.Options(batch=a.gpu_batch or (2 if smoke else 256),
                             size=a.gpu_size or (32 if smoke else 224),
                             steps=a.gpu_steps or (1 if smoke else 10),
                             peak_tflops=a.peak_tflops, torch_compile=a.torch_compile,
                             allow_cpu=a.allow_cpu)
    if keras.backend.backend() != "tensorflow" and set(sections) - {"gpu"}:
        print("note: the CPU figures of issue 5 are for KERAS_BACKEND=tensorflow; running "
              f"under {keras.backend.backend()!r}, SavedModel export may be unavailable",
              file=sys.stderr)
    mode = replace(MODES["quick" if a.quick else "default"])  # a copy: main() may run twice
    if smoke:  # --allow-cpu without a GPU: plumbing only, one round
        mode.warmup, mode.repeats, mode.repeats_small = 1, 1, 1
    if a.repeats:
        mode.repeats = a.repeats
        if smoke:
            mode.repeats_small = a.repeats
    mode.detection = a.detection
    start, load_start = time.perf_counter(), load_average()
    budget = a.max_minutes if a.max_minutes is not None else (6 if a.quick else 40)
    suite = Suite(mode, deadline=start + 60 * budget, gpu=gpu_opts)
    if not gpu_mode:
        from benchmarks import settings as W

        suite.pool = W.Pool()
        suite.settings = {"both": (W.ON, W.OFF), "on": (W.ON,), "off": (W.OFF,)}[a.onednn]
        suite.tf_default, how = W.tensorflow_default()
        suite.notes.append(f"CPU vector extensions: {W.cpu_flags()}; {how}, so "
                           f"keras.applications 'as users get it' is its {suite.tf_default} "
                           "row. Each setting runs in a worker process of its own (TensorFlow "
                           "reads TF_ENABLE_ONEDNN_OPTS at import), torchvision in a third; "
                           "calls alternate across the processes round by round")
        if os.environ.get("ONEDNN_MAX_CPU_ISA", "").upper().startswith("AVX2"):
            # torch's own kernels and its MKL GEMM ignore oneDNN's cap: cap them too
            os.environ.setdefault("ATEN_CPU_CAPABILITY", "avx2")
            os.environ.setdefault("MKL_ENABLE_INSTRUCTIONS", "AVX2")
        caps = {k: os.environ[k] for k in ("ONEDNN_MAX_CPU_ISA", "ATEN_CPU_CAPABILITY",
                                           "MKL_ENABLE_INSTRUCTIONS") if os.environ.get(k)}
        if caps:  # e.g. an AVX2-only CPU emulated on an AVX-512 one
            suite.notes.append("instruction sets capped for every contender: " + ", ".join(
                f"{k}={v}" for k, v in caps.items()) + " (oneDNN's kernels in TensorFlow and "
                "torch, torch's ATen kernels and MKL GEMM; TensorFlow's own Eigen kernels are "
                "compiled in)")
    if gpu_mode:  # keras.utils.set_random_seed would import TensorFlow to seed it too
        import random

        import numpy as np

        random.seed(0)  # Keras' default seeds come from Python's `random`
        np.random.seed(0)
    else:
        keras.utils.set_random_seed(0)
    info = report.machine_info()
    suite.log(f"{mode.name} mode on {info['cpu']} ({info['cores']} cores), backend "
              f"{info['backend']}, load {load_start}")
    if smoke:
        suite.notes.append("--allow-cpu smoke run of the GPU mode on the CPU (tiny batch and "
                           "images, one round): checks the plumbing, not a figure to report; "
                           f"on a GPU machine run `{G.GPU_COMMAND}`")
    elif not info["accelerators"]:
        suite.notes.append("no GPU on this machine, so the GPU mode of issue 5 (KERAS_BACKEND="
                           "jax, bf16, XLA vs torchvision AMP, MFU) was not measured here: on a "
                           "GPU machine run `KERAS_BACKEND=jax python -m benchmarks --only gpu "
                           "--gpu`")
    suffix = "-" + "-".join(sorted(sections)) if a.only or a.gpu else ""
    suffix += f"-{a.tag}" if a.tag else ""

    def save() -> tuple[Path, Path]:
        # Rewritten after every section, so an interrupted run keeps what it measured.
        result = {"date": report.today(), "mode": mode.name, "machine": info,
                  "warmup": mode.warmup, "repeats": mode.repeats,
                  "repeats_batch1": mode.repeats_small, "load_start": load_start,
                  "load_end": load_average(), "wall_s": round(time.perf_counter() - start, 1),
                  "command": "python -m benchmarks " + " ".join(argv if argv is not None
                                                                 else sys.argv[1:]),
                  "notes": suite.notes, "rows": suite.rows, "checks": suite.checks,
                  "skipped": suite.skipped}
        return report.write(result, a.out or report.RESULTS_DIR, suffix=suffix)

    try:
        for name in sections:
            t = time.perf_counter()
            if t > suite.deadline:
                suite.skipped.append(f"section {name}: time budget (--max-minutes {budget}) "
                                     "spent")
                continue
            try:
                SECTIONS[name](suite)
            except Exception as exc:  # one broken section must not lose the others' figures
                suite.skipped.append(f"section {name} failed: {type(exc).__name__}: {exc}")
                suite.log(f"section {name} FAILED: {exc!r}")
            suite.log(f"section {name}: {time.perf_counter() - t:.0f} s")
            save()
        if suite.pool is not None and S_TORCH in suite.pool.workers:
            tinfo = suite.pool.workers[S_TORCH].request("call", fn="info")["result"]
            suite.notes.append(f"torchvision ran with {tinfo.get('torch_threads')} threads")
    finally:
        if suite.pool is not None:
            suite.pool.close()
    js, md = save()
    print(md.read_text())
    print(f"wrote {js} and {md}")
    return 0
