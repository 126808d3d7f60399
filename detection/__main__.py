"""`python -m detection ...` (see `detection.cli`)."""

import sys

# First, before anything loads TensorFlow: the library's package init gives this command the
# CPU fast path (TF_ENABLE_ONEDNN_OPTS=1 unless set; see keras_resnet_suite/runtime.py).
import keras_resnet_suite  # noqa: F401
from detection.cli import main

if __name__ == "__main__":
    sys.exit(main())
