"""``python -m ocistore``: the command line."""

import sys

from ocistore.cli.app import main

if __name__ == "__main__":
    sys.exit(main())
