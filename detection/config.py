"""The run configuration of `python -m detection train|evaluate|export|predict|demo`: one typed
schema, one loader. A YAML has the sections `model` (the arguments of `FasterRCNN`), `data`,
`train` and `eval`; a key the schema does not know is an error naming it and the valid keys,
so a misspelt option cannot be silently ignored (detectron2's `config/defaults.py` idea).
Every value has a rule beside its field (`keras_resnet_suite.schema`: type, range, allowed
values, finiteness), checked at load, so `train.batch_size: "four"` or `learning_rate: -0.1`
is one line naming the file and the dotted key before any work starts.

`model.masks: true` makes the run Mask R-CNN's: `build_model` builds a `MaskRCNN`, and
`data.train`/`data.eval` give instance masks (`masks: true` set on them here, so every loader
call of the run agrees); only loaders with masks (`detection.data.build.WITH_MASKS`) are
accepted, and `eval.metric: segm` (mask AP, with box AP beside it) needs it.
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import inspect
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from keras_resnet_suite.file_errors import reading
from keras_resnet_suite.schema import (
    LEARNING_RATE,
    NON_NEGATIVE_INT,
    POSITIVE_INT,
    AnyOf,
    Choice,
    Flag,
    ListOf,
    Number,
    Rule,
    Table,
    Text,
    key,
    rules_of,
    validate,
)

CONFIGS = Path(__file__).resolve().parent / "configs"  # the YAML files shipped with the package
STRATEGIES = ("auto", "none", "mirrored", "multiworker")
LOADERS = ("voc", "coco", "shapes", "voc_tfds", "coco_tfds", "shards")
METRICS = ("voc", "coco", "segm")


NON_NEGATIVE = Number(float, low=0)


@dataclass
class AugmentConfig:
    """Training-time augmentation (`detection.data.augment`)."""

    flip: bool = key(Flag(), True)
    brightness: float = key(Number(float, low=0, high=1), 0.0)
    contrast: float = key(Number(float, low=0, high=1), 0.0)
    saturation: list[float] | None = key(ListOf(NON_NEGATIVE, length=2, optional=True), None)
    # random shorter side, drawn where the image meets the canvas
    sizes: list[int] | None = key(ListOf(POSITIVE_INT, min_length=1, optional=True), None)


@dataclass
class DataConfig:
    """Where the images come from: `train`/`eval` are loader specs (`loader:` + its arguments)."""

    train: dict = key(Table())
    eval: dict | None = key(Table(optional=True), None)
    num_classes: int | None = key(Number(int, low=1, optional=True), None)
    # or "auto": read from data.train's annotations
    class_names: list[str] | str | None = key(AnyOf((ListOf(Text(), min_length=1, unique=True),
                                                     Choice(("auto",))), optional=True), None)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    max_boxes: int = key(POSITIVE_INT, 50)
    seed: int = key(NON_NEGATIVE_INT, 0)


@dataclass
class TrainConfig:
    """Optimisation: steps, optimizer, learning-rate schedule, checkpoints, distribution."""

    steps: int = key(POSITIVE_INT)
    learning_rate: float = key(LEARNING_RATE)
    batch_size: int = key(POSITIVE_INT, 2)  # per replica
    # "sgd" (coupled L2, detectron2) or "adamw"
    optimizer: str = key(Choice(("sgd", "adamw")), "sgd")
    momentum: float = key(Number(float, low=0, high=1, open_high=True), 0.9)
    weight_decay: float = key(NON_NEGATIVE, 1e-4)
    clipnorm: float | None = key(Number(float, low=0, open_low=True, optional=True), 10.0)
    # "step" (detectron2's WarmupMultiStepLR) or "cosine"
    schedule: str = key(Choice(("step", "cosine")), "step")
    lr_steps: list[int] = key(ListOf(POSITIVE_INT, increasing=True), factory=list)
    lr_gamma: float = key(Number(float, low=0, high=1, open_low=True), 0.1)
    warmup_steps: int = key(NON_NEGATIVE_INT, 0)
    warmup_factor: float = key(Number(float, low=0, high=1, open_low=True), 0.001)
    mixed_precision: bool = key(Flag(), False)
    # learning-rate (and weight-decay) multiplier of the pretrained ResNet layers (stem and
    # conv*_x stages, the C4 head's conv5_x too) against the new ones: 0.1 fine-tunes them
    # ten times slower, 0 keeps them fixed (training.LayerLRMultiplier)
    backbone_lr_mult: float = key(NON_NEGATIVE, 1.0)
    # default: once an epoch
    checkpoint_every: int | None = key(Number(int, low=1, optional=True), None)
    distribution: str = key(Choice(STRATEGIES), "auto")


@dataclass
class EvalConfig:
    """How `data.eval` is scored: VOC mAP, COCO box AP or COCO mask AP ("segm", box AP too)."""

    metric: str = key(Choice(METRICS), "voc")
    iou_threshold: float = key(Number(float, low=0, high=1, open_low=True, open_high=True), 0.5)
    use_07_metric: bool = key(Flag(), True)


def model_rules() -> dict[str, Rule]:
    """`model` keys (FasterRCNN's builder arguments) whose values have a rule: the builder's
    own (`detection.modeling.options.OPTION_RULES`, so a YAML and `FasterRCNN(...)` refuse
    alike) and the composition's; the others are checked by name only. A function: the
    options module loads Keras, which this module does until a config is read."""
    from detection.modeling.options import OPTION_RULES

    return {"head": Choice(("c4", "fpn")), "image_size": ListOf(POSITIVE_INT, length=2),
            "masks": Flag(), **OPTION_RULES}


def __getattr__(name: str) -> Any:
    if name == "MODEL_RULES":  # the former constant, now built on first use
        return model_rules()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


@dataclass
class Config:
    """A whole run. `model` holds `FasterRCNN`'s keyword arguments (checked by name), and
    `masks` (a `MaskRCNN`)."""

    data: DataConfig
    train: TrainConfig
    model: dict = field(default_factory=dict)
    eval: EvalConfig = field(default_factory=EvalConfig)
    name: str | None = None

    def class_names(self) -> list[str]:
        """`data.class_names`, checked against `data.num_classes`."""
        names = self.data.class_names
        if names is None:
            raise ValueError("config data.class_names is missing (one name per label, or "
                             "'auto' to read them from data.train)")
        if self.data.num_classes is not None and int(self.data.num_classes) != len(names):
            raise ValueError(f"config data.num_classes = {self.data.num_classes} but "
                             f"data.class_names has {len(names)} names")
        return [str(n) for n in names]

    @property
    def masks(self) -> bool:
        """Whether the run is Mask R-CNN's (`model.masks: true`)."""
        return bool(self.model.get("masks", False))

    def to_dict(self) -> dict:
        """Plain nested dict (what `config.yaml` in a run folder holds)."""
        return dataclasses.asdict(self)


def _model_keys() -> list[str]:
    from detection.modeling.options import KEYWORDS

    return ["backbone", "head", "image_size", "masks", *KEYWORDS]


def _unknown(where: str, keys, valid) -> None:
    bad = [k for k in keys if k not in valid]
    if bad:
        hints = {k: difflib.get_close_matches(k, list(valid), n=1) for k in bad}
        said = ", ".join(f"{where}.{k}" + (f" (did you mean {h[0]!r}?)" if h else "")
                         for k, h in hints.items())
        raise ValueError(f"unknown config key {said}; valid keys in {where}: "
                         f"{', '.join(sorted(valid))}")


def _typed(cls, values: Any, where: str):
    """`cls(**values)` after refusing unknown or missing keys and checking each key's rule."""
    if not isinstance(values, Mapping):
        raise ValueError(f"config {where} must be a mapping, got {type(values).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    _unknown(where, values, fields)
    missing = [n for n, f in fields.items() if n not in values
               and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
    if missing:
        raise ValueError(f"config {where}: missing required key(s) "
                         f"{', '.join(f'{where}.{m}' for m in missing)}")
    return cls(**validate(values, rules_of(cls), where))


# Loader arguments (`data.train` / `data.eval`) whose values have a rule; the names are checked
# against the loader's signature.
_FLAG = Flag()
LOADER_RULES: dict[str, Rule] = {
    "data_dir": Text(), "image_dir": Text(optional=True), "annotation_file": Text(optional=True),
    "split": Text(), "year": AnyOf((Number(int, low=2000),
                                    ListOf(Number(int, low=2000), min_length=1))),
    "num_images": POSITIVE_INT, "image_size": AnyOf((POSITIVE_INT,
                                                     ListOf(POSITIVE_INT, length=2))),
    "val_fraction": Number(float, low=0, high=1, open_high=True), "split_seed": NON_NEGATIVE_INT,
    "skip_difficult": _FLAG, "skip_empty": _FLAG, "skip_crowd": _FLAG, "verify_images": _FLAG,
    "masks": _FLAG,
}


def _check_loader(spec: Any, where: str) -> dict:
    """A loader spec checked: a known loader, its arguments' names (and the required ones
    present) and the values `LOADER_RULES` knows."""
    if not isinstance(spec, Mapping) or "loader" not in spec:
        raise ValueError(f"config {where} must be a mapping with a 'loader' "
                         f"(one of {', '.join(LOADERS)})")
    loader = spec["loader"]
    if loader not in LOADERS:
        raise ValueError(f"config {where}.loader must be one of {', '.join(LOADERS)}, "
                         f"got {loader!r}")
    from detection.data.build import loader_function

    params = inspect.signature(loader_function(loader)).parameters
    reserved = {"shuffle", "seed", "verbose"}  # set by the training loop
    if not any(p.kind is p.VAR_KEYWORD for p in params.values()):
        _unknown(where, [k for k in spec if k != "loader"], set(params) - reserved)
    missing = [n for n, p in params.items() if p.default is p.empty and n not in spec
               and n not in reserved and p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)]
    if missing:
        raise ValueError(f"config {where}: missing required key(s) "
                         f"{', '.join(f'{where}.{m}' for m in missing)} ({loader} loader)")
    return validate(spec, LOADER_RULES, where)


def _check_masks(config: Config) -> None:
    """`model.masks` against the loaders and the metric, one line naming the key; with masks
    on, the loader specs get `masks: true` (a spec's own `masks:` must agree)."""
    from detection.data.build import WITH_MASKS

    for split in ("train", "eval"):
        spec = getattr(config.data, split)
        if spec is None:
            continue
        where = f"data.{split}"
        if "masks" in spec and bool(spec["masks"]) != config.masks:
            raise ValueError(f"config {where}.masks is {spec['masks']} but model.masks is "
                             f"{config.masks}: set model.masks (it sets the loaders' masks)")
        if config.masks:
            if spec["loader"] not in WITH_MASKS:
                raise ValueError(f"config model.masks: true needs instance masks, but "
                                 f"{where}.loader {spec['loader']!r} has none (VOC and the TFDS "
                                 f"sets hold boxes only); use loader "
                                 f"{' or '.join(map(repr, WITH_MASKS))}")
            spec["masks"] = True
    if config.eval.metric == "segm" and not config.masks:
        raise ValueError("config eval.metric: segm scores masks, but model.masks is not true "
                         "(a Faster R-CNN predicts boxes only; use metric coco or voc)")


def from_dict(raw: Mapping, source: str = "config") -> Config:
    """Validate a nested dict (a parsed YAML) into a `Config`; errors name `source` and key."""
    try:
        raw = copy.deepcopy(dict(raw))
        _unknown("config", raw, {f.name for f in dataclasses.fields(Config)})
        for section in ("data", "train"):
            if raw.get(section) is None:
                raise ValueError(f"config: the '{section}' section is missing")
        for section in ("data", "train", "model", "eval"):
            if raw.get(section) is not None and not isinstance(raw[section], Mapping):
                raise ValueError(f"config {section} must be a mapping, got "
                                 f"{type(raw[section]).__name__}")
        _unknown("model", raw.get("model") or {}, _model_keys())
        data = dict(raw["data"])
        data["augment"] = _typed(AugmentConfig, data.get("augment") or {}, "data.augment")
        config = Config(
            name=Text(optional=True).check(raw.get("name"), "name"),
            model=validate(raw.get("model") or {}, model_rules(), "model"),
            data=_typed(DataConfig, data, "data"), train=_typed(TrainConfig, raw["train"], "train"),
            eval=_typed(EvalConfig, raw.get("eval") or {}, "eval"))
        config.data.train = _check_loader(config.data.train, "data.train")
        if config.data.eval is not None:
            config.data.eval = _check_loader(config.data.eval, "data.eval")
        _check_masks(config)
        if config.data.class_names == "auto":
            from detection.data.discover import class_names_of

            config.data.class_names = class_names_of(config.data.train)
        if config.data.class_names is not None:
            config.class_names()  # refuses a data.num_classes that contradicts the names
    except ValueError as err:
        raise ValueError(f"{source}: {err}") from None
    return config


def merge(raw: dict, overrides: Mapping | None) -> dict:
    """`raw` with `overrides` (`{"train": {"steps": 8}}`) merged in, section by section."""
    raw = copy.deepcopy(raw)
    for section, values in (overrides or {}).items():
        if isinstance(values, Mapping) and raw.get(section) is None:
            raw[section] = dict(values)
        elif isinstance(values, Mapping) and isinstance(raw[section], dict):
            raw[section].update(values)
        elif not isinstance(values, Mapping):
            raw[section] = values
        # else: a malformed section stays as written, for `from_dict` to refuse by name
    return raw


class _StrictLoader(yaml.SafeLoader):
    """PyYAML's safe loader, refusing a key given twice in one mapping (PyYAML would keep the
    last one silently, so an edited copy of a key could be ignored without a word)."""

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            name = self.construct_object(key_node, deep=deep)
            if name in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"key {name!r} appears twice in one mapping", key_node.start_mark)
            seen.add(name)
        return super().construct_mapping(node, deep=deep)


def load_config(path: str | Path, overrides: Mapping | None = None) -> Config:
    """Read a YAML (a path, or the name of a shipped config such as `raccoon_tiny`), merge
    `overrides` and validate it."""
    path = Path(path)
    if not path.is_file() and (CONFIGS / f"{path}.yaml").is_file():
        path = CONFIGS / f"{path}.yaml"
    if not path.is_file():
        raise FileNotFoundError(f"--config {path} does not exist (shipped configs: "
                                f"{', '.join(sorted(p.stem for p in CONFIGS.glob('*.yaml')))})")
    with reading(path, "config"):  # whatever else PyYAML raises (RecursionError, ...)
        try:
            raw = yaml.load(path.read_text(encoding="utf-8"), Loader=_StrictLoader)  # noqa: S506
        except yaml.YAMLError as err:
            detail = " ".join(str(err).split())
            raise ValueError(f"{path}: not valid YAML ({detail})") from None
    if not isinstance(raw, dict):
        raise ValueError(f"{path}: a detection config is a mapping with model/data/train/eval")
    return from_dict(merge(raw, overrides), str(path))
