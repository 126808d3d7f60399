"""`python -m detection <command>`: the argument parsers; each command runs in the module that
owns the work (`detection.engine.*`, `detection.export`)."""

from __future__ import annotations

import argparse
import importlib
from collections.abc import Sequence

from detection.config import LOADER_RULES, STRATEGIES
from keras_resnet_suite.errors import run_command
from keras_resnet_suite.schema import POSITIVE_INT, PROBABILITY, arg_type

# command -> (module whose `run(args) -> int` does it, one-line help)
COMMANDS = {
    "demo": ("detection.engine.demo", "train and evaluate on the synthetic shapes set (CPU, "
             "offline); prints mAP@0.5"),
    "train": ("detection.engine.train", "train a detector from a config (resumable), then "
              "print VOC/COCO AP on data.eval"),
    "evaluate": ("detection.engine.evaluate", "score a trained detector on a config's "
                 "evaluation split"),
    "export": ("detection.export", "export a trained detector as a TF Serving SavedModel (TF "
               "OD API signature)"),
    "predict": ("detection.engine.predict", "detect objects in image files; write "
                "detections.json and PNGs with drawn boxes"),
    "records": ("detection.data.shards_cli", "write a VOC/COCO data set's train and val splits as "
                "verified TFRecord shards (resumable) to train from with --data DIR"),
    "init-config": ("detection.data.discover", "recognise a VOC-XML folder or COCO JSON and "
                    "write a starting config for it (class names, split, a CPU-sized model)"),
}


def _demo(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", default="demo_output",
                   help="run folder: weights, detections.png, SavedModel (default: demo_output)")
    p.add_argument("--config", default=None,
                   help="demo YAML (default: detection/configs/shapes_demo.yaml)")
    p.add_argument("--masks", action="store_true",
                   help="the Mask R-CNN demo (detection/configs/shapes_demo_masks.yaml): box "
                        "and mask AP, masks drawn and exported")
    p.add_argument("--epochs", type=arg_type(POSITIVE_INT, "--epochs"), default=None,
                   help="train for this many passes over the training images (sets train.steps)")
    p.add_argument("--train-images", type=arg_type(POSITIVE_INT, "--train-images"),
                   default=None,
                   help="override data.train.num_images")
    p.add_argument("--test-images", type=arg_type(POSITIVE_INT, "--test-images"), default=None,
                   help="override data.eval.num_images")


def _data_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--images", default=None,
                   help="image folder, when it is not beside the annotations")
    p.add_argument("--val-fraction", default=0.2,
                   type=arg_type(LOADER_RULES["val_fraction"], "--val-fraction"),
                   help="share of images held out for evaluation when the data has no split "
                        "files (default 0.2; the split is seeded and reproducible)")


BACKBONE_WEIGHTS_HELP = (
    "imagenet | none | PATH: the backbone's starting weights. imagenet downloads them once "
    "(into $KRS_WEIGHTS_DIR); none trains from scratch; PATH reads a local torchvision "
    ".pth/.safetensors or Keras weights file. Default: ImageNet weights if already cached, "
    "else from scratch (said in one line), never a download")


def _train(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", default=None,
                   help="detection YAML (a path, or a shipped name such as raccoon_tiny); "
                        "optional with --data (then a small ResNet-18 FPN starting config "
                        "sized for a CPU)")
    p.add_argument("--backbone-weights", default=None, metavar="imagenet|none|PATH",
                   help=BACKBONE_WEIGHTS_HELP + "; with --config it replaces "
                        "model.backbone_weights")
    p.add_argument("--data", default=None,
                   help="train on this data set instead of the config's data.train/eval: a "
                        "VOC XML folder (labelImg, CVAT, Roboflow), a VOC tree, a COCO root or "
                        "a COCO JSON file")
    p.add_argument("--classes", default=None,
                   help="'auto' (read from the annotations) or comma-separated class names; "
                        "sets data.class_names")
    _data_arguments(p)
    p.add_argument("--out", default=None, help="run folder (default: runs/<config name>)")
    p.add_argument("--steps", type=arg_type(POSITIVE_INT, "--steps"), default=None,
                   help="override train.steps")
    p.add_argument("--batch-size", type=arg_type(POSITIVE_INT, "--batch-size"), default=None,
                   help="override train.batch_size (per replica)")
    p.add_argument("--strategy", choices=STRATEGIES, default=None,
                   help="override train.distribution")
    p.add_argument("--mixed-precision", action=argparse.BooleanOptionalAction, default=None,
                   help="override train.mixed_precision")
    p.add_argument("--eval-images", type=arg_type(POSITIVE_INT, "--eval-images"), default=None,
                   help="evaluate on at most this many validation images")


WEIGHTS_HELP = ("published COCO weights: a registry name (torchvision/fasterrcnn_resnet50_fpn, "
                "detectron2/faster_rcnn_R_101_C4_3x, ...) or a torchvision .pth / detectron2 "
                ".pkl file")


def _model_source(p: argparse.ArgumentParser, checkpoint_help: str) -> None:
    group = p.add_mutually_exclusive_group(required=True)
    group.add_argument("--checkpoint", help=checkpoint_help + " (with --config)")
    group.add_argument("--weights", help=WEIGHTS_HELP)


def _evaluate(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", default=None,
                   help="detection YAML: the model (with --checkpoint) and the data")
    _model_source(p, ".weights.h5 or .keras file")
    p.add_argument("--data", default=None,
                   help="with --weights: a COCO root/JSON or VOC folder to score on (instead "
                        "of --config)")
    p.add_argument("--split", default="eval",
                   help="data section to score (default: eval, i.e. data.eval)")
    p.add_argument("--max-images", type=arg_type(POSITIVE_INT, "--max-images"), default=None,
                   help="score only the first N")
    p.add_argument("--json", default=None, help="also write the figures to this JSON file")


def _export(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", default=None, help="detection YAML the model was trained with")
    _model_source(p, "trained weights (.weights.h5) or a saved model (.keras)")
    p.add_argument("--image-size", type=arg_type(POSITIVE_INT, "--image-size"), nargs=2,
                   default=None, metavar=("H", "W"),
                   help="with --weights: the canvas (default: the preset's, 800 x 1344)")
    p.add_argument("--out", required=True, help="SavedModel (or quantized model) folder")
    p.add_argument("--precision", choices=("int8", "bf16"), default=None,
                   help="write an OpenVINO model of this precision instead of the SavedModel "
                        "(detection.export.quantize)")
    p.add_argument("--format", choices=("openvino",), default="openvino",
                   help="runtime of the --precision model (default openvino)")
    p.add_argument("--calibration", default="train",
                   help="int8 calibration images: a data split of --config (default train) "
                        "or a .npy file [N, H, W, 3]")
    p.add_argument("--calibration-images", type=arg_type(POSITIVE_INT, "--calibration-images"),
                   default=300, help="calibration images drawn (default 300)")
    p.add_argument("--validation", default="eval",
                   help="split of --config scored float32 vs quantized (default eval; '' none)")
    p.add_argument("--validation-images", default=200,
                   type=arg_type(POSITIVE_INT, "--validation-images"),
                   help="images of the validation split scored (default 200)")
    p.add_argument("--max-drop", type=float, default=1.0,
                   help="refuse to write when mAP@0.5 (or mask AP) drops more points (default 1)")


def _predict(p: argparse.ArgumentParser) -> None:
    p.add_argument("images", nargs="+", help="JPEG/PNG files")
    group = p.add_mutually_exclusive_group(required=True)
    group.add_argument("--model",
                       help="SavedModel folder, .keras file, or .weights.h5 (with --config)")
    group.add_argument("--weights", help=WEIGHTS_HELP + "; each image runs at the size the "
                                                        "library would run it")
    p.add_argument("--config", default=None, help="detection YAML (class names, weights)")
    p.add_argument("--out", default="predictions", help="folder for JSON and PNGs")
    p.add_argument("--score-threshold", type=arg_type(PROBABILITY, "--score-threshold"),
                   default=0.5,
                   help="keep detections scoring at least this (default 0.5)")
    p.add_argument("--max-pixels", type=arg_type(POSITIVE_INT, "--max-pixels"),
                   default=None,
                   help="refuse images with more pixels than this, from their header "
                        "(decompression-bomb guard; default $KRS_MAX_PIXELS or 50 megapixels)")


def _init_config(p: argparse.ArgumentParser) -> None:
    p.add_argument("path", help="VOC XML folder or tree, COCO root, or COCO JSON file")
    p.add_argument("--out", default=None, help="YAML to write (default: <data name>.yaml here)")
    p.add_argument("--force", action="store_true", help="overwrite --out if it exists")
    p.add_argument("--backbone-weights", default=None, metavar="imagenet|none|PATH",
                   help=BACKBONE_WEIGHTS_HELP)
    _data_arguments(p)


def _records(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", required=True,
                   help="VOC XML folder or tree, COCO root, or COCO JSON file (as train --data)")
    p.add_argument("--out", required=True,
                   help="shards folder to write (a killed run given the same folder continues)")
    p.add_argument("--num-shards", type=arg_type(POSITIVE_INT, "--num-shards"), default=8,
                   help="TFRecord files for the train split (default 8; at least one per "
                        "worker, so each worker reads only its own files)")
    p.add_argument("--masks", action="store_true",
                   help="also write the instance masks, as RLE (COCO data only)")
    _data_arguments(p)


ARGUMENTS = {"demo": _demo, "train": _train, "evaluate": _evaluate, "export": _export,
             "predict": _predict, "records": _records, "init-config": _init_config}


DESCRIPTION = """\
Faster R-CNN and Mask R-CNN with ResNet backbones (C4 or FPN), in Keras 3: train on your own
VOC-XML or COCO data, score, export for TF Serving, and draw detections on photos. Each
command's options: python -m detection COMMAND --help.

TensorFlow's C++ log lines are hidden; --verbose (before the command) shows them."""

EXAMPLES = """\
examples:
  python -m detection demo --out demo_output            # offline, CPU; prints mAP@0.5
  python -m detection train --data photos/ --classes auto --steps 200 --out runs/photos
  python -m detection init-config photos/ --out photos.yaml   # a config to edit, then:
  python -m detection train --config photos.yaml --out runs/photos2
  python -m detection evaluate --config runs/photos/config.yaml \\
      --checkpoint runs/photos/final.weights.h5
  python -m detection export --config runs/photos/config.yaml \\
      --checkpoint runs/photos/final.weights.h5 --out served/photos
  python -m detection predict a.jpg b.png --model served/photos --out predictions
  python -m detection predict a.jpg --weights torchvision/fasterrcnn_resnet50_fpn
  python -m detection records --data coco/ --out shards/ --num-shards 64   # TFRecord shards
  python -m detection train --data shards/ --steps 200 --out runs/from-shards
  python -m detection --verbose train ...   (with TensorFlow's own log lines)

A run folder holds checkpoints/, history.csv, training_curves.png, config.yaml,
final.weights.h5 and metrics.json; predict writes detections.json and one PNG per photo,
drawn at the photo's size. The full guide is docs/detection.md."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m detection", description=DESCRIPTION,
                                     epilog=EXAMPLES,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--verbose", dest="tf_logs", action="store_true",
                        help="show TensorFlow's C++ log lines (hidden by default; also "
                             "KRS_TF_LOGS=1 or TF_CPP_MIN_LOG_LEVEL=0)")
    sub = parser.add_subparsers(dest="command", required=True, title="commands",
                                metavar="COMMAND")
    for name, (_, help_text) in COMMANDS.items():
        ARGUMENTS[name](sub.add_parser(name, help=help_text, description=help_text))
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the process exit code: 2 for bad input, 1 for a diverged training
    run or any other failure (each one line on stderr, `keras_resnet_suite.errors.run_command`),
    or the command's own (predict: 1 when some images failed)."""
    args = build_parser().parse_args(argv)
    module = importlib.import_module(COMMANDS[args.command][0])
    return run_command(lambda: module.run(args))
