"""The published checkpoints: where each lives, its hash, the architecture options and the
input convention its numbers depend on, and its published top-1 (torchvision's lesson: a
checkpoint knows how it must be fed). `weights` downloads, verifies, converts and loads them.
"""

from __future__ import annotations

from dataclasses import dataclass

ARCH_OPTIONS = ("stride_in_1x1", "bn_epsilon", "conv_bias", "downsample")
# This library's defaults: torchvision's layout (v1.5), so its checkpoints need no option.
DEFAULT_OPTIONS = {"stride_in_1x1": False, "bn_epsilon": 1e-5, "conv_bias": False,
                   "downsample": "first"}
KERAS_V1 = {"stride_in_1x1": True, "bn_epsilon": 1.001e-5, "conv_bias": True,
            "downsample": "first"}
KERAS_V2 = {"stride_in_1x1": False, "bn_epsilon": 1.001e-5, "conv_bias": True,
            "downsample": "last"}


@dataclass(frozen=True)
class Checkpoint:
    """One published set of weights and everything needed to use it.

    `file_hash` is checked against the file's `hash_algorithm` digest; torchvision (and the
    CIFAR ResNets) publish only the first hex digits of the SHA-256 (in the file name), so a
    prefix match counts. `top1` is the publisher's top-1 accuracy on `dataset`'s test set
    (ImageNet-1k validation, CIFAR-10 test).
    """

    arch: str
    tag: str
    url: str
    file_hash: str
    hash_algorithm: str  # "sha256" | "md5" (keras.applications publishes MD5s)
    layout: str  # "torchvision" | "keras" | "akamaster" (torchvision's names, `linear` head)
    preprocessing: str  # see preprocessing.MODES
    top1: float  # published top-1 accuracy on `dataset`, percent
    resize: int = 256  # evaluation transform: resize the short side, then centre-crop
    crop: int = 224
    classes: int = 1000
    options: tuple = tuple(DEFAULT_OPTIONS.items())
    dataset: str = "imagenet"  # "imagenet" | "cifar10"

    @property
    def filename(self) -> str:
        return self.url.rsplit("/", 1)[-1]

    @property
    def build_options(self) -> dict:
        return dict(self.options)

    @property
    def name(self) -> str:
        return f"{self.arch}:{self.tag}"


_TV = "https://download.pytorch.org/models/"
_KERAS = "https://storage.googleapis.com/tensorflow/keras-applications/resnet/"
_TIMM = "https://github.com/rwightman/pytorch-image-models/releases/download/"
_CIFAR = "https://github.com/akamaster/pytorch_resnet_cifar10/raw/master/pretrained_models/"


def _tv(arch, tag, file, top1, resize=256):
    return Checkpoint(arch, tag, _TV + file, file.rsplit("-", 1)[1].split(".")[0], "sha256",
                      "torchvision", "torch", top1, resize=resize)


def _timm(arch, file, top1):
    """timm's GitHub releases, named like torchvision's files after their SHA-256 prefix;
    ImageNet mean/std inputs, 0.875 centre crop (256 -> 224), timm's published top-1."""
    return Checkpoint(arch, "timm", _TIMM + file, file.rsplit("-", 1)[1].split(".")[0],
                      "sha256", "torchvision", "torch", top1)


def _timm_rs(arch, file, top1, size, crop_pct):
    """timm's ResNet-RS weights (the authors' TensorFlow checkpoints, EMA, ported by timm):
    ImageNet mean/std inputs, timm's default evaluation transform (bicubic resize of the short
    side to floor(size / crop_pct), centre crop `size`); top-1 as the authors report it at the
    training resolution. The hash is the SHA-256 prefix in the publisher's file name."""
    return Checkpoint(arch, "timm", _TIMM + file, file.rsplit("-", 1)[1].split(".")[0],
                      "sha256", "torchvision", "torch", top1, resize=int(size / crop_pct),
                      crop=size)


def _keras(arch, md5, top1, v2=False):
    return Checkpoint(arch, "keras", f"{_KERAS}{arch}_weights_tf_dim_ordering_tf_kernels.h5",
                      md5, "md5", "keras", "tf" if v2 else "caffe", top1,
                      options=tuple((KERAS_V2 if v2 else KERAS_V1).items()))


def _cifar(arch, file, error, sha256=None):
    """akamaster/pytorch_resnet_cifar10: option-A shortcuts, inputs normalised with
    torchvision's ImageNet mean/std ("torch"), published test error in percent."""
    return Checkpoint(arch, "akamaster", _CIFAR + file, sha256 or file.split("-")[1][:8],
                      "sha256", "akamaster", "torch", round(100.0 - error, 2), resize=32,
                      crop=32, classes=10, dataset="cifar10")


CHECKPOINTS: dict[tuple[str, str], Checkpoint] = {(c.arch, c.tag): c for c in [
    # torchvision: ResNet*_Weights.IMAGENET1K_V1 / _V2 (V2: 232-px resize at evaluation).
    _tv("resnet18", "torchvision-v1", "resnet18-f37072fd.pth", 69.758),
    _tv("resnet34", "torchvision-v1", "resnet34-b627a593.pth", 73.314),
    _tv("resnet50", "torchvision-v1", "resnet50-0676ba61.pth", 76.130),
    _tv("resnet50", "torchvision-v2", "resnet50-11ad3fa6.pth", 80.858, resize=232),
    _tv("resnet101", "torchvision-v1", "resnet101-63fe2227.pth", 77.374),
    _tv("resnet101", "torchvision-v2", "resnet101-cd907fc2.pth", 81.886, resize=232),
    _tv("resnet152", "torchvision-v1", "resnet152-394f9c45.pth", 78.312),
    _tv("resnet152", "torchvision-v2", "resnet152-f82ba261.pth", 82.284, resize=232),
    _tv("resnext50_32x4d", "torchvision-v1", "resnext50_32x4d-7cdf4587.pth", 77.618),
    _tv("resnext50_32x4d", "torchvision-v2", "resnext50_32x4d-1a0047aa.pth", 81.198,
        resize=232),
    _tv("resnext101_32x8d", "torchvision-v1", "resnext101_32x8d-8ba56ff5.pth", 79.312),
    _tv("resnext101_32x8d", "torchvision-v2", "resnext101_32x8d-110c445d.pth", 82.834,
        resize=232),
    _tv("wide_resnet50_2", "torchvision-v1", "wide_resnet50_2-95faca4d.pth", 78.468),
    _tv("wide_resnet50_2", "torchvision-v2", "wide_resnet50_2-9ba9bcbe.pth", 81.602,
        resize=232),
    # Res2Net (Gao et al. 2019), the authors' weights as timm republishes them; top-1 from
    # timm's model index, res2next50's from the authors' table (21.76% error).
    _timm("res2net50_26w_4s", "v0.1-res2net/res2net50_26w_4s-06e79181.pth", 77.99),
    _timm("res2net50_48w_2s", "v0.1-res2net/res2net50_48w_2s-afed724a.pth", 77.53),
    _timm("res2net50_14w_8s", "v0.1-res2net/res2net50_14w_8s-6527dddc.pth", 78.14),
    _timm("res2net50_26w_6s", "v0.1-res2net/res2net50_26w_6s-19041792.pth", 78.57),
    _timm("res2net50_26w_8s", "v0.1-res2net/res2net50_26w_8s-2c7c9f12.pth", 79.19),
    _timm("res2net101_26w_4s", "v0.1-res2net/res2net101_26w_4s-02a759a1.pth", 79.19),
    _timm("res2next50", "v0.1-res2net/res2next50_4s-6ef7e7bf.pth", 78.24),
    # ResNet-RS (Bello et al. 2021) as timm publishes them (resnetrs*.tf_in1k).
    _timm_rs("resnetrs50", "v0.1-rs-weights/resnetrs50_ema-6b53758b.pth", 78.8, 160, 0.91),
    _timm_rs("resnetrs101", "v0.1-rs-weights/resnetrs101_i192_ema-1509bbf6.pth", 81.2, 192,
             0.94),
    _timm_rs("resnetrs152", "v0.1-rs-weights/resnetrs152_i256_ema-a9aff7f9.pth", 83.0, 256, 1.0),
    _timm_rs("resnetrs200", "v0.1-tpu-weights/resnetrs200_c-6b698b88.pth", 83.4, 256, 1.0),
    _timm_rs("resnetrs270", "v0.1-rs-weights/resnetrs270_ema-b40e674c.pth", 83.8, 256, 1.0),
    _timm_rs("resnetrs350", "v0.1-rs-weights/resnetrs350_i256_ema-5a1aa8f1.pth", 84.0, 288, 1.0),
    _timm_rs("resnetrs420", "v0.1-rs-weights/resnetrs420_ema-972dee69.pth", 84.4, 320, 1.0),
    # EfficientNet B0-B7 (Tan & Le 2019): the authors' TensorFlow weights (AutoAugment; B5 and
    # B7 RandAugment) as timm ports them (tf_efficientnet_b*); top-1 as the paper's Table 2.
    _timm_rs("efficientnet_b0", "v0.1-weights/tf_efficientnet_b0_aa-827b6e33.pth", 77.1, 224,
             0.875),
    _timm_rs("efficientnet_b1", "v0.1-weights/tf_efficientnet_b1_aa-ea7a6ee0.pth", 79.1, 240,
             0.882),
    _timm_rs("efficientnet_b2", "v0.1-weights/tf_efficientnet_b2_aa-60c94f97.pth", 80.1, 260,
             0.890),
    _timm_rs("efficientnet_b3", "v0.1-weights/tf_efficientnet_b3_aa-84b4657e.pth", 81.6, 300,
             0.904),
    _timm_rs("efficientnet_b4", "v0.1-weights/tf_efficientnet_b4_aa-818f208c.pth", 82.9, 380,
             0.922),
    _timm_rs("efficientnet_b5", "v0.1-weights/tf_efficientnet_b5_ra-9a3e5369.pth", 83.6, 456,
             0.934),
    _timm_rs("efficientnet_b6", "v0.1-weights/tf_efficientnet_b6_aa-80bd178a.pth", 84.0, 528,
             0.942),
    _timm_rs("efficientnet_b7", "v0.1-weights/tf_efficientnet_b7_ra-6c08e654.pth", 84.3, 600,
             0.949),
    # keras.applications (hashes as published in keras/src/applications/resnet.py).
    _keras("resnet50", "2cb95161c43110f7111970584f804107", 74.9),
    _keras("resnet101", "f1aeb4b969a6efcfb50fad2f0c20cfc5", 76.4),
    _keras("resnet152", "100835be76be38e30d865e96f2aaae62", 76.6),
    _keras("resnet50v2", "3ef43a0b657b3be2300d5770ece849e0", 76.0, v2=True),
    _keras("resnet101v2", "6343647c601c52e1368623803854d971", 77.2, v2=True),
    _keras("resnet152v2", "a49b44d1979771252814e80f8ec446f9", 78.0, v2=True),
    # CIFAR-10 (paper section 4.2), errors from the publisher's README. The file names carry
    # the SHA-256 prefix; the full digests are those of the two files checked here.
    _cifar("resnet20", "resnet20-12fca82f.th", 8.27,
           "12fca82f0bebc4135bf1f32f6e3710e61d5108578464b84fd6d7f5c1b04036c8"),
    _cifar("resnet32", "resnet32-d509ac18.th", 7.37),
    _cifar("resnet44", "resnet44-014dd654.th", 6.90),
    _cifar("resnet56", "resnet56-4bfd9763.th", 6.61,
           "4bfd97631478d6b638d2764fd2baff3edb1d7d82252d54439343b6596b9b5367"),
    _cifar("resnet110", "resnet110-1d1ed7c2.th", 6.32),
    _cifar("resnet1202", "resnet1202-f3b1deed.th", 6.18),
]}
# "imagenet": the checkpoint that fits the default architecture (torchvision V1 layout);
# the pre-activation models exist only as keras.applications weights, Res2Net only as
# timm's. "cifar10": the CIFAR-10 weights of the 6n+2 ResNets.
ALIASES = {"imagenet": ("torchvision-v1", "keras", "timm"), "cifar10": ("akamaster",)}


def register(checkpoint: Checkpoint) -> Checkpoint:
    """Add (or replace) a checkpoint, e.g. a mirror or an in-house fine-tune."""
    CHECKPOINTS[(checkpoint.arch, checkpoint.tag)] = checkpoint
    return checkpoint


def available_weights(arch: str) -> list[str]:
    """Checkpoint names `weights=` accepts for model `arch` (aliases first)."""
    tags = [tag for (a, tag) in CHECKPOINTS if a == arch]
    aliases = [alias for alias, targets in ALIASES.items() if set(targets) & set(tags)]
    return aliases + tags


def get_checkpoint(arch: str, name: str) -> Checkpoint:
    """The checkpoint `name` ("imagenet", "cifar10", "torchvision-v2", "keras", ...) of model
    `arch`."""
    for tag in ALIASES.get(name, (name,)):
        if (arch, tag) in CHECKPOINTS:
            return CHECKPOINTS[(arch, tag)]
    raise ValueError(f"weights={name!r}: no such checkpoint for {arch}; available: "
                     f"{available_weights(arch) or 'none'} (or pass a file path)")
