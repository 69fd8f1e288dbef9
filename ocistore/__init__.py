"""ocistore: an embeddable OCI image store.

Content-addressed blobs, an LMDB metadata database, overlayfs and native snapshotters
keyed by chain IDs, leases and garbage collection, a registry client, and the
operations users call: fetch, pull, unpack (also lazily on the first container
create), import and export. See README.md and docs/.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from ocistore import errors

if TYPE_CHECKING:
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

# Every public name loads on first access: `import ocistore` (and the CLI, which imports it
# first) pays only for what the program uses (a fresh `ocistore containers create` never
# loads the records of check, du or gc).
_LAZY = {
    "ContentInfo": "ocistore.content.types",
    "IngestStatus": "ocistore.content.types",
    "Image": "ocistore.metadata.images",
    "Lease": "ocistore.metadata.leases",
    "Resource": "ocistore.metadata.leases",
    "Descriptor": "ocistore.oci.descriptor",
    "Platform": "ocistore.oci.platform",
    "Store": "ocistore.store",
    "CheckReport": "ocistore.transfer.check",
    "Container": "ocistore.transfer.containers",
    "DiskUsage": "ocistore.transfer.usage",
    "GCStats": "ocistore.metadata.gc",
    "Kind": "ocistore.snapshots.types",
    "Mount": "ocistore.snapshots.types",
    "ProgressEvent": "ocistore.transfer.progress",
    "SnapshotInfo": "ocistore.snapshots.types",
    "Usage": "ocistore.snapshots.types",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'ocistore' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
