"""The metadata database: one LMDB environment per store root.

Key layout (every key is UTF-8 text; ``\\0`` separates parts; values are JSON)::

    meta              version                          -> schema version (int)
    namespaces        <ns>                             -> {labels, created_at}
    content           <ns>\\0<digest>                  -> {size, labels, created_at, updated_at}
    ingests           <ns>\\0<ref>                     -> {bref, expected, expire_at}
    images            <ns>\\0<name>                    -> {target, labels, created_at, updated_at}
    containers        <ns>\\0<id>                      -> {image, snapshotter, snapshot_key, labels, ...}
    snapshots         <ns>\\0<snapshotter>\\0<key>     -> snapshot record (see ocistore.snapshots)
    snapshot_children <ns>\\0<snapshotter>\\0<parent>\\0<child> -> ""
    leases            <ns>\\0<id>                      -> {labels, created_at}
    lease_resources   <ns>\\0<id>\\0<type>\\0<resource id> -> ""
    counters          <name>                           -> int (sequences)
    image_use         <ns>\\0<snapshotter>\\0<image>    -> {last_used} (eviction order, ocistore.metadata.imageuse)
    dedup_files       <key>\\0<snapshotter>\\0<id>      -> "<path>" (file dedup index, ocistore.metadata.dedup)
    dedup_snapshots   <snapshotter>\\0<id>\\0<key>      -> "" (the same entries by snapshot)

Tables added after schema version 1 (``ADDED_TABLES``) are created when a root is opened
read-write; a read-only open of an older root sees them empty.

Times are integers: nanoseconds since the Unix epoch, UTC. Every mutation happens inside
one write transaction (LMDB allows one writer at a time across all processes), so a
process killed at any point leaves either the old or the new state.

One environment per root and process: :meth:`DB.open` hands out a shared, reference-counted
instance (LMDB forbids opening one environment twice in a process).
"""

from __future__ import annotations

import contextlib
import copy
import json
import os
import threading
from collections.abc import Callable, Iterator, Mapping
from typing import Any, ClassVar

import lmdb

from ocistore import _faults, errors
from ocistore._time import now, to_ns

__all__ = ["DB", "SCHEMA_VERSION", "Txn", "key", "prefix"]

SCHEMA_VERSION = 1
TABLES = (
    "meta",
    "namespaces",
    "content",
    "ingests",
    "images",
    "containers",
    "snapshots",
    "snapshot_children",
    "leases",
    "lease_resources",
    "counters",
    "image_use",
    "dedup_files",
    "dedup_snapshots",
)
ADDED_TABLES = frozenset({"image_use", "dedup_files", "dedup_snapshots"})
"""Tables that an older root may lack: read-only opens treat them as empty."""
_MAP_SIZE = 1 << 36  # 64 GiB of address space; the file grows only as needed
SEP = "\x00"


def key(*parts: str) -> bytes:
    """A table key from its parts."""
    return SEP.join(parts).encode()


def prefix(*parts: str) -> bytes:
    """The key prefix matching every key that starts with ``parts``."""
    return (SEP.join(parts) + SEP).encode()


def split_key(k: bytes) -> list[str]:
    """The parts of a table key (the inverse of :func:`key`)."""
    return k.decode().split(SEP)


class Txn:
    """A transaction with JSON helpers. Obtain one from :meth:`DB.read` / :meth:`DB.write`."""

    def __init__(self, db: DB, txn: lmdb.Transaction, write: bool) -> None:
        self.db = db
        self.raw = txn
        self.write = write
        self.after_commit: list[Callable[[], None]] = []

    def _h(self, table: str) -> Any:
        return self.db.handles[table]

    def get(self, table: str, k: bytes) -> Any:
        """The decoded JSON value at ``k``, or None if the key is absent."""
        h = self._h(table)
        raw = None if h is None else self.raw.get(k, db=h)
        return None if raw is None else json.loads(bytes(raw))

    def has(self, table: str, k: bytes) -> bool:
        """Whether ``k`` exists in ``table`` (without decoding its value)."""
        h = self._h(table)
        return h is not None and self.raw.get(k, db=h) is not None

    def put(self, table: str, k: bytes, value: Any) -> None:
        """Store ``value`` as compact JSON at ``k``, replacing any value there (write transactions only)."""
        self.raw.put(k, json.dumps(value, separators=(",", ":")).encode(), db=self._h(table))

    def delete(self, table: str, k: bytes) -> bool:
        """Remove ``k``; True if it existed."""
        return bool(self.raw.delete(k, db=self._h(table)))

    def scan(self, table: str, pfx: bytes = b"") -> Iterator[tuple[bytes, Any]]:
        """(key, decoded value) for every key starting with ``pfx``, in key order."""
        if self._h(table) is None:
            return
        with self.raw.cursor(db=self._h(table)) as cur:
            if not cur.set_range(pfx):
                return
            for k, v in cur:
                kb = bytes(k)
                if not kb.startswith(pfx):
                    break
                yield kb, json.loads(bytes(v))

    def keys(self, table: str, pfx: bytes = b"") -> list[bytes]:
        """Every key starting with ``pfx``, in key order (values are not decoded)."""
        out: list[bytes] = []
        if self._h(table) is None:
            return out
        with self.raw.cursor(db=self._h(table)) as cur:
            if not cur.set_range(pfx):
                return out
            for k in cur.iternext(keys=True, values=False):
                kb = bytes(k)
                if not kb.startswith(pfx):
                    break
                out.append(kb)
        return out

    def first_key(self, table: str, pfx: bytes = b"", start: bytes | None = None) -> bytes | None:
        """The first key starting with ``pfx`` at or after ``start`` (default: ``pfx``), or None."""
        if self._h(table) is None:
            return None
        with self.raw.cursor(db=self._h(table)) as cur:
            if not cur.set_range(start if start is not None else pfx):
                return None
            kb = bytes(cur.key())
        return kb if kb.startswith(pfx) else None

    def delete_prefix(self, table: str, pfx: bytes) -> int:
        """Remove every key starting with ``pfx``; returns how many were removed."""
        ks = self.keys(table, pfx)
        for k in ks:
            self.raw.delete(k, db=self._h(table))
        return len(ks)

    def next_seq(self, name: str) -> int:
        """A monotonic per-name sequence (1, 2, ...)."""
        current = self.get("counters", name.encode()) or 0
        value = int(current) + 1
        self.put("counters", name.encode(), value)
        return value


class DB:
    """The LMDB environment of one store root, plus the per-thread lease context."""

    _registry: ClassVar[dict[str, DB]] = {}
    _registry_lock: ClassVar[threading.Lock] = threading.Lock()

    def __init__(self, path: str, readonly: bool = False) -> None:
        self.path = path
        self.readonly = readonly
        self._base: DB | None = None
        if readonly:
            self.env = self._open_readonly(path)
        else:
            os.makedirs(path, exist_ok=True)
            try:
                self.env = lmdb.open(
                    path, map_size=_MAP_SIZE, max_dbs=len(TABLES) + 4, max_readers=1024,
                    subdir=True, lock=True, readahead=False, meminit=False,
                )
            except lmdb.Error as e:
                raise errors.Unavailable(f"cannot open metadata database {path}: {e}") from e
        try:
            self.handles = {name: self._open_table(name) for name in TABLES}
        except lmdb.Error as e:
            self.env.close()
            raise errors.FailedPrecondition(
                f"metadata database {path} lacks ocistore's tables ({e}); open the store read-write once"
            ) from e
        self.pid = os.getpid()
        self._refs = 0
        self._local = threading.local()
        self.dirty = 0  # deletions since the last gc (mutations that may free data)
        if readonly:
            self._check_version()
        else:
            self._migrate()

    def _open_table(self, name: str) -> Any:
        """The handle of table ``name``; None for a missing added table of a read-only root."""
        try:
            return self.env.open_db(name.encode(), create=not self.readonly)
        except lmdb.NotFoundError:
            if self.readonly and name in ADDED_TABLES:
                return None
            raise

    @staticmethod
    def _open_readonly(path: str) -> lmdb.Environment:
        """Open for reading: with LMDB's reader lock where the lock file is writable (others may
        write meanwhile), without it on read-only media (nobody can write there)."""
        if not os.path.isdir(path):
            raise errors.NotFound(f"metadata database {path} does not exist; is this an ocistore root?")
        error: lmdb.Error | None = None
        for lock in (True, False):
            try:
                return lmdb.open(path, map_size=_MAP_SIZE, max_dbs=len(TABLES) + 4, max_readers=1024,
                                 subdir=True, readonly=True, lock=lock, readahead=False)
            except lmdb.Error as e:
                error = e
        raise errors.Unavailable(f"cannot open metadata database {path} read-only: {error}") from error

    def check_writable(self, what: str) -> None:
        """FailedPrecondition naming ``what`` when this database is open read-only."""
        if self.readonly:
            raise errors.FailedPrecondition(
                f"{what}: the store at {os.path.dirname(self.path)} is open read-only "
                "(opened with readonly=True, or its directory is not writable); open it read-write to change it"
            )

    # -- sharing -----------------------------------------------------------------------------
    @classmethod
    def open(cls, path: str, readonly: bool = False) -> DB:
        """The shared instance for the database directory ``path``; pair each call with :meth:`release`.

        Instances are keyed by real path and reference-counted; a forked child gets a
        fresh environment instead of the one inherited from its parent. Unavailable if
        LMDB cannot open it; FailedPrecondition if its schema is newer than this ocistore's.
        """
        real = os.path.realpath(path)
        with cls._registry_lock:
            db = cls._registry.get(real)
            # LMDB environments must not be used across fork(): a child drops the inherited
            # handle (closing it in the child releases nothing the parent holds) and opens its own.
            if db is not None and db.pid != os.getpid():
                with contextlib.suppress(lmdb.Error):
                    db.env.close()
                db = None
            if db is None or db._refs <= 0:
                db = cls(real, readonly=readonly)
                cls._registry[real] = db
            elif db.readonly and not readonly:
                raise errors.FailedPrecondition(
                    f"metadata database {real} is open read-only in this process; close those stores "
                    "before opening it read-write"
                )
            db._refs += 1
            if readonly and not db.readonly:
                # LMDB allows one environment per file and process: share it, refusing writes
                view = copy.copy(db)
                view.readonly = True
                view._base = db
                return view
            return db

    def release(self) -> None:
        """Drop one reference from :meth:`open`; the last one closes the environment.

        A no-op on an instance inherited through ``fork()``.
        """
        if self._base is not None:
            self._base.release()  # a read-only view of a read-write environment
            return
        if self.pid != os.getpid():
            return  # inherited through fork(): belongs to the parent
        with self._registry_lock:
            self._refs -= 1
            if self._refs <= 0:
                if self._registry.get(self.path) is self:
                    del self._registry[self.path]
                self.env.close()

    # -- transactions ---------------------------------------------------------------------------
    @contextlib.contextmanager
    def read(self) -> Iterator[Txn]:
        """A read-only transaction: a consistent snapshot for the duration of the block."""
        with self.env.begin(write=False, buffers=False) as raw:
            yield Txn(self, raw, write=False)

    @contextlib.contextmanager
    def write(self) -> Iterator[Txn]:
        """A write transaction; committed when the block ends without an exception.

        FailedPrecondition on a database open read-only.
        """
        self.check_writable("writing metadata")
        raw = self.env.begin(write=True)
        txn = Txn(self, raw, write=True)
        try:
            yield txn
        except lmdb.Error as e:
            raw.abort()
            raise errors.Unavailable(f"metadata database {self.path}: {e}; free disk space and retry") from e
        except BaseException:
            raw.abort()
            raise
        try:
            _faults.fault_point("metadata.txn.commit")
            raw.commit()
        except lmdb.Error as e:
            raise errors.Unavailable(f"metadata database {self.path}: {e}; free disk space and retry") from e
        for fn in txn.after_commit:
            fn()

    # -- schema -----------------------------------------------------------------------------
    def _check_version(self) -> None:
        with self.read() as txn:
            version = txn.get("meta", b"version") or 0
        if version != SCHEMA_VERSION:
            raise errors.FailedPrecondition(
                f"metadata database {self.path} has schema version {version}, this ocistore {SCHEMA_VERSION}: "
                + ("upgrade ocistore" if version > SCHEMA_VERSION else "open it read-write once to migrate it")
            )

    def _migrate(self) -> None:
        """Bring the schema up to date. A root that is current is only read: opening a store
        costs no write transaction (and no fdatasync) unless its schema is older."""
        with self.read() as txn:
            current = (txn.get("meta", b"version") or 0) == SCHEMA_VERSION
        if current:
            return
        with self.write() as txn:
            version = txn.get("meta", b"version") or 0
            if version > SCHEMA_VERSION:
                raise errors.FailedPrecondition(
                    f"metadata database {self.path} has schema version {version}; this ocistore "
                    f"understands up to {SCHEMA_VERSION}: upgrade ocistore"
                )
            for target, migration in MIGRATIONS:
                if version < target:
                    migration(txn)
                    version = target
            txn.put("meta", b"version", version)

    # -- namespaces ----------------------------------------------------------------------------
    def ensure_namespace(self, txn: Txn, ns: str) -> None:
        """Create the record of namespace ``ns`` (no labels) in ``txn`` unless it exists."""
        k = ns.encode()
        if not txn.has("namespaces", k):
            txn.put("namespaces", k, {"labels": {}, "created_at": to_ns(now())})

    def namespaces(self) -> list[str]:
        """The names of all namespaces that have a record, sorted."""
        with self.read() as txn:
            return [k.decode() for k in txn.keys("namespaces")]

    def set_namespace_labels(self, ns: str, labels: Mapping[str, str]) -> None:
        """Replace a namespace's labels (creating the namespace if needed)."""
        with self.write() as txn:
            self.ensure_namespace(txn, ns)
            rec = txn.get("namespaces", ns.encode())
            rec["labels"] = json_labels(labels)
            txn.put("namespaces", ns.encode(), rec)

    def namespace_labels(self, ns: str) -> dict[str, str]:
        """A namespace's labels; empty if the namespace has no record."""
        with self.read() as txn:
            rec = txn.get("namespaces", ns.encode())
        return dict(rec["labels"]) if rec else {}

    # -- leases (context) ------------------------------------------------------------------------
    def current_lease(self, ns: str) -> str | None:
        """The lease this thread's operations in ``ns`` join (set by ``Store.lease()``)."""
        stack: list[tuple[str, str]] = getattr(self._local, "leases", [])
        for lease_ns, lease_id in reversed(stack):
            if lease_ns == ns:
                return lease_id
        return None

    @contextlib.contextmanager
    def lease_context(self, ns: str, lease_id: str) -> Iterator[None]:
        """Make ``lease_id`` this thread's current lease in ``ns`` for the block (nestable; innermost wins)."""
        stack: list[tuple[str, str]] = self._local.__dict__.setdefault("leases", [])
        stack.append((ns, lease_id))
        try:
            yield
        finally:
            stack.pop()

    def add_to_lease(self, txn: Txn, ns: str, rtype: str, rid: str, lease_id: str | None = None) -> None:
        """Record ``rtype/rid`` as held by the thread's current lease (if any)."""
        lease_id = lease_id or self.current_lease(ns)
        if lease_id is None:
            return
        if not txn.has("leases", key(ns, lease_id)):
            raise errors.NotFound(f"lease {lease_id!r} does not exist in namespace {ns!r}")
        txn.put("lease_resources", key(ns, lease_id, rtype, rid), "")

    def remove_from_lease(self, txn: Txn, ns: str, rtype: str, rid: str) -> None:
        """Drop ``rtype/rid`` from the thread's current lease in ``ns`` (if any); other leases keep it."""
        lease_id = self.current_lease(ns)
        if lease_id is not None:
            txn.delete("lease_resources", key(ns, lease_id, rtype, rid))


def _initial(txn: Txn) -> None:
    """Version 1: the tables exist (opened at start); nothing to convert."""


MIGRATIONS: list[tuple[int, Callable[[Txn], None]]] = [(1, _initial)]


def json_labels(value: Mapping[str, str] | None) -> dict[str, str]:
    """A copy of ``value`` without empty values (None gives ``{}``)."""
    return {k: v for k, v in (value or {}).items() if v != ""}
