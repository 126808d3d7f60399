"""Name mapping between checkpoint layouts and this library's layers, and the checked copy.

Every layout is first translated into canonical keys ("stem.conv", "s3.b2.bn1",
"s4.b1.down.conv", "s2.b1.preact_bn", "post_bn", "fc"), each holding HWIO kernels and
biases, or BN gamma/beta/mean/var; `assign` then copies them into a model, listing every
missing, unexpected or mis-shaped entry at once.
"""

from __future__ import annotations

import re
from collections import defaultdict

import keras
import numpy as np

from keras_resnet_suite.compat import flatten_layers
from keras_resnet_suite.squeeze_excite import SqueezeExcite

BN_FIELDS = ("gamma", "beta", "mean", "var")


def model_targets(model: keras.Model) -> dict[str, keras.layers.Layer]:
    """Canonical key -> Conv2D / BatchNormalization / Dense layer of a model of this library."""
    out = {}
    names = {layer.name for layer in model.layers}

    def chain(prefix, layers):
        for layer in layers:
            if isinstance(layer, (keras.layers.Conv2D, keras.layers.BatchNormalization)):
                out[prefix + layer.name] = layer
            elif hasattr(layer, "param_layers"):  # Res2Net's MultiScaleConv
                out.update({prefix + k: v for k, v in layer.param_layers().items()})
            elif isinstance(layer, SqueezeExcite):  # SE-ResNet / ResNet-RS
                out[prefix + "se.reduce"], out[prefix + "se.expand"] = layer.reduce, layer.expand

    if "conv1" in names:
        chain("stem.", model.get_layer("conv1").chain)
    for k in range(2, 6):
        if f"conv{k}_x" not in names:
            continue
        for i, block in enumerate(model.get_layer(f"conv{k}_x").blocks, start=1):
            prefix = f"s{k}.b{i}."
            chain(prefix, block.branch)
            if getattr(block, "preact", False):
                out[prefix + "preact_bn"] = block.pre[0]
            if block.residual:
                for layer in block.shortcut.chain:
                    out[prefix + ("down.conv" if layer.name == "conv" else "down.bn")] = layer
    for name, key in (("post_bn", "post_bn"), ("predictions", "fc")):
        if name in names:
            out[key] = model.get_layer(name)
    return out


# --- torchvision / timm / CIFAR ResNets -----------------------------------------------------
# The CIFAR ResNets of akamaster/pytorch_resnet_cifar10 share torchvision's names (conv1, bn1,
# layer1.0.conv1, ...) with a `linear` head; their option-A shortcuts have no parameters.

# Res2Net's hierarchical 3x3 (timm's Bottle2neck) holds `convs.i` / `bns.i` instead of conv2/bn2.
# timm's SE module (SE-ResNet, ResNet-RS) holds `se.fc1` / `se.fc2`, 1x1 convolutions with biases.
_TORCH_BLOCK = re.compile(r"layer(\d)\.(\d+)\.(conv\d|bn\d|convs\.\d+|bns\.\d+|se\.fc[12]|"
                          r"downsample\.[012])\.(\w+)$")
_SE = {"se.fc1": "se.reduce", "se.fc2": "se.expand"}
_TORCH_BN = {"weight": "gamma", "bias": "beta", "running_mean": "mean", "running_var": "var"}
# timm's ResNet-D: a deep stem `conv1 = Sequential(conv, bn, relu, conv, bn, relu, conv)` and
# `downsample = Sequential(AvgPool2d, conv, bn)`.
# ResNet-RS replaces the max-pool by `maxpool = Sequential(conv, bn, relu)`.
_DEEP_STEM = {"conv1.0": "stem.conv1", "conv1.1": "stem.bn1", "conv1.3": "stem.conv2",
              "conv1.4": "stem.bn2", "conv1.6": "stem.conv"}
_STEM_POOL = {"maxpool.0": "stem.pool_conv", "maxpool.1": "stem.pool_bn"}
_DOWN = {False: {"downsample.0": "down.conv", "downsample.1": "down.bn"},
         True: {"downsample.1": "down.conv", "downsample.2": "down.bn"}}


def _torch_key(key: str, avg_down: bool = False) -> tuple[str, str] | None:
    """torchvision/timm/CIFAR key -> (canonical key, field), None when it is no parameter of ours.

    `avg_down`: the checkpoint's projections are ResNet-D's (pool, conv, bn)."""
    if key.endswith("num_batches_tracked"):
        return "", ""
    head, _, field = key.rpartition(".")
    head = _DEEP_STEM.get(head, _STEM_POOL.get(head, head))
    if head in ("conv1", "stem.conv1", "stem.conv2", "stem.conv", "stem.pool_conv") and \
            field in ("weight", "bias"):
        return ("stem.conv" if head == "conv1" else head), ("kernel" if field == "weight"
                                                            else "bias")
    if head in ("bn1", "stem.bn1", "stem.bn2", "stem.pool_bn") and field in _TORCH_BN:
        return ("stem.bn" if head == "bn1" else head), _TORCH_BN[field]
    if head in ("fc", "linear") and field in ("weight", "bias"):  # linear: CIFAR ResNets
        return "fc", "kernel" if field == "weight" else "bias"
    m = _TORCH_BLOCK.match(key)
    if not m:
        return None
    stage, block, part, field = m.groups()
    prefix = f"s{int(stage) + 1}.b{int(block) + 1}."
    part = _DOWN[avg_down].get(part, _SE.get(part, part))
    if part.startswith("downsample"):
        return None
    if "conv" in part or part.startswith("se."):
        conv_fields = {"weight": "kernel", "bias": "bias"}
        return (prefix + part, conv_fields[field]) if field in conv_fields else None
    return (prefix + part, _TORCH_BN[field]) if field in _TORCH_BN else None


def canonical_from_torch(state: dict[str, np.ndarray]) -> tuple[dict, dict, list[str]]:
    """(canonical params, canonical key -> source key prefix, unexpected source keys)."""
    params: dict = defaultdict(dict)
    origin, unexpected = {}, []
    avg_down = any(".downsample.2." in key for key in state)
    for key, value in state.items():
        mapped = _torch_key(key, avg_down)
        if mapped is None:
            unexpected.append(key)
            continue
        canon, field = mapped
        if not canon:
            continue
        value = np.asarray(value, dtype="float32")
        if field == "kernel":
            # OIHW -> HWIO (grouped convolutions: O, I/g, H, W -> H, W, I/g, O alike).
            value = value.transpose(2, 3, 1, 0) if value.ndim == 4 else value.T
        params[canon][field] = value
        origin[canon] = key.rsplit(".", 1)[0]
    return dict(params), origin, unexpected


def torch_name(canon: str, deep_stem: bool = False, avg_down: bool = False) -> str:
    """The torchvision (timm for ResNet-D) module name of a canonical key."""
    fixed = {"stem.conv": "conv1", "stem.bn": "bn1", "fc": "fc"}
    if deep_stem:
        fixed.update({v: k for k, v in _DEEP_STEM.items()})
    fixed.update({v: k for k, v in _STEM_POOL.items()})
    if canon in fixed:
        return fixed[canon]
    m = re.match(r"s(\d)\.b(\d+)\.(.+)$", canon)
    if not m:
        return canon
    renamed = {v: k for k, v in {**_DOWN[avg_down], **_SE}.items()}
    part = renamed.get(m[3], m[3])
    return f"layer{int(m[1]) - 1}.{int(m[2]) - 1}.{part}"


# --- keras.applications ------------------------------------------------------------------

_KERAS_BLOCK = re.compile(r"conv(\d)_block(\d+)_(\d|preact)_(conv|bn)$")


def canonical_from_keras(layers: dict[str, list[np.ndarray]]) -> tuple[dict, dict, list[str]]:
    """keras.applications ResNet/ResNetV2 layer weights -> canonical params."""
    params, origin, unexpected = {}, {}, []
    for name, values in layers.items():
        values = [np.asarray(v, dtype="float32") for v in values]
        if name in ("conv1_conv", "conv1_bn"):
            canon = "stem." + name[6:]
        elif name in ("post_bn", "predictions"):
            canon = "fc" if name == "predictions" else name
        else:
            m = _KERAS_BLOCK.match(name)
            if not m:
                unexpected.append(name)
                continue
            stage, block, index, kind = m.groups()
            prefix = f"s{stage}.b{block}."
            if index == "preact":
                canon = prefix + "preact_bn"
            elif index == "0":
                canon = prefix + "down." + kind
            else:
                canon = prefix + kind + index
        if "bn" in canon.rsplit(".", 1)[-1]:
            params[canon] = dict(zip(BN_FIELDS, values, strict=True))
        else:
            params[canon] = dict(zip(("kernel", "bias"), values, strict=False))
        origin[canon] = name
    return params, origin, unexpected


def keras_name(canon: str) -> str:
    """The keras.applications layer name of a canonical key (for error messages)."""
    fixed = {"stem.conv": "conv1_conv", "stem.bn": "conv1_bn", "fc": "predictions",
             "post_bn": "post_bn"}
    if canon in fixed:
        return fixed[canon]
    m = re.match(r"s(\d)\.b(\d+)\.(.+)$", canon)
    if not m:
        return canon
    part = {"down.conv": "0_conv", "down.bn": "0_bn", "preact_bn": "preact_bn"}.get(m[3])
    part = part or re.sub(r"^(conv|bn)(\d)$", r"\2_\1", m[3])
    return f"conv{m[1]}_block{m[2]}_{part}"


# --- the checked copy --------------------------------------------------------------------

def _stage_depths(keys) -> tuple[int, ...]:
    depth: dict[int, int] = {}
    for key in keys:
        m = re.match(r"s(\d)\.b(\d+)\.", key)
        if m:
            depth[int(m[1])] = max(depth.get(int(m[1]), 0), int(m[2]))
    return tuple(depth[k] for k in sorted(depth))


def _bn_after(canon: str) -> str | None:
    if canon.endswith("down.conv"):
        return canon[:-4] + "bn"
    m = re.match(r"(.*)conv(\d?)$", canon)
    return f"{m[1]}bn{m[2]}" if m else None


def assign(model: keras.Model, params: dict, origin: dict, unexpected: list[str], *,
           source: str, namer=lambda c: c) -> None:
    """Copy canonical `params` into `model`, or raise one error listing every problem.

    A bias the model's convolution lacks is folded into the BN that follows it
    (BN(Wx + b) is BN'(Wx) with mean' = mean - b), which is exact; a classifier the
    model does not have (include_top=False, backbones) is skipped.
    """
    targets = model_targets(model)
    params = {k: dict(v) for k, v in params.items()}
    extra = [origin[k] for k in params if k not in targets and k != "fc"]
    missing = [namer(k) for k in targets if k not in params]
    problems = []
    for canon in [k for k in params if k in targets]:
        layer, value = targets[canon], params[canon]
        if isinstance(layer, keras.layers.Conv2D) and "bias" in value and not layer.use_bias:
            bn = _bn_after(canon)
            if bn in params and bn in targets:
                params[bn]["mean"] = params[bn]["mean"] - value.pop("bias")
            elif np.any(value["bias"]):
                problems.append(f"{origin[canon]}: the checkpoint has a bias but the model's "
                                "convolution has none (build with conv_bias=True)")
    shapes = []
    updates = []
    for canon, layer in targets.items():
        if canon not in params:
            continue
        value = params[canon]
        if isinstance(layer, keras.layers.BatchNormalization):
            arrays = [value.get(f) for f in BN_FIELDS]
        else:
            bias = value.get("bias")
            if layer.use_bias and bias is None:
                bias = np.zeros(layer.bias.shape, "float32")
            arrays = [value.get("kernel")] + ([bias] if layer.use_bias else [])
        if any(a is None for a in arrays):
            problems.append(f"{origin[canon]}: incomplete entry (has {sorted(value)})")
            continue
        wanted = [tuple(w.shape) for w in layer.weights]
        got = [tuple(a.shape) for a in arrays]
        if wanted != got:
            shapes.append(f"{origin[canon]}: checkpoint {got} vs model {wanted} "
                          f"({layer.path})")
            continue
        updates.append((layer, arrays))
    unexpected = list(unexpected) + extra
    if missing or unexpected or shapes or problems:
        lines = [f"{source} does not fit model {model.name!r}:"]
        have, want = _stage_depths(params), _stage_depths(targets)
        if have != want:
            lines.append(f"  architecture mismatch: blocks per stage {have} in the checkpoint, "
                         f"{want} in the model")
        for title, items in (("missing", missing), ("unexpected", unexpected),
                             ("wrong shape", shapes), ("other", problems)):
            if items:
                shown = ", ".join(items[:12]) + (f", ... ({len(items)} in all)"
                                                 if len(items) > 12 else "")
                lines.append(f"  {title}: {shown}")
        raise ValueError("\n".join(lines))
    for layer, arrays in updates:
        layer.set_weights(arrays)


def torch_layout(model: keras.Model) -> dict[str, bool]:
    """`torch_name`'s layout flags for `model`: ResNet-D's deep stem and pooled shortcuts."""
    sublayers = flatten_layers(model)
    return {"deep_stem": "stem.conv1" in model_targets(model),
            "avg_down": any(getattr(layer, "avg_down", False) for layer in sublayers)}


def torch_state_from_model(model: keras.Model) -> dict[str, np.ndarray]:
    """This library's model as a torchvision-layout state dict (numpy, OIHW kernels)."""
    out = {}
    layout = torch_layout(model)
    for canon, layer in model_targets(model).items():
        name = torch_name(canon, **layout)
        values = [keras.ops.convert_to_numpy(w) for w in layer.weights]
        if isinstance(layer, keras.layers.BatchNormalization):
            for field, value in zip(("weight", "bias", "running_mean", "running_var"), values,
                                    strict=True):
                out[f"{name}.{field}"] = value
            continue
        kernel = values[0]
        out[f"{name}.weight"] = kernel.transpose(3, 2, 0, 1) if kernel.ndim == 4 else kernel.T
        if len(values) > 1:
            out[f"{name}.bias"] = values[1]
    return out
