"""Snapshotters: the protocol, its records, and the overlayfs and native implementations.

``open_snapshotter(name, db, namespace, root)`` returns the snapshotter ``name`` of the store
rooted at ``root``, bound to ``namespace``.
"""

from __future__ import annotations

from pathlib import Path

from ocistore import errors
from ocistore.layout import RootLayout
from ocistore.metadata.db import DB
from ocistore.snapshots.base import SnapshotRecord, SnapshotterBase
from ocistore.snapshots.native import NativeSnapshotter
from ocistore.snapshots.overlay import OverlaySnapshotter
from ocistore.snapshots.types import Kind, Mount, SnapshotInfo, Snapshotter, Usage

__all__ = [
    "SNAPSHOTTERS",
    "Kind",
    "Mount",
    "NativeSnapshotter",
    "OverlaySnapshotter",
    "SnapshotInfo",
    "SnapshotRecord",
    "Snapshotter",
    "SnapshotterBase",
    "Usage",
    "open_snapshotter",
]

SNAPSHOTTERS: dict[str, type[SnapshotterBase]] = {
    OverlaySnapshotter.name: OverlaySnapshotter,
    NativeSnapshotter.name: NativeSnapshotter,
}


def open_snapshotter(name: str, db: DB, namespace: str, root: Path | RootLayout) -> Snapshotter:
    """The snapshotter ``name`` ("overlayfs" or "native") of the store at ``root`` (a path or layout).

    Raises:
        NotFound: no snapshotter has that name.
    """
    cls = SNAPSHOTTERS.get(name)
    if cls is None:
        known = ", ".join(sorted(SNAPSHOTTERS))
        raise errors.NotFound(f"snapshotter {name!r} does not exist; known snapshotters: {known}")
    return cls(db, namespace, root if isinstance(root, RootLayout) else RootLayout(root))
