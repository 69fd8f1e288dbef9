"""The overlayfs snapshotter (containerd ``plugins/snapshots/overlay/overlay.go``).

Each snapshot owns ``<root>/snapshots/overlayfs/<id>/fs`` (its upper dir: only the changes
of that layer) and, while active, ``work`` (overlayfs' work dir). Committing keeps the id and
touches no file; mounts stack the ``fs`` directories of the parent chain as lower dirs.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from ocistore import errors
from ocistore.layout import fs_of, work_of
from ocistore.metadata.db import DB
from ocistore.snapshots.base import SnapshotRecord, SnapshotterBase
from ocistore.snapshots.types import Kind, Mount

__all__ = ["OverlaySnapshotter", "default_overlay_options", "running_in_user_namespace"]

_INDEX_PARAM = Path("/sys/module/overlay/parameters/index")


def running_in_user_namespace() -> bool:
    """True when this process runs in a user namespace other than the initial one."""
    try:
        text = Path("/proc/self/uid_map").read_text()
    except OSError:
        return False
    fields = text.split()
    return fields[:3] != ["0", "0", "4294967295"]


def _has_option(options: Sequence[str], name: str) -> bool:
    return any(opt == name or opt.split("=", 1)[0] == name for opt in options)


def default_overlay_options(configured: Sequence[str] = ()) -> list[str]:
    """Configured options, then ``userxattr`` in a user namespace, then ``index=off``.

    ``index=off`` is added only when the kernel has the parameter and no ``index`` option
    was configured (options are last-wins in the kernel).
    """
    options = list(configured)
    if not _has_option(options, "userxattr") and running_in_user_namespace():
        options.append("userxattr")
    if not _has_option(options, "index") and _INDEX_PARAM.exists():
        options.append("index=off")
    return options


class OverlaySnapshotter(SnapshotterBase):
    """Snapshots as overlayfs layers: each ``fs`` holds one layer's changes."""

    name = "overlayfs"
    supports_mount = True
    supports_rebase = True

    def __init__(self, db: DB, namespace: str, root: Path, options: Sequence[str] = ()) -> None:
        """``options`` are extra overlay mount options (``volatile``, ``index=on``, ...)."""
        super().__init__(db, namespace, root)
        self.options = default_overlay_options(options)

    def _build(self, tmp: Path, kind: Kind, parent_ids: list[int]) -> None:
        fs = fs_of(tmp)
        fs.mkdir()
        os.chmod(fs, 0o755)  # noqa: S103 - a root filesystem is 0755 (testsuite RootPermission)
        if kind is Kind.ACTIVE:
            work_of(tmp).mkdir()
            os.chmod(work_of(tmp), 0o711)  # noqa: S103 - containerd uses 0711 for work dirs
        if parent_ids:
            self._chown_like(fs, self._fs(parent_ids[0]))

    def _chown_like(self, fs: Path, parent_fs: Path) -> None:
        """Give the new upper dir the owner of the parent's ``fs`` (3.21)."""
        try:
            st = os.stat(parent_fs)
            mine = os.stat(fs)
            if (st.st_uid, st.st_gid) != (mine.st_uid, mine.st_gid):
                os.lchown(fs, st.st_uid, st.st_gid)
        except OSError as e:
            raise errors.FailedPrecondition(
                f"cannot give {fs} the owner of its parent layer {parent_fs}: {e.strerror}"
            ) from e

    def _mounts_for(self, rec: SnapshotRecord, parent_ids: list[int]) -> list[Mount]:
        """Mounts as containerd's overlay snapshotter returns them (3.22)."""
        if not parent_ids:
            flag = "ro" if rec.kind is Kind.VIEW else "rw"
            return [Mount(type="bind", source=str(self._fs(rec.id)), options=[flag, "rbind"])]
        if rec.kind is not Kind.ACTIVE and len(parent_ids) == 1:
            return [Mount(type="bind", source=str(self._fs(parent_ids[0])), options=["ro", "rbind"])]
        options: list[str] = []
        if rec.kind is Kind.ACTIVE:
            options += [f"workdir={work_of(self._id_dir(rec.id))}", f"upperdir={self._fs(rec.id)}"]
        options.append("lowerdir=" + ":".join(str(self._fs(pid)) for pid in parent_ids))
        options += self.options
        return [Mount(type="overlay", source="overlay", options=options)]
