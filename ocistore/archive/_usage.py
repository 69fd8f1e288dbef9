"""Counting a layer's disk usage while it is applied, instead of walking the tree afterwards.

A snapshotter records each committed snapshot's usage: allocated bytes (``st_blocks * 512``)
and inodes under its directory, each inode once, the directory itself included (what
``snapshots.base.disk_usage`` walks). When a layer is applied into an *empty* directory
(an overlay upper dir, or a native snapshot without a parent) and nothing is removed or
replaced on the way, that is exactly the members this layer created: regular files are
``fstat``-ed through the descriptor they were written with, the other members and every
directory (whose size grows as entries are added, and which may get xattrs later) are
``lstat``-ed once at the end. Anything that makes the count doubtful -- a path written
twice, a removal, a root that was not empty -- makes the result ``None``, and the caller
walks the tree as before.
"""

from __future__ import annotations

import os

__all__ = ["UsageCounter"]


class UsageCounter:
    """Allocated bytes and inodes of what one apply creates under ``root``."""

    def __init__(self, root: str) -> None:
        self.root = root
        with os.scandir(root) as listing:
            self.exact = next(listing, None) is None  # only an empty root is all this layer's
        self._files: dict[int, int] = {}  # inode -> allocated bytes, regular files
        self._names: set[str] = set()  # every non-directory written (a second write is doubtful)
        self._others: list[str] = []  # symlinks, hard links, devices, fifos, whiteouts: lstat-ed at the end
        self._dirs: set[str] = set()

    def file(self, rel: str, st: os.stat_result) -> None:
        """A regular file was written at ``rel`` (``st``: its fstat after the last change)."""
        self._name(rel)
        self._files[st.st_ino] = st.st_blocks * 512

    def other(self, rel: str) -> None:
        """A non-directory other than a regular file was created at ``rel``."""
        self._name(rel)
        self._others.append(rel)

    def directory(self, rel: str) -> None:
        """A directory was created (or written again) at ``rel``."""
        if rel in self._names:
            self.exact = False  # a file was replaced by a directory
        self._dirs.add(rel)

    def removed(self) -> None:
        """Something was removed or replaced: the count can no longer be trusted."""
        self.exact = False

    def _name(self, rel: str) -> None:
        if rel in self._names or rel in self._dirs:
            self.exact = False
        self._names.add(rel)

    def result(self) -> tuple[int, int] | None:
        """``(allocated bytes, inodes)`` of the root, or None when it must be walked."""
        if not self.exact:
            return None
        root = self.root
        sizes = dict(self._files)
        st = os.lstat(root)
        total = st.st_blocks * 512
        inodes = 1
        for rel in self._dirs:
            st = os.lstat(f"{root}/{rel}")
            total += st.st_blocks * 512
            inodes += 1
        for rel in self._others:
            st = os.lstat(f"{root}/{rel}")
            if st.st_ino not in sizes:
                sizes[st.st_ino] = st.st_blocks * 512
        return total + sum(sizes.values()), inodes + len(sizes)
