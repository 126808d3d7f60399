"""`python -m keras_resnet_suite` is the `keras-resnet-suite` command."""

import sys

from keras_resnet_suite.cli import main

sys.exit(main())
