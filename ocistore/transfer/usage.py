"""Disk usage of a store root, in bytes actually allocated."""

from __future__ import annotations

from typing import TYPE_CHECKING

import attrs

from ocistore._files import allocated_bytes

if TYPE_CHECKING:
    from ocistore.store import Store

__all__ = ["DiskUsage", "disk_usage"]


@attrs.frozen
class DiskUsage:
    """Allocated bytes (st_blocks x 512, directories included, hardlinks once)."""

    content: int
    ingest: int
    snapshots: int
    metadata: int
    total: int


def disk_usage(store: Store) -> DiskUsage:
    seen: set[tuple[int, int]] = set()
    root = store.root
    ingest = allocated_bytes(root / "content" / "ingest", seen)
    content = allocated_bytes(root / "content", seen)
    snapshots = 0
    sn_root = root / "snapshots"
    if sn_root.is_dir():  # the per-snapshot dirs; the empty skeleton counts under total only
        for sn_dir in sn_root.iterdir():
            if sn_dir.is_dir() and not sn_dir.is_symlink():
                snapshots += sum(allocated_bytes(d, seen) for d in sn_dir.iterdir())
    metadata = allocated_bytes(root / "metadata.lmdb", seen)
    rest = allocated_bytes(root, seen)  # the root dir itself, tmp/, locks
    return DiskUsage(content=content, ingest=ingest, snapshots=snapshots, metadata=metadata,
                     total=content + ingest + snapshots + metadata + rest)
