"""The namespaced content store (containerd ``core/metadata/content.go``).

A namespace sees a blob only after it ingested it or was shown to hold it (the
*shared* policy: opening a writer for a digest the root already holds creates a
"shared ingest" that needs no data). Labels and timestamps live in LMDB; bytes live in
the :class:`~ocistore.content.local.LocalStore`. Blobs are published inside the
metadata write transaction, so GC (which deletes files under a write transaction too)
never sees a committed blob without its record.
"""

from __future__ import annotations

import io
import os
from collections.abc import Iterator, Mapping
from datetime import timedelta
from typing import TYPE_CHECKING, BinaryIO

from ocistore import _time, errors
from ocistore._files import remove_tree
from ocistore._lazy import lazy_module
from ocistore.content.local import LocalStore, LocalWriter, read_verified
from ocistore.content.locks import RefLock
from ocistore.content.types import ContentInfo, IngestStatus, PartialBlob
from ocistore.metadata.db import DB, Txn, key, prefix, split_key
from ocistore.metadata.labels import apply_fieldpaths, validate_labels
from ocistore.oci.descriptor import Descriptor
from ocistore.oci.digest import ALGORITHMS, EMPTY_DIGEST, validate_digest

if TYPE_CHECKING:
    from ocistore import filters as _filters
else:
    _filters = lazy_module("ocistore.filters")  # compiled on the first filtered listing

__all__ = ["NamespacedContent", "NamespacedWriter"]

INGEST_EXPIRY = timedelta(hours=24)
SHAREABLE_LABEL = "containerd.io/namespace.shareable"
_CHUNK = 1 << 20


def _info(digest: str, rec: Mapping[str, object]) -> ContentInfo:
    return ContentInfo(
        digest=digest,
        size=int(rec["size"]),  # type: ignore[call-overload]
        labels=dict(rec.get("labels") or {}),  # type: ignore[call-overload]
        created_at=_time.from_ns(int(rec["created_at"])),  # type: ignore[call-overload]
        updated_at=_time.from_ns(int(rec["updated_at"])),  # type: ignore[call-overload]
        partial=bool(rec.get("partial")),
    )


def _partial_blob(digest: str, rec: Mapping[str, object]) -> PartialBlob | None:
    p = rec.get("partial")
    if not isinstance(p, dict):
        return None
    return PartialBlob(digest, int(rec["size"]), str(p.get("ref", "")),  # type: ignore[call-overload]
                       str(p.get("toc_digest", "")), int(p.get("toc_offset", 0)))


class NamespacedContent:
    """``Store.content``: the content store as one namespace sees it."""

    def __init__(self, db: DB, namespace: str, backend: LocalStore, sharing: str = "shared") -> None:
        if sharing not in ("shared", "isolated"):
            raise errors.InvalidArgument(f"content sharing policy must be 'shared' or 'isolated', not {sharing!r}")
        self.db = db
        self.ns = namespace
        self.backend = backend
        self.sharing = sharing

    # -- reading --------------------------------------------------------------------------------
    def _record(self, txn: Txn, digest: str) -> dict[str, object] | None:
        rec = txn.get("content", key(self.ns, digest))
        return rec if isinstance(rec, dict) else None

    def info(self, digest: str) -> ContentInfo:
        """Size, labels and times of a blob in this namespace; NotFound if it has none."""
        validate_digest(digest)
        with self.db.read() as txn:
            rec = self._record(txn, digest)
        if rec is None:
            raise errors.NotFound(f"content {digest} not found in namespace {self.ns!r}")
        return _info(digest, rec)

    def resolve(self, prefix_or_digest: str) -> str:
        """The full digest of this namespace's blob named by a digest or a unique prefix.

        Accepts ``sha256:<hex>``, ``sha256:<hex prefix>`` or a bare hex prefix (at least 4
        characters), as ctr and docker do. NotFound when nothing matches; InvalidArgument when
        the prefix is too short, not hex, or names several blobs (they are listed).
        """
        text = prefix_or_digest.strip()
        alg, sep, hexpart = text.partition(":")
        if not sep:
            alg, hexpart = "sha256", text
        if alg in ALGORITHMS and len(hexpart) == ALGORITHMS[alg]:
            return validate_digest(f"{alg}:{hexpart}")
        if alg not in ALGORITHMS or len(hexpart) < 4 or not all(c in "0123456789abcdef" for c in hexpart):
            raise errors.InvalidArgument(
                f"{prefix_or_digest!r} is neither a digest nor a digest prefix (give at least 4 lowercase "
                "hex characters, optionally after 'sha256:')"
            )
        with self.db.read() as txn:
            found = [split_key(k)[1] for k in txn.keys("content", key(self.ns, f"{alg}:{hexpart}"))]
        if not found:
            raise errors.NotFound(f"no content in namespace {self.ns!r} has a digest starting {alg}:{hexpart}")
        if len(found) > 1:
            shown = ", ".join(found[:5]) + (" ..." if len(found) > 5 else "")
            raise errors.InvalidArgument(
                f"digest prefix {alg}:{hexpart} is ambiguous: {len(found)} blobs match ({shown}); give more characters"
            )
        return found[0]

    def exists(self, digest: str) -> bool:
        """Whether this namespace holds the whole blob (InvalidArgument for a malformed digest).

        A partial blob (a lazily fetched layer, ``info().partial``) does not count: its bytes
        are not all here.
        """
        try:
            return not self.info(digest).partial
        except errors.NotFound:
            return False

    def _whole(self, digest: str) -> ContentInfo:
        info = self.info(digest)
        if info.partial:
            raise errors.PartialContent(
                f"content {digest} in namespace {self.ns!r} is partial (a lazily fetched eStargz layer: only "
                "its TOC and the chunks read so far are here); fetch the image without lazy=True to complete it",
                digest=digest,
            )
        return info

    def open(self, digest: str) -> BinaryIO:
        """A seekable reader of a committed blob (a context manager); PartialContent for a partial one."""
        self._whole(digest)
        return self.backend.open(digest)

    def read(self, digest: str) -> bytes:
        """A whole (small) blob, verified against its digest; PartialContent for a partial one."""
        info = self._whole(digest)
        with self.backend.open(digest) as f:
            return read_verified(f, digest, info.size)

    def partial(self, digest: str) -> PartialBlob | None:
        """The partial-blob record of ``digest`` (None when the blob is whole); NotFound if absent."""
        validate_digest(digest)
        with self.db.read() as txn:
            rec = self._record(txn, digest)
        if rec is None:
            raise errors.NotFound(f"content {digest} not found in namespace {self.ns!r}")
        return _partial_blob(digest, rec)

    def shareable(self, digest: str) -> bool:
        """Whether the root holds the whole blob and this namespace may be shown it without its bytes."""
        return self.backend.exists(digest) and self._shareable(digest)

    def record_partial(self, blob: PartialBlob, labels: Mapping[str, str] | None = None) -> bool:
        """Record ``blob`` as partially present in this namespace, under the current lease.

        Nothing changes when the namespace already records the digest (whole or partial):
        returns False then. The caller has verified the TOC and stored it as a blob first.
        """
        validate_digest(blob.digest)
        clean = validate_labels(labels, f"content {blob.digest}: ")
        self.db.check_writable(f"recording partial content {blob.digest}")
        with self.db.write() as txn:
            self.db.ensure_namespace(txn, self.ns)
            self.db.add_to_lease(txn, self.ns, "content", blob.digest)
            if txn.has("content", key(self.ns, blob.digest)):
                return False
            t = _time.to_ns(_time.now())
            txn.put("content", key(self.ns, blob.digest), {
                "size": blob.size, "labels": clean, "created_at": t, "updated_at": t,
                "partial": {"ref": blob.ref, "toc_digest": blob.toc_digest, "toc_offset": blob.toc_offset},
            })
        return True

    def walk(self, filters: str | list[str] | None = None) -> Iterator[ContentInfo]:
        """This namespace's blobs that match ``filters`` (fieldpaths ``digest`` and ``labels.<key>``).

        The records are read in one transaction before the first one is yielded.
        """
        flt = _filters.parse_filters(filters)
        with self.db.read() as txn:
            items = list(txn.scan("content", prefix(self.ns)))
        for k, rec in items:
            digest = split_key(k)[1]
            info = _info(digest, rec)
            if flt.match(_filters.label_adaptor({"digest": digest}, info.labels)):
                yield info

    # -- mutations --------------------------------------------------------------------------------
    def update(
        self, digest: str, labels: Mapping[str, str], fieldpaths: list[str] | None = None
    ) -> ContentInfo:
        """Change the blob's labels (containerd fieldpath rules) and return its new info.

        Without ``fieldpaths`` the labels are replaced; ``labels.<key>`` sets or deletes
        one key. NotFound if the namespace lacks the blob; InvalidArgument for any other
        fieldpath or an invalid label.
        """
        validate_digest(digest)
        with self.db.write() as txn:
            rec = self._record(txn, digest)
            if rec is None:
                raise errors.NotFound(f"content {digest} not found in namespace {self.ns!r}")
            new_labels, _ = apply_fieldpaths(
                rec.get("labels") or {}, labels, fieldpaths, f"content {digest}: "  # type: ignore[arg-type]
            )
            rec["labels"] = new_labels
            rec["updated_at"] = _time.to_ns(_time.now())
            txn.put("content", key(self.ns, digest), rec)
        return _info(digest, rec)

    def delete(self, digest: str) -> None:
        """Forget the blob in this namespace; its bytes go at the next gc."""
        validate_digest(digest)
        with self.db.write() as txn:
            if not txn.delete("content", key(self.ns, digest)):
                raise errors.NotFound(f"content {digest} not found in namespace {self.ns!r}")
            self.db.remove_from_lease(txn, self.ns, "content", digest)
        self.db.dirty += 1

    # -- ingests ------------------------------------------------------------------------------------
    def _bref(self, ref: str) -> str:
        return f"{self.ns}/1/{ref}"

    def _shareable(self, digest: str) -> bool:
        """May this namespace be shown a blob the root holds without sending its bytes?

        Under the shared policy always; under the isolated one only if a namespace labelled
        ``containerd.io/namespace.shareable=true`` holds it (containerd 2.8).
        """
        if self.sharing == "shared":
            return True
        with self.db.read() as txn:
            for k, rec in txn.scan("namespaces"):
                ns = k.decode()
                if ns != self.ns and (rec.get("labels") or {}).get(SHAREABLE_LABEL) == "true" and txn.has(
                    "content", key(ns, digest)
                ):
                    return True
        return False

    def writer(self, ref: str, total: int | None = None, expected: str | None = None) -> NamespacedWriter:
        """Open or resume the ingest ``ref`` in this namespace.

        AlreadyExists if ``expected`` is already visible here; Unavailable if another
        writer (in any thread or process) holds ``ref``.
        """
        if not ref:
            raise errors.InvalidArgument("ref must not be empty")
        self.db.check_writable(f"writing ingest {ref!r}")
        if expected:
            validate_digest(expected)
        total = total or 0
        if expected:
            with self.db.read() as rtxn:
                found = self._record(rtxn, expected)
            present = found is not None and not found.get("partial")  # a partial blob is completed
            if present:
                if self.db.current_lease(self.ns) is not None:
                    with self.db.write() as txn:  # hold it for the caller's lease (containerd 2.9 step 1)
                        self.db.add_to_lease(txn, self.ns, "content", expected)
                raise errors.AlreadyExists(f"content {expected} already exists in namespace {self.ns!r}")
        bref = self._bref(ref)
        shared_size = -1
        if expected and self.backend.exists(expected) and self._shareable(expected):
            size = self.backend.info(expected).size
            if total in (0, size):
                shared_size = size
        if shared_size >= 0:
            layout = self.backend.layout
            lock = RefLock(str(layout.ingest_lock(layout.ingest_key(bref))), f"ingest ref {ref!r}").acquire()
            backend_writer: LocalWriter | None = None
        else:
            lock = None
            backend_writer = self.backend.writer(bref, total)
        try:
            with self.db.write() as txn:
                self.db.ensure_namespace(txn, self.ns)
                rec: dict[str, object] = {"bref": bref, "expected": expected if shared_size >= 0 else "",
                                          "expire_at": None}
                if self.db.current_lease(self.ns) is not None:
                    self.db.add_to_lease(txn, self.ns, "ingests", ref)
                else:
                    rec["expire_at"] = _time.to_ns(_time.now() + INGEST_EXPIRY)
                txn.put("ingests", key(self.ns, ref), rec)
        except BaseException:
            if backend_writer is not None:
                backend_writer.close()
            if lock is not None:
                lock.release(remove=True)
            raise
        return NamespacedWriter(self, ref, backend_writer, lock, expected or "", shared_size, total)

    def statuses(self) -> list[IngestStatus]:
        """The status of this namespace's ingests that hold bytes on disk.

        Shared ingests (no bytes of their own yet) are not listed.
        """
        with self.db.read() as txn:
            items = list(txn.scan("ingests", prefix(self.ns)))
        out = []
        for k, rec in items:
            ref = split_key(k)[1]
            try:
                st = self.backend.status(rec["bref"])
            except errors.NotFound:
                continue
            out.append(IngestStatus(ref=ref, offset=st.offset, total=st.total,
                                    started_at=st.started_at, updated_at=st.updated_at))
        return out

    def status(self, ref: str) -> IngestStatus:
        """The status of the ingest ``ref`` in this namespace; NotFound if there is none.

        A shared ingest, having no bytes of its own, is NotFound here too.
        """
        with self.db.read() as txn:
            rec = txn.get("ingests", key(self.ns, ref))
        if rec is None:
            raise errors.NotFound(f"ingest {ref!r} not found in namespace {self.ns!r}")
        st = self.backend.status(rec["bref"])
        return IngestStatus(ref=ref, offset=st.offset, total=st.total,
                            started_at=st.started_at, updated_at=st.updated_at)

    def abort(self, ref: str) -> None:
        """Remove the ingest ``ref`` and its bytes (containerd ``Abort``).

        NotFound if the namespace has no such ingest; Unavailable if a writer holds it.
        """
        layout = self.backend.layout
        bref = self._bref(ref)
        # the writer's lock first (Unavailable while one holds it), so that nothing is removed
        # from under a live writer
        lock = RefLock(str(layout.ingest_lock(layout.ingest_key(bref))), f"ingest ref {ref!r}").acquire()
        try:
            with self.db.write() as txn:
                rec = txn.get("ingests", key(self.ns, ref))
                if rec is None:
                    raise errors.NotFound(f"ingest {ref!r} not found in namespace {self.ns!r}")
                txn.delete("ingests", key(self.ns, ref))
                self.db.remove_from_lease(txn, self.ns, "ingests", ref)
            remove_tree(self.backend.ingest_path(bref))
        finally:
            lock.release(remove=True)

    def ingest(
        self, data: bytes | BinaryIO, expected: str | None = None, labels: Mapping[str, str] | None = None,
        media_type: str = "application/octet-stream",
    ) -> Descriptor:
        """Write a whole blob (bytes or a readable stream) and commit it; existing blobs are fine."""
        validate_labels(labels, "content: ")
        stream: BinaryIO = io.BytesIO(data) if isinstance(data, bytes | bytearray) else data
        ref = f"ingest-{os.urandom(16).hex()}"
        try:
            w = self.writer(ref, expected=expected)
        except errors.AlreadyExists:
            assert expected is not None
            info = self.info(expected)
            if labels:
                self.update(expected, dict(labels), [f"labels.{k}" for k in labels])
            return Descriptor(media_type=media_type, digest=expected, size=info.size)
        with w:
            if w.status().offset == 0:
                while chunk := stream.read(_CHUNK):
                    w.write(chunk)
            size = w.status().offset
            try:
                digest = w.commit(expected=expected, labels=labels)
            except errors.AlreadyExists:
                digest = expected or w.digest()
                if labels:
                    self.update(digest, dict(labels), [f"labels.{k}" for k in labels])
            except BaseException:
                self.abort(ref)
                raise
        return Descriptor(media_type=media_type, digest=digest, size=size)

    # -- commit (called by the writer) -----------------------------------------------------------------
    def _commit_record(
        self, txn: Txn, ref: str, digest: str, size: int, labels: dict[str, str]
    ) -> bool:
        """Create the blob record; False if it already existed (the ingest is dropped either way)."""
        self.db.ensure_namespace(txn, self.ns)
        txn.delete("ingests", key(self.ns, ref))
        self.db.remove_from_lease(txn, self.ns, "ingests", ref)
        self.db.add_to_lease(txn, self.ns, "content", digest)
        old = self._record(txn, digest)
        t = _time.to_ns(_time.now())
        if old is not None and old.get("partial"):
            # a lazily fetched layer is now whole: keep its labels (TOC reference, source)
            merged = dict(old.get("labels") or {})  # type: ignore[call-overload]
            merged.update(labels)
            txn.put("content", key(self.ns, digest), {"size": size, "labels": merged,
                                                      "created_at": old["created_at"], "updated_at": t})
            return True
        if old is not None:
            return False
        txn.put("content", key(self.ns, digest),
                {"size": size, "labels": labels, "created_at": t, "updated_at": t})
        return True


class NamespacedWriter:
    """A namespaced ingest writer; see :class:`ocistore.content.types.ContentWriter`."""

    def __init__(
        self, content: NamespacedContent, ref: str, backend: LocalWriter | None, lock: RefLock | None,
        expected: str, shared_size: int, total: int,
    ) -> None:
        self._content = content
        self._ref = ref
        self._w = backend
        self._lock = lock
        self._expected = expected
        self._shared_size = shared_size  # >= 0 while this is a shared ingest without own data
        self._total = total
        self._closed = False
        t = _time.now()
        self._started = self._updated = t

    @property
    def ref(self) -> str:
        """The ingest ref this writer holds."""
        return self._ref

    def _check(self) -> None:
        if self._closed:
            raise errors.FailedPrecondition(f"writer for ref {self._ref!r} is closed")

    def _unshare(self, keep: int) -> LocalWriter:
        """Turn a shared ingest into a real one holding the first ``keep`` bytes of the blob."""
        if self._w is not None:
            return self._w
        c = self._content
        assert self._lock is not None
        self._lock.release(remove=True)
        self._lock = None
        w = c.backend.writer(c._bref(self._ref), self._total)
        w.truncate(0)
        if keep:
            with c.backend.open(self._expected) as f:
                left = keep
                while left and (chunk := f.read(min(_CHUNK, left))):
                    w.write(chunk)
                    left -= len(chunk)
        with c.db.write() as txn:
            rec = txn.get("ingests", key(c.ns, self._ref)) or {}
            rec.update({"bref": c._bref(self._ref), "expected": ""})
            txn.put("ingests", key(c.ns, self._ref), rec)
        self._w = w
        self._shared_size = -1
        return w

    def write(self, data: bytes, /) -> int:
        """Append ``data`` and return its length; a shared ingest first copies the blob's bytes.

        FailedPrecondition once closed; Unavailable if the disk is full.
        """
        self._check()
        w = self._w if self._w is not None else self._unshare(self._shared_size)
        return w.write(data)

    def status(self) -> IngestStatus:
        """Offset, total and times; a shared ingest shows the whole blob and its ``expected`` digest."""
        if self._w is not None:
            st = self._w.status()
            return IngestStatus(ref=self._ref, offset=st.offset, total=st.total,
                                started_at=st.started_at, updated_at=st.updated_at)
        return IngestStatus(ref=self._ref, offset=self._shared_size, total=self._shared_size,
                            started_at=self._started, updated_at=self._updated, expected=self._expected)

    def digest(self) -> str:
        """The sha256 digest of the bytes so far, whatever ``expected`` was (a shared ingest: ``expected``)."""
        if self._w is not None:
            return self._w.digest()
        return self._expected or EMPTY_DIGEST

    def truncate(self, size: int) -> None:
        """``truncate(0)`` restarts the ingest (a shared one becomes an empty real one).

        InvalidArgument for another size; FailedPrecondition once closed.
        """
        self._check()
        if self._w is None:
            self._unshare(0)
        assert self._w is not None
        self._w.truncate(size)

    def commit(
        self, size: int | None = None, expected: str | None = None, labels: Mapping[str, str] | None = None
    ) -> str:
        """Verify and make the blob visible in this namespace; always closes the writer.

        Only the ``size`` and ``expected`` given here are checked (FailedPrecondition /
        DigestMismatch, the ingest is kept); the digest the writer was opened with is not
        checked again. Bytes already on disk under their digest are reused; AlreadyExists
        only if this namespace already held the blob (the ingest is dropped).
        """
        self._check()
        c = self._content
        try:
            clean_labels = validate_labels(labels, f"content (ingest {self._ref!r}): ")
            if self._w is None:
                digest = self._expected
                if size and size != self._shared_size:
                    raise errors.FailedPrecondition(
                        f"unexpected commit size {self._shared_size}, expected {size} (ingest {self._ref!r})")
                if expected and expected != digest:
                    raise errors.DigestMismatch(
                        f"unexpected commit digest {digest}, expected {expected} (ingest {self._ref!r})",
                        expected=expected, actual=digest)
                with c.db.write() as txn:
                    if not c.backend.exists(digest):
                        raise errors.NotFound(f"content {digest} vanished from the store during the ingest")
                    created = c._commit_record(txn, self._ref, digest, self._shared_size, clean_labels)
                if not created:
                    raise errors.AlreadyExists(f"content {digest} already exists in namespace {c.ns!r}")
                return digest
            w = self._w
            st = w.status()
            with c.db.write() as txn:
                try:
                    digest = w.commit(size, expected)
                except errors.AlreadyExists:
                    digest = expected or w.digest()
                created = c._commit_record(txn, self._ref, digest, st.offset, clean_labels)
            if not created:
                raise errors.AlreadyExists(f"content {digest} already exists in namespace {c.ns!r}")
            return digest
        finally:
            self.close()

    def close(self) -> None:
        """Release the ref; an uncommitted ingest is kept for resume. Closing twice is fine."""
        if self._closed:
            return
        self._closed = True
        if self._w is not None:
            self._w.close()
        if self._lock is not None:
            self._lock.release(remove=True)

    def __enter__(self) -> NamespacedWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
