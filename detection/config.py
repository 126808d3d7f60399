"""The run configuration of `python -m detection train|evaluate|export|predict|demo`: one typed
schema, one loader. A YAML has the sections `model` (the arguments of `FasterRCNN`), `data`,
`train` and `eval`; a key the schema does not know is an error naming it and the valid keys,
so a misspelt option cannot be silently ignored (detectron2's `config/defaults.py` idea).
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

CONFIGS = Path(__file__).resolve().parent / "configs"  # the YAML files shipped with the package
STRATEGIES = ("auto", "none", "mirrored", "multiworker")
LOADERS = ("voc", "coco", "shapes", "voc_tfds", "coco_tfds")


@dataclass
class AugmentConfig:
    """Training-time augmentation (`detection.data.augment`)."""

    flip: bool = True
    brightness: float = 0.0
    contrast: float = 0.0
    saturation: list[float] | None = None
    sizes: list[int] | None = None  # random shorter side, drawn where the image meets the canvas


@dataclass
class DataConfig:
    """Where the images come from: `train`/`eval` are loader specs (`loader:` + its arguments)."""

    train: dict
    eval: dict | None = None
    num_classes: int | None = None
    class_names: list[str] | str | None = None  # or "auto": read from data.train's annotations
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    max_boxes: int = 50
    seed: int = 0


@dataclass
class TrainConfig:
    """Optimisation: steps, optimizer, learning-rate schedule, checkpoints, distribution."""

    steps: int
    learning_rate: float
    batch_size: int = 2  # per replica
    optimizer: str = "sgd"  # "sgd" (coupled L2, detectron2) or "adamw"
    momentum: float = 0.9
    weight_decay: float = 1e-4
    clipnorm: float | None = 10.0
    schedule: str = "step"  # "step" (detectron2's WarmupMultiStepLR) or "cosine"
    lr_steps: list[int] = field(default_factory=list)
    lr_gamma: float = 0.1
    warmup_steps: int = 0
    warmup_factor: float = 0.001
    mixed_precision: bool = False
    checkpoint_every: int | None = None  # default: once an epoch
    distribution: str = "auto"


@dataclass
class EvalConfig:
    """How `data.eval` is scored: VOC mAP or COCO AP."""

    metric: str = "voc"
    iou_threshold: float = 0.5
    use_07_metric: bool = True


@dataclass
class Config:
    """A whole run. `model` holds `FasterRCNN`'s keyword arguments (checked by name)."""

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

    def to_dict(self) -> dict:
        """Plain nested dict (what `config.yaml` in a run folder holds)."""
        return dataclasses.asdict(self)


def _model_keys() -> list[str]:
    from detection.modeling.builder import build_parts

    return [p for p in inspect.signature(build_parts).parameters if p != "num_classes"]


def _unknown(where: str, keys, valid) -> None:
    bad = [k for k in keys if k not in valid]
    if bad:
        hints = {k: difflib.get_close_matches(k, list(valid), n=1) for k in bad}
        said = ", ".join(f"{where}.{k}" + (f" (did you mean {h[0]!r}?)" if h else "")
                         for k, h in hints.items())
        raise ValueError(f"unknown config key {said}; valid keys in {where}: "
                         f"{', '.join(sorted(valid))}")


def _typed(cls, values: Any, where: str):
    if not isinstance(values, Mapping):
        raise ValueError(f"config {where} must be a mapping, got {type(values).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    _unknown(where, values, fields)
    missing = [n for n, f in fields.items() if n not in values
               and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
    if missing:
        raise ValueError(f"config {where}: missing required key(s) "
                         f"{', '.join(f'{where}.{m}' for m in missing)}")
    return cls(**dict(values))


def _check_loader(spec: Any, where: str) -> None:
    if not isinstance(spec, Mapping) or "loader" not in spec:
        raise ValueError(f"config {where} must be a mapping with a 'loader' "
                         f"(one of {', '.join(LOADERS)})")
    loader = spec["loader"]
    if loader not in LOADERS:
        raise ValueError(f"config {where}.loader must be one of {', '.join(LOADERS)}, "
                         f"got {loader!r}")
    from detection.data.build import loader_function

    params = inspect.signature(loader_function(loader)).parameters
    if not any(p.kind is p.VAR_KEYWORD for p in params.values()):
        reserved = {"shuffle", "seed", "verbose"}  # set by the training loop
        _unknown(where, [k for k in spec if k != "loader"], set(params) - reserved)


def from_dict(raw: Mapping, source: str = "config") -> Config:
    """Validate a nested dict (a parsed YAML) into a `Config`; errors name `source` and key."""
    try:
        raw = copy.deepcopy(dict(raw))
        _unknown("config", raw, {f.name for f in dataclasses.fields(Config)})
        for section in ("data", "train"):
            if section not in raw:
                raise ValueError(f"config: the '{section}' section is missing")
        data = dict(raw["data"])
        data["augment"] = _typed(AugmentConfig, data.get("augment") or {}, "data.augment")
        config = Config(
            name=raw.get("name"), model=dict(raw.get("model") or {}),
            data=_typed(DataConfig, data, "data"), train=_typed(TrainConfig, raw["train"], "train"),
            eval=_typed(EvalConfig, raw.get("eval") or {}, "eval"))
        _unknown("model", config.model, _model_keys())
        _check_loader(config.data.train, "data.train")
        if config.data.eval is not None:
            _check_loader(config.data.eval, "data.eval")
        _check_values(config)
        if isinstance(config.data.class_names, str):
            if config.data.class_names != "auto":
                raise ValueError(f"data.class_names must be a list of names or 'auto', got "
                                 f"{config.data.class_names!r}")
            from detection.data.discover import class_names_of

            config.data.class_names = class_names_of(config.data.train)
    except ValueError as err:
        raise ValueError(f"{source}: {err}") from None
    return config


def _check_values(config: Config) -> None:
    train = config.train
    choices = (("train.optimizer", train.optimizer, ("sgd", "adamw")),
               ("train.schedule", train.schedule, ("step", "cosine")),
               ("train.distribution", train.distribution, STRATEGIES),
               ("eval.metric", config.eval.metric, ("voc", "coco")))
    for key, value, allowed in choices:
        if value not in allowed:
            raise ValueError(f"{key} must be one of {', '.join(allowed)}, got {value!r}")
    if int(train.steps) < 1 or int(train.batch_size) < 1:
        raise ValueError(f"train.steps and train.batch_size must be >= 1, got {train.steps} "
                         f"and {train.batch_size}")
    if list(train.lr_steps) != sorted(train.lr_steps):
        raise ValueError(f"train.lr_steps must be increasing, got {list(train.lr_steps)}")


def merge(raw: dict, overrides: Mapping | None) -> dict:
    """`raw` with `overrides` (`{"train": {"steps": 8}}`) merged in, section by section."""
    raw = copy.deepcopy(raw)
    for section, values in (overrides or {}).items():
        if isinstance(values, Mapping):
            raw.setdefault(section, {}).update(values)
        else:
            raw[section] = values
    return raw


def load_config(path: str | Path, overrides: Mapping | None = None) -> Config:
    """Read a YAML (a path, or the name of a shipped config such as `raccoon_tiny`), merge
    `overrides` and validate it."""
    path = Path(path)
    if not path.is_file() and (CONFIGS / f"{path}.yaml").is_file():
        path = CONFIGS / f"{path}.yaml"
    if not path.is_file():
        raise FileNotFoundError(f"--config {path} does not exist (shipped configs: "
                                f"{', '.join(sorted(p.stem for p in CONFIGS.glob('*.yaml')))})")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise ValueError(f"{path}: not valid YAML ({err})") from None
    if not isinstance(raw, dict):
        raise ValueError(f"{path}: a detection config is a mapping with model/data/train/eval")
    return from_dict(merge(raw, overrides), str(path))
