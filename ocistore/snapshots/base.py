"""The metadata rules every snapshotter shares, kept in the store's LMDB tables.

This is containerd's ``core/snapshots/storage`` plus the parts of ``core/metadata/snapshot.go``
that apply to a single process: one key space per snapshotter and namespace, parents that
must be committed, commit with optional rebase, label-only updates, the
``containerd.io/snapshot.ref`` target protocol and lease membership.

Records (binding: the garbage collector reads them) live in table ``snapshots`` under
``<ns>\\0<snapshotter>\\0<key>``::

    {"id": 7, "kind": "active"|"view"|"committed", "parent": "<key or ''>", "labels": {...},
     "created_at": <ns>, "updated_at": <ns>, "size": <bytes>, "inodes": <count>}

and every child is indexed in ``snapshot_children`` under
``<ns>\\0<snapshotter>\\0<parent>\\0<child>``. A snapshot's files live in
``<root>/snapshots/<snapshotter>/<id>/``; the directory is built as ``new-<random>`` and renamed
to ``<id>`` inside the write transaction that stores the record, so a crash leaves either no
record (and an orphan directory that GC removes) or a record with its directory.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs

from ocistore import _faults, errors
from ocistore._files import allocated_bytes, fsync_dir, make_temp_dir, remove_tree
from ocistore._lazy import lazy_module
from ocistore._time import from_ns, now, to_ns
from ocistore.layout import NEW_PREFIX, RootLayout
from ocistore.metadata import dedup
from ocistore.metadata.db import DB, Txn, key, prefix
from ocistore.metadata.labels import MAX_LABEL_SIZE
from ocistore.metadata.labels import validate_labels as _validate_labels
from ocistore.snapshots.types import Kind, Mount, SnapshotInfo, Usage

if TYPE_CHECKING:
    from ocistore import filters as _filters
    from ocistore.filters import Adaptor
else:
    _filters = lazy_module("ocistore.filters")  # compiled on the first filtered walk

__all__ = [
    "LABEL_SIZE_LIMIT",
    "SNAPSHOT_REF_LABEL",
    "SnapshotRecord",
    "SnapshotterBase",
    "disk_usage",
    "validate_labels",
]

LABEL_SIZE_LIMIT = MAX_LABEL_SIZE
SNAPSHOT_REF_LABEL = "containerd.io/snapshot.ref"
_TABLE = "snapshots"
_CHILDREN = "snapshot_children"


@attrs.frozen
class SnapshotRecord:
    """One decoded row of table ``snapshots`` (times in nanoseconds since the epoch)."""

    id: int
    kind: Kind
    parent: str
    labels: dict[str, str] = attrs.field(factory=dict, hash=False)
    created_at: int = 0
    updated_at: int = 0
    size: int = 0
    inodes: int = 0

    @classmethod
    def from_json(cls, value: Mapping[str, Any]) -> SnapshotRecord:
        """Decode a stored JSON value."""
        return cls(
            id=int(value["id"]),
            kind=Kind(value["kind"]),
            parent=str(value.get("parent", "")),
            labels=dict(value.get("labels") or {}),
            created_at=int(value.get("created_at", 0)),
            updated_at=int(value.get("updated_at", 0)),
            size=int(value.get("size", 0)),
            inodes=int(value.get("inodes", 0)),
        )

    def to_json(self) -> dict[str, Any]:
        """The JSON value to store."""
        return {
            "id": self.id,
            "kind": self.kind.value,
            "parent": self.parent,
            "labels": dict(self.labels),
            "created_at": self.created_at,
            "updated_at": self.updated_at,
            "size": self.size,
            "inodes": self.inodes,
        }

    def info(self, name: str) -> SnapshotInfo:
        """The public view of this record under ``name``."""
        return SnapshotInfo(
            name=name,
            parent=self.parent,
            kind=self.kind,
            labels=dict(self.labels),
            created_at=from_ns(self.created_at),
            updated_at=from_ns(self.updated_at),
        )


def validate_labels(labels: Mapping[str, str] | None, what: str) -> dict[str, str]:
    """Labels to store: empty values dropped, each key+value within 4096 bytes (InvalidArgument)."""
    return _validate_labels(labels, f"{what}: ")


def disk_usage(path: Path) -> Usage:
    """Allocated bytes (st_blocks*512) and inodes under ``path``, each inode counted once."""
    seen: set[tuple[int, int]] = set()
    size = allocated_bytes(path, seen)
    return Usage(size=size, inodes=len(seen))


def _check_name(value: str, what: str) -> None:
    if not isinstance(value, str) or value == "":
        raise errors.InvalidArgument(f"snapshot {what} must be a non-empty string, got {value!r}")
    if "\x00" in value:
        raise errors.InvalidArgument(f"snapshot {what} {value!r} must not contain a NUL character")


class SnapshotterBase:
    """Snapshot metadata on LMDB plus directory lifecycle; subclasses decide the files.

    Subclasses set :attr:`name` and implement :meth:`_build` (fill a new snapshot directory)
    and :meth:`_mounts_for` (the mounts of an active snapshot or view).
    """

    name: str = ""
    supports_mount: bool = True
    supports_rebase: bool = True

    def __init__(self, db: DB, namespace: str, root: Path | RootLayout) -> None:
        """Bind to ``namespace`` of the store whose root directory (or its layout) is ``root``."""
        _check_name(namespace, "namespace")
        self.db = db
        self.namespace = namespace
        self.layout = root if isinstance(root, RootLayout) else RootLayout(root)
        self.root = self.layout.root
        self.dir = self.layout.snapshotter_dir(self.name)
        if not db.readonly:
            self.dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        self._closed = False

    # -- subclass hooks ---------------------------------------------------------------------
    def _build(self, tmp: Path, kind: Kind, parent_ids: list[int]) -> None:
        """Create ``tmp/fs`` (and whatever else) for a new snapshot over ``parent_ids``."""
        raise NotImplementedError

    def _mounts_for(self, rec: SnapshotRecord, parent_ids: list[int]) -> list[Mount]:
        """The mounts of the active snapshot or view ``rec`` over ``parent_ids``."""
        raise NotImplementedError

    # -- paths ------------------------------------------------------------------------------
    def _id_dir(self, sid: int) -> Path:
        return self.layout.snapshot_dir(self.name, sid)

    def _fs(self, sid: int) -> Path:
        return self.layout.snapshot_fs(self.name, sid)

    @property
    def _rtype(self) -> str:
        return f"snapshots/{self.name}"

    def _what(self, k: str) -> str:
        return f"snapshot {k!r} ({self.name}, namespace {self.namespace!r})"

    # -- record access ------------------------------------------------------------------------
    def _key(self, k: str) -> bytes:
        return key(self.namespace, self.name, k)

    def _get(self, txn: Txn, k: str) -> SnapshotRecord | None:
        value = txn.get(_TABLE, self._key(k))
        return None if value is None else SnapshotRecord.from_json(value)

    def _require(self, txn: Txn, k: str) -> SnapshotRecord:
        rec = self._get(txn, k)
        if rec is None:
            raise errors.NotFound(f"{self._what(k)} does not exist")
        return rec

    def _put(self, txn: Txn, k: str, rec: SnapshotRecord) -> None:
        txn.put(_TABLE, self._key(k), rec.to_json())

    def _first_child(self, txn: Txn, parent: str) -> str | None:
        pfx = prefix(self.namespace, self.name, parent)
        for k, _ in txn.scan(_CHILDREN, pfx):
            return k[len(pfx) :].decode()
        return None

    def _link(self, txn: Txn, parent: str, child: str) -> None:
        if parent:
            txn.put(_CHILDREN, key(self.namespace, self.name, parent, child), "")

    def _unlink(self, txn: Txn, parent: str, child: str) -> None:
        if parent:
            txn.delete(_CHILDREN, key(self.namespace, self.name, parent, child))

    def _chain(self, txn: Txn, parent: str) -> list[int]:
        """Directory ids of ``parent`` and its ancestors, nearest first."""
        ids: list[int] = []
        current = parent
        while current:
            rec = self._get(txn, current)
            if rec is None:
                raise errors.FailedPrecondition(
                    f"{self._what(current)} is missing from the parent chain; run `ocistore check`"
                )
            ids.append(rec.id)
            current = rec.parent
        return ids

    def _parent_ids(self, txn: Txn, parent: str) -> list[int]:
        """Check that ``parent`` is "" or committed and return its chain of ids."""
        if not parent:
            return []
        rec = self._get(txn, parent)
        if rec is None:
            raise errors.NotFound(f"parent {self._what(parent)} does not exist; commit it first")
        if rec.kind is not Kind.COMMITTED:
            raise errors.InvalidArgument(
                f"parent {self._what(parent)} is {rec.kind.value}, not committed; "
                "only committed snapshots can be parents"
            )
        return self._chain(txn, parent)

    def _check_open(self) -> None:
        if self._closed:
            raise errors.FailedPrecondition(f"the {self.name} snapshotter is closed; open a new one")

    # -- create -------------------------------------------------------------------------------
    def prepare(self, key: str, parent: str = "", labels: Mapping[str, str] | None = None) -> list[Mount]:
        """Create the active snapshot ``key`` over ``parent`` and return its mounts."""
        return self._create(Kind.ACTIVE, key, parent, labels)

    def view(self, key: str, parent: str = "", labels: Mapping[str, str] | None = None) -> list[Mount]:
        """Create the read-only view ``key`` of ``parent`` and return its mounts."""
        return self._create(Kind.VIEW, key, parent, labels)

    def _existing(self, txn: Txn, k: str, labels: Mapping[str, str]) -> tuple[str, str] | None:
        """(resource to lease, message) when the target (3.14 step 1) or ``k`` exists."""
        target = labels.get(SNAPSHOT_REF_LABEL, "")
        if target:
            rec = self._get(txn, target)
            if rec is not None and rec.kind is Kind.COMMITTED:
                return target, f"target snapshot {target!r} already exists ({self.name})"
        if txn.has(_TABLE, self._key(k)):
            return k, f"{self._what(k)} already exists; pick another key or remove it first"
        return None

    def _create(self, kind: Kind, k: str, parent: str, labels: Mapping[str, str] | None) -> list[Mount]:
        self._check_open()
        self.db.check_writable(f"creating {self._what(k)}")
        _check_name(k, "key")
        wanted = validate_labels(labels, self._what(k))
        with self.db.read() as txn:
            exists = self._existing(txn, k, wanted) is not None
            parent_ids = [] if exists else self._parent_ids(txn, parent)
        if exists:
            self._hold_existing(k, wanted)  # raises AlreadyExists unless it vanished meanwhile
            return self._create(kind, k, parent, labels)
        tmp = make_temp_dir(self.dir, NEW_PREFIX)
        final: Path | None = None
        try:
            self._build(tmp, kind, parent_ids)
            with self.db.write() as txn:
                if self._existing(txn, k, wanted) is None:
                    final, rec = self._insert(
                        txn, kind, k, parent=parent, labels=wanted, parent_ids=parent_ids, tmp=tmp
                    )
        except BaseException:
            remove_tree(tmp)
            if final is not None:
                remove_tree(final)
            raise
        if final is None:  # created by someone else between our read and write transactions
            remove_tree(tmp)
            self._hold_existing(k, wanted)
            return self._create(kind, k, parent, labels)
        return self._mounts_for(rec, parent_ids)

    def _hold_existing(self, k: str, labels: Mapping[str, str]) -> None:
        """Add the existing target or key to the lease and raise AlreadyExists (3.14, 2.25)."""
        with self.db.write() as txn:
            found = self._existing(txn, k, labels)
            if found is not None:
                self.db.add_to_lease(txn, self.namespace, self._rtype, found[0])
        if found is not None:
            raise errors.AlreadyExists(found[1])

    def _insert(
        self, txn: Txn, kind: Kind, k: str, *, parent: str, labels: dict[str, str],
        parent_ids: list[int], tmp: Path,
    ) -> tuple[Path, SnapshotRecord]:
        """Store the record of a new snapshot and move its directory in place."""
        if self._parent_ids(txn, parent) != parent_ids:
            raise errors.Unavailable(f"parent of {self._what(k)} changed while it was prepared; retry")
        self.db.ensure_namespace(txn, self.namespace)
        sid = txn.next_seq(f"snapshots/{self.name}")
        final = self._id_dir(sid)
        remove_tree(final)  # a leftover of a crash before an earlier commit: never referenced
        _faults.fault_point("snapshots.rename")
        os.rename(tmp, final)
        fsync_dir(self.dir)
        stamp = to_ns(now())
        rec = SnapshotRecord(id=sid, kind=kind, parent=parent, labels=labels, created_at=stamp,
                             updated_at=stamp)
        self._put(txn, k, rec)
        self._link(txn, parent, k)
        self.db.add_to_lease(txn, self.namespace, self._rtype, k)
        return final, rec

    # -- commit -------------------------------------------------------------------------------
    def commit(
        self, name: str, key: str, labels: Mapping[str, str] | None = None, parent: str | None = None,
        *, usage: Usage | None = None,
    ) -> None:
        """Commit the active snapshot ``key`` as ``name``; ``parent`` rebases a parentless one.

        ``usage`` is what the caller counted while writing the snapshot (``apply_layer``'s
        ``ApplyResult.usage``); without it the directory is walked.
        """
        self._check_open()
        _check_name(name, "name")
        wanted = validate_labels(labels, self._what(name))
        with self.db.read() as txn:
            rec = self._get(txn, key)
        if usage is None and rec is not None and rec.kind is Kind.ACTIVE:
            usage = disk_usage(self._fs(rec.id))
        with self.db.write() as txn:
            if txn.has(_TABLE, self._key(name)):
                raise errors.AlreadyExists(f"{self._what(name)} already exists; commit under another name")
            active = self._require(txn, key)
            if active.kind is not Kind.ACTIVE:
                raise errors.FailedPrecondition(
                    f"{self._what(key)} is not active (it is {active.kind.value}); only active "
                    "snapshots can be committed"
                )
            if usage is None or rec is None or rec.id != active.id:
                usage = disk_usage(self._fs(active.id))
            new_parent = self._rebase(txn, key, active.parent, parent or "")
            stamp = to_ns(now())
            committed = attrs.evolve(
                active, kind=Kind.COMMITTED, parent=new_parent, labels=wanted, created_at=stamp,
                updated_at=stamp, size=usage.size, inodes=usage.inodes,
            )
            self.db.ensure_namespace(txn, self.namespace)
            self._put(txn, name, committed)
            txn.delete(_TABLE, self._key(key))
            self._unlink(txn, active.parent, key)
            self._link(txn, new_parent, name)
            self.db.add_to_lease(txn, self.namespace, self._rtype, name)
            self.db.remove_from_lease(txn, self.namespace, self._rtype, key)

    def _rebase(self, txn: Txn, k: str, current: str, wanted: str) -> str:
        """The parent of the committed snapshot (3.5 rebase rules)."""
        if not wanted or wanted == current:
            return current
        if current:
            raise errors.InvalidArgument(
                f"cannot change parent of active {self._what(k)} on commit from {current!r} to {wanted!r}"
            )
        if not self.supports_rebase:
            raise errors.InvalidArgument(
                f"the {self.name} snapshotter cannot rebase {self._what(k)} onto {wanted!r}; "
                "prepare it on that parent instead"
            )
        rec = self._get(txn, wanted)
        if rec is None:
            raise errors.NotFound(f"parent {self._what(wanted)} for rebasing {k!r} does not exist")
        # containerd's kinds differ on purpose: preparing on an uncommitted parent is a bad
        # argument (storage CreateSnapshot: InvalidArgument), committing onto one is a state
        # that may still change (storage CommitActive: FailedPrecondition).
        if rec.kind is not Kind.COMMITTED:
            raise errors.FailedPrecondition(
                f"parent {self._what(wanted)} is {rec.kind.value}, not committed; commit it first"
            )
        return wanted

    # -- remove -------------------------------------------------------------------------------
    def remove(self, key: str, *, unless_leased: bool = False) -> None:
        """Remove snapshot ``key`` and, right after the transaction commits, its directory.

        ``unless_leased=True`` refuses (FailedPrecondition) when a lease of the namespace
        holds it, checked in the same transaction (eviction uses it).
        """
        self._check_open()
        with self.db.write() as txn:
            rec = self._require(txn, key)
            child = self._first_child(txn, key)
            if child is not None:
                raise errors.FailedPrecondition(
                    f"cannot remove snapshot with child: {self._what(key)} is the parent of "
                    f"{child!r}; remove its children first"
                )
            if unless_leased and self._leased(txn, key):
                raise errors.FailedPrecondition(f"{self._what(key)} is held by a lease; not removed")
            txn.delete(_TABLE, self._key(key))
            self._unlink(txn, rec.parent, key)
            self.db.remove_from_lease(txn, self.namespace, self._rtype, key)
            dedup.drop(txn, self.name, rec.id)  # in this transaction: the index never names a removed file
        self.db.dirty += 1
        # A crash before this line leaves an orphan directory, which GC removes.
        remove_tree(self._id_dir(rec.id))

    def _leased(self, txn: Txn, k: str) -> bool:
        pfx = prefix(self.namespace)
        for lease_key in txn.keys("leases", pfx):
            lease_id = lease_key[len(pfx):].decode()
            if txn.has("lease_resources", key(self.namespace, lease_id, self._rtype, k)):
                return True
        return False

    def leased(self) -> set[str]:
        """Keys of this snapshotter's snapshots that a lease of the namespace holds."""
        self._check_open()
        out: set[str] = set()
        with self.db.read() as txn:
            pfx = prefix(self.namespace)
            for k in txn.keys("lease_resources", pfx):
                _ns, _id, rtype, rid = k.decode().split("\x00", 3)
                if rtype == self._rtype:
                    out.add(rid)
        return out

    def hold(self, keys: Sequence[str]) -> list[str]:
        """Add those of ``keys`` that are committed to the thread's current lease, in one
        transaction; returns them (all of them committed, none held, without a lease)."""
        self._check_open()
        with self.db.write() as txn:
            found = [k for k in keys if (rec := self._get(txn, k)) is not None and rec.kind is Kind.COMMITTED]
            for k in found:
                self.db.add_to_lease(txn, self.namespace, self._rtype, k)
        return found

    # -- file dedup index (ocistore.metadata.dedup) ---------------------------------------------
    def index_files(self, key: str, files: Sequence[tuple[str, str]]) -> int:
        """Add ``(fingerprint key, path in fs)`` pairs of the committed snapshot ``key`` to the
        dedup index (nothing when it is not, or no longer, committed); returns how many."""
        self._check_open()
        if not files:
            return 0
        with self.db.write() as txn:
            rec = self._get(txn, key)
            if rec is None or rec.kind is not Kind.COMMITTED:
                return 0
            return dedup.add(txn, self.name, rec.id, files)

    def dedup_candidates(self, fkey: str, limit: int = 8) -> list[str]:
        """Absolute paths of committed files indexed under the fingerprint key ``fkey``
        (of any snapshotter of the root; the caller opens and compares each before linking)."""
        with self.db.read() as txn:
            found = dedup.candidates(txn, fkey, limit)
        return [f"{self.layout.snapshot_fs(sn, sid)}/{rel}" for sn, sid, rel in found]

    # -- queries --------------------------------------------------------------------------------
    def stat(self, key: str) -> SnapshotInfo:
        """The info of snapshot ``key``."""
        self._check_open()
        with self.db.read() as txn:
            return self._require(txn, key).info(key)

    def usage(self, key: str) -> Usage:
        """Active: measured now; committed: measured at commit; view: zeros."""
        self._check_open()
        with self.db.read() as txn:
            rec = self._require(txn, key)
        if rec.kind is Kind.ACTIVE:
            return disk_usage(self._fs(rec.id))
        return Usage(size=rec.size, inodes=rec.inodes)

    def mounts(self, key: str) -> list[Mount]:
        """The mounts of an active snapshot or view."""
        self._check_open()
        with self.db.read() as txn:
            rec = self._require(txn, key)
            if rec.kind is Kind.COMMITTED:
                raise errors.FailedPrecondition(
                    f"{self._what(key)} is committed, not active or view; prepare or view it to mount it"
                )
            parent_ids = self._chain(txn, rec.parent)
        return self._mounts_for(rec, parent_ids)

    def walk(self, filters: str | Sequence[str] | None = None) -> Iterator[SnapshotInfo]:
        """Every snapshot of this namespace matching ``filters`` (fields kind, name, parent, labels.*)."""
        self._check_open()
        match = _filters.parse_filters(filters)
        pfx = prefix(self.namespace, self.name)
        with self.db.read() as txn:
            infos = [
                SnapshotRecord.from_json(v).info(k[len(pfx) :].decode()) for k, v in txn.scan(_TABLE, pfx)
            ]
        return iter([info for info in infos if match.match(_adaptor(info))])

    def path(self, key: str) -> Path:
        """The directory holding the snapshot's own files (its ``fs``)."""
        self._check_open()
        with self.db.read() as txn:
            return self._fs(self._require(txn, key).id)

    def parents_paths(self, key: str) -> list[Path]:
        """The ``fs`` directories of the committed ancestors of ``key``, nearest first."""
        self._check_open()
        with self.db.read() as txn:
            rec = self._require(txn, key)
            return [self._fs(sid) for sid in self._chain(txn, rec.parent)]

    # -- update -------------------------------------------------------------------------------
    def update(self, info: SnapshotInfo, fieldpaths: Sequence[str] | None = None) -> SnapshotInfo:
        """Change labels only: no paths replaces all labels; ``labels.<k>`` sets or deletes one."""
        self._check_open()
        _check_name(info.name, "name")
        with self.db.write() as txn:
            rec = self._require(txn, info.name)
            labels = _updated_labels(rec.labels, info, fieldpaths, self._what(info.name))
            new = attrs.evolve(
                rec, labels=validate_labels(labels, self._what(info.name)), updated_at=to_ns(now())
            )
            self._put(txn, info.name, new)
        return new.info(info.name)

    def close(self) -> None:
        """Mark the snapshotter closed (idempotent); the store owns the database."""
        self._closed = True


def _updated_labels(
    current: Mapping[str, str], info: SnapshotInfo, fieldpaths: Sequence[str] | None, what: str
) -> dict[str, str]:
    if not fieldpaths:
        return dict(info.labels)
    labels = dict(current)
    for path in fieldpaths:
        if path == "labels":
            labels = dict(info.labels)
        elif path.startswith("labels."):
            k = path[len("labels.") :]
            if k in info.labels:
                labels[k] = info.labels[k]
            else:
                labels.pop(k, None)
        else:
            raise errors.InvalidArgument(
                f"cannot update field {path!r} of {what}: only 'labels' and 'labels.<key>' are mutable"
            )
    return labels


def _adaptor(info: SnapshotInfo) -> Adaptor:
    """The filter adaptor of a snapshot: kind, name, parent (always present), labels.<k>."""
    fields = {"kind": info.kind.value, "name": info.name, "parent": info.parent}
    return _filters.label_adaptor(fields, info.labels)
