"""What a layer would take on disk once unpacked, from its tar headers alone (nothing written).

:func:`layer_footprint` streams a layer blob once (decompressing, skipping file data) and
adds up what a block filesystem allocates for the tree it describes: each regular file's
data rounded up to the block size (sparse files: their data segments), one block per
directory plus what its entries need, one block for a symlink whose target does not fit
in the inode (60 bytes and more), nothing for hardlinks, whiteouts (0/0 character
devices), devices and fifos. Paths listed twice count once (the last one wins), and
parent directories the archive does not list count as directories.
"""

from __future__ import annotations

from collections.abc import Callable
from math import ceil

import attrs

from ocistore.archive._compression import UNKNOWN, compression_for, decode, detect_compression
from ocistore.archive._tarformat import TYPE_DIR, TYPE_LINK, TYPE_REG, TYPE_SYMLINK, TarReader

__all__ = ["Footprint", "layer_footprint"]

_FAST_SYMLINK = 60  # ext4 keeps a symlink target shorter than this in the inode


@attrs.frozen
class Footprint:
    """A layer's unpacked tree in numbers."""

    tar_bytes: int
    """Length of the uncompressed tar stream."""
    entries: int
    files: int
    dirs: int
    allocated: int
    """Estimated bytes allocated for the tree on a filesystem with ``block_size`` blocks."""
    block_size: int


def layer_footprint(read: Callable[[int], bytes], media_type: str | None, block_size: int = 4096) -> Footprint:
    """The :class:`Footprint` of the layer blob read through ``read`` (``b""`` at its end)."""
    compression = compression_for(media_type)
    head = b""
    if compression == UNKNOWN:
        head = read(4)
        compression = detect_compression(head)
    pending = [head] if head else []

    def source_read(n: int) -> bytes:
        return pending.pop() if pending else read(n)

    chunks = decode(compression, source_read)
    tar_bytes = 0

    def source() -> bytes:
        nonlocal tar_bytes
        chunk = next(chunks, b"")
        tar_bytes += len(chunk)
        return chunk

    reader = TarReader(source)
    blocks: dict[str, int] = {}  # path -> blocks of its own data
    dir_entries: dict[str, int] = {"": 0}  # dir -> bytes of its directory entries
    entries = 0
    while (entry := reader.next()) is not None:
        entries += 1
        path = entry.name.strip("/")
        while path.startswith("./"):
            path = path[2:]
        if path in ("", "."):
            continue
        parent, _, base = path.rpartition("/")
        _ensure_dirs(parent, dir_entries, blocks)
        if path not in blocks and path not in dir_entries:
            dir_entries[parent] += 8 + -(-len(base.encode()) // 4) * 4
        if entry.type == TYPE_DIR:
            dir_entries.setdefault(path, 0)
            blocks.pop(path, None)
        elif entry.type == TYPE_REG:
            data = sum(n for _, n in entry.sparse) if entry.sparse is not None else entry.size
            blocks[path] = ceil(data / block_size)
        elif entry.type == TYPE_SYMLINK:
            blocks[path] = 1 if len(entry.linkname.encode()) >= _FAST_SYMLINK else 0
        elif entry.type == TYPE_LINK:
            blocks[path] = 0
        else:
            blocks[path] = 0
    reader.drain()
    dir_blocks = sum(max(1, ceil(n / block_size)) for n in dir_entries.values())
    files = sum(1 for p in blocks)
    return Footprint(tar_bytes=tar_bytes, entries=entries, files=files, dirs=len(dir_entries),
                     allocated=(sum(blocks.values()) + dir_blocks) * block_size, block_size=block_size)


def _ensure_dirs(path: str, dir_entries: dict[str, int], blocks: dict[str, int]) -> None:
    missing = []
    while path not in dir_entries:
        missing.append(path)
        path = path.rpartition("/")[0]
    for p in reversed(missing):
        parent, _, base = p.rpartition("/")
        dir_entries[parent] += 8 + -(-len(base.encode()) // 4) * 4
        dir_entries[p] = 0
        blocks.pop(p, None)
