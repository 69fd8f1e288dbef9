"""Disk usage of a store root, in bytes actually allocated."""

from __future__ import annotations

import attrs

from ocistore._files import allocated_bytes
from ocistore.layout import RootLayout

__all__ = ["DiskUsage", "disk_usage"]


@attrs.frozen
class DiskUsage:
    """Allocated bytes (st_blocks x 512, directories included, hardlinks once)."""

    content: int
    ingest: int
    snapshots: int
    metadata: int
    total: int


def disk_usage(layout: RootLayout) -> DiskUsage:
    """Walk the root once, each inode counted once, in the order ingest, content, snapshots,
    metadata, the rest (a hard link between two parts counts in the first)."""
    seen: set[tuple[int, int]] = set()
    ingest = allocated_bytes(layout.content.ingest, seen)
    content = allocated_bytes(layout.content.root, seen)
    snapshots = 0
    # the per-snapshot dirs; the empty skeleton counts under total only
    for _name, sn_dir in layout.snapshotter_dirs():
        snapshots += sum(allocated_bytes(d, seen) for d in sn_dir.iterdir())
    metadata = allocated_bytes(layout.metadata, seen)
    rest = allocated_bytes(layout.root, seen)  # the root dir itself, tmp/, locks
    return DiskUsage(content=content, ingest=ingest, snapshots=snapshots, metadata=metadata,
                     total=content + ingest + snapshots + metadata + rest)
