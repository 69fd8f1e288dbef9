"""Namespaces: their names, labels and deletion (containerd ``core/metadata/namespaces.go``).

A namespace exists once something was written in it (or it was created); its record holds
its labels. Deleting one requires it to be empty: no images, blobs, containers, leases or
snapshots of any snapshotter. Leftover ingest records are dropped with it, as containerd
drops the namespace's bucket; their bytes go at the next gc.

Leases count here although containerd does not check them: a live lease means an operation
may be writing into the namespace right now, and deleting the namespace under it would
drop what the lease holds.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from ocistore import errors
from ocistore.metadata.db import DB, SEP, Txn, prefix
from ocistore.metadata.labels import validate_labels

__all__ = ["Namespaces", "validate_namespace"]

_NS_RE = re.compile(r"[A-Za-z0-9]+(?:[._-][A-Za-z0-9]+)*")
_TABLE = "namespaces"


def validate_namespace(ns: str) -> str:
    """``ns`` if it is a valid namespace name (containerd's rules), else InvalidArgument."""
    if not isinstance(ns, str) or not ns or len(ns) > 76 or not _NS_RE.fullmatch(ns) or ns == "version":
        raise errors.InvalidArgument(
            f"invalid namespace {ns!r}: use letters, digits and single '.', '_' or '-' between them "
            "(at most 76 characters)"
        )
    return ns


def _contents(txn: Txn, ns: str) -> list[str]:
    """What keeps ``ns`` from being deleted, in containerd's words and order."""
    pfx = prefix(ns)
    out = [what for table, what in (("images", "images"), ("content", "blobs"), ("containers", "containers"),
                                    ("leases", "leases")) if txn.first_key(table, pfx) is not None]
    start: bytes | None = None
    while (k := txn.first_key("snapshots", pfx, start)) is not None:
        snapshotter = k[len(pfx):].split(SEP.encode(), 1)[0]
        out.append(f'snapshots on "{snapshotter.decode()}" snapshotter')
        start = pfx + snapshotter + b"\x01"  # past every key of this snapshotter
    return out


class Namespaces:
    """The namespaces of one store root (every ``Store`` view of the root sees the same)."""

    def __init__(self, db: DB) -> None:
        self.db = db

    def list(self) -> list[str]:
        """The names of every namespace, sorted."""
        return self.db.namespaces()

    def create(self, name: str, labels: Mapping[str, str] | None = None) -> None:
        """Create ``name`` with ``labels``; AlreadyExists if it exists, InvalidArgument for a bad name."""
        validate_namespace(name)
        values = validate_labels(labels, f"namespace {name}: ")
        with self.db.write() as txn:
            if txn.has(_TABLE, name.encode()):
                raise errors.AlreadyExists(f"namespace {name!r} already exists")
            self.db.ensure_namespace(txn, name)
            rec = txn.get(_TABLE, name.encode())
            rec["labels"] = values
            txn.put(_TABLE, name.encode(), rec)

    def labels(self, name: str) -> dict[str, str]:
        """The labels of ``name`` (empty for a namespace that was never used, as containerd)."""
        return self.db.namespace_labels(validate_namespace(name))

    def set_labels(self, name: str, labels: Mapping[str, str]) -> None:
        """Replace the labels of ``name`` (creating the namespace if needed)."""
        validate_namespace(name)
        self.db.set_namespace_labels(name, validate_labels(labels, f"namespace {name}: "))

    def set_label(self, name: str, key: str, value: str) -> None:
        """Set one label of ``name``; an empty ``value`` deletes it (containerd's ``SetLabel``)."""
        validate_namespace(name)
        validate_labels({key: value}, f"namespace {name}: ")
        with self.db.write() as txn:
            self.db.ensure_namespace(txn, name)
            rec = txn.get(_TABLE, name.encode())
            labels = dict(rec.get("labels") or {})
            if value:
                labels[key] = value
            else:
                labels.pop(key, None)
            rec["labels"] = labels
            txn.put(_TABLE, name.encode(), rec)

    def delete(self, name: str) -> None:
        """Delete the empty namespace ``name`` and its labels.

        FailedPrecondition if it still has images, blobs, containers, leases or snapshots
        (the message lists which); NotFound if there is no such namespace.
        """
        validate_namespace(name)
        with self.db.write() as txn:
            left = _contents(txn, name)
            if left:
                raise errors.FailedPrecondition(
                    f"namespace {name!r} must be empty, but it still has {', '.join(left)}; delete them "
                    "first (blobs and snapshots nothing references go at the next gc)"
                )
            if not txn.delete(_TABLE, name.encode()):
                raise errors.NotFound(f"namespace {name!r} not found")
            dropped = txn.delete_prefix("ingests", prefix(name))
            txn.delete_prefix("image_use", prefix(name))
        if dropped:
            self.db.dirty += 1
