"""Fine-tuning with a smaller learning rate for the pretrained layers (the `fine-tune` recipe).

The published CIFAR-10 ResNet-56 (paper Sec. 4.2, option A) gets a new 5-way head and is
fine-tuned on a 5-class subset of CIFAR-10 (classes 0-4 by default: airplane .. deer), three
ways, on the same batches:

- `all 1x`: every layer at the head's learning rate (no multipliers);
- `backbone 0.1x`: the recipe's default, every pretrained layer at 0.1x the new head's rate
  (`lr_multipliers={"*": 0.1, "predictions": 1.0}`, its L2 scaled alike);
- `frozen`: stem and all stages frozen (`freeze_at=4`), only the head trains.

It prints (and writes to `--out/finetune.md`) a Markdown table of test accuracy on the subset's
test images and training time per variant.

    # CPU budget (a few minutes on 2 shared cores): 2,000 training images, 2 epochs
    python examples/cifar_finetune.py --out runs/finetune
    # more data and epochs
    python examples/cifar_finetune.py --train-per-class 5000 --epochs 10 --out runs/finetune-full
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
DEFAULT_DATA = DATA / "cifar10-jpeg.tar.gz"
DEFAULT_WEIGHTS = DATA / "cifar-resnet-checkpoints" / "resnet56-4bfd9763.th"
VARIANTS = {  # name: fine-tune recipe overrides
    "all 1x": {"lr_multipliers": None},
    "backbone 0.1x": {},
    "frozen (freeze_at=4)": {"freeze_at": 4, "lr_multipliers": None},
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default=os.environ.get("KRS_CIFAR10", str(DEFAULT_DATA)),
                   help="CIFAR-10 source: directory or .tar.gz (default: %(default)s)")
    p.add_argument("--weights", default=str(DEFAULT_WEIGHTS),
                   help="the published ResNet-56 checkpoint (default: %(default)s)")
    p.add_argument("--classes", type=int, nargs="+", default=[0, 1, 2, 3, 4],
                   help="CIFAR-10 labels of the target task (default: %(default)s)")
    p.add_argument("--train-per-class", type=int, default=400)
    p.add_argument("--test-per-class", type=int, default=400)
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="runs/finetune", help="output directory")
    args = p.parse_args(argv)
    for path in (args.data, args.weights):
        if not Path(path).exists():
            p.error(f"{path} does not exist (see ../shared/data/README.md)")
    if len(set(args.classes)) < 2 or not all(0 <= c < 10 for c in args.classes):
        p.error(f"--classes must be at least two distinct labels in 0..9, got {args.classes}")
    return args


def subset(images, labels, classes: list[int], per_class: int, seed: int):
    """The first `per_class` images of each of `classes` (shuffled together), relabelled
    0..len(classes)-1."""
    import numpy as np

    rng = np.random.default_rng(seed)
    picks = [np.flatnonzero(labels == c)[:per_class] for c in classes]
    index = rng.permutation(np.concatenate(picks))
    remap = {c: i for i, c in enumerate(classes)}
    return images[index], np.array([remap[int(y)] for y in labels[index]], np.int32)


def run_variant(name: str, overrides: dict, args, train, test) -> dict:
    """Fine-tune one variant from the same checkpoint on the same batches; its scores."""
    import keras

    from keras_resnet_suite import training

    keras.utils.set_random_seed(args.seed)
    model = training.finetune_model("resnet56", args.weights, len(args.classes))
    x_train, y_train = model.preprocess_input(train[0].astype("float32")), train[1]
    x_test, y_test = model.preprocess_input(test[0].astype("float32")), test[1]
    steps_per_epoch = len(x_train) // args.batch_size
    recipe = training.get_recipe("fine-tune", global_batch_size=args.batch_size,
                                 steps_per_epoch=steps_per_epoch,
                                 total_steps=args.epochs * steps_per_epoch, jit_compile=False,
                                 seed=args.seed, **overrides)
    recipe.compile(model)
    before = model.evaluate(x_test, y_test, batch_size=250, verbose=0, return_dict=True)
    start = time.perf_counter()
    model.fit(x_train[:steps_per_epoch * args.batch_size], y_train[:steps_per_epoch *
              args.batch_size], batch_size=args.batch_size, epochs=args.epochs, shuffle=False,
              callbacks=recipe.callbacks(), verbose=0)
    seconds = time.perf_counter() - start
    after = model.evaluate(x_test, y_test, batch_size=250, verbose=0, return_dict=True)
    trainable = sum(int(v.numpy().size) for v in model.trainable_variables)
    print(f"{name:22s} test accuracy {100 * after['accuracy']:.2f}% (new head untrained: "
          f"{100 * before['accuracy']:.2f}%), {seconds:.0f} s, {trainable:,} trainable",
          flush=True)
    return {"name": name, "accuracy": after["accuracy"], "seconds": seconds,
            "trainable": trainable, "lr": recipe.lr, "multipliers": recipe.lr_multipliers}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from keras_resnet_suite import runtime

    runtime.default_for_our_commands()  # before TensorFlow loads (runtime.py)
    from keras_resnet_suite.data import load_cifar_arrays

    x_train, y_train, x_test, y_test, names, _ = load_cifar_arrays(args.data, 10)
    train = subset(x_train, y_train, args.classes, args.train_per_class, args.seed)
    test = subset(x_test, y_test, args.classes, args.test_per_class, args.seed + 1)
    print(f"target task: {', '.join(names[c] for c in args.classes)}; {len(train[1])} training "
          f"and {len(test[1])} test images; {args.epochs} epoch(s) at batch {args.batch_size}",
          flush=True)
    rows = [run_variant(name, overrides, args, train, test)
            for name, overrides in VARIANTS.items()]
    table = ["| variant | head LR | pretrained layers' LR | trainable parameters | "
             "test accuracy | training time |", "| --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        mult = (r["multipliers"] or {}).get("*", 1.0)
        pretrained = "frozen" if r["name"].startswith("frozen") else f"{r['lr'] * mult:g}"
        table.append(f"| {r['name']} | {r['lr']:g} | {pretrained} | {r['trainable']:,} | "
                     f"{100 * r['accuracy']:.2f}% | {r['seconds']:.0f} s |")
    text = "\n".join(table)
    print("\n" + text)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "finetune.md").write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
