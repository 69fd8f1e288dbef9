"""Containers: a record plus an active snapshot on the image's top chain ID.

Creating a container from an image that was only fetched unpacks it first (into the
container's snapshotter, with labels) and retries, exactly once; concurrent creates of
containers from one image unpack it once (the unpack holds a keyed lock and the others
find the chain committed when they get it).
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import attrs

from ocistore import errors
from ocistore.images.walk import image_parts
from ocistore.metadata.containers import ContainerRecord, validate_id
from ocistore.oci.reference import parse_reference

if TYPE_CHECKING:
    from ocistore.snapshots.types import Mount
    from ocistore.store import Store

__all__ = ["Container", "Containers"]


@attrs.frozen
class Container(ContainerRecord):
    """A container's record, bound to its store: ``mounts`` gives its root filesystem's mounts."""

    store: Store | None = attrs.field(default=None, eq=False, repr=False, hash=False)

    @property
    def mounts(self) -> list[Mount]:
        if self.store is None:
            raise errors.FailedPrecondition(f"container {self.id!r} is not bound to a store")
        return self.store.snapshots(self.snapshotter).mounts(self.snapshot_key)


def _normalise_name(store: Store, image: str) -> str:
    """Accept the stored name or any reference that normalises to it."""
    try:
        store.images.get(image)
        return image
    except errors.NotFound:
        pass
    try:
        return str(parse_reference(image))
    except errors.InvalidArgument:
        return image


class Containers:
    """``Store.containers``."""

    def __init__(self, store: Store) -> None:
        self._store = store
        from ocistore.metadata.containers import ContainerRecords

        self._records = ContainerRecords(store.db, store.namespace)

    def _wrap(self, rec: ContainerRecord) -> Container:
        return Container(id=rec.id, image=rec.image, snapshotter=rec.snapshotter,
                         snapshot_key=rec.snapshot_key, labels=rec.labels, created_at=rec.created_at,
                         updated_at=rec.updated_at, store=self._store)

    def get(self, cid: str) -> Container:
        return self._wrap(self._records.get(cid))

    def list(self) -> list[Container]:
        return [self._wrap(r) for r in self._records.list()]

    def create(
        self, id: str, image: str, snapshotter: str = "overlayfs",
        labels: Mapping[str, str] | None = None, platform: Any = None,
    ) -> Container:
        """Create container ``id`` with a writable snapshot of ``image`` (unpacking it if needed)."""
        from ocistore.transfer.unpack import unpack_parts

        store = self._store
        validate_id(id)
        name = _normalise_name(store, image)
        img = store.images.get(name)
        try:
            self._records.get(id)
            raise errors.AlreadyExists(f"container {id!r} already exists in namespace {store.namespace!r}")
        except errors.NotFound:
            pass
        parts = image_parts(store.content, img.target, platform)
        sn = store.snapshots(snapshotter)
        # An active snapshot is a GC root by itself, so the warm path needs no lease.
        try:
            sn.prepare(id, parts.chain_id)
        except errors.NotFound:
            with store._operation_lease():
                unpack_parts(store, parts, image_ref=name, snapshotter=snapshotter)
                sn.prepare(id, parts.chain_id)
        try:
            rec = self._records.create(ContainerRecord(
                id=id, image=name, snapshotter=snapshotter, snapshot_key=id, labels=dict(labels or {}),
            ))
        except BaseException:
            sn.remove(id)
            raise
        return self._wrap(rec)

    def delete(self, cid: str) -> None:
        """Delete the record and its active snapshot."""
        rec = self._records.delete(cid)
        with contextlib.suppress(errors.NotFound):
            self._store.snapshots(rec.snapshotter).remove(rec.snapshot_key)
