"""`python -m detection ...` (see `detection.cli`)."""

import sys

from detection.cli import main

if __name__ == "__main__":
    sys.exit(main())
