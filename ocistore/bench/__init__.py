"""The disk-space tradeoff benchmark as a product (``ocistore bench``).

For each image (registry references, or archives served from a staging store) and each
mode (:mod:`ocistore.bench.modes`: fetch-only, pull, pull + ``discard_layers``, lazy
eStargz when the Store has it) it measures, in one run, ocistore (in-process and as a
fresh CLI process) beside containerd 1.6 when it can run here: wall time of the first
step and of the first container create, disk after each (content / snapshots / metadata,
one walk method for both roots), peak RSS; and the node model (1, 5, 20 images sharing a
base). :func:`run` measures, :func:`ocistore.bench.report.write` writes JSON, markdown,
PNG plots (matplotlib, the ``bench`` extra) and the README section.

This is the top layer beside ``cli``: it drives the package as a user would and is
imported by nothing below it.
"""

from __future__ import annotations

from ocistore.bench.modes import MODES, Mode, register
from ocistore.bench.runner import BenchConfig, run

__all__ = ["MODES", "BenchConfig", "Mode", "register", "run"]
