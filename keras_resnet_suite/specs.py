"""Architectures as data: one row per named model (paper Table 1, section 4.2 and the family).

A spec says *what* a network is; `models.build` says *how* to assemble it. Adding a
variant is adding a row, never a new block function.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from .efficientnet_specs import EFFICIENTNET_SPECS
from .efficientnet_specs import camel_name as efficientnet_camel_name


@dataclass(frozen=True)
class ResNetSpec:
    """One named architecture.

    `widths` are each stage's base widths: a basic block outputs `width` channels, a
    bottleneck `4 * width` with an inner width of `width * width_per_group / 64 * groups`
    (ResNeXt, Wide ResNet). `residual=False` gives the paper's plain networks. `scale > 1`
    makes the bottleneck's 3x3 Res2Net's hierarchical one over `scale` groups of that inner
    width each (Gao et al. 2019; timm's `base_width` is `width_per_group`).
    """

    name: str
    block: str  # "basic" | "bottleneck"
    depths: tuple[int, ...]
    widths: tuple[int, ...]
    # "imagenet": 7x7/2 conv + 3x3/2 max-pool; "deep": three 3x3 convs (the first /2) + the
    # max-pool (ResNet-C/D, He et al. 2019 "Bag of Tricks"); "cifar": one 3x3/1 conv
    stem: str = "imagenet"
    stem_width: int = 64
    preact: bool = False  # pre-activation blocks (He et al. 2016, "Identity Mappings")
    residual: bool = True
    groups: int = 1
    width_per_group: int = 64
    shortcut: str = "B"  # default shortcut option for this family (paper section 3.3)
    avg_down: bool = False  # strided projections average-pool 2x2 first, then 1x1/1 (ResNet-D)
    scale: int = 1  # Res2Net's scale s: the 3x3 split into s groups (1: an ordinary bottleneck)
    se_ratio: float = 0.0  # squeeze-and-excitation on each block's output (0: none; ResNet-RS)
    stem_pool: str = "max"  # "conv": a 3x3/2 conv + BN + ReLU instead of the max-pool (ResNet-RS)
    classes: int = 1000
    input_shape: tuple[int, int, int] = (224, 224, 3)
    paper: dict = field(default_factory=dict)  # published figures: params, gflops, source

    @property
    def dataset(self) -> str:
        return "cifar" if self.stem == "cifar" else "imagenet"

    @property
    def total_stride(self) -> int:
        """Down-sampling factor from input to the last feature map."""
        stem = 1 if self.stem == "cifar" else 4
        return stem * 2 ** (len(self.depths) - 1)

    @property
    def num_layers(self) -> int:
        """Weighted layers as the paper counts them (convolutions on the main path + fc)."""
        per_block = 2 if self.block == "basic" else 3
        return 1 + per_block * sum(self.depths) + 1

    def replace(self, **changes) -> ResNetSpec:
        """A copy with some fields changed (depths, widths, ...); unknown fields are refused."""
        valid = {f.name for f in dataclasses.fields(self)}
        unknown = sorted(set(changes) - valid)
        if unknown:
            raise ValueError(f"unknown spec override(s) {unknown}; valid: {sorted(valid)}")
        return dataclasses.replace(self, **changes)


def _paper(params: str | None = None, gflops: float | None = None, src: str = "") -> dict:
    return {k: v for k, v in {"params": params, "gflops": gflops, "source": src}.items() if v}


_IMAGENET_WIDTHS = (64, 128, 256, 512)
_CIFAR_WIDTHS = (16, 32, 64)


def _imagenet(name, block, depths, **kw) -> ResNetSpec:
    return ResNetSpec(name=name, block=block, depths=depths, widths=_IMAGENET_WIDTHS, **kw)


def _resnet_d(name, block, depths, **kw) -> ResNetSpec:
    """ResNet-D (He et al. 2019, "Bag of Tricks", section 4.1): deep 32-32-64 stem and
    average-pooled projection shortcuts; timm's `resnet*d` layout."""
    return _imagenet(name, block, depths, stem="deep", avg_down=True, **kw)


def _res2net(name, depths, width, scale, deep=False, **kw) -> ResNetSpec:
    """Res2Net (Gao et al. 2019, "Res2Net: A New Multi-scale Backbone Architecture", TPAMI):
    `scale` groups of `width` channels per 3x3 at the first stage's base width 64, timm's
    `res2net*_{width}w_{scale}s`; `deep` adds ResNet-D's stem and shortcuts (timm's `*d`)."""
    make = _resnet_d if deep else _imagenet
    return make(name, "bottleneck", depths, width_per_group=width, scale=scale, **kw)


_R2 = "Res2Net authors' pretrained-model table"


def _resnet_rs(name, depths, size, params, gflops, drop_path, dropout) -> ResNetSpec:
    """ResNet-RS (Bello et al. 2021, "Revisiting ResNets"): ResNet-D with a convolutional stem
    pool and SE (ratio 0.25) in every bottleneck. `size`: timm's training input size; `params`:
    timm's count; `gflops`: the paper's FLOPs at that size (a multiply-add counted as two),
    halved to multiply-adds; `drop_path` / `dropout`: the recipe's stochastic-depth and
    classifier-dropout rates (as the authors' configs and keras 2's ResNetRS builders give them)."""
    return _resnet_d(name, "bottleneck", depths, se_ratio=0.25, stem_pool="conv",
                     input_shape=(size, size, 3),
                     paper={**_paper(params, gflops and gflops / 2, _RS),
                            "drop_path_rate": drop_path, "dropout": dropout})


_RS = "params: timm; GMACs: ResNet-RS paper's FLOPs / 2"


# The -350 row's size is timm's 288; the paper reports that model at 256 and 320 only.
RESNET_RS = [
    _resnet_rs("resnetrs50", (3, 4, 6, 3), 160, "35.7M", 4.6, 0.0, 0.25),
    _resnet_rs("resnetrs101", (3, 4, 23, 3), 192, "63.6M", 12.0, 0.0, 0.25),
    _resnet_rs("resnetrs152", (3, 8, 36, 3), 256, "86.6M", 31.0, 0.0, 0.25),
    _resnet_rs("resnetrs200", (3, 24, 36, 3), 256, "93.2M", 40.0, 0.1, 0.25),
    _resnet_rs("resnetrs270", (4, 29, 53, 4), 256, "129.9M", 54.0, 0.1, 0.25),
    _resnet_rs("resnetrs350", (4, 36, 72, 4), 288, "164.0M", None, 0.1, 0.4),
    _resnet_rs("resnetrs420", (4, 44, 87, 4), 320, "191.9M", 128.0, 0.1, 0.4),
]


def _cifar(name, n, residual=True, **kw) -> ResNetSpec:
    """The paper's CIFAR family (section 4.2): 6n+2 layers, option A shortcuts."""
    return ResNetSpec(
        name=name, block="basic", depths=(n, n, n), widths=_CIFAR_WIDTHS, stem="cifar",
        stem_width=16, residual=residual, shortcut="A", classes=10, input_shape=(32, 32, 3), **kw,
    )


SPECS: dict[str, ResNetSpec] = {
    s.name: s
    for s in [
        # ImageNet, paper Table 1 (GFLOPs there are multiply-adds with stride on the first 1x1).
        _imagenet("resnet18", "basic", (2, 2, 2, 2), paper=_paper("11.7M", 1.8, "Table 1")),
        _imagenet("resnet34", "basic", (3, 4, 6, 3), paper=_paper("21.8M", 3.6, "Table 1")),
        _imagenet("resnet50", "bottleneck", (3, 4, 6, 3), paper=_paper("25.6M", 3.8, "Table 1")),
        _imagenet("resnet101", "bottleneck", (3, 4, 23, 3), paper=_paper("44.5M", 7.6, "Table 1")),
        _imagenet("resnet152", "bottleneck", (3, 8, 36, 3), paper=_paper("60.2M", 11.3, "Table 1")),
        _imagenet("plain18", "basic", (2, 2, 2, 2), residual=False, paper=_paper(None, 1.8, "Table 1")),
        _imagenet("plain34", "basic", (3, 4, 6, 3), residual=False, paper=_paper(None, 3.6, "Table 1")),
        # ResNet-D (He et al. 2019); parameter counts as timm's resnet18d ... resnet152d.
        _resnet_d("resnet18d", "basic", (2, 2, 2, 2), paper=_paper("11.7M", None, "timm")),
        _resnet_d("resnet34d", "basic", (3, 4, 6, 3), paper=_paper("21.8M", None, "timm")),
        _resnet_d("resnet50d", "bottleneck", (3, 4, 6, 3),
                  paper=_paper("25.6M", 4.3, "Bag of Tricks Table 5")),
        _resnet_d("resnet101d", "bottleneck", (3, 4, 23, 3), paper=_paper("44.6M", None, "timm")),
        _resnet_d("resnet152d", "bottleneck", (3, 8, 36, 3), paper=_paper("60.2M", None, "timm")),
        # Pre-activation (He et al. 2016, "Identity Mappings in Deep Residual Networks").
        _imagenet("resnet50v2", "bottleneck", (3, 4, 6, 3), preact=True),
        _imagenet("resnet101v2", "bottleneck", (3, 4, 23, 3), preact=True),
        _imagenet("resnet152v2", "bottleneck", (3, 8, 36, 3), preact=True),
        # ResNeXt (Xie et al. 2017) and Wide ResNet (Zagoruyko & Komodakis 2016).
        _imagenet("resnext50_32x4d", "bottleneck", (3, 4, 6, 3), groups=32, width_per_group=4,
                  paper=_paper("25.0M", 4.2, "ResNeXt Table 1")),
        _imagenet("resnext101_32x8d", "bottleneck", (3, 4, 23, 3), groups=32, width_per_group=8),
        _imagenet("wide_resnet50_2", "bottleneck", (3, 4, 6, 3), width_per_group=128),
        # Res2Net (Gao et al. 2019, "Res2Net: A New Multi-scale Backbone Architecture", TPAMI
        # 43(2)): parameters and GFLOPs (multiply-adds at 224) from the authors' table of their
        # pretrained models (github.com/Res2Net/Res2Net-PretrainedModels); -D rows: timm's.
        _res2net("res2net50_26w_4s", (3, 4, 6, 3), 26, 4, paper=_paper("25.70M", 4.2, _R2)),
        _res2net("res2net50_48w_2s", (3, 4, 6, 3), 48, 2, paper=_paper("25.29M", 4.2, _R2)),
        _res2net("res2net50_14w_8s", (3, 4, 6, 3), 14, 8, paper=_paper("25.06M", 4.2, _R2)),
        _res2net("res2net50_26w_6s", (3, 4, 6, 3), 26, 6, paper=_paper("37.05M", 6.3, _R2)),
        _res2net("res2net50_26w_8s", (3, 4, 6, 3), 26, 8, paper=_paper("48.40M", 8.3, _R2)),
        _res2net("res2net101_26w_4s", (3, 4, 23, 3), 26, 4, paper=_paper("45.21M", 8.1, _R2)),
        _res2net("res2next50", (3, 4, 6, 3), 4, 4, groups=8, paper=_paper("24.67M", 4.2, _R2)),
        _res2net("res2net50d", (3, 4, 6, 3), 26, 4, deep=True, paper=_paper("25.7M", None, "timm")),
        _res2net("res2net101d", (3, 4, 23, 3), 26, 4, deep=True,
                 paper=_paper("45.2M", None, "timm")),
        # ResNet-RS (Bello et al. 2021): depths, sizes and stochastic-depth rates of the paper.
        *RESNET_RS,
        # CIFAR-10, paper section 4.2 and Table 6.
        _cifar("resnet20", 3, paper=_paper("0.27M", None, "Table 6")),
        _cifar("resnet32", 5, paper=_paper("0.46M", None, "Table 6")),
        _cifar("resnet44", 7, paper=_paper("0.66M", None, "Table 6")),
        _cifar("resnet56", 9, paper=_paper("0.85M", None, "Table 6")),
        _cifar("resnet110", 18, paper=_paper("1.7M", None, "Table 6")),
        _cifar("resnet1202", 200, paper=_paper("19.4M", None, "Table 6")),
        _cifar("plain20", 3, residual=False),
        _cifar("plain32", 5, residual=False),
        _cifar("plain44", 7, residual=False),
        _cifar("plain56", 9, residual=False),
        _cifar("plain110", 18, residual=False),
        # WRN-28-10: pre-activation basic blocks, widths 16k/32k/64k, projection shortcuts.
        ResNetSpec(name="wrn28_10", block="basic", depths=(4, 4, 4), widths=(160, 320, 640),
                   stem="cifar", stem_width=16, preact=True, classes=10, input_shape=(32, 32, 3),
                   paper=_paper("36.5M", None, "WRN Table 2")),
    ]
}


def available_models() -> list[str]:
    """Every model name that `build` accepts, in table order (EfficientNets last)."""
    return list(SPECS) + list(EFFICIENTNET_SPECS)


def get_spec(name: str) -> ResNetSpec:
    """The spec of `name`; a ValueError lists the valid names when it is unknown."""
    key = name.lower().replace("-", "_")
    if key in EFFICIENTNET_SPECS:
        return EFFICIENTNET_SPECS[key]
    if key not in SPECS:
        raise ValueError(f"unknown model name {name!r}; valid names: "
                         f"{', '.join(available_models())}")
    return SPECS[key]


def camel_name(name: str) -> str:
    """The builder name of a model: resnet50 -> ResNet50, plain34 -> PlainNet34,
    resnext50_32x4d -> ResNeXt50_32x4d, res2net50_26w_4s -> Res2Net50_26w_4s,
    resnetrs101 -> ResNetRS101, efficientnet_b3 -> EfficientNetB3."""
    if name in EFFICIENTNET_SPECS:
        return efficientnet_camel_name(name)
    for prefix, camel in (("res2next", "Res2NeXt"), ("res2net", "Res2Net"), ("resnext", "ResNeXt"),
                          ("wide_resnet", "WideResNet"), ("resnetrs", "ResNetRS"),
                          ("resnet", "ResNet"),
                          ("plain", "PlainNet"), ("wrn", "WRN")):
        if name.startswith(prefix):
            return camel + name[len(prefix):].replace("v2", "V2")
    raise AssertionError(name)
