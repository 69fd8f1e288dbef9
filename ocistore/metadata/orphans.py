"""Orphans: backend objects (blob files, ingests, snapshot directories) no record references.

Shared by the garbage collector (which removes them after its sweep) and by
``check(repair=True)``. A backend object is an orphan when no record of *any* namespace
references it:

* a blob file ``content/blobs/<alg>/<hex>`` whose digest no content record or ingest
  expects;
* an ingest directory (or a lone ref lock file) that no ingest record names, older than
  :data:`INGEST_GRACE` and not locked by a writer;
* a chunk cache directory ``content/chunks/<alg>/<hex>`` of a layer that no namespace
  records as partial (the layer was completed or forgotten; its chunks are a cache);
* a snapshot directory ``snapshots/<sn>/<id>`` whose id no snapshot record has, a
  ``gc-rm-*`` directory left by an interrupted removal, or a ``new-*`` build directory
  older than :data:`NEW_DIR_GRACE` that no snapshotter holds an flock on.

Finding and removing both happen while holding an LMDB write transaction (writing nothing):
committers publish blobs and rename snapshot directories inside write transactions, so
none is half-way while the backends are compared with the records.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import time
from pathlib import Path

import attrs

from ocistore import errors
from ocistore._files import allocated_bytes, remove_tree
from ocistore.content.locks import RefLock
from ocistore.layout import LOCK_SUFFIX, NEW_PREFIX, TRASH_PREFIX, ContentLayout, RootLayout
from ocistore.metadata.db import DB, SEP, Txn
from ocistore.oci.digest import ALGORITHMS

__all__ = [
    "INGEST_GRACE",
    "NEW_DIR_GRACE",
    "Orphan",
    "Removed",
    "clean_backends",
    "find_orphans",
    "list_orphans",
    "remove_orphans",
]

NEW_DIR_GRACE = 3600.0
"""Seconds a snapshotter's ``new-*`` build directory is left alone (it may be in progress)."""
INGEST_GRACE = 60.0
"""Seconds a fresh, unreferenced ingest directory or ref lock file is left alone (its writer
may be between taking the lock and recording the ingest)."""


# -- orphans --------------------------------------------------------------------------------


@attrs.frozen
class Orphan:
    """A backend object that no metadata record references.

    ``kind`` is ``"blob"``, ``"ingest"``, ``"ingest-lock"``, ``"chunks"`` (a layer's chunk
    cache) or ``"snapshot"``; ``name`` is the digest (of the blob or layer), the ingest
    directory name or ``<snapshotter>/<directory>``.
    """

    kind: str
    name: str
    path: Path

    def describe(self) -> str:
        """One line for a report."""
        what = {"blob": "blob file", "ingest": "ingest directory", "ingest-lock": "ingest lock file",
                "snapshot": "snapshot directory", "chunks": "chunk cache of layer"}[self.kind]
        return f"orphan {what} {self.name} ({self.path}): no metadata record references it"


@attrs.frozen
class _Referenced:
    digests: set[str]
    ingest_dirs: set[str]
    snapshot_ids: dict[str, set[str]]
    partial: set[str] = attrs.field(factory=set)


def _referenced(txn: Txn) -> _Referenced:
    digests: set[str] = set()
    partial: set[str] = set()
    for k, rec in txn.scan("content"):
        digest = k.decode().split(SEP, 1)[1]
        digests.add(digest)
        if rec.get("partial"):
            partial.add(digest)
    ingest_dirs: set[str] = set()
    for _, rec in txn.scan("ingests"):
        if rec.get("expected"):
            digests.add(str(rec["expected"]))
        if rec.get("bref"):
            ingest_dirs.add(ContentLayout.ingest_key(str(rec["bref"])))
    ids: dict[str, set[str]] = {}
    for k, rec in txn.scan("snapshots"):
        sn = k.decode().split(SEP, 2)[1]
        ids.setdefault(sn, set()).add(str(rec.get("id", "")))
    return _Referenced(digests, ingest_dirs, ids, partial)


def _scandir(path: Path) -> list[os.DirEntry[str]]:
    try:
        with os.scandir(path) as it:
            return list(it)
    except (FileNotFoundError, NotADirectoryError):
        return []


def _old(entry: os.DirEntry[str], now: float, grace: float) -> bool:
    """Whether ``entry`` was last modified more than ``grace`` seconds before ``now``."""
    try:
        return now - entry.stat(follow_symlinks=False).st_mtime > grace
    except FileNotFoundError:
        return False


def _flock_held(path: str | Path, open_flags: int, lock: int) -> bool:
    """Whether someone holds an flock conflicting with ``lock`` on ``path`` (never creates it)."""
    try:
        fd = os.open(path, open_flags | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        fcntl.flock(fd, lock | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False


def _ref_locked(path: Path) -> bool:
    """Whether a writer holds the ref lock file ``path``."""
    return _flock_held(path, os.O_RDONLY, fcntl.LOCK_SH)


def _dir_busy(path: str) -> bool:
    """Whether someone holds an flock on the directory (a snapshotter building it)."""
    return _flock_held(path, os.O_RDONLY | os.O_DIRECTORY, fcntl.LOCK_EX)


def find_orphans(txn: Txn, root: RootLayout | str | os.PathLike[str], now: float | None = None) -> list[Orphan]:
    """Backend objects that no record of any namespace references (``txn`` pins the records).

    Ingest directories and ``new-*`` snapshot build directories in use are not orphans.
    Snapshot directories are listed children first (highest id first).
    """
    return _find_orphans(_referenced(txn), _layout(root), now)


def _layout(root: RootLayout | str | os.PathLike[str]) -> RootLayout:
    return root if isinstance(root, RootLayout) else RootLayout(root)


def _find_orphans(ref: _Referenced, layout: RootLayout, now: float | None) -> list[Orphan]:
    now = time.time() if now is None else now
    out: list[Orphan] = []
    content = layout.content
    for alg, alg_dir in content.algorithms():
        for e in _scandir(alg_dir):
            digest = f"{alg}:{e.name}"
            if digest not in ref.digests and len(e.name) == ALGORITHMS[alg]:
                out.append(Orphan("blob", digest, Path(e.path)))
    for alg in ALGORITHMS:
        for e in _scandir(content.chunks / alg):
            digest = f"{alg}:{e.name}"
            if digest not in ref.partial:
                out.append(Orphan("chunks", digest, Path(e.path)))
    entries = _scandir(content.ingest)
    dirs = {e.name for e in entries if e.is_dir(follow_symlinks=False)}
    for e in entries:
        if e.is_dir(follow_symlinks=False):
            if e.name not in ref.ingest_dirs and _old(e, now, INGEST_GRACE) and not _ref_locked(
                content.ingest_lock(e.name)
            ):
                out.append(Orphan("ingest", e.name, Path(e.path)))
        elif e.name.endswith(LOCK_SUFFIX):
            name = e.name[: -len(LOCK_SUFFIX)]
            if (name not in dirs and name not in ref.ingest_dirs and _old(e, now, INGEST_GRACE)
                    and not _ref_locked(Path(e.path))):
                out.append(Orphan("ingest-lock", name, Path(e.path)))
    for snapshotter, sdir in layout.snapshotter_dirs():
        ids = ref.snapshot_ids.get(snapshotter, set())
        found: list[tuple[int, Orphan]] = []
        for e in _scandir(sdir):
            if not e.is_dir(follow_symlinks=False):
                continue
            name = f"{snapshotter}/{e.name}"
            if e.name.isdigit():
                if e.name not in ids:
                    found.append((int(e.name), Orphan("snapshot", name, Path(e.path))))
            elif e.name.startswith(TRASH_PREFIX):
                found.append((1 << 62, Orphan("snapshot", name, Path(e.path))))
            elif e.name.startswith(NEW_PREFIX) and _old(e, now, NEW_DIR_GRACE) and not _dir_busy(e.path):
                found.append((1 << 61, Orphan("snapshot", name, Path(e.path))))
        out.extend(o for _, o in sorted(found, key=lambda t: -t[0]))
    return out


class _Rollback(Exception):
    """Raised to abort the (read-only) write transaction of the backend cleanup."""


@attrs.define
class Removed:
    """What :func:`clean_backends` removed: digests, (snapshotter, id)s, ingest dirs, bytes."""

    blobs: set[str] = attrs.field(factory=set)
    snapshots: set[tuple[str, int]] = attrs.field(factory=set)
    ingests: set[str] = attrs.field(factory=set)
    bytes: int = 0
    removed: list[Orphan] = attrs.field(factory=list)
    referenced: set[str] = attrs.field(factory=set)


def _remove_locked(orphans: list[Orphan], out: Removed) -> list[Path]:
    """Remove blobs and ingests now; move snapshot directories aside (returned for later)."""
    trash: list[Path] = []
    for o in orphans:
        if o.kind == "blob":
            try:
                size = os.lstat(o.path).st_size
                os.unlink(o.path)
            except FileNotFoundError:
                continue
            out.blobs.add(o.name)
            out.bytes += size
        elif o.kind == "chunks":
            out.bytes += allocated_bytes(o.path)
            remove_tree(o.path)
        elif o.kind in ("ingest", "ingest-lock"):
            lock = RefLock(str(o.path.parent / f"{o.name}{LOCK_SUFFIX}"), f"ingest {o.name}")
            try:
                lock.acquire()
            except (errors.Unavailable, OSError):
                continue  # a live writer holds the ref (or the lock cannot be taken): leave it
            try:
                if o.kind == "ingest":
                    with contextlib.suppress(FileNotFoundError):
                        out.bytes += os.lstat(o.path / "data").st_size
                    remove_tree(o.path)
                    out.ingests.add(o.name)
            finally:
                lock.release(remove=True)
        elif o.kind == "snapshot":
            if o.path.name.startswith(TRASH_PREFIX):
                trash.append(o.path)
                continue
            target = o.path.with_name(f"{TRASH_PREFIX}{o.path.name}-{os.urandom(4).hex()}")
            try:
                os.rename(o.path, target)
            except FileNotFoundError:
                continue
            if o.path.name.isdigit():
                out.snapshots.add((o.path.parent.name, int(o.path.name)))
            trash.append(target)
        out.removed.append(o)
    return trash


def _empty_trash(trash: list[Path], out: Removed) -> None:
    for path in trash:
        out.bytes += allocated_bytes(path)
        remove_tree(path)


def list_orphans(db: DB, root: RootLayout | str | os.PathLike[str], now: float | None = None) -> list[Orphan]:
    """:func:`find_orphans` while holding a write transaction (so no committer is mid-publish)."""
    if db.readonly:  # nobody writes through a read-only store; a read transaction pins the records
        with db.read() as txn:
            return find_orphans(txn, root, now)
    found: list[Orphan] = []
    with contextlib.suppress(_Rollback), db.write() as txn:
        found = find_orphans(txn, root, now)
        raise _Rollback
    return found


def remove_orphans(db: DB, root: RootLayout | str | os.PathLike[str], now: float | None = None) -> list[Orphan]:
    """Find and remove orphans while holding a write transaction; returns what was removed."""
    return clean_backends(db, _layout(root), now).removed


def clean_backends(db: DB, layout: RootLayout, now: float | None) -> Removed:
    """Remove every orphan under ``layout`` (see the module docs); returns what went.

    Blob files and ingests go at once; snapshot directories are renamed aside under the
    transaction and deleted after it ends.
    """
    out = Removed()
    trash: list[Path] = []
    # Hold a write transaction (committers publish blobs and snapshot dirs inside one) but
    # write nothing: abort it at the end.
    with contextlib.suppress(_Rollback), db.write() as txn:
        ref = _referenced(txn)
        out.referenced = ref.digests
        trash = _remove_locked(_find_orphans(ref, layout, now), out)
        raise _Rollback
    _empty_trash(trash, out)
    return out
