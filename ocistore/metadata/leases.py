"""Leases: named holds on content, ingests, images and snapshots (containerd ``core/metadata/leases.go``).

A lease is a GC root until it expires (label ``containerd.io/gc.expire``, RFC 3339) or is
deleted; every resource it lists is kept alive, with its references -- unless the lease is
*flat* (label ``containerd.io/gc.flat``), which keeps the listed objects but does not
follow their references. Operations join a lease through :func:`lease_context` (the
thread's current lease, see :meth:`ocistore.metadata.db.DB.lease_context`); resources can
also be added and removed explicitly.

Records: ``leases`` ``<ns>\\0<id>`` -> ``{labels, created_at}``; ``lease_resources``
``<ns>\\0<id>\\0<type>\\0<resource id>`` -> ``""``. Resource types are ``content`` (the id is
a digest), ``ingests``, ``images`` and ``snapshots/<snapshotter>``; their key order is the
order :meth:`LeaseManager.list_resources` reports.
"""

from __future__ import annotations

import builtins
import contextlib
import os
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

import attrs

from ocistore import _time, errors
from ocistore._lazy import lazy_module
from ocistore.layout import RootLayout
from ocistore.metadata.db import DB, SEP, key, prefix
from ocistore.oci.digest import validate_digest

if TYPE_CHECKING:
    import base64

    from ocistore import filters as _filters
    from ocistore.metadata import gc
else:
    base64 = lazy_module("base64")  # (and struct, binascii) only for a random lease id
    _filters = lazy_module("ocistore.filters")  # compiled on the first filtered listing
    gc = lazy_module("ocistore.metadata.gc")  # only a synchronous delete without a store collects

__all__ = [
    "LABEL_EXPIRE",
    "LABEL_FLAT",
    "Lease",
    "LeaseManager",
    "Resource",
    "lease_context",
    "operation_lease",
    "random_id",
]

LABEL_EXPIRE = "containerd.io/gc.expire"
LABEL_FLAT = "containerd.io/gc.flat"


@attrs.frozen
class Lease:
    """A lease: its id, labels and creation time (UTC)."""

    id: str
    labels: dict[str, str] = attrs.field(factory=dict, hash=False)
    created_at: datetime | None = None


@attrs.frozen
class Resource:
    """One object held by a lease: ``type`` is ``content``, ``ingests``, ``images`` or
    ``snapshots/<snapshotter>``; ``id`` is the digest, ref, image name or snapshot key."""

    id: str
    type: str


def random_id() -> str:
    """A lease id in containerd's random form: ``"<nanosecond of the second>-<4 base64url chars>"``."""
    nanos = time.time_ns() % 1_000_000_000
    return f"{nanos}-{base64.urlsafe_b64encode(os.urandom(3)).decode()}"


def _check_resource(r: Resource) -> Resource:
    """Validate a resource's type and id (containerd ``parseLeaseResource``)."""
    if not isinstance(r.id, str) or not r.id:
        raise errors.InvalidArgument(f"lease resource {r!r}: id must be a non-empty string")
    if SEP in r.id or SEP in r.type:
        raise errors.InvalidArgument(f"lease resource {r!r}: ids and types must not contain NUL")
    parts = r.type.split("/")
    kind = parts[0]
    if kind in ("content", "ingests", "images"):
        if len(parts) != 1:
            raise errors.InvalidArgument(f"invalid lease resource type {r.type!r}: expected {kind!r}")
        if kind == "content":
            try:
                validate_digest(r.id)
            except errors.InvalidArgument as e:
                raise errors.InvalidArgument(f"invalid content resource id {r.id!r}: {e}") from None
    elif kind == "snapshots":
        if len(parts) != 2 or not parts[1]:
            raise errors.InvalidArgument(
                f"invalid snapshot resource type {r.type!r}: expected 'snapshots/<snapshotter>'"
            )
    else:
        raise errors.NotImplementedKind(
            f"lease resource type {r.type!r} not supported (use content, ingests, images or "
            "snapshots/<snapshotter>)"
        )
    return r


def _lease(lease_id: str, rec: Mapping[str, object]) -> Lease:
    labels = rec.get("labels") or {}
    created = rec.get("created_at")
    return Lease(
        id=lease_id,
        labels=dict(labels) if isinstance(labels, Mapping) else {},
        created_at=_time.from_ns(int(created)) if isinstance(created, int) else None,
    )


class LeaseManager:
    """The leases of one namespace.

    ``gc`` is called by ``delete(..., sync=True)`` (the store's collector); without it a
    synchronous delete collects with :func:`ocistore.metadata.gc.collect` on the root that
    holds the database (``<root>/metadata.lmdb``).
    """

    def __init__(self, db: DB, namespace: str, gc: Callable[[], object] | None = None) -> None:
        self.db = db
        self.ns = namespace
        self._gc = gc

    # -- leases ------------------------------------------------------------------------------
    def create(
        self, id: str | None = None,
        expire: timedelta | None = None, labels: Mapping[str, str] | None = None,
    ) -> Lease:
        """Create a lease; a random id unless ``id`` is given. AlreadyExists if it exists.

        ``expire`` sets ``containerd.io/gc.expire`` to now + expire (RFC 3339).
        """
        lease_id = random_id() if id is None else id
        if not isinstance(lease_id, str) or not lease_id:
            raise errors.InvalidArgument("lease id must be a non-empty string")
        if SEP in lease_id:
            raise errors.InvalidArgument(f"lease id {lease_id!r} must not contain NUL")
        values = {k: v for k, v in (labels or {}).items() if v != ""}
        for name, value in values.items():
            if not isinstance(name, str) or not isinstance(value, str) or not name:
                raise errors.InvalidArgument(
                    f"lease {lease_id!r}: label {name!r}: keys and values must be non-empty strings"
                )
        if expire is not None:
            values[LABEL_EXPIRE] = _time.rfc3339(_time.now() + expire)
        created = _time.now()
        with self.db.write() as txn:
            k = key(self.ns, lease_id)
            if txn.has("leases", k):
                raise errors.AlreadyExists(f"lease {lease_id!r} already exists in namespace {self.ns!r}")
            self.db.ensure_namespace(txn, self.ns)
            txn.put("leases", k, {"labels": values, "created_at": _time.to_ns(created)})
        return Lease(id=lease_id, labels=values, created_at=_time.from_ns(_time.to_ns(created)))

    def get(self, id: str) -> Lease:
        """The lease ``id``; NotFound if it does not exist."""
        with self.db.read() as txn:
            rec = txn.get("leases", key(self.ns, id))
        if rec is None:
            raise errors.NotFound(f"lease {id!r} not found in namespace {self.ns!r}")
        return _lease(id, rec)

    def delete(self, id: str, sync: bool = False) -> None:
        """Delete a lease and its resource list (NotFound if missing); ``sync`` runs gc first."""
        with self.db.write() as txn:
            k = key(self.ns, id)
            if not txn.delete("leases", k):
                raise errors.NotFound(f"lease {id!r} not found in namespace {self.ns!r}")
            txn.delete_prefix("lease_resources", prefix(self.ns, id))
        self.db.dirty += 1
        if sync:
            self._collect()

    def _collect(self) -> None:
        if self._gc is not None:
            self._gc()
            return
        gc.collect(self.db, RootLayout(os.path.dirname(self.db.path)))

    def list(self, filters: str | Sequence[str] | None = None) -> list[Lease]:
        """Leases of the namespace matching ``filters`` (fields ``id``, ``labels.<k>``)."""
        flt = _filters.parse_filters(filters)
        out = []
        with self.db.read() as txn:
            for k, rec in txn.scan("leases", prefix(self.ns)):
                lease = _lease(k.decode().split(SEP, 1)[1], rec)
                if flt.match(_filters.label_adaptor({"id": lease.id}, lease.labels)):
                    out.append(lease)
        return out

    # -- resources ---------------------------------------------------------------------------
    def add_resource(self, id: str, resource: Resource) -> None:
        """Hold ``resource`` with lease ``id`` (NotFound if the lease does not exist)."""
        r = _check_resource(resource)
        with self.db.write() as txn:
            if not txn.has("leases", key(self.ns, id)):
                raise errors.NotFound(f"lease {id!r} not found in namespace {self.ns!r}")
            txn.put("lease_resources", key(self.ns, id, r.type, r.id), "")

    def delete_resource(self, id: str, resource: Resource) -> None:
        """Stop holding ``resource``; an absent resource is fine, a missing lease is NotFound."""
        r = _check_resource(resource)
        with self.db.write() as txn:
            if not txn.has("leases", key(self.ns, id)):
                raise errors.NotFound(f"lease {id!r} not found in namespace {self.ns!r}")
            txn.delete("lease_resources", key(self.ns, id, r.type, r.id))
        self.db.dirty += 1

    def list_resources(self, id: str) -> builtins.list[Resource]:
        """Resources of lease ``id``: content, images, ingests, then ``snapshots/<sn>``."""
        with self.db.read() as txn:
            if not txn.has("leases", key(self.ns, id)):
                raise errors.NotFound(f"lease {id!r} not found in namespace {self.ns!r}")
            out = []
            for k in txn.keys("lease_resources", prefix(self.ns, id)):
                _, _, rtype, rid = k.decode().split(SEP, 3)
                out.append(Resource(id=rid, type=rtype))
        return out


@contextlib.contextmanager
def lease_context(
    manager: LeaseManager, expire: timedelta | None = timedelta(hours=24),
    labels: Mapping[str, str] | None = None, id: str | None = None,
) -> Iterator[Lease]:
    """Create a lease, make it this thread's current lease, and delete it on exit.

    Everything the thread writes in the manager's namespace inside the block joins the
    lease. The lease is deleted without a collection (run gc to reclaim what it held);
    a lease that is already gone at exit is fine.
    """
    lease = manager.create(id=id, expire=expire, labels=labels)
    try:
        with manager.db.lease_context(manager.ns, lease.id):
            yield lease
    finally:
        with contextlib.suppress(errors.NotFound):
            manager.delete(lease.id)


@contextlib.contextmanager
def operation_lease(manager: LeaseManager, expire: timedelta = timedelta(hours=24)) -> Iterator[None]:
    """Run an operation under the thread's current lease, or a temporary one.

    Inside a caller's ``with store.lease():`` everything the operation writes joins that
    lease; otherwise a lease expiring after ``expire`` holds it until the block ends, so a
    concurrent gc never removes what is being written.
    """
    if manager.db.current_lease(manager.ns) is not None:
        yield
        return
    with lease_context(manager, expire=expire):
        yield
