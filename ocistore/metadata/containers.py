"""Container records (containerd ``core/metadata/containers.go``), without runtime parts."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any

import attrs

from ocistore import _time, errors
from ocistore.metadata.db import DB, Txn, key, prefix, split_key
from ocistore.metadata.labels import validate_labels

__all__ = ["LAZY_ROOTFS_LABEL", "ContainerRecord", "ContainerRecords"]

LAZY_ROOTFS_LABEL = "ocistore.io/lazy-rootfs"
"""Container label: the directory of its lazy rootfs helper (mount point ``mnt``, ``pid``, ``log``)."""


@attrs.frozen
class ContainerRecord:
    """What the metadata database keeps for a container."""

    id: str
    image: str
    snapshotter: str
    snapshot_key: str
    labels: dict[str, str] = attrs.field(factory=dict, hash=False)
    created_at: datetime | None = None
    updated_at: datetime | None = None


def _from_record(cid: str, rec: Mapping[str, Any]) -> ContainerRecord:
    return ContainerRecord(
        id=cid, image=rec["image"], snapshotter=rec["snapshotter"], snapshot_key=rec["snapshot_key"],
        labels=dict(rec.get("labels") or {}), created_at=_time.from_ns(rec["created_at"]),
        updated_at=_time.from_ns(rec["updated_at"]),
    )


def validate_id(cid: str, what: str = "container") -> None:
    """Raise InvalidArgument unless ``cid`` is a valid containerd identifier.

    That is: letters and digits, joined by single ``.``, ``_`` or ``-``, at most 76 characters.
    """
    if not cid or len(cid) > 76 or not re.fullmatch(r"[A-Za-z0-9]+(?:[._-][A-Za-z0-9]+)*", cid):
        raise errors.InvalidArgument(
            f"invalid {what} id {cid!r}: use letters, digits and single '.', '_' or '-' between them "
            "(at most 76 characters)"
        )


class ContainerRecords:
    """CRUD on container records of one namespace."""

    def __init__(self, db: DB, namespace: str) -> None:
        self.db = db
        self.ns = namespace

    def get(self, cid: str) -> ContainerRecord:
        """The container ``cid``; NotFound if this namespace has none."""
        with self.db.read() as txn:
            rec = txn.get("containers", key(self.ns, cid))
        if rec is None:
            raise errors.NotFound(f"container {cid!r} not found in namespace {self.ns!r}")
        return _from_record(cid, rec)

    def list(self) -> list[ContainerRecord]:
        """Every container of this namespace, ordered by id."""
        with self.db.read() as txn:
            return [_from_record(split_key(k)[1], r) for k, r in txn.scan("containers", prefix(self.ns))]

    def create(self, record: ContainerRecord, also: Callable[[Txn], None] | None = None) -> ContainerRecord:
        """Store a new container and return it with cleaned labels and both timestamps set.

        The record's own timestamps are ignored. InvalidArgument for a bad id or label;
        AlreadyExists if the id is taken in this namespace. ``also(txn)`` writes more in the
        same transaction (a create records the image's use with it: one commit, not two).
        """
        validate_id(record.id)
        labels = validate_labels(record.labels, f"container {record.id}: ")
        t = _time.to_ns(_time.now())
        with self.db.write() as txn:
            k = key(self.ns, record.id)
            if txn.has("containers", k):
                raise errors.AlreadyExists(f"container {record.id!r} already exists in namespace {self.ns!r}")
            self.db.ensure_namespace(txn, self.ns)
            txn.put("containers", k, {
                "image": record.image, "snapshotter": record.snapshotter,
                "snapshot_key": record.snapshot_key, "labels": labels, "created_at": t, "updated_at": t,
            })
            if also is not None:
                also(txn)
        return attrs.evolve(record, labels=labels, created_at=_time.from_ns(t), updated_at=_time.from_ns(t))

    def delete(self, cid: str) -> ContainerRecord:
        """Remove the container ``cid`` and return its last record; NotFound if absent.

        What only it kept alive (its snapshot, its labels' references) goes at the next gc.
        """
        with self.db.write() as txn:
            k = key(self.ns, cid)
            rec = txn.get("containers", k)
            if rec is None:
                raise errors.NotFound(f"container {cid!r} not found in namespace {self.ns!r}")
            txn.delete("containers", k)
        self.db.dirty += 1
        return _from_record(cid, rec)
