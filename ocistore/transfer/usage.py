"""Disk usage of a store root, in bytes actually allocated."""

from __future__ import annotations

import os
import stat
from collections import Counter

import attrs

from ocistore import errors
from ocistore._files import allocated_bytes
from ocistore.images.image import image_parts
from ocistore.layout import RootLayout
from ocistore.snapshots.types import Kind, Snapshotter
from ocistore.transfer import evict
from ocistore.transfer.context import OperationContext

__all__ = ["DiskUsage", "ImageUsage", "SnapshotterUsage", "dedup_savings", "disk_usage", "image_usage"]


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


def dedup_savings(layout: RootLayout) -> Counter[tuple[str, int]]:
    """Per snapshot directory ``(snapshotter, id)``: allocated bytes of its regular files whose
    inode a snapshot directory walked before it (lower id; snapshotters by name) also holds.

    Summed over all snapshots this is what the hard links between snapshot directories save;
    each shared inode is paid for by the first directory holding it and counted as saved once
    per further directory (a link inside one directory, a tar hard link, saves nothing here).
    """
    owner: dict[tuple[int, int], tuple[str, int]] = {}
    saved: Counter[tuple[str, int]] = Counter()
    for sn, sn_dir in layout.snapshotter_dirs():
        try:
            with os.scandir(sn_dir) as it:
                ids = sorted(int(e.name) for e in it if e.name.isdigit() and e.is_dir(follow_symlinks=False))
        except OSError:
            continue
        for sid in ids:
            here = (sn, sid)
            counted: set[tuple[int, int]] = set()
            stack = [str(layout.snapshot_fs(sn, sid))]
            while stack:
                try:
                    with os.scandir(stack.pop()) as it:
                        entries = list(it)
                except OSError:
                    continue
                for e in entries:
                    try:
                        st = e.stat(follow_symlinks=False)
                    except OSError:
                        continue
                    if stat.S_ISDIR(st.st_mode):
                        stack.append(e.path)
                    elif st.st_nlink > 1 and stat.S_ISREG(st.st_mode):
                        inode = (st.st_dev, st.st_ino)
                        if owner.setdefault(inode, here) != here and inode not in counted:
                            counted.add(inode)
                            saved[here] += st.st_blocks * 512
    return saved


@attrs.frozen
class SnapshotterUsage:
    """One image's unpacked layers in one snapshotter."""

    snapshotter: str
    unpacked: int
    """Bytes of the image's committed layer snapshots (as measured when each was committed)."""
    exclusive: int
    """Of those, the bytes of layers no other image of the namespace uses."""
    layers: int
    """How many of the image's layers are committed there."""
    evictable: int = 0
    """Bytes ``evict(0)`` would free with this image's chain (no container, view or lease on
    it; a layer shared by several evictable images counts for the one evicted last)."""
    dedup_saved: int = 0
    """Of ``unpacked``, the bytes of files that are hard links to identical files of snapshots
    unpacked before (inline dedup): counted in ``unpacked``, not allocated again."""


@attrs.frozen
class ImageUsage:
    """What one image costs on disk, and how much of it is its own."""

    name: str
    compressed: int
    """Bytes of the selected platform's blobs that are present (index, manifest, config, layers)."""
    compressed_exclusive: int
    """Of those, the bytes of blobs no other image of the namespace uses."""
    unpacked: list[SnapshotterUsage]


def image_usage(ctx: OperationContext, snapshotters: list[str]) -> list[ImageUsage]:
    """Per image of the namespace (by name): compressed and unpacked bytes, and what is its own.

    Images whose selected manifest is not present (another platform was fetched) count
    their present blobs only. Shared blobs and layers count in full for every image using
    them; ``exclusive`` counts each once, for the one image that uses it.
    """
    images = sorted(ctx.images.list(), key=lambda i: i.name)
    blobs: dict[str, list[tuple[str, int]]] = {}
    chains: dict[str, list[str]] = {}
    for img in images:
        try:
            parts = image_parts(ctx.content, img.target)
        except errors.Error:
            present = [(img.target.digest, img.target.size)] if ctx.content.exists(img.target.digest) else []
            blobs[img.name], chains[img.name] = present, []
            continue
        blobs[img.name] = [(d.digest, d.size) for d in parts.blobs if ctx.content.exists(d.digest)]
        chains[img.name] = parts.chain_ids
    blob_users = Counter(d for name in blobs for d in {digest for digest, _ in blobs[name]})
    chain_users = Counter(c for name in chains for c in set(chains[name]))
    sizes: dict[tuple[str, str], int | None] = {}
    evictable: Counter[tuple[str, str]] = Counter()
    savings = dedup_savings(ctx.layout)
    for layer in evict.evict(ctx, 0, snapshotters, dry_run=True):
        for name in layer.images:  # images sharing a top: the same bytes, shown for each
            evictable[layer.snapshotter, name] += layer.size
    out = []
    for img in images:
        own = blobs[img.name]
        per_sn = []
        for sn_name in snapshotters:
            sn = ctx.snapshotter(sn_name)
            total = exclusive = layers = saved = 0
            for chain in chains[img.name]:
                if (sn_name, chain) not in sizes:
                    sizes[sn_name, chain] = _committed_size(sn, chain)
                size = sizes[sn_name, chain]
                if size is None:
                    break  # unpacked from the bottom up: nothing above a gap is this image's
                layers += 1
                total += size
                exclusive += size if chain_users[chain] == 1 else 0
                if savings:
                    saved += savings[sn_name, int(sn.path(chain).parent.name)]
            per_sn.append(SnapshotterUsage(sn_name, unpacked=total, exclusive=exclusive, layers=layers,
                                           evictable=evictable[sn_name, img.name], dedup_saved=saved))
        out.append(ImageUsage(
            name=img.name,
            compressed=sum(size for _, size in own),
            compressed_exclusive=sum(size for digest, size in own if blob_users[digest] == 1),
            unpacked=per_sn,
        ))
    return out


def _committed_size(sn: Snapshotter, chain: str) -> int | None:
    try:
        if sn.stat(chain).kind is not Kind.COMMITTED:
            return None
        return sn.usage(chain).size
    except errors.NotFound:
        return None
