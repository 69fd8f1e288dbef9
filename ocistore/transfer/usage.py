"""Disk usage of a store root, in bytes actually allocated."""

from __future__ import annotations

import contextlib
import os
import stat
from collections import Counter
from typing import TYPE_CHECKING

import attrs

from ocistore import errors
from ocistore._files import allocated_bytes
from ocistore._lazy import lazy_module
from ocistore.images.image import image_parts
from ocistore.layout import RootLayout
from ocistore.oci.descriptor import Descriptor
from ocistore.snapshots.types import Kind, Snapshotter
from ocistore.transfer import evict
from ocistore.transfer.context import OperationContext

if TYPE_CHECKING:
    from ocistore import archive
else:
    archive = lazy_module("ocistore.archive")

__all__ = ["DiskUsage", "ImageUsage", "ModeEstimate", "SnapshotterUsage", "WhatIf", "dedup_savings", "disk_usage",
           "image_usage", "what_if"]

FOOTPRINT_LABEL = "ocistore.io/unpacked-footprint"
"""Content label caching a layer's estimated unpacked bytes: ``<block size>:<allocated>:<tar bytes>``."""


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


@attrs.frozen
class ModeEstimate:
    """What one image (or all of them, shared parts once) would take on disk in each mode."""

    name: str
    fetched: int
    """Fetch only: the blobs of the selected platform (allocated, block-rounded)."""
    pulled: int
    """Pulled: the blobs plus the unpacked layers."""
    discarded: int
    """Pulled with ``discard_layers``: index, manifest, config and the unpacked layers."""
    unpack_adds: int
    """What unpacking would add now: the layers not yet committed in the snapshotter."""
    unpacked_layers: int
    """Of the image's layers, how many are committed already (their size is measured, not estimated)."""
    layers: int


@attrs.frozen
class WhatIf:
    """The answer of :func:`what_if`: per image, the whole store per mode, and the basis."""

    images: list[ModeEstimate]
    total: ModeEstimate
    """All images with shared blobs and layers once, plus what the store has besides them
    (metadata, directories, containers' snapshots, other blobs): the store's total in each mode."""
    now: int
    """The store's allocated bytes now (``disk_usage().total``)."""
    block_size: int
    snapshotter: str


def what_if(ctx: OperationContext, layout: RootLayout, snapshotter: str = "overlayfs") -> WhatIf:
    """What the images of the namespace would take fetched-only, pulled, pulled with discard.

    From the manifests and configs, and for each layer not yet unpacked its *footprint*: its
    blob is streamed once through the tar headers (no file is written; see
    ``archive._footprint``) and the result cached in the layer's ``ocistore.io/unpacked-footprint``
    content label, so the next call reads only labels. Committed layers count their measured
    size. A layer whose blob is gone and that is not unpacked counts its compressed size.
    """
    bs = os.statvfs(layout.root).f_bsize
    sn = ctx.snapshotter(snapshotter)
    skeleton = 2 * bs  # a snapshot's own directory and its work/ (fs/ is the layer's root dir)
    blob_alloc: dict[str, int] = {}
    chain_size: dict[str, int] = {}
    committed: dict[str, bool] = {}
    per_image: list[tuple[str, list[str], list[str], list[str]]] = []  # name, blobs, layer blobs, chains
    for img in sorted(ctx.images.list(), key=lambda i: i.name):
        try:
            parts = image_parts(ctx.content, img.target)
        except errors.Error:
            continue
        blobs: list[str] = []
        for d in (parts.target, parts.manifest_desc, parts.manifest.config, *parts.layers):
            blobs.append(d.digest)
            blob_alloc.setdefault(d.digest, _blob_allocated(layout, d.digest, d.size, bs))
        for d, chain in zip(parts.layers, parts.chain_ids, strict=True):
            if chain not in chain_size:
                size = _committed_size(sn, chain)
                committed[chain] = size is not None
                own = size if size is not None else _footprint_of(ctx, layout, d, bs)
                chain_size[chain] = own + skeleton
        per_image.append((img.name, list(dict.fromkeys(blobs)), [d.digest for d in parts.layers], parts.chain_ids))

    def estimate(name: str, blobs: set[str], layers: set[str], chains: set[str], fixed: int) -> ModeEstimate:
        fetched = sum(blob_alloc[d] for d in blobs)
        snaps = sum(chain_size[c] for c in chains)
        return ModeEstimate(
            name=name, fetched=fixed + fetched, pulled=fixed + fetched + snaps,
            discarded=fixed + fetched - sum(blob_alloc[d] for d in layers) + snaps,
            unpack_adds=sum(chain_size[c] for c in chains if not committed[c]),
            unpacked_layers=sum(1 for c in chains if committed[c]), layers=len(chains))

    images = [estimate(n, set(b), set(lb), set(ch), 0) for n, b, lb, ch in per_image]
    all_blobs = {d for _, b, _, _ in per_image for d in b}
    all_layers = {d for _, _, lb, _ in per_image for d in lb}
    all_chains = {c for _, _, _, ch in per_image for c in ch}
    now = disk_usage(layout)
    present = sum(blob_alloc[d] for d in all_blobs if ctx.content.exists(d))
    unpacked = sum(chain_size[c] for c in all_chains if committed[c])
    fixed = max(0, now.total - present - unpacked)
    total = estimate("(all images)", all_blobs, all_layers, all_chains, fixed)
    return WhatIf(images=images, total=total, now=now.total, block_size=bs, snapshotter=snapshotter)


def _blob_allocated(layout: RootLayout, digest: str, size: int, bs: int) -> int:
    try:
        return layout.content.blob_path(digest).stat().st_blocks * 512
    except (OSError, errors.Error):
        return -(-size // bs) * bs


def _footprint_of(ctx: OperationContext, layout: RootLayout, desc: Descriptor, bs: int) -> int:
    try:
        info = ctx.content.info(desc.digest)
    except errors.NotFound:
        return -(-desc.size // bs) * bs  # no blob, not unpacked: the compressed size is all we know
    cached = info.labels.get(FOOTPRINT_LABEL, "").split(":")
    if len(cached) == 3 and cached[0] == str(bs) and cached[1].isdigit():
        return int(cached[1])
    with ctx.content.open(desc.digest) as f:
        fp = archive.layer_footprint(f.read, desc.media_type, bs)
    with contextlib.suppress(errors.Error):  # a read-only store: estimate again next time
        ctx.content.update(desc.digest, {FOOTPRINT_LABEL: f"{bs}:{fp.allocated}:{fp.tar_bytes}"},
                           [f"labels.{FOOTPRINT_LABEL}"])
    return fp.allocated
