"""Inline file dedup at apply: a regular file just written is replaced by a hard link to an
identical file of a committed snapshot.

The applier writes every member as usual; for a regular file of at least ``threshold`` bytes
it then calls :meth:`FileDeduper.file_written`. That re-reads the file (from the page cache,
with ``O_NOATIME``) to compute its xxh3-128 fingerprint, builds the lookup key from the
fingerprint, the size and the inode metadata the applier gave it (mode, owner, mtime,
atime, xattrs), and asks ``lookup`` for candidate files with that key. A candidate is linked
only when its inode metadata equals the new file's (a hard link shares the inode, so every
field the tar sets must already be right) and a byte-for-byte comparison confirms the
content: a fingerprint match alone never links. The link is made under a temporary name in
the same directory and renamed over the written file, so the path holds the written file or
the link, never nothing. Memory is one 1 MiB buffer per deduper.

``lookup`` comes from the caller (the snapshotter's index of committed files); this module
knows nothing of the metadata database. :attr:`FileDeduper.entries` lists ``(key, relative
path)`` of every candidate file of the layer, linked or not, for the caller to index when
the snapshot commits.
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Callable, Sequence

import xxhash

from ocistore import _faults

__all__ = ["DEFAULT_THRESHOLD", "FileDeduper", "fingerprint_key"]

DEFAULT_THRESHOLD = 64 * 1024  # benches/dedup.py: 44% fewer bytes for no measurable pull time (16 KiB: 47%, +14%)
"""Files smaller than this are written as usual (see benches/README.md, "Inline dedup")."""
MAX_CANDIDATES = 4
_CHUNK = 1 << 20
_LINK_LIMIT = 60000  # below ext4's 65000 links per inode
_TMP_NAME = ".ocistore-dedup-link"
_READ_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC
_NOATIME = getattr(os, "O_NOATIME", 0)
_SKIP_ERRNOS = frozenset({
    errno.ENOENT, errno.ENOTDIR, errno.ELOOP, errno.EACCES, errno.EPERM, errno.EXDEV, errno.EMLINK,
    errno.EEXIST, errno.ENAMETOOLONG,
})
_NO_XATTR_ERRNOS = frozenset({errno.ENOTSUP, errno.EOPNOTSUPP})

Lookup = Callable[[str], Sequence[str]]
"""``key -> absolute paths`` of committed files indexed under that key (best first)."""


def _open_read(path: str) -> int:
    """Open for reading without touching the atime (a shared inode's atime is the tar's)."""
    try:
        return os.open(path, _READ_FLAGS | _NOATIME)
    except PermissionError:
        if not _NOATIME:
            raise
        return os.open(path, _READ_FLAGS)  # not the owner: O_NOATIME needs it


def _xattrs(fd: int) -> tuple[tuple[str, bytes], ...]:
    try:
        names = os.listxattr(fd)
    except OSError as exc:
        if exc.errno in _NO_XATTR_ERRNOS:
            return ()
        raise
    return tuple(sorted((name, os.getxattr(fd, name)) for name in names))


def _inode_meta(st: os.stat_result) -> tuple[int, int, int, int, int, int]:
    """What a hard link shares and the tar sets: size, mode, owner and times."""
    return (st.st_size, st.st_mode, st.st_uid, st.st_gid, st.st_mtime_ns, st.st_atime_ns)


def fingerprint_key(fingerprint: str, st: os.stat_result, xattrs: Sequence[tuple[str, bytes]]) -> str:
    """The index key: ``<xxh3-128 of the content>.<size hex>.<xxh3-64 of the inode metadata>``."""
    meta = xxhash.xxh3_64(repr((_inode_meta(st)[1:], tuple(xattrs))).encode()).hexdigest()
    return f"{fingerprint}.{st.st_size:x}.{meta}"


class FileDeduper:
    """Links the regular files of one layer apply to identical committed files."""

    def __init__(self, lookup: Lookup, *, threshold: int = DEFAULT_THRESHOLD) -> None:
        """``lookup`` finds candidates by key; files under ``threshold`` bytes are left alone."""
        self.lookup = lookup
        self.threshold = max(threshold, 1)
        self.entries: list[tuple[str, str]] = []
        self.linked = 0
        self.linked_bytes = 0
        self.hashed_bytes = 0
        self._buf = bytearray(_CHUNK)
        self._view = memoryview(self._buf)

    def file_written(self, rel: str, path: str) -> bool:
        """``path`` (``rel`` in the layer root) was written with its final metadata: link it
        to an identical committed file if there is one; True when it was linked."""
        fd = _open_read(path)
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode) or st.st_size < self.threshold:
                return False
            xattrs = _xattrs(fd)
            key = fingerprint_key(self._fingerprint(fd, st.st_size), st, xattrs)
            self.entries.append((key, rel))
            for candidate in list(self.lookup(key))[:MAX_CANDIDATES]:
                if self._link(fd, st, xattrs, candidate, path):
                    self.linked += 1
                    self.linked_bytes += st.st_blocks * 512
                    return True
            return False
        finally:
            os.close(fd)

    def _fingerprint(self, fd: int, size: int) -> str:
        h = xxhash.xxh3_128()
        view = self._view
        offset = 0
        while offset < size:
            n = os.preadv(fd, [view], offset)
            if n == 0:
                break
            h.update(view[:n])
            offset += n
        self.hashed_bytes += offset
        return h.hexdigest()

    def _link(self, fd: int, st: os.stat_result, xattrs: tuple[tuple[str, bytes], ...],
              candidate: str, path: str) -> bool:
        """Replace ``path`` by a link to ``candidate`` if it is the same file in all but inode."""
        try:
            tfd = _open_read(candidate)
        except OSError as exc:
            if exc.errno in _SKIP_ERRNOS:
                return False  # removed meanwhile, or not ours to read
            raise
        try:
            tst = os.fstat(tfd)
            if (not stat.S_ISREG(tst.st_mode) or tst.st_dev != st.st_dev or tst.st_ino == st.st_ino
                    or tst.st_nlink >= _LINK_LIMIT or _inode_meta(tst) != _inode_meta(st)
                    or _xattrs(tfd) != xattrs or not _same_bytes(fd, tfd, st.st_size)):
                return False
            tmp = f"{os.path.dirname(path)}/{_TMP_NAME}"
            try:
                os.link(candidate, tmp, follow_symlinks=False)
            except OSError as exc:
                if exc.errno in _SKIP_ERRNOS:
                    return False
                raise
            linked = os.lstat(tmp)
            if (linked.st_dev, linked.st_ino) != (tst.st_dev, tst.st_ino):  # replaced since compared
                os.unlink(tmp)
                return False
            _faults.fault_point("dedup.link")
            os.rename(tmp, path)
            return True
        finally:
            os.close(tfd)


def _same_bytes(a: int, b: int, size: int) -> bool:
    offset = 0
    while offset < size:
        n = min(_CHUNK, size - offset)
        left = os.pread(a, n, offset)
        if not left or left != os.pread(b, n, offset):
            return False
        offset += len(left)
    return True
