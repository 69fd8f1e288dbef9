"""``python -m ocistore.cli``."""

from __future__ import annotations

import sys

from ocistore.cli.app import main

__all__: list[str] = []

if __name__ == "__main__":
    sys.exit(main())
