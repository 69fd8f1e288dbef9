"""The local blob store on disk (containerd ``plugins/content/local``).

Layout under the content root::

    blobs/<alg>/<hex>              committed, read-only blobs
    ingest/<sha256(ref)>/          one resumable ingest: data, ref, total, startedat, updatedat
    ingest/<sha256(ref)>.lock      the ref lock (see locks.py)

A blob becomes visible under its digest only by an exclusive hard link of the verified
``data`` file (so two committers of one digest cannot both win), after an fsync.
This layer knows nothing of namespaces or labels: the metadata layer adds those, and
``Store.content`` is the way to label a blob. :meth:`LocalStore.update` is
FailedPrecondition, as in containerd's local store opened without a label store; a commit
with labels is FailedPrecondition too (containerd would drop them silently).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Mapping
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

from ocistore import _faults, _time, errors
from ocistore._files import atomic_write, disk_full, fsync_dir, remove_tree
from ocistore._lazy import lazy_module
from ocistore.content.locks import RefLock
from ocistore.content.types import ContentInfo, IngestStatus
from ocistore.layout import ContentLayout
from ocistore.oci.digest import Hasher, algorithm_of, digest_bytes, new_hasher, validate_digest

if TYPE_CHECKING:
    from ocistore import filters as _filters
else:
    _filters = lazy_module("ocistore.filters")  # compiled on the first filtered listing

__all__ = ["MAX_READ", "LocalStore", "LocalWriter", "read_verified"]

_CHUNK = 1 << 20
_WRITEBACK = 16 << 20  # start the writeback of an ingest every 16 MiB written
MAX_READ = 64 << 20
"""The largest blob :meth:`LocalStore.read` returns whole (the same cap as ``Store.content.read``)."""
_NO_LABELS = "the bare blob store keeps no labels; label blobs through Store.content"


def read_verified(stream: BinaryIO, digest: str, size: int) -> bytes:
    """The whole blob of ``size`` bytes from ``stream``, checked against ``digest``.

    SizeLimitExceeded above :data:`MAX_READ` bytes (use a stream instead); DigestMismatch
    when the bytes are not ``size`` long or do not hash to ``digest``.
    """
    if size > MAX_READ:
        raise errors.SizeLimitExceeded(f"content {digest} has {size} bytes; read() is for small blobs, use open()")
    data = stream.read(size + 1)
    actual = digest_bytes(data, algorithm_of(digest))
    if actual != digest or len(data) != size:
        raise errors.DigestMismatch(
            f"content {digest} is corrupt on disk (read {len(data)} bytes hashing to {actual}); "
            "run check(repair=True) and fetch it again",
            expected=digest, actual=actual,
        )
    return data


class LocalStore:
    """Blobs and ingests under one directory."""

    def __init__(self, root: str | os.PathLike[str] | ContentLayout, create: bool = True) -> None:
        """Open the blob store in ``root`` (a directory or its layout), creating it unless ``create=False``."""
        self.layout = root if isinstance(root, ContentLayout) else ContentLayout(Path(root))
        self.root = self.layout.root
        self.blobs_dir = self.layout.blobs
        self.ingest_dir = self.layout.ingest
        if create:
            self.layout.create()

    # -- paths -----------------------------------------------------------------------------
    def blob_path(self, digest: str) -> Path:
        """Path of a blob; the digest is validated first (it may come from the network)."""
        return self.layout.blob_path(digest)

    def ingest_path(self, ref: str) -> Path:
        """The directory of the ingest ``ref``."""
        return self.layout.ingest_path(ref)

    def _lock(self, ref: str) -> RefLock:
        return RefLock(str(self.layout.ingest_lock(self.layout.ingest_key(ref))), f"ingest ref {ref!r}")

    # -- reading ---------------------------------------------------------------------------
    def exists(self, digest: str) -> bool:
        """Whether the blob file exists."""
        return self.blob_path(digest).is_file()

    def info(self, digest: str) -> ContentInfo:
        """Size and times of a blob from its file (no labels at this layer); NotFound if absent."""
        try:
            st = os.stat(self.blob_path(digest))
        except FileNotFoundError:
            raise errors.NotFound(f"content {digest} not found") from None
        return ContentInfo(
            digest=digest,
            size=st.st_size,
            labels={},
            created_at=_time.from_ns(st.st_mtime_ns),
            updated_at=_time.from_ns(st.st_atime_ns),
        )

    def open(self, digest: str) -> BinaryIO:
        """A reader of the blob file; NotFound if absent."""
        try:
            return open(self.blob_path(digest), "rb")
        except FileNotFoundError:
            raise errors.NotFound(f"content {digest} not found (blob missing from the store)") from None

    def read(self, digest: str) -> bytes:
        """A whole small blob, checked against its digest (containerd ``content.ReadBlob``).

        NotFound if absent; SizeLimitExceeded above :data:`MAX_READ` bytes (use :meth:`open`);
        DigestMismatch if the bytes on disk do not hash to ``digest``.
        """
        with self.open(digest) as f:
            return read_verified(f, digest, os.fstat(f.fileno()).st_size)

    def walk(self, filters: str | list[str] | None = None) -> Iterator[ContentInfo]:
        """Every blob file under a known algorithm whose name is a valid digest, matching ``filters``.

        ``filters`` use containerd's syntax on ``digest`` and ``labels.<key>`` (containerd
        ``Walk(fn, filters...)``); blobs here have no labels, so a label filter matches none.
        """
        flt = _filters.parse_filters(filters)
        for alg, d in self.layout.algorithms():
            if not d.is_dir():
                continue
            for entry in os.scandir(d):
                digest = f"{alg}:{entry.name}"
                try:
                    validate_digest(digest)
                    info = self.info(digest)
                except (errors.InvalidArgument, errors.NotFound):
                    continue
                if flt.match(_filters.label_adaptor({"digest": digest}, info.labels)):
                    yield info

    def update(
        self, digest: str, labels: Mapping[str, str], fieldpaths: list[str] | None = None
    ) -> ContentInfo:
        """Always FailedPrecondition: this store keeps no labels; label blobs through ``Store.content``.

        containerd's local store opened without a label store does the same ("update not
        supported on immutable content store"), before it looks at the digest.
        """
        raise errors.FailedPrecondition(f"update of content {digest!r}: {_NO_LABELS}")

    def delete(self, digest: str) -> None:
        """Remove a blob; a missing blob is not an error at this layer."""
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.blob_path(digest))

    # -- ingests ---------------------------------------------------------------------------
    def writer(self, ref: str, total: int | None = None, expected: str | None = None) -> LocalWriter:
        """Open (or resume) the ingest ``ref``. ``Unavailable`` if another writer holds it."""
        if not ref:
            raise errors.InvalidArgument("ref must not be empty")
        if expected:
            validate_digest(expected)
            if self.exists(expected):
                raise errors.AlreadyExists(f"content {expected} already exists")
        lock = self._lock(ref).acquire()
        try:
            return LocalWriter._open(self, ref, total or 0, expected, lock)
        except BaseException:
            lock.release()
            raise

    def status(self, ref: str) -> IngestStatus:
        """The status of the ingest ``ref``; NotFound if there is none."""
        st = self._read_status(self.ingest_path(ref))
        if st is None or st.ref != ref:
            raise errors.NotFound(f"ingest {ref!r} not found")
        return st

    def statuses(self) -> list[IngestStatus]:
        """The status of every readable ingest, by directory name."""
        out = []
        for entry in sorted(os.scandir(self.ingest_dir), key=lambda e: e.name):
            if entry.is_dir():
                st = self._read_status(Path(entry.path))
                if st is not None:
                    out.append(st)
        return out

    def abort(self, ref: str) -> None:
        """Remove an ingest (no error if it does not exist). Unavailable while a writer holds it."""
        lock = self._lock(ref).acquire()
        try:
            remove_tree(self.ingest_path(ref))
        finally:
            lock.release(remove=True)

    def _read_status(self, path: Path) -> IngestStatus | None:
        try:
            ref = (path / "ref").read_text()
            started = _time.parse_rfc3339((path / "startedat").read_text())
            updated = _time.parse_rfc3339((path / "updatedat").read_text())
            data_st = os.stat(path / "data")
        except (FileNotFoundError, NotADirectoryError, ValueError):
            return None
        try:
            total = int((path / "total").read_text())
        except (FileNotFoundError, ValueError):
            total = 0
        data_mtime = _time.from_ns(data_st.st_mtime_ns)
        return IngestStatus(
            ref=ref, offset=data_st.st_size, total=total, started_at=started,
            updated_at=max(updated, data_mtime),
        )


class LocalWriter:
    """One open ingest. Not thread-safe; one writer per ref across all processes."""

    def __init__(self) -> None:  # use LocalStore.writer
        self._store: LocalStore
        self._ref: str
        self._path: Path
        self._lock: RefLock
        self._fd: int = -1
        self._hasher: Hasher
        self._offset = 0
        self._flushed = 0  # bytes whose writeback was started
        self._total = 0
        self._started: datetime
        self._updated: datetime
        self._expected: str | None = None

    @classmethod
    def _open(cls, store: LocalStore, ref: str, total: int, expected: str | None, lock: RefLock) -> LocalWriter:
        w = cls()
        w._store, w._ref, w._lock, w._expected = store, ref, lock, expected
        w._path = store.ingest_path(ref)
        alg = algorithm_of(expected) if expected else "sha256"
        w._hasher = new_hasher(alg)
        st = store._read_status(w._path)
        if st is not None and st.ref == ref and not (total and st.total and st.total != total):
            # resume: rehash what is there
            w._fd = os.open(w._path / "data", os.O_RDWR | os.O_CLOEXEC)
            while chunk := os.read(w._fd, _CHUNK):
                w._hasher.update(chunk)
            w._offset = w._flushed = os.lseek(w._fd, 0, os.SEEK_CUR)
            w._total = st.total or total
            w._started, w._updated = st.started_at, st.updated_at
            if total and not st.total:
                atomic_write(w._path / "total", str(total).encode(), sync=False)
        else:
            remove_tree(w._path)
            w._path.mkdir(parents=True)
            t = _time.now()
            w._started = w._updated = t
            w._total = total
            atomic_write(w._path / "ref", ref.encode(), sync=False)
            atomic_write(w._path / "startedat", _time.rfc3339(t).encode(), sync=False)
            atomic_write(w._path / "updatedat", _time.rfc3339(t).encode(), sync=False)
            if total:
                atomic_write(w._path / "total", str(total).encode(), sync=False)
            w._fd = os.open(w._path / "data", os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
        return w

    # -- protocol --------------------------------------------------------------------------
    @property
    def ref(self) -> str:
        """The ingest ref this writer holds."""
        return self._ref

    def _check_open(self) -> None:
        if self._fd < 0:
            raise errors.FailedPrecondition(f"writer for ref {self._ref!r} is closed")

    def write(self, data: bytes, /) -> int:
        """Append ``data`` and hash it; a full disk raises Unavailable and keeps what was written before."""
        self._check_open()
        view = memoryview(data)
        n = len(view)
        try:
            while view:
                k = os.write(self._fd, view)
                view = view[k:]
        except OSError as exc:
            # a partial write leaves data and hash out of step: realign the file to what is hashed
            with contextlib.suppress(OSError):
                os.ftruncate(self._fd, self._offset)
                os.lseek(self._fd, self._offset, os.SEEK_SET)
            raise disk_full(exc, f"writing ingest {self._ref!r} (kept for resume)") from exc
        _faults.fault_point("content.ingest.write")
        self._hasher.update(data)
        self._offset += n
        if self._offset - self._flushed >= _WRITEBACK:
            self._start_writeback()
        self._updated = _time.now()
        return n

    def _start_writeback(self) -> None:
        """Start writing the bytes so far to disk, without waiting (the commit's fsync then
        has little left to do). ``POSIX_FADV_DONTNEED`` on Linux starts the writeback of the
        range's dirty pages; pages still dirty or under writeback stay cached."""
        start, self._flushed = self._flushed, self._offset
        with contextlib.suppress(OSError, AttributeError):
            os.posix_fadvise(self._fd, start, self._offset - start, os.POSIX_FADV_DONTNEED)

    def status(self) -> IngestStatus:
        """Offset, total and times of this ingest."""
        return IngestStatus(
            ref=self._ref, offset=self._offset, total=self._total,
            started_at=self._started, updated_at=self._updated,
        )

    def digest(self) -> str:
        """The digest of the bytes written so far."""
        return f"{self._hasher_name()}:{self._hasher.copy().hexdigest()}"

    def _hasher_name(self) -> str:
        return "sha512" if len(self._hasher.copy().hexdigest()) == 128 else "sha256"

    def truncate(self, size: int) -> None:
        """Restart the ingest from zero (only ``size=0`` is supported)."""
        self._check_open()
        if size != 0:
            raise errors.InvalidArgument(f"truncate of ingest {self._ref!r}: only size 0 is supported")
        os.ftruncate(self._fd, 0)
        os.lseek(self._fd, 0, os.SEEK_SET)
        self._hasher = new_hasher(self._hasher_name())
        self._offset = self._flushed = 0
        self._updated = _time.now()

    def commit(
        self, size: int | None = None, expected: str | None = None, labels: Mapping[str, str] | None = None
    ) -> str:
        """Verify and publish the blob. The writer is closed afterwards whatever happens.

        Size or digest mismatch keeps the data for a resume (FailedPrecondition /
        DigestMismatch); an already committed blob removes the ingest (AlreadyExists).
        ``labels`` must be empty: this store keeps none, so labels are refused with
        FailedPrecondition before anything is published (the ingest is kept), not dropped.
        The blob's mtime and atime (its ``info()`` times) are set to the commit time.
        """
        self._check_open()
        try:
            if labels:
                raise errors.FailedPrecondition(f"commit of ingest {self._ref!r}: {_NO_LABELS} (ingest kept)")
            try:
                os.fsync(self._fd)
            except OSError as exc:
                raise disk_full(exc, f"committing ingest {self._ref!r}") from exc
            actual_size = os.fstat(self._fd).st_size
            if actual_size != self._offset:
                raise errors.FailedPrecondition(
                    f"ingest {self._ref!r}: data has {actual_size} bytes but {self._offset} were written"
                )
            if size and size != actual_size:
                raise errors.FailedPrecondition(
                    f"unexpected commit size {actual_size}, expected {size} (ingest {self._ref!r})"
                )
            expected = expected or self._expected
            digest = self.digest()
            if expected:
                validate_digest(expected)
                if algorithm_of(expected) != algorithm_of(digest):
                    digest = self._rehash(algorithm_of(expected))
                if digest != expected:
                    raise errors.DigestMismatch(
                        f"unexpected commit digest {digest}, expected {expected} (ingest {self._ref!r})",
                        expected=expected, actual=digest,
                    )
            target = self._store.blob_path(digest)
            target.parent.mkdir(parents=True, exist_ok=True)
            # info() reads created_at/updated_at from mtime/atime: make both the commit time
            # (containerd sets atime=mtime=commit time), not the last write's or the open's
            committed = _time.to_ns(_time.now())
            os.utime(self._fd, ns=(committed, committed))
            os.fchmod(self._fd, 0o444)
            _faults.fault_point("content.commit.link")
            try:
                os.link(self._path / "data", target)
            except FileExistsError:
                remove_tree(self._path)
                self._close(remove_lock=True)
                raise errors.AlreadyExists(f"content {digest} already exists") from None
            fsync_dir(target.parent)
            remove_tree(self._path)
            self._close(remove_lock=True)
            return digest
        finally:
            if self._fd >= 0:
                self.close()

    def _rehash(self, alg: str) -> str:
        h = new_hasher(alg)
        pos = 0
        while chunk := os.pread(self._fd, _CHUNK, pos):
            h.update(chunk)
            pos += len(chunk)
        return f"{alg}:{h.hexdigest()}"

    def close(self) -> None:
        """Keep the ingest for resume and release the ref. Closing twice is fine."""
        if self._fd < 0:
            return
        with contextlib.suppress(FileNotFoundError):
            atomic_write(self._path / "updatedat", _time.rfc3339(self._updated).encode(), sync=False)
        self._close(remove_lock=True)

    def _close(self, remove_lock: bool) -> None:
        fd, self._fd = self._fd, -1
        if fd >= 0:
            os.close(fd)
        self._lock.release(remove=remove_lock)

    def __enter__(self) -> LocalWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        if getattr(self, "_fd", -1) >= 0:
            with contextlib.suppress(OSError):
                self._close(remove_lock=False)
