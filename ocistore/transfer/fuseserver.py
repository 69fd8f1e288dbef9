"""The FUSE file system of a lazy rootfs: an image's merged eStargz tree, read-only.

:class:`LazyFS` serves a :class:`~ocistore.transfer.lazyread.LazyImage` through ``mfusepy``
(ctypes over libfuse3): lookups and listings come from the merged TOC tree, file data from
the layers' :class:`~ocistore.estargz.source.LayerSource` chunk by chunk, on first read,
kept in a bounded cache of verified chunks. It is the lower layer of the container's
overlay mount; writes go to the overlay's upper dir, never here (``EROFS``).

This module needs the optional ``mfusepy`` package (extra ``lazy``); only the lazy rootfs
helper (``python -m ocistore.cli.lazyfs``) imports it.
"""

from __future__ import annotations

import errno
import itertools
import os
import sys
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable
from typing import Any

import mfusepy

from ocistore import errors
from ocistore.estargz.toc import Chunk
from ocistore.estargz.tree import Node, prioritized_chunks
from ocistore.transfer.lazyread import LazyImage

__all__ = ["DEFAULT_CACHE_BYTES", "LazyFS", "serve"]

DEFAULT_CACHE_BYTES = 64 << 20
"""Verified chunks the server keeps in memory (least recently used go first)."""


class _ChunkCache:
    """Verified chunk bytes by (layer, offset, inner offset), bounded in bytes."""

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._size = 0
        self._items: OrderedDict[tuple[int, int, int], bytes] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: tuple[int, int, int]) -> bytes | None:
        with self._lock:
            data = self._items.get(key)
            if data is not None:
                self._items.move_to_end(key)
            return data

    def put(self, key: tuple[int, int, int], data: bytes) -> None:
        with self._lock:
            if key in self._items or len(data) > self._limit:
                return
            self._items[key] = data
            self._size += len(data)
            while self._size > self._limit:
                _key, old = self._items.popitem(last=False)
                self._size -= len(old)


class LazyFS(mfusepy.Operations):  # type: ignore[misc]
    """Read-only FUSE operations over a lazy image (path based, as libfuse's high-level API)."""

    use_ns = True

    def __init__(self, image: LazyImage, *, on_init: Callable[[], None] | None = None,
                 cache_bytes: int = DEFAULT_CACHE_BYTES) -> None:
        """Serve ``image``; ``on_init`` runs once the kernel has connected."""
        self.image = image
        self.on_init = on_init
        self._cache = _ChunkCache(cache_bytes)
        self._handles: dict[int, Node] = {}
        self._next_fh = itertools.count(1)
        self._fh_lock = threading.Lock()
        self._reads: dict[str, list[tuple[int, int]]] = {}  # what the kernel asked for, by path
        self._reads_lock = threading.Lock()

    # -- helpers ---------------------------------------------------------------------------------

    def _node(self, path: str) -> Node:
        try:
            return self.image.tree.lookup(path, follow=False)
        except errors.NotFound:
            raise mfusepy.FuseOSError(errno.ENOENT) from None
        except errors.InvalidArgument:
            raise mfusepy.FuseOSError(errno.ENOTDIR) from None
        except errors.UnsafeArchive:
            raise mfusepy.FuseOSError(errno.ELOOP) from None

    def chunk(self, layer: int, chunk: Chunk) -> bytes:
        """The verified bytes of a chunk of layer ``layer`` (cached)."""
        key = (layer, chunk.offset, chunk.inner_offset)
        data = self._cache.get(key)
        if data is None:
            try:
                data = self.image.sources[layer].read_chunk(chunk)
            except errors.Error as exc:
                print(f"ocistore lazyfs: reading {chunk.name!r}: {exc}", file=sys.stderr, flush=True)
                raise mfusepy.FuseOSError(errno.EIO) from None
            self._cache.put(key, data)
        return data

    def prefetch(self) -> int:
        """Fetch the prioritized files of every layer (``.prefetch.landmark``) and keep their
        chunks in the cache (as far as it holds them); returns the bytes read."""
        total = 0
        for layer, source in enumerate(self.image.sources):
            chunks = prioritized_chunks(source.toc())
            source.prefetch(chunks)
            for chunk in chunks:
                total += len(self.chunk(layer, chunk))
        return total

    # -- operations --------------------------------------------------------------------------------

    def init(self, path: str) -> None:
        """The kernel connected: the mount is live."""
        if self.on_init is not None:
            self.on_init()

    def getattr(self, path: str, fh: int | None = None) -> dict[str, Any]:
        """``stat`` of a path (times in nanoseconds)."""
        node = self._node(path)
        nlink = node.nlink
        if node.children is not None:
            nlink = 2 + sum(1 for c in node.children.values() if c.children is not None)
        size = node.size if node.type in ("reg", "symlink") else (4096 if node.is_dir else 0)
        return {
            "st_mode": node.st_mode, "st_ino": node.ino, "st_nlink": nlink, "st_uid": node.uid,
            "st_gid": node.gid, "st_size": size, "st_rdev": node.rdev, "st_blksize": 4096,
            "st_blocks": (size + 511) // 512, "st_mtime": node.mtime_ns, "st_atime": node.mtime_ns,
            "st_ctime": node.mtime_ns,
        }

    def readdir(self, path: str, fh: int) -> Iterable[tuple[str, dict[str, int], int]]:
        """The entries of a directory, with their inode numbers (a dirent with inode 0 is skipped
        by readers, so plain names would list nothing under ``use_ino``)."""
        node = self._node(path)
        if node.children is None:
            raise mfusepy.FuseOSError(errno.ENOTDIR)
        entries = [(".", {"st_mode": node.st_mode, "st_ino": node.ino}, 0),
                   ("..", {"st_mode": node.st_mode, "st_ino": node.ino}, 0)]
        entries += [(name, {"st_mode": c.st_mode, "st_ino": c.ino}, 0) for name, c in node.children.items()]
        return entries

    def readlink(self, path: str) -> str:
        """A symlink's target."""
        node = self._node(path)
        if node.type != "symlink":
            raise mfusepy.FuseOSError(errno.EINVAL)
        return node.link_name

    def open(self, path: str, flags: int) -> int:
        """Open a regular file for reading (``EROFS`` for writing)."""
        if flags & os.O_ACCMODE != os.O_RDONLY or flags & os.O_TRUNC:
            raise mfusepy.FuseOSError(errno.EROFS)
        node = self._node(path)
        if node.type != "reg":
            raise mfusepy.FuseOSError(errno.EISDIR if node.is_dir else errno.EINVAL)
        with self._fh_lock:
            fh = next(self._next_fh)
            self._handles[fh] = node
        return fh

    def reads(self) -> dict[str, list[tuple[int, int]]]:
        """The byte ranges ``[start, end)`` of each file read so far (merged, in order): a
        profile of the start for ``store.prefetch``. The kernel caches what it read, so each
        range is asked for once, readahead included."""
        with self._reads_lock:
            items = [(p, list(rs)) for p, rs in self._reads.items()]
        return {path: _merged(ranges) for path, ranges in sorted(items)}

    def read(self, path: str, size: int, offset: int, fh: int) -> bytes:
        """Up to ``size`` bytes at ``offset``, from the chunks they lie in."""
        node = self._handles.get(fh) or self._node(path)
        end = min(node.size, offset + size)
        if end > offset:
            with self._reads_lock:
                ranges = self._reads.setdefault(path.lstrip("/"), [])
                ranges.append((offset, end))
                if len(ranges) > _MERGE_AT:  # a long-lived container rereads: memory stays bounded
                    ranges[:] = _merged(ranges)
        span = node.chunk_span(offset, end)
        chunks = node.chunks[span.start:span.stop]
        if len(chunks) > 1:  # several chunks: fetch the missing ones together (one ranged request when adjacent)
            missing = [c for c in chunks if self._cache.get((node.layer, c.offset, c.inner_offset)) is None]
            if len(missing) > 1:
                try:
                    self.image.sources[node.layer].prefetch(missing)
                except errors.Error as exc:
                    print(f"ocistore lazyfs: prefetching chunks of {path!r}: {exc}", file=sys.stderr, flush=True)
        return b"".join(self.chunk(node.layer, c)[max(0, offset - c.start): end - c.start] for c in chunks)

    def release(self, path: str, fh: int) -> int:
        """Forget a file handle."""
        with self._fh_lock:
            self._handles.pop(fh, None)
        return 0

    def getxattr(self, path: str, name: str, position: int = 0) -> bytes:
        """One extended attribute (``ENODATA`` if absent)."""
        value = self._node(path).xattrs.get(name)
        if value is None:
            raise mfusepy.FuseOSError(errno.ENODATA)
        return value

    def listxattr(self, path: str) -> Iterable[str]:
        """The extended attribute names of a path."""
        return list(self._node(path).xattrs)

    def access(self, path: str, amode: int) -> int:
        """Existence check (permissions are the kernel's: ``default_permissions``)."""
        self._node(path)
        if amode & os.W_OK:
            raise mfusepy.FuseOSError(errno.EROFS)
        return 0

    def statfs(self, path: str) -> dict[str, int]:
        """File system figures: the image's file bytes, nothing free."""
        total = sum(n.size for _p, n in self.image.tree.regular_files())
        blocks = (total + 4095) // 4096
        return {"f_bsize": 4096, "f_frsize": 4096, "f_blocks": blocks, "f_bfree": 0, "f_bavail": 0,
                "f_files": len(list(self.image.tree.walk())), "f_ffree": 0, "f_namemax": 255}


def serve(ops: LazyFS, mountpoint: str) -> None:
    """Mount ``ops`` read-only at ``mountpoint`` and serve it until it is unmounted."""
    mfusepy.FUSE(ops, mountpoint, foreground=True, ro=True, allow_other=True, default_permissions=True,
                 fsname="ocistore-lazy", subtype="ocistore", use_ino=True, kernel_cache=True)


_MERGE_AT = 1024
"""Recorded reads of one file beyond which they are merged in place."""


def _merged(ranges: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """``[start, end)`` ranges sorted, those that overlap or touch joined."""
    merged: list[tuple[int, int]] = []
    for start, end in sorted(ranges):
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], end))
        else:
            merged.append((start, end))
    return merged
