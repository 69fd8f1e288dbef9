"""The image graph (containerd ``core/images``): children, walks, platform selection, size.

* :mod:`ocistore.images.graph` -- children of a blob, the generic walk and its handlers,
  gc child labels;
* :mod:`ocistore.images.image` -- one image's selected manifest (:class:`ImageParts`),
  its size, platforms and completeness.
"""

from __future__ import annotations

from ocistore.images.graph import (
    GC_REF_CONTENT,
    Handler,
    child_gc_labels,
    children,
    children_handler,
    filter_manifests,
    filter_platforms,
    present_only,
    walk,
)
from ocistore.images.image import (
    Completeness,
    ImageParts,
    completeness,
    describe_platform,
    image_parts,
    image_platforms,
    image_size,
    platform_mismatch,
)

__all__ = [
    "GC_REF_CONTENT",
    "Completeness",
    "Handler",
    "ImageParts",
    "child_gc_labels",
    "children",
    "children_handler",
    "completeness",
    "describe_platform",
    "filter_manifests",
    "filter_platforms",
    "image_parts",
    "image_platforms",
    "image_size",
    "platform_mismatch",
    "present_only",
    "walk",
]
