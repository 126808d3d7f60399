"""`keras-resnet-suite train | evaluate | export`: the paper's training runs from the shell.

A run directory holds everything of one run: `run.json` (its configuration), `backup/`
(step-exact checkpoints: a killed run re-run with the same command resumes), `model.keras`
(the final model), `history.csv`, `tensorboard/`, `error_curves.png` (paper Fig. 6 style),
`normalization.npz` (the training mean/std, used by `evaluate` and `export`) and
`summary.json`.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import tempfile
import time
from pathlib import Path

import keras
import numpy as np

from keras_resnet_suite import analysis, data, export, training
from keras_resnet_suite.convert import load_model_file
from keras_resnet_suite.data import (
    augment,
    load_cifar_arrays,
    predict_multiscale,
    predict_ten_crop,
    topk_error,
)
from keras_resnet_suite.file_errors import read_json, reading
from keras_resnet_suite.flops import count_params
from keras_resnet_suite.model_kind import CLASSIFIER, require_kind
from keras_resnet_suite.models import build
from keras_resnet_suite.preprocessing import preprocess_input
from keras_resnet_suite.quantize_cli import cmd_quantize
from keras_resnet_suite.run_dir import check_run_dir as _check_run_dir
from keras_resnet_suite.run_dir import fit_schedule as _fit_schedule
from keras_resnet_suite.run_folder import RunFolder, stop_on_sigterm
from keras_resnet_suite.schema import check_args
from keras_resnet_suite.specs import available_models, get_spec
from keras_resnet_suite.train_flags import FLAG_RULES
from keras_resnet_suite.train_flags import finetune_options as _finetune_options
from keras_resnet_suite.training.callbacks import atomic_save, atomic_write_json

CIFAR_SCALES = (32, 40, 48)  # multi-scale test sides for 32 px models (1x, 1.25x, 1.5x)


def _num_classes(dataset: str, given: int | None) -> int | None:
    return given or {"cifar10": 10, "cifar100": 100}.get(dataset)


def load_data(cfg: dict, start_step: int = 0, eval_mode: str = "center"):
    """The `ClassificationData` a run's configuration describes, positioned at `start_step`."""

    if cfg["data"] in ("cifar10", "cifar100"):
        return data.cifar(cfg["data_dir"], num_classes=_num_classes(cfg["data"], None),
                          batch_size=cfg["batch_size"], seed=cfg["seed"],
                          start_step=start_step, normalization=cfg["normalization"])  # fmt: skip
    mode = {"center": "center", "ten-crop": "ten_crop", "multiscale": "images"}[eval_mode]
    return data.imagenet(cfg["data_dir"], batch_size=cfg["batch_size"], seed=cfg["seed"],
                         start_step=start_step, eval_mode=mode,
                         normalization=cfg["normalization"])  # fmt: skip


def checked_data_dir(args) -> str:
    """`--data-dir` resolved, after refusing an unknown model or recipe and counts below 1."""
    if args.model not in available_models():
        raise SystemExit(f"error: unknown --model {args.model!r}; see `keras-resnet-suite models`")
    if args.recipe not in training.RECIPES:
        raise SystemExit(f"error: unknown --recipe {args.recipe!r}; valid: "
                         f"{', '.join(training.RECIPES)}")  # fmt: skip
    if args.recipe == "fine-tune" and not args.weights:
        raise SystemExit("error: --recipe fine-tune needs --weights (the pretrained checkpoint)")
    data_dir = args.data_dir if args.data_dir == "tfds" else str(Path(args.data_dir).resolve())
    if data_dir != "tfds" and not Path(data_dir).exists():
        raise SystemExit(f"error: --data-dir {args.data_dir} does not exist")
    check_args(args, FLAG_RULES)
    return data_dir


def cmd_train(args) -> dict:
    """Train a model with a paper recipe; a killed run re-run with the same command resumes.
    The run folder is locked while it runs (a second run there is refused naming the first);
    a start failing before its first checkpoint leaves nothing there; SIGTERM saves the step
    it reached and exits 143 (`run_folder`)."""
    out = Path(args.out)
    folder = RunFolder(out, out / "backup", note=print) if training.is_chief() \
        else contextlib.nullcontext()
    with stop_on_sigterm(), folder:
        return _train(args)


def _train(args) -> dict:
    data_dir = checked_data_dir(args)
    strategy = training.get_strategy(args.strategy)
    replicas = strategy.num_replicas_in_sync
    recipe0 = training.get_recipe(args.recipe, total_steps=1)  # its batch (any length)
    batch = args.batch_size or recipe0.global_batch_size
    try:
        training.per_replica_batch(batch, replicas)
    except ValueError as e:
        raise SystemExit(f"error: --batch-size: {e}") from None
    out = Path(args.out)
    cfg = {"model": args.model, "data": args.data, "data_dir": data_dir, "recipe": args.recipe,
           "batch_size": batch, "seed": args.seed,
           "normalization": args.normalization or ("channel" if args.weights else "pixel_mean"),
           "strategy": args.strategy}  # fmt: skip
    cfg.update(_finetune_options(args))  # only when given: earlier run.json files still match
    ds = load_data(cfg)
    print(ds.report.summary(), flush=True)
    num_classes = ds.num_classes if args.num_classes is None else args.num_classes
    if num_classes != ds.num_classes:
        raise SystemExit(f"error: --num-classes {num_classes} but {args.data_dir} has "
                         f"{ds.num_classes} classes")  # fmt: skip
    spe = ds.steps_per_epoch
    if args.steps:
        total = args.steps
    elif args.epochs:
        total = args.epochs * spe
    else:
        total = training.get_recipe(args.recipe, global_batch_size=batch,
                                    steps_per_epoch=spe).total_steps  # modern: 90 epochs
    fit_spe, epochs = _fit_schedule(total, spe)
    if fit_spe * epochs != total:
        print(f"note: {total} iterations rounded up to {fit_spe * epochs} (whole epochs of "
              f"{fit_spe}); pick a multiple of a divisor near {spe} to avoid it")  # fmt: skip
    total = fit_spe * epochs
    cfg.update(num_classes=num_classes, total_steps=total, steps_per_epoch=fit_spe,
               epochs=epochs, class_names=ds.class_names)  # fmt: skip
    _check_run_dir(out, cfg)
    spec = get_spec(args.model)
    jit = {"auto": "auto", "true": True, "false": False}[args.jit_compile]
    tuning = {k: cfg[k] for k in ("freeze_at", "lr_multipliers") if k in cfg}
    recipe = training.get_recipe(args.recipe, global_batch_size=batch, steps_per_epoch=fit_spe,
                                 total_steps=total, depth=spec.num_layers, seed=args.seed,
                                 mixed_precision=args.mixed_precision, jit_compile=jit,
                                 **tuning)  # fmt: skip
    recipe.apply_precision()
    keras.utils.set_random_seed(args.seed)
    with strategy.scope():
        model = _compiled_model(args.model, cfg.get("weights"), num_classes, recipe)
    chief = training.is_chief()
    print(f"{args.model}: {count_params(model):,} parameters; recipe {args.recipe}: LR "
          f"{recipe.lr:g} at global batch {batch} on {replicas} replica(s), {total} iterations "
          f"({epochs} x {fit_spe}), LR /10 at {recipe.boundaries}", flush=True)  # fmt: skip
    callbacks = list(recipe.callbacks()) + (_run_callbacks(out, fit_spe) if chief else [])
    # MultiWorkerMirroredStrategy: every worker saves, only the chief's copy is kept
    backup = out / "backup" if chief else Path(tempfile.mkdtemp(prefix="krs-backup-"))
    start = time.perf_counter()
    # A diverged run raises TrainingDiverged: an earlier run's model.keras, summary.json stay
    history = training.fit_resumable(
        model, lambda step: recipe.prepare(load_data(cfg, step).train, num_classes, step),
        steps_per_epoch=fit_spe, epochs=epochs, backup_dir=backup,
        save_freq=min(args.save_every, fit_spe), callbacks=callbacks,
        validation_data=ds.test, verbose=_verbosity(args.verbose), is_chief=chief,
        on_start=(lambda step: _write_run_files(out, cfg, ds)) if chief else None,
    )  # fmt: skip
    seconds = time.perf_counter() - start
    summary = _summary(args, model, history, ds, total, seconds)
    if chief:
        atomic_save(model, out / "model.keras")
        atomic_write_json(out / "summary.json", summary)
        analysis.plot_error_curves(out / "history.csv", out / "error_curves.png", fit_spe)
    _print_result(summary, seconds, out)
    return summary


def _write_run_files(out: Path, cfg: dict, ds) -> None:
    """run.json and normalization.npz; written once the checkpoint is restored, before the
    first step, so a refused --freeze-at, --lr-mult or checkpoint leaves no run.json that would
    refuse the corrected command (and a start failing later has them removed)."""
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / "run.json", cfg)
    norm = {k: v for k, v in (("mean", ds.mean), ("std", ds.std)) if v is not None}
    np.savez(out / "normalization.npz", **norm)


def _compiled_model(name: str, weights: str | None, num_classes: int, recipe):
    """The model to train, compiled by `recipe`: `weights` (fine-tuning) under a new head."""

    if weights:
        model = training.finetune_model(name, weights, num_classes)
    else:
        model = build(name, classes=num_classes)
    try:
        recipe.compile(model)
    except ValueError as e:  # a --lr-mult pattern naming no layer, a --freeze-at too deep
        raise SystemExit(f"error: {e}".replace("recipe.lr_multipliers", "--lr-mult")
                         .replace("recipe.freeze_at", "--freeze-at")) from None
    return model


def _run_callbacks(out: Path, fit_spe: int) -> list:
    """The chief's logs in the run directory: history.csv, error curves, TensorBoard."""
    callbacks = [keras.callbacks.CSVLogger(str(out / "history.csv"), append=True),
                 analysis.ErrorCurvePlot(out / "history.csv", out / "error_curves.png", fit_spe)]
    if _have_tensorboard():
        callbacks.append(keras.callbacks.TensorBoard(str(out / "tensorboard"),
                                                     update_freq="epoch"))  # fmt: skip
    else:
        print("note: TensorBoard logs skipped (pip install tensorboard to get them)")
    return callbacks


def _summary(args, model, history: dict, ds, total: int, seconds: float) -> dict:
    """summary.json: iterations done and the final test scores."""

    if history.get("val_accuracy"):  # fit has just evaluated the final weights
        scores = {k.removeprefix("val_"): v[-1] for k, v in history.items() if k.startswith("val_")}
    else:  # nothing left to train (a finished run re-run): evaluate again
        scores = model.evaluate(ds.test, return_dict=True, verbose=0)
    step = int(keras.ops.convert_to_numpy(model.optimizer.iterations))  # also when mirrored
    return {
        "model": args.model, "data": args.data, "recipe": args.recipe, "iterations": step,
        "planned_iterations": total, "epochs_of_data": round(step / ds.steps_per_epoch, 2),
        "test_accuracy": round(float(scores["accuracy"]), 4),
        "test_error": round(1 - float(scores["accuracy"]), 4),
        "test_top5_error": round(1 - float(scores.get("top5", float("nan"))), 4),
        "test_loss": round(float(scores["loss"]), 4), "train_seconds_this_call": round(seconds, 1),
        "stopped_early": bool(model.stop_training and step < total),
    }  # fmt: skip


def _print_result(summary: dict, seconds: float, out: Path) -> None:
    s = summary
    print(f"\n== {s['model']} on {s['data']} ({s['recipe']}): {s['iterations']}/"
          f"{s['planned_iterations']} iterations, {s['epochs_of_data']} epochs, {seconds:.0f} s "
          f"this call\n   test accuracy {100 * s['test_accuracy']:.2f}%  (error "
          f"{100 * s['test_error']:.2f}%, top-5 error {100 * s['test_top5_error']:.2f}%)\n"
          f"   run directory {out}: model.keras, history.csv, error_curves.png, summary.json",
          flush=True)  # fmt: skip


def _have_tensorboard() -> bool:

    return importlib.util.find_spec("tensorboard") is not None


def _verbosity(v: str):
    return v if v == "auto" else int(v)


def _load_run(run: str | Path) -> tuple[Path, dict, dict]:
    out = Path(run)
    if not (out / "run.json").is_file():
        raise SystemExit(f"error: {out} is not a run directory (no run.json); train first")
    cfg = read_json(out / "run.json", "run record")
    norm = {}
    if (out / "normalization.npz").is_file():
        with reading(out / "normalization.npz", "normalization file (.npz)"), \
                np.load(out / "normalization.npz") as z:
            norm = {k: z[k] for k in z.files}
    return out, cfg, norm


def _load_model(out: Path, model_file: str | None):

    path = Path(model_file) if model_file else out / "model.keras"
    if not path.is_file():
        raise SystemExit(f"error: no model at {path}; finish training (or pass --model-file)")
    require_kind(path, CLASSIFIER, "--model-file" if model_file else "model")
    return load_model_file(path, compile=False)  # inference only: no optimizer state


def _cifar_views(images, mode: str, sizes=CIFAR_SCALES):
    """Batched CIFAR test views: ten crops of the 4-px zero-padded image (the training
    augmentation's crops), or the image resized to each side in `sizes`, with mirrors."""
    import tensorflow as tf

    if mode == "ten-crop":
        padded = tf.pad(images, [[0, 0], [4, 4], [4, 4], [0, 0]])
        return [tf.stack([augment.ten_crop(im, images.shape[1]) for im in tf.unstack(padded)])]
    views = [tf.image.resize(images, (s, s), antialias=True) for s in sizes]
    return views + [tf.reverse(v, axis=[2]) for v in views]


def evaluate_run(run: str | Path, modes=("center",), model_file: str | None = None,
                 data_dir: str | None = None, limit: int | None = None) -> dict[str, dict]:
    """Top-1/top-5 error of a trained run per test mode (paper Sec. 3.4 and Table 3/4 views)."""
    out, cfg, norm = _load_run(run)
    if data_dir:
        cfg["data_dir"] = data_dir
    model = _load_model(out, model_file)
    results = {}
    for mode in modes:
        ds = load_data(cfg, eval_mode=mode)
        test = ds.test.take(limit) if limit else ds.test
        net = model
        if mode == "multiscale":  # the same weights on inputs of any size
            net = build(cfg["model"], classes=cfg["num_classes"], input_shape=(None, None, 3))
            net.set_weights(model.get_weights())
        scores, labels = [], []
        progress = keras.utils.Progbar(None, unit_name="batch")
        for x, y in test:
            if cfg["data"].startswith("cifar") and mode != "center":
                views = _cifar_views(x, mode)
                if mode == "ten-crop":
                    s = predict_ten_crop(net, views[0])
                else:
                    s = np.mean([np.asarray(net(v, training=False)) for v in views], axis=0)
            elif mode == "ten-crop":
                s = predict_ten_crop(net, x)
            elif mode == "multiscale":
                s = predict_multiscale(net, x[0])[None]
            else:
                s = np.asarray(net(x, training=False))
            scores.append(np.asarray(s))
            labels.append(np.asarray(y))
            progress.add(1)
        scores, labels = np.concatenate(scores), np.concatenate(labels)
        results[mode] = {"top1_error": topk_error(scores, labels, 1),
                         "top5_error": topk_error(scores, labels, min(5, scores.shape[1])),
                         "images": int(len(labels))}  # fmt: skip
    return results


def evaluate_weights(model_name: str, weights: str, data_dir: str, limit: int | None = None,
                     batch_size: int = 500, preprocessing: str | None = None,
                     save_logits: str | None = None) -> dict[str, dict]:
    """Top-1/top-5 error of a CIFAR model with given weights (e.g. a published checkpoint) on
    the test split of `data_dir`, its images fed as the checkpoint wants (1-crop)."""

    if get_spec(model_name).dataset != "cifar":
        raise SystemExit(f"error: --weights evaluates the CIFAR models, not {model_name}")
    model = build(model_name, weights=weights, classifier_activation=None)
    mode = preprocessing or getattr(model, "preprocessing", None)
    if mode is None:
        raise SystemExit(f"error: {weights} carries no input convention; pass --preprocessing")
    _, _, images, labels, _, _ = load_cifar_arrays(data_dir, model.output_shape[-1])
    if limit:
        images, labels = images[:limit * batch_size], labels[:limit * batch_size]
    scores = np.concatenate([
        np.asarray(model.predict_on_batch(preprocess_input(images[i:i + batch_size], mode)))
        for i in range(0, len(images), batch_size)])
    if save_logits:
        np.save(save_logits, scores.astype(np.float32))
    return {"center": {"top1_error": topk_error(scores, labels, 1),
                       "top5_error": topk_error(scores, labels, 5), "images": int(len(labels)),
                       "preprocessing": mode}}


def cmd_evaluate(args) -> dict:
    """Evaluate a run (1-crop, 10-crop, multi-scale test error), or a CIFAR model's --weights."""
    if bool(args.run) == bool(args.weights or args.model):
        raise SystemExit("error: evaluate takes --run RUN, or --model, --weights, --data-dir")
    if args.run:
        results = evaluate_run(args.run, args.mode, args.model_file, args.data_dir, args.limit)
    elif not (args.model and args.weights and args.data_dir) or args.mode != ["center"]:
        raise SystemExit("error: --weights needs --model and --data-dir; it evaluates 1-crop")
    else:
        results = evaluate_weights(args.model, args.weights, args.data_dir, args.limit,
                                   args.batch_size, args.preprocessing, args.save_logits)
    print(f"\n{'mode':12s} {'images':>7s} {'top-1 err':>10s} {'top-5 err':>10s}")
    for mode, r in results.items():
        print(f"{mode:12s} {r['images']:7d} {100 * r['top1_error']:9.2f}% "
              f"{100 * r['top5_error']:9.2f}%")  # fmt: skip
    if args.run:
        Path(args.run, "evaluation.json").write_text(json.dumps(results, indent=1))
    return results


def cmd_export(args) -> Path:
    """Export a run's model as a SavedModel (float-image and encoded-image signatures)."""
    out, cfg, norm = _load_run(args.run)
    model = _load_model(out, args.model_file)
    if getattr(args, "precision", "float32") != "float32":
        return cmd_quantize(args, model, cfg, norm, load_data)
    path = export.export_saved_model(model, args.out, mean=norm.get("mean"), std=norm.get("std"),
                                     class_names=cfg.get("class_names"), top_k=args.top_k,
                                     fold_bn=args.fold_bn)  # fmt: skip
    print(f"SavedModel written to {path}: signatures {', '.join(export.SIGNATURES)}")
    return path

