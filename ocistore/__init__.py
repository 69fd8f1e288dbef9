"""ocistore: an embeddable OCI image store.

Content-addressed blobs, an LMDB metadata database, overlayfs and native snapshotters
keyed by chain IDs, leases and garbage collection, a registry client, and the
operations users call: fetch, pull, unpack (also lazily on the first container
create), import and export. See README.md and docs/.
"""

from __future__ import annotations

from ocistore import errors
from ocistore.content.types import ContentInfo, IngestStatus
from ocistore.metadata.gc import GCStats
from ocistore.metadata.images import Image
from ocistore.metadata.leases import Lease, Resource
from ocistore.oci.descriptor import Descriptor
from ocistore.oci.platform import Platform
from ocistore.snapshots.types import Kind, Mount, SnapshotInfo, Usage
from ocistore.store import Store
from ocistore.transfer.check import CheckReport
from ocistore.transfer.containers import Container
from ocistore.transfer.progress import ProgressEvent
from ocistore.transfer.usage import DiskUsage

__version__ = "0.1.0"

__all__ = [
    "CheckReport",
    "Container",
    "ContentInfo",
    "Descriptor",
    "DiskUsage",
    "GCStats",
    "Image",
    "IngestStatus",
    "Kind",
    "Lease",
    "Mount",
    "Platform",
    "ProgressEvent",
    "Resource",
    "SnapshotInfo",
    "Store",
    "Usage",
    "errors",
]
