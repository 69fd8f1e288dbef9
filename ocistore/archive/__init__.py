"""Applying layer blobs (tar, tar+gzip, tar+zstd) onto snapshot directories.

``apply_layer`` reads the blob once: it computes the blob digest, inflates in a
worker thread, computes the diffID, parses tar headers with a lean parser of its
own and writes each member with as few system calls as it can, resolving every
path inside the root. See ``apply_layer`` for the contract.
"""

from __future__ import annotations

from ocistore.archive._apply import ApplyResult, apply_layer
from ocistore.archive._compression import detect_compression

__all__ = ["ApplyResult", "apply_layer", "detect_compression"]
