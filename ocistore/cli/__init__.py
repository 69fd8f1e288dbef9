"""The ``ocistore`` command line (ctr-like verbs over :class:`ocistore.Store`).

``main(argv)`` runs one command line and returns its exit code; the console script
``ocistore`` and ``python -m ocistore.cli`` call it. See docs/cli.md.
"""

from __future__ import annotations

from ocistore.cli.app import build_parser, default_root, main

__all__ = ["build_parser", "default_root", "main"]
