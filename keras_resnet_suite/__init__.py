"""keras-resnet-suite: every ResNet of He et al. (2015) and its family, in Keras 3."""

from . import backbones, layers, specs
from .flops import count_macs, count_params
from .models import BUILDERS, build
from .specs import ResNetSpec, available_models, get_spec

globals().update(BUILDERS)

__version__ = "0.1.0"
__all__ = ["available_models", "backbones", "build", "count_macs", "count_params", "get_spec", "layers",
           "specs", "ResNetSpec", *BUILDERS]
