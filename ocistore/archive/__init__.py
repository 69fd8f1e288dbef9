"""Applying layer blobs (tar, tar+gzip, tar+zstd) onto snapshot directories.

``apply_layer`` reads the blob once: it computes the blob digest, inflates in a
worker thread, computes the diffID, parses tar headers with a lean parser of its
own and writes each member with as few system calls as it can, resolving every
path inside the root. See ``apply_layer`` for the contract. Layers whose descriptor
carries the eStargz TOC digest are also checked against their TOC (``_estargz``), and
``convert_layer`` rewrites a layer as eStargz.
"""

from __future__ import annotations

from ocistore.archive._apply import ApplyResult, apply_layer
from ocistore.archive._compression import detect_compression
from ocistore.archive._convert import ConvertedLayer, convert_layer
from ocistore.archive._dedup import FileDeduper
from ocistore.archive._footprint import Footprint, layer_footprint
from ocistore.archive._parents import adopt_lower_parents

__all__ = ["ApplyResult", "ConvertedLayer", "FileDeduper", "Footprint", "adopt_lower_parents", "apply_layer",
           "convert_layer", "detect_compression", "layer_footprint"]
