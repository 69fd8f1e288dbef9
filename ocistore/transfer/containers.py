"""Containers: a record plus an active snapshot on the image's top chain ID.

Creating a container from an image that was only fetched unpacks it first (into the
container's snapshotter, with labels) and retries, exactly once; concurrent creates of
containers from one image unpack it once (the unpack holds a keyed lock and the others
find the chain committed when they get it).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING

import attrs

from ocistore import errors
from ocistore._lazy import lazy_module
from ocistore.images.image import ImageParts, image_parts
from ocistore.metadata.containers import LAZY_ROOTFS_LABEL, ContainerRecord, ContainerRecords, validate_id
from ocistore.oci.platform import PlatformArg
from ocistore.snapshots.types import Mount
from ocistore.transfer.context import OperationContext, SnapshotterLookup

if TYPE_CHECKING:
    from ocistore.transfer import lazyread, lazyrootfs, unpack
    from ocistore.transfer import progress as _progress
    from ocistore.transfer.progress import ProgressEvent
else:
    # A create of an unpacked image needs neither the applier nor eStargz and FUSE, nor the
    # progress records (only a create that unpacks reports progress).
    _progress = lazy_module("ocistore.transfer.progress")
    lazyread = lazy_module("ocistore.transfer.lazyread")
    lazyrootfs = lazy_module("ocistore.transfer.lazyrootfs")
    unpack = lazy_module("ocistore.transfer.unpack")

__all__ = ["Container", "Containers"]


@attrs.frozen
class Container(ContainerRecord):
    """A container's record, bound to its store: ``mounts`` gives its root filesystem's mounts."""

    snapshotters: SnapshotterLookup | None = attrs.field(default=None, eq=False, repr=False, hash=False)
    restart_lazy: Callable[[], object] | None = attrs.field(default=None, eq=False, repr=False, hash=False)
    """Starts a lazy container's FUSE helper again when it is gone (bound by the store)."""

    @property
    def lazy(self) -> bool:
        """Whether the root filesystem is lazy (an overlay over a FUSE mount of the image's TOCs)."""
        return LAZY_ROOTFS_LABEL in self.labels

    @property
    def mounts(self) -> list[Mount]:
        """The mounts of the container's root filesystem (its active snapshot).

        For a lazy container: an overlay whose lower dir is the FUSE mount of its image. A
        FUSE helper that is gone (killed, or after a reboot) is started again first;
        Unavailable if that fails."""
        if self.snapshotters is None:
            raise errors.FailedPrecondition(f"container {self.id!r} is not bound to a store")
        sn = self.snapshotters(self.snapshotter)
        if self.lazy:
            return lazyrootfs.lazy_mounts(Path(self.labels[lazyrootfs.LAZY_LABEL]), sn.path(self.snapshot_key),
                                          self.id, self.restart_lazy)
        return sn.mounts(self.snapshot_key)

    def read_profile(self, timeout: float = 10.0) -> dict[str, list[tuple[int, int]]]:
        """A lazy container's reads so far: for each file of its image read through the lazy
        rootfs, the byte ranges ``[start, end)`` read (the kernel's readahead included). Pass
        it to ``store.prefetch`` (or save it as JSON) to fetch those chunks of the image in a
        few requests before the next start, anywhere the image is fetched lazily.
        FailedPrecondition for a container that is not lazy; Unavailable when its helper is
        gone (a restarted helper starts a new profile)."""
        if not self.lazy:
            raise errors.FailedPrecondition(f"container {self.id!r} has no lazy rootfs, so no profile of its reads")
        return lazyrootfs.read_profile(Path(self.labels[lazyrootfs.LAZY_LABEL]), self.id, timeout)


class Containers:
    """``Store.containers``: the containers of one namespace."""

    def __init__(self, ctx: OperationContext, records: ContainerRecords,
                 open_lazy: Callable[[str, PlatformArg], lazyread.LazyImage] | None = None) -> None:
        """Bind to the operation context and container records of one namespace; ``open_lazy``:
        the store's cache of open eStargz images (a lazy create checks the image through it)."""
        self._ctx = ctx
        self._records = records
        self._open_lazy = open_lazy

    def _wrap(self, rec: ContainerRecord) -> Container:
        ctx = self._ctx
        restart = None
        if LAZY_ROOTFS_LABEL in rec.labels:
            def restart() -> object:
                return lazyrootfs.restart_helper(ctx.layout, ctx.namespace, rec.id)
        return Container(id=rec.id, image=rec.image, snapshotter=rec.snapshotter,
                         snapshot_key=rec.snapshot_key, labels=rec.labels, created_at=rec.created_at,
                         updated_at=rec.updated_at, snapshotters=ctx.snapshotter, restart_lazy=restart)

    def get(self, cid: str) -> Container:
        """The container ``cid``; NotFound if it does not exist."""
        return self._wrap(self._records.get(cid))

    def list(self) -> list[Container]:
        """Every container of the namespace."""
        return [self._wrap(r) for r in self._records.list()]

    def create(
        self, id: str, image: str, snapshotter: str = "overlayfs",
        labels: Mapping[str, str] | None = None, platform: PlatformArg = None,
        progress: Callable[[ProgressEvent], None] | None = None, lazy: bool = False,
        *, fill: bool = True, prefetch: lazyread.PrefetchFiles | None = None,
    ) -> Container:
        """Create container ``id`` with a writable snapshot of ``image`` (unpacking it if needed).

        ``image`` is the stored name or any reference that normalises to it. AlreadyExists
        if the container exists; NotFound if the image does not. ``progress`` receives the
        events of a lazy unpack, as for pull.

        ``lazy=True`` on an eStargz image that is not unpacked yet gives a lazy rootfs: a
        FUSE mount of the merged TOCs (files read on first access, the prioritized ones
        before this returns) under an overlay upper dir, served by a detached helper
        process that also unpacks the image in the background (see
        ``ocistore.transfer.lazyrootfs``). An image already unpacked gives an ordinary
        container. FailedPrecondition when FUSE is missing or the image is not eStargz.
        ``fill=False`` (lazy only): no background unpack, so a lazily fetched image
        downloads only the chunks the container reads (and its prioritized files).
        ``prefetch`` (lazy only): files or a profile, as ``store.prefetch`` takes them, fetched
        while the helper starts, before this returns, instead of the prioritized files.
        """
        ctx = self._ctx
        validate_id(id)
        if labels and LAZY_ROOTFS_LABEL in labels:
            raise errors.InvalidArgument(f"label {LAZY_ROOTFS_LABEL} is set by lazy=True, not by the caller")
        img = ctx.images.find(image)
        try:
            self._records.get(id)
            raise errors.AlreadyExists(f"container {id!r} already exists in namespace {ctx.namespace!r}")
        except errors.NotFound:
            pass
        parts = image_parts(ctx.content, img.target, platform, image=img.name)
        sn = ctx.snapshotter(snapshotter)
        # An active snapshot is a GC root by itself, so the warm path needs no lease.
        use = ctx.image_use
        touch = None if use is None or use.db.readonly else (
            lambda txn: use.touch_in(txn, snapshotter, img.name))  # recorded with the container: one commit
        try:
            sn.prepare(id, parts.chain_id)
        except errors.NotFound:
            if lazy:
                return self._create_lazy(id, img.name, parts, snapshotter, labels, fill, platform, prefetch)
            with ctx.lease():
                # unpack_parts records the use and, over a snapshot budget, evicts other images
                unpack.unpack_parts(ctx, parts, image_ref=img.name, snapshotter=snapshotter,
                             progress=_progress.Progress(progress))
                sn.prepare(id, parts.chain_id)
        try:
            rec = self._records.create(ContainerRecord(
                id=id, image=img.name, snapshotter=snapshotter, snapshot_key=id, labels=dict(labels or {}),
            ), also=touch)
        except BaseException:
            sn.remove(id)
            raise
        return self._wrap(rec)

    def _create_lazy(self, id: str, image: str, parts: ImageParts, snapshotter: str,
                     labels: Mapping[str, str] | None, fill: bool = True, platform: PlatformArg = None,
                     prefetch: lazyread.PrefetchFiles | None = None) -> Container:
        ctx = self._ctx
        sn = ctx.snapshotter(snapshotter)
        if not sn.supports_mount:
            raise errors.InvalidArgument(f"a lazy rootfs needs an overlay snapshotter, not {snapshotter!r}")
        missing = lazyrootfs.fuse_missing()
        if missing is not None:
            raise errors.FailedPrecondition(
                f"a lazy rootfs needs FUSE: {missing}; without it, read files with store.read_file, or create "
                "the container without lazy=True (which unpacks the image)"
            )
        # typed errors here: not eStargz, blob missing, bad TOC (the store's open image when it has one)
        if self._open_lazy is not None:
            opened, owned = self._open_lazy(image, platform), None
        else:
            opened = owned = lazyread.open_image(ctx, parts, image)
        meanwhile = None if prefetch is None else (lambda: opened.prefetch(prefetch))
        try:
            sn.prepare(id, "")  # the upper dir; the image's tree is the FUSE lower dir
            try:
                directory = lazyrootfs.start_helper(ctx.layout, ctx.namespace, id, image, snapshotter, fill=fill,
                                                    meanwhile=meanwhile)
            except BaseException:
                sn.remove(id)
                raise
        finally:
            if owned is not None:
                owned.close()
        try:
            rec = self._records.create(ContainerRecord(
                id=id, image=image, snapshotter=snapshotter, snapshot_key=id,
                labels={**(labels or {}), lazyrootfs.LAZY_LABEL: str(directory)},
            ))
        except BaseException:
            lazyrootfs.stop_helper(directory)
            sn.remove(id)
            raise
        return self._wrap(rec)

    def delete(self, cid: str) -> None:
        """Delete the record and its active snapshot (a lazy one's FUSE helper is stopped first)."""
        if LAZY_ROOTFS_LABEL in self._records.get(cid).labels:
            lazyrootfs.stop_helper(self._ctx.layout.lazy_dir(self._ctx.namespace, cid))
        rec = self._records.delete(cid)
        with contextlib.suppress(errors.NotFound):
            self._ctx.snapshotter(rec.snapshotter).remove(rec.snapshot_key)
