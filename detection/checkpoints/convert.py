"""torchvision and detectron2 Faster R-CNN state dicts -> this package's detector.

Both libraries' names are first split into the ResNet trunk, which goes through
`keras_resnet_suite.convert` (canonical keys, OIHW -> HWIO, the checked copy), and the
detection parts, copied here layer by layer. What has to change on the way:
- frozen BN statistics are folded when the checkpoint's epsilon differs from the layer's
  (torchvision's v1 COCO weights use 0): `gamma / sqrt(var + eps)` becomes the scale with
  the variance set to `1 - eps_ours`, which is exact;
- detectron2 feeds BGR images: its stem kernel's input channels are reversed so the model
  takes RGB like every model here;
- torchvision's predictor rows hold the background first (91 classes): they move last, and
  the background's box deltas are dropped;
- the first FC layer after RoIAlign flattens NCHW in PyTorch, NHWC here: its input rows are
  permuted;
- Mask R-CNN's mask head (a model with a `mask_head`): PyTorch's ConvTranspose2d weight is
  `[in, out, kh, kw]` (Keras `[kh, kw, out, in]`), and torchvision's 91-map predictor's
  background map is dropped (ours predicts one map per object class).
Every missing, unexpected and mis-shaped key is listed in one error.
"""

from __future__ import annotations

import re

import keras
import numpy as np

from keras_resnet_suite.compat import flatten_layers
from keras_resnet_suite.convert import mapping

_D2_BLOCK = re.compile(r"res(\d)\.(\d+)\.(conv\d|shortcut)(\.norm)?\.(\w+)$")


def _detectron2_to_torchvision_resnet(key: str) -> str | None:
    """detectron2 ResNet key (`stem.conv1.norm.weight`, `res3.2.shortcut.weight`) ->
    torchvision's name, or None when it is not a trunk key."""
    if key.startswith("stem.conv1."):
        rest = key[len("stem.conv1."):]
        return f"bn1.{rest[5:]}" if rest.startswith("norm.") else f"conv1.{rest}"
    m = _D2_BLOCK.match(key)
    if not m:
        return None
    stage, block, part, norm, field = m.groups()
    layer = f"layer{int(stage) - 1}.{block}."
    if part == "shortcut":
        return layer + ("downsample.1." if norm else "downsample.0.") + field
    return layer + (f"bn{part[-1]}." if norm else f"{part}.") + field


def split_state(state: dict, library: str) -> tuple[dict, dict, dict]:
    """(trunk state in torchvision ResNet names, the other keys, torchvision trunk name ->
    the file's own name) of a detector state dict."""
    trunk, rest, names = {}, {}, {}
    for key, value in state.items():
        if key.endswith("num_batches_tracked"):
            continue
        name = None
        if library == "torchvision" and key.startswith("backbone.body."):
            name = key[len("backbone.body."):]
        elif library == "detectron2":
            for prefix in ("backbone.bottom_up.", "backbone.", "roi_heads."):
                if key.startswith(prefix):
                    name = _detectron2_to_torchvision_resnet(key[len(prefix):])
                    if name is not None:
                        break
        if name is None:
            rest[key] = value
        else:
            trunk[name] = value
            names[name] = key
    return trunk, rest, names


class _Parts:
    """The detector's ResNet stages as one object `mapping.model_targets` can walk."""

    def __init__(self, model):
        self.name = model.name
        self.layers = [layer for layer in model.backbone.layers
                       if layer.name == "conv1" or re.fullmatch(r"conv\d_x", layer.name)]
        res5 = getattr(model.roi_heads, "res5", None)
        if res5 is not None:
            self.layers.append(res5)

    def get_layer(self, name):
        return next(layer for layer in self.layers if layer.name == name)


def _fold_bn(params: dict, targets: dict, source_eps: float) -> None:
    """Rewrite BN statistics for the target layers' epsilon (see module doc)."""
    for key, value in params.items():
        layer = targets.get(key)
        if not isinstance(layer, keras.layers.BatchNormalization) or "var" not in value:
            continue
        if abs(float(layer.epsilon) - source_eps) < 1e-12:
            continue
        value["gamma"] = value["gamma"] / np.sqrt(value["var"] + source_eps)
        value["var"] = np.full_like(value["var"], 1.0 - float(layer.epsilon))


def load_trunk(model, trunk: dict, source: str, bn_epsilon: float, bgr: bool,
               names: dict | None = None) -> list[str]:
    """Copy the ResNet trunk (torchvision names) into the backbone (+ the C4 head's res5);
    returns the problems found (in the file's own names, via `names`) instead of raising."""
    names = names or {}

    def own(tv_name: str) -> str:  # a torchvision module or key name -> the file's
        for suffix in ("", ".weight", ".running_mean"):
            if tv_name + suffix in names:
                return names[tv_name + suffix][: len(names[tv_name + suffix]) - len(suffix)]
        return tv_name

    params, origin, unexpected = mapping.canonical_from_torch(trunk)
    origin = {k: own(v) for k, v in origin.items()}
    parts = _Parts(model)
    targets = mapping.model_targets(parts)
    params = {k: dict(v) for k, v in params.items()}
    _fold_bn(params, targets, bn_epsilon)
    if bgr and "stem.conv" in params:
        params["stem.conv"]["kernel"] = params["stem.conv"]["kernel"][:, :, ::-1, :]
    try:
        mapping.assign(parts, params, origin, [own(k) for k in unexpected], source=source,
                       namer=lambda canon: own(mapping.torch_name(canon)))
    except ValueError as err:
        return [line.strip() for line in str(err).splitlines()[1:]]
    return []


# --- detection parts ---------------------------------------------------------------------

def _conv(s: dict, key: str) -> list:
    """A PyTorch conv `key.weight` (OIHW) and `key.bias` if any -> Keras Conv2D arrays."""
    bias = s.get(f"{key}.bias")
    kernel = np.asarray(s[f"{key}.weight"], "float32").transpose(2, 3, 1, 0)
    return [kernel] + ([] if bias is None else [bias])


def _bn(s: dict, key: str) -> list:
    return [s[f"{key}.{f}"] for f in ("weight", "bias", "running_mean", "running_var")]


def _fc(s: dict, key: str, pooled: int = 0, channels: int | None = None) -> list:
    """A PyTorch Linear -> Dense arrays; with `pooled`, its input is an NCHW-flattened
    `[channels, pooled, pooled]` RoI feature, permuted to NHWC order."""
    w = np.asarray(s[f"{key}.weight"], "float32")
    if pooled:
        channels = channels or w.shape[1] // pooled**2
        kernel = w.reshape(len(w), channels, pooled, pooled).transpose(2, 3, 1, 0)
        return [kernel.reshape(-1, len(w)), s[f"{key}.bias"]]
    return [w.T, s[f"{key}.bias"]]


def _predictor(s: dict, key: str, background_first: bool, boxes: bool) -> list:
    """Class-score (`boxes=False`) or box-delta Dense arrays, the background moved last."""
    w = np.asarray(s[f"{key}.{'bbox_pred' if boxes else 'cls_score'}.weight"], "float32")
    b = np.asarray(s[f"{key}.{'bbox_pred' if boxes else 'cls_score'}.bias"], "float32")
    if background_first:
        keep = np.r_[4:len(w)] if boxes else np.r_[1:len(w), 0]
        w, b = w[keep], b[keep]
    return [w.T, b]


def _box_head(out: _Out, heads, s: dict, fc_keys: list[str], background_first: bool) -> None:
    for j, (fc, key) in enumerate(zip(heads.fcs, fc_keys, strict=True)):
        pooled = heads.pooled_size if j == 0 else 0
        out.put(fc.path, _fc, s, key, pooled, heads.conv_dims[-1] if heads.conv_dims else None)
    for layer, boxes in ((heads.cls, False), (heads.box, True)):
        out.put(layer.path, _predictor, s, "roi_heads.box_predictor", background_first, boxes)


def _torchvision_heads(model, s: dict) -> dict:
    """{our layer path: arrays} for torchvision's FPN, RPN head, box head and predictors."""
    fpn = model.backbone.get_layer("fpn")
    out = _Out()
    for i in range(4):
        for kind, ours, norms in (("inner", fpn.lateral, fpn.lateral_norms),
                                  ("layer", fpn.output_convs, fpn.output_norms)):
            out.put(ours[i].path, _conv, s, f"backbone.fpn.{kind}_blocks.{i}.0")
            if norms:
                out.put(norms[i].path, _bn, s, f"backbone.fpn.{kind}_blocks.{i}.1")
    head = model.rpn.head
    for j, conv in enumerate(head.convs):
        out.put(conv.path, _conv, s, f"rpn.head.conv.{j}.0")
    out.put(head.objectness.path, _conv, s, "rpn.head.cls_logits")
    out.put(head.deltas.path, _conv, s, "rpn.head.bbox_pred")
    heads = model.roi_heads
    for j, (conv, bn) in enumerate(zip(heads.convs, heads.conv_bns, strict=True)):
        out.put(conv.path, _conv, s, f"roi_heads.box_head.{j}.0")  # v2: conv, BN, ReLU
        out.put(bn.path, _bn, s, f"roi_heads.box_head.{j}.1")
    # v2: 4 conv blocks, a Flatten (index 4), then the FC (index 5); v1: fc6, fc7.
    fc_keys = ([f"roi_heads.box_head.{len(heads.convs) + 1}"] if heads.convs
               else ["roi_heads.box_head.fc6", "roi_heads.box_head.fc7"])
    _box_head(out, heads, s, fc_keys, background_first=True)
    return out


def _detectron2_heads(model, s: dict) -> dict:
    """{our layer path: arrays} for detectron2's FPN, RPN head, box head and predictors."""
    out = _Out()
    if "fpn" in [layer.name for layer in model.backbone.layers]:
        fpn = model.backbone.get_layer("fpn")
        for i in range(4):
            out.put(fpn.lateral[i].path, _conv, s, f"backbone.fpn_lateral{i + 2}")
            out.put(fpn.output_convs[i].path, _conv, s, f"backbone.fpn_output{i + 2}")
    head, p = model.rpn.head, "proposal_generator.rpn_head"
    out.put(head.conv.path, _conv, s, f"{p}.conv")
    out.put(head.objectness.path, _conv, s, f"{p}.objectness_logits")
    out.put(head.deltas.path, _conv, s, f"{p}.anchor_deltas")
    heads = model.roi_heads
    if hasattr(heads, "fcs"):
        _box_head(out, heads, s, [f"roi_heads.box_head.fc{j + 1}" for j in range(len(heads.fcs))],
                  background_first=False)
    else:  # C4: res5 went with the trunk; only the predictors are left
        for layer, boxes in ((heads.cls, False), (heads.box, True)):
            out.put(layer.path, _predictor, s, "roi_heads.box_predictor", False, boxes)
    return out


# Where each library keeps Mask R-CNN's mask head (a box-only model drops these keys).
MASK_PREFIXES = ("roi_heads.mask_head.", "roi_heads.mask_predictor.")


def _deconv(s: dict, key: str) -> list:
    """A PyTorch ConvTranspose2d (`[in, out, kh, kw]`) -> Keras Conv2DTranspose arrays."""
    kernel = np.asarray(s[f"{key}.weight"], "float32").transpose(2, 3, 1, 0)
    return [kernel, s[f"{key}.bias"]]


def _mask_logits(s: dict, key: str, background_first: bool) -> list:
    """The 1x1 per-class mask predictor, torchvision's background map (first) dropped."""
    kernel, bias = _conv(s, key)
    if background_first:
        kernel, bias = kernel[..., 1:], np.asarray(bias)[1:]
    return [kernel, bias]


def _mask_head(out: _Out, head, s: dict, library: str) -> None:
    """{our layer path: arrays} for the mask head: torchvision `mask_head.{i}.0` (+ `.1` BN,
    v2) and `mask_predictor.{conv5_mask, mask_fcn_logits}`; detectron2 `mask_head.mask_fcn{i}`,
    `deconv` and `predictor`."""
    tv = library == "torchvision"
    for i, conv in enumerate(head.convs):
        out.put(conv.path, _conv, s, f"roi_heads.mask_head.{i}.0" if tv
                else f"roi_heads.mask_head.mask_fcn{i + 1}")
    for i, norm in enumerate(head.norms):
        out.put(norm.path, _bn, s, f"roi_heads.mask_head.{i}.1")
    deconv, logits = (("roi_heads.mask_predictor.conv5_mask", "roi_heads.mask_predictor."
                       "mask_fcn_logits") if tv else
                      ("roi_heads.mask_head.deconv", "roi_heads.mask_head.predictor"))
    out.put(head.deconv.path, _deconv, s, deconv)
    out.put(head.predictor.path, _mask_logits, s, logits, tv)


def _layers_by_path(model) -> dict:
    return {layer.path: layer for layer in flatten_layers(model) if layer.weights}


def load_state(model, state: dict, library: str, *, source: str = "checkpoint",
               bn_epsilon: float = 1e-5) -> None:
    """Copy a torchvision or detectron2 Faster R-CNN (or, into a `MaskRCNN`, Mask R-CNN)
    state dict (numpy arrays, each library's current names) into `model`, or raise one error
    listing every problem."""
    if library not in ("torchvision", "detectron2"):
        raise ValueError(f"library must be 'torchvision' or 'detectron2', got {library!r}")
    trunk, rest, names = split_state(state, library)
    problems = load_trunk(model, trunk, source, bn_epsilon, library == "detectron2", names)
    used: set = set()
    tracked = _Tracked(rest, used)
    arrays = (_torchvision_heads if library == "torchvision" else _detectron2_heads)(
        model, tracked)
    if getattr(model, "mask_head", None) is not None:
        _mask_head(arrays, model.mask_head, tracked, library)
    layers = _layers_by_path(model)
    problems += [f"missing: {k}" for k in sorted(tracked.missing)]
    problems += [f"unexpected: {k}" for k in sorted(set(rest) - used)]
    updates = []
    for path, values in arrays.items():
        layer = layers[path]
        values = [np.asarray(v, "float32") for v in values]
        if layer.use_bias if hasattr(layer, "use_bias") else False:
            if len(values) == 1:
                values.append(np.zeros(layer.weights[1].shape, "float32"))
        want = [tuple(w.shape) for w in layer.weights]
        got = [tuple(v.shape) for v in values]
        if want != got:
            problems.append(f"wrong shape: {path}: checkpoint {got} vs model {want}")
        else:
            updates.append((layer, values))
    if problems:
        shown = "\n  ".join(problems[:20])
        more = f"\n  ... ({len(problems)} in all)" if len(problems) > 20 else ""
        raise ValueError(f"{source} does not fit {model.name!r}:\n  {shown}{more}")
    for layer, values in updates:
        layer.set_weights(values)


class _Out(dict):
    """{layer path: arrays}; an entry whose keys are missing is left out (the tracker has
    recorded them) so that one pass finds every missing key."""

    def put(self, path: str, make, *args) -> None:
        try:
            self[path] = make(*args)
        except KeyError:
            pass


class _Tracked(dict):
    """A read-only view of the state that records which keys were read and which were
    missing (so one error can list them all)."""

    def __init__(self, state: dict, used: set):
        super().__init__(state)
        self.used = used
        self.missing: set = set()

    def __getitem__(self, key):
        if key not in self:
            self.missing.add(key)
            raise KeyError(key)
        self.used.add(key)
        return super().__getitem__(key)

    def get(self, key, default=None):
        if key in self:
            self.used.add(key)
            return super().__getitem__(key)
        return default
