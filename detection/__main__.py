"""`python -m detection ...` (see `detection.cli`)."""

import sys

from keras_resnet_suite import runtime

# Before anything loads TensorFlow: this command runs on the CPU fast path (TF_ENABLE_ONEDNN_OPTS,
# see keras_resnet_suite/runtime.py); detection.cli imports the command's module after it.
runtime.default_for_our_commands()

from detection.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
