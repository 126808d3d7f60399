"""The degradation problem on CIFAR-10 (He et al. 2015, Sec. 4.2, Fig. 6 and Table 6).

Plain networks get *worse* on the training set as they get deeper; residual networks of the same
depth do not. This trains plain-{20,32,44,56} and resnet-{20,32,44,56} with the paper's recipe
(`paper-cifar`) on identical batches and writes, into `--out`:

- `degradation.png`: training (dashed) and test (bold) error against iterations, plain nets left,
  ResNets right (Fig. 6);
- `degradation.md`: a Markdown table of the final errors (Table 6) and the two gaps that show the
  effect: plain-deepest minus plain-20 (positive: degradation), resnet-deepest minus resnet-20;
- `<model>.json`: each run's curves (a finished model is not retrained on a re-run).

    # CPU budget (~25 min on 2 shared cores): depths 20, 56; 320 steps of 32; 500 test images
    python examples/cifar10_degradation.py --budget --out runs/degradation
    # full schedule on a GPU: 64k iterations, all depths, the whole test set
    python examples/cifar10_degradation.py --out runs/degradation-full
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "cifar10-jpeg.tar.gz"
# The budget fits a shared 2-core CPU in ~25 min: small batches, a third of an epoch.
BUDGET = {"depths": [20, 56], "steps": 320, "eval_every": 40, "test_images": 500,
          "batch_size": 32, "jit_compile": False}
FULL = {"depths": [20, 32, 44, 56], "steps": 64_000, "eval_every": 391, "test_images": None,
        "batch_size": 128, "jit_compile": "auto"}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default=os.environ.get("KRS_CIFAR10", str(DEFAULT_DATA)),
                   help="CIFAR-10 source: directory, .tar.gz or 'tfds' (default: %(default)s)")
    p.add_argument("--out", default="runs/degradation", help="output directory")
    p.add_argument("--budget", action="store_true",
                   help=f"CPU budget: {BUDGET} (the full mode is {FULL})")
    p.add_argument("--depths", type=int, nargs="+", help="override the depths (6n+2)")
    p.add_argument("--steps", type=int, help="override the number of training iterations")
    p.add_argument("--eval-every", type=int, help="iterations between curve points")
    p.add_argument("--test-images", type=int, help="test images per curve point (default: all)")
    p.add_argument("--batch-size", type=int, help="global batch (the LR scales linearly)")
    p.add_argument("--jit-compile", type=lambda v: {"true": True, "false": False}.get(v, v),
                   help="true | false | auto (XLA)")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    mode = BUDGET if args.budget else FULL
    for key, value in mode.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    bad = [d for d in args.depths if d < 8 or (d - 2) % 6]
    if bad:
        p.error(f"--depths must be 6n+2 (20, 32, 44, 56, 110, ...), got {bad}")
    if args.steps < args.eval_every:
        p.error(f"--steps {args.steps} is shorter than --eval-every {args.eval_every}")
    return args


def train_one(name: str, data, test, args) -> dict:
    """Train `name` for `args.steps` iterations; training error is the mean over each interval
    of `eval_every` steps (augmented batches, train-mode BN: the paper's dashed curves)."""
    import keras

    from keras_resnet_suite import build, count_params, training

    keras.backend.clear_session()
    keras.utils.set_random_seed(args.seed)
    recipe = training.get_recipe("paper-cifar", global_batch_size=args.batch_size,
                                 total_steps=args.steps, seed=args.seed,
                                 jit_compile=args.jit_compile)
    model = build(name, classes=data.num_classes)
    recipe.compile(model)
    intervals = args.steps // args.eval_every
    t = time.perf_counter()
    hist = model.fit(data.train, steps_per_epoch=args.eval_every, epochs=intervals,
                     validation_data=test, callbacks=recipe.callbacks(), verbose=2).history
    seconds = time.perf_counter() - t
    return {
        "model": name, "params": count_params(model), "seconds": round(seconds, 1),
        "steps": [args.eval_every * (i + 1) for i in range(len(hist["loss"]))],
        "train_error": [1 - a for a in hist["accuracy"]],
        "test_error": [1 - a for a in hist["val_accuracy"]],
        "batch_size": args.batch_size, "total_steps": args.steps,
    }  # fmt: skip


def plot(results: dict[str, dict], path: Path) -> None:
    """Fig. 6: error against iterations, plain nets on the left, ResNets on the right."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6), sharey=True)
    colors = {20: "tab:orange", 32: "tab:blue", 44: "tab:green", 56: "tab:red", 110: "black"}
    for ax, family, title in ((axes[0], "plain", "plain"), (axes[1], "resnet", "ResNet")):
        for depth in sorted(int(n.removeprefix(family)) for n in results if n.startswith(family)):
            r = results[f"{family}{depth}"]
            c = colors.get(depth, None)
            ax.plot(r["steps"], [100 * e for e in r["train_error"]], "--", color=c, lw=1)
            ax.plot(r["steps"], [100 * e for e in r["test_error"]], "-", color=c, lw=2,
                    label=f"{title}-{depth}")
        ax.set_title(f"{title} networks")
        ax.set_xlabel("iterations")
        ax.grid(alpha=0.3)
        ax.legend()
    axes[0].set_ylabel("error (%)  dashed: training, bold: test")
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def table(results: dict[str, dict], args) -> str:
    """Table 6 as Markdown, with the two gaps that show (or fail to show) degradation."""
    lines = [
        f"Budget: {args.steps} iterations at batch {args.batch_size} ({args.steps * args.batch_size:,} "
        f"images, {args.steps * args.batch_size / 50_000:.2f} epochs); paper-cifar recipe: LR "
        f"{0.1 * args.batch_size / 128:g} (0.1 per 128), /10 at {round(args.steps / 2)} and "
        f"{round(3 * args.steps / 4)}. Training error = mean over the last {args.eval_every} "
        f"iterations (augmented batches), test error on "
        f"{args.test_images or 'all 10,000'} test images.", "",
        "| model | params | training error (%) | test error (%) | train time (s) |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]  # fmt: skip
    for family in ("plain", "resnet"):
        for d in sorted(args.depths):
            r = results.get(f"{family}{d}")
            if r:
                lines.append(f"| {family}-{d} | {r['params']:,} | {100 * r['train_error'][-1]:.2f} "
                             f"| {100 * r['test_error'][-1]:.2f} | {r['seconds']:.0f} |")  # fmt: skip
    lo, hi = min(args.depths), max(args.depths)
    gaps = {}
    for family in ("plain", "resnet"):
        a, b = results.get(f"{family}{lo}"), results.get(f"{family}{hi}")
        if a and b:
            gaps[family] = 100 * (b["train_error"][-1] - a["train_error"][-1])
    lines.append("")
    if "plain" in gaps:
        verdict = "degradation reproduced" if gaps["plain"] > 0 else "no degradation at this budget"
        lines.append(f"- plain-{hi} minus plain-{lo} training error: {gaps['plain']:+.2f} points "
                     f"({verdict}).")  # fmt: skip
    if "resnet" in gaps:
        lines.append(f"- resnet-{hi} minus resnet-{lo} training error: {gaps['resnet']:+.2f} points.")
    if len(gaps) == 2:
        smaller = gaps["resnet"] < gaps["plain"]
        lines.append(f"- the residual gap is {'smaller' if smaller else 'NOT smaller'} than the "
                     f"plain gap ({gaps['resnet']:+.2f} vs {gaps['plain']:+.2f}).")  # fmt: skip
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> dict[str, dict]:
    args = parse_args(argv)
    from keras_resnet_suite import runtime

    # Before TensorFlow loads: as one of this project's commands, the script runs TensorFlow's
    # oneDNN kernels unless TF_ENABLE_ONEDNN_OPTS is set (runtime.py).
    runtime.default_for_our_commands()
    from keras_resnet_suite import data as krs_data

    print(runtime.describe(), flush=True)

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    data = krs_data.cifar(args.data, batch_size=args.batch_size, seed=args.seed)
    print(data.report.summary(), flush=True)
    test = data.test
    if args.test_images:  # every k-th image: the folder's test split is sorted by class
        stride = max(1, data.num_test // args.test_images)
        test = test.unbatch().shard(stride, 0).take(args.test_images).batch(250)
    test = test.cache()
    results = {}
    for family in ("plain", "resnet"):
        for depth in args.depths:
            name = f"{family}{depth}"
            path = out / f"{name}.json"
            if path.exists():  # a re-run continues with the models not yet trained
                r = json.loads(path.read_text())
                if r.get("total_steps") == args.steps and r.get("batch_size") == args.batch_size:
                    results[name] = r
                    continue
            print(f"== {name}: {args.steps} iterations", flush=True)
            results[name] = train_one(name, data, test, args)
            path.write_text(json.dumps(results[name]))
            plot(results, out / "degradation.png")
    plot(results, out / "degradation.png")
    md = table(results, args)
    (out / "degradation.md").write_text(md)
    print(md)
    return results


if __name__ == "__main__":
    main()
