"""The native snapshotter (containerd ``plugins/snapshots/native``): full copies, bind mounts.

Every snapshot's ``fs`` holds its complete tree: a new active snapshot or view starts as a
copy of its parent (reflinked where the filesystem allows). Reading or writing a snapshot
needs no mount at all: :meth:`NativeSnapshotter.path` is the tree, so it works for an
unprivileged user. The returned bind mounts are for callers that want the tree elsewhere.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

from ocistore._lazy import lazy_module
from ocistore.layout import fs_of
from ocistore.snapshots.base import SnapshotRecord, SnapshotterBase
from ocistore.snapshots.types import Kind, Mount

if TYPE_CHECKING:
    from ocistore.snapshots import _copy
else:
    _copy = lazy_module("ocistore.snapshots._copy")  # (and logging) loaded by the first copy

__all__ = ["NativeSnapshotter"]


class NativeSnapshotter(SnapshotterBase):
    """Snapshots as complete directory trees, each a copy of its parent."""

    name = "native"
    supports_mount = False
    supports_rebase = False

    def _build(self, tmp: Path, kind: Kind, parent_ids: list[int]) -> None:
        fs = fs_of(tmp)
        if parent_ids:
            _copy.copy_tree(self._fs(parent_ids[0]), fs)
        else:
            fs.mkdir()
            os.chmod(fs, 0o755)  # noqa: S103 - a root filesystem is 0755 (testsuite RootPermission)

    def _mounts_for(self, rec: SnapshotRecord, parent_ids: list[int]) -> list[Mount]:
        flag = "ro" if rec.kind is Kind.VIEW else "rw"
        return [Mount(type="bind", source=str(self._fs(rec.id)), options=[flag, "rbind"])]
