"""EfficientNet and EfficientNetV2 as data: base rows, compound-scaling coefficients, rounding.

Tan & Le 2019 ("EfficientNet", Table 1 and section 3.3) scale one base network, B0, by a
width, depth and resolution coefficient; Tan & Le 2021 ("EfficientNetV2", Table 4) add
Fused-MBConv rows. A named model is a base table and four numbers; `expand_blocks` turns
them into one row per block with filters and repeats rounded as the reference
implementations (TF TPU models, keras.applications, timm) round them.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field


@dataclass(frozen=True)
class StageRow:
    """One stage of a base table: `repeats` blocks of one kind ("mbconv" or "fused")."""

    kind: str
    kernel: int
    repeats: int
    filters_in: int
    filters_out: int
    expand_ratio: int
    stride: int
    se_ratio: float


@dataclass(frozen=True)
class EfficientNetSpec:
    """One named EfficientNet: base rows scaled by (width, depth) at `resolution`.

    `version` 1 rounds filters with the "never below 90 %" correction of EfficientNet (V1);
    version 2 rounds without it and counts the stochastic-depth denominator on unscaled
    repeats, as EfficientNetV2 does. `bn_momentum` is the reference's (Keras convention).
    """

    name: str
    rows: tuple[StageRow, ...]
    width: float
    depth: float
    resolution: int
    dropout: float
    version: int = 1
    stem_filters: int = 32
    head_filters: int = 1280
    bn_epsilon: float = 1e-3
    bn_momentum: float = 0.99
    activation: str = "swish"
    classes: int = 1000
    paper: dict = field(default_factory=dict)

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return (self.resolution, self.resolution, 3)

    @property
    def total_stride(self) -> int:
        return 2 * math.prod(r.stride for r in self.rows)

    @property
    def dataset(self) -> str:
        return "imagenet"

    @property
    def num_layers(self) -> int:
        """Weighted layers on the main path: stem, each block's convolutions, head conv, fc."""
        convs = {"mbconv": lambda r: 3 if r.expand_ratio != 1 else 2,
                 "fused": lambda r: 2 if r.expand_ratio != 1 else 1}
        return 3 + sum(convs[b.kind](b) for b in expand_blocks(self))

    def round_filters(self, filters: int, divisor: int = 8) -> int:
        """Scaled width rounded to a multiple of `divisor` (V1 adds one step where rounding
        down lost more than 10 %)."""
        scaled = filters * self.width
        new = max(divisor, int(scaled + divisor / 2) // divisor * divisor)
        if self.version == 1 and new < 0.9 * scaled:
            new += divisor
        return int(new)

    def round_repeats(self, repeats: int) -> int:
        """Scaled depth, rounded up (section 3.3)."""
        return int(math.ceil(self.depth * repeats))

    def replace(self, **changes) -> EfficientNetSpec:
        """A copy with some fields changed; unknown fields are refused."""
        valid = {f.name for f in dataclasses.fields(self)}
        unknown = sorted(set(changes) - valid)
        if unknown:
            raise ValueError(f"unknown spec override(s) {unknown}; valid: {sorted(valid)}")
        return dataclasses.replace(self, **changes)


@dataclass(frozen=True)
class BlockRow:
    """One block after scaling: its name (keras.applications' `block2a`), stage and options."""

    name: str
    stage: int
    kind: str
    kernel: int
    filters_in: int
    filters_out: int
    expand_ratio: int
    stride: int
    se_ratio: float
    drop_rate: float


def expand_blocks(spec: EfficientNetSpec, drop_path_rate: float = 0.2) -> list[BlockRow]:
    """Every block of `spec`, first of each stage strided, with linearly growing drop rates."""
    repeats = [spec.round_repeats(r.repeats) for r in spec.rows]
    total = float(sum(repeats) if spec.version == 1 else sum(r.repeats for r in spec.rows))
    out, b = [], 0
    for i, (row, n) in enumerate(zip(spec.rows, repeats, strict=True)):
        f_in, f_out = spec.round_filters(row.filters_in), spec.round_filters(row.filters_out)
        for j in range(n):
            out.append(BlockRow(f"block{i + 1}{chr(97 + j)}", i, row.kind, row.kernel,
                                f_in if j == 0 else f_out, f_out, row.expand_ratio,
                                row.stride if j == 0 else 1, row.se_ratio,
                                drop_path_rate * b / total))
            b += 1
    return out


def _rows(kind_rows) -> tuple[StageRow, ...]:
    return tuple(StageRow(*r) for r in kind_rows)


# EfficientNet paper Table 1 (B0): kind, kernel, repeats, in, out, expansion, stride, SE.
B0_ROWS = _rows([
    ("mbconv", 3, 1, 32, 16, 1, 1, 0.25), ("mbconv", 3, 2, 16, 24, 6, 2, 0.25),
    ("mbconv", 5, 2, 24, 40, 6, 2, 0.25), ("mbconv", 3, 3, 40, 80, 6, 2, 0.25),
    ("mbconv", 5, 3, 80, 112, 6, 1, 0.25), ("mbconv", 5, 4, 112, 192, 6, 2, 0.25),
    ("mbconv", 3, 1, 192, 320, 6, 1, 0.25),
])
# EfficientNetV2 paper Table 4 (S) and the reference code's M, L and B0 base rows.
_F, _M = "fused", "mbconv"
V2_ROWS = {
    "s": _rows([(_F, 3, 2, 24, 24, 1, 1, 0), (_F, 3, 4, 24, 48, 4, 2, 0),
                (_F, 3, 4, 48, 64, 4, 2, 0), (_M, 3, 6, 64, 128, 4, 2, 0.25),
                (_M, 3, 9, 128, 160, 6, 1, 0.25), (_M, 3, 15, 160, 256, 6, 2, 0.25)]),
    "m": _rows([(_F, 3, 3, 24, 24, 1, 1, 0), (_F, 3, 5, 24, 48, 4, 2, 0),
                (_F, 3, 5, 48, 80, 4, 2, 0), (_M, 3, 7, 80, 160, 4, 2, 0.25),
                (_M, 3, 14, 160, 176, 6, 1, 0.25), (_M, 3, 18, 176, 304, 6, 2, 0.25),
                (_M, 3, 5, 304, 512, 6, 1, 0.25)]),
    "l": _rows([(_F, 3, 4, 32, 32, 1, 1, 0), (_F, 3, 7, 32, 64, 4, 2, 0),
                (_F, 3, 7, 64, 96, 4, 2, 0), (_M, 3, 10, 96, 192, 4, 2, 0.25),
                (_M, 3, 19, 192, 224, 6, 1, 0.25), (_M, 3, 25, 224, 384, 6, 2, 0.25),
                (_M, 3, 7, 384, 640, 6, 1, 0.25)]),
    "b": _rows([(_F, 3, 1, 32, 16, 1, 1, 0), (_F, 3, 2, 16, 32, 4, 2, 0),
                (_F, 3, 2, 32, 48, 4, 2, 0), (_M, 3, 3, 48, 96, 4, 2, 0.25),
                (_M, 3, 5, 96, 112, 6, 1, 0.25), (_M, 3, 8, 112, 192, 6, 2, 0.25)]),
}

# (width, depth, resolution, dropout): EfficientNet section 3.3 / the reference's params table.
V1_COEFFICIENTS = {
    "b0": (1.0, 1.0, 224, 0.2), "b1": (1.0, 1.1, 240, 0.2), "b2": (1.1, 1.2, 260, 0.3),
    "b3": (1.2, 1.4, 300, 0.3), "b4": (1.4, 1.8, 380, 0.4), "b5": (1.6, 2.2, 456, 0.4),
    "b6": (1.8, 2.6, 528, 0.5), "b7": (2.0, 3.1, 600, 0.5),
}
V2_COEFFICIENTS = {
    "b0": (1.0, 1.0, 224, 0.2), "b1": (1.0, 1.1, 240, 0.2), "b2": (1.1, 1.2, 260, 0.3),
    "b3": (1.2, 1.4, 300, 0.3), "s": (1.0, 1.0, 384, 0.2), "m": (1.0, 1.0, 480, 0.3),
    "l": (1.0, 1.0, 480, 0.4),
}
# Published parameters and FLOPs (multiply-adds): EfficientNet Table 2, EfficientNetV2 Table 7.
_V1_PAPER = {"b0": ("5.3M", 0.39), "b1": ("7.8M", 0.70), "b2": ("9.2M", 1.0),
             "b3": ("12M", 1.8), "b4": ("19M", 4.2), "b5": ("30M", 9.9), "b6": ("43M", 19.0),
             "b7": ("66M", 37.0)}
_V2_PAPER = {"s": ("22M", 8.8), "m": ("54M", 24.0), "l": ("120M", 53.0)}


def _v1(variant: str) -> EfficientNetSpec:
    w, d, r, p = V1_COEFFICIENTS[variant]
    params, gflops = _V1_PAPER[variant]
    return EfficientNetSpec(f"efficientnet_{variant}", B0_ROWS, w, d, r, p,
                            paper={"params": params, "gflops": gflops,
                                   "source": "EfficientNet Table 2"})


def _v2(variant: str) -> EfficientNetSpec:
    w, d, r, p = V2_COEFFICIENTS[variant]
    rows = V2_ROWS["b" if variant.startswith("b") else variant]
    paper = {}
    if variant in _V2_PAPER:
        paper = {"params": _V2_PAPER[variant][0], "gflops": _V2_PAPER[variant][1],
                 "source": "EfficientNetV2 Table 7"}
    return EfficientNetSpec(f"efficientnetv2_{variant}", rows, w, d, r, p, version=2,
                            stem_filters=rows[0].filters_in, bn_momentum=0.9, paper=paper)


EFFICIENTNET_SPECS: dict[str, EfficientNetSpec] = {
    s.name: s for s in [*(_v1(v) for v in V1_COEFFICIENTS), *(_v2(v) for v in V2_COEFFICIENTS)]
}


def camel_name(name: str) -> str:
    """efficientnet_b3 -> EfficientNetB3, efficientnetv2_s -> EfficientNetV2S (keras.applications)."""
    variant = name.split("_", 1)[1].upper()
    return ("EfficientNetV2" if name.startswith("efficientnetv2") else "EfficientNet") + variant


def is_efficientnet(name_or_spec) -> bool:
    """Whether a model name or spec is one of these rows (the ResNet code paths dispatch here)."""
    if isinstance(name_or_spec, EfficientNetSpec):
        return True
    return isinstance(name_or_spec, str) and \
        name_or_spec.lower().replace("-", "_") in EFFICIENTNET_SPECS
