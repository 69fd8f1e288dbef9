"""Records and protocols of the content store (containerd ``core/content``)."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from datetime import datetime
from typing import BinaryIO, Protocol, runtime_checkable

import attrs

from ocistore import errors
from ocistore.oci.descriptor import Descriptor

__all__ = [
    "ContentInfo",
    "ContentStore",
    "ContentWriter",
    "IngestStatus",
    "Ingester",
    "PartialBlob",
    "PartialStore",
    "Provider",
]


@attrs.frozen
class ContentInfo:
    """What the store knows of one committed blob."""

    digest: str
    size: int
    labels: dict[str, str] = attrs.field(factory=dict, hash=False)
    created_at: datetime | None = None
    updated_at: datetime | None = None
    partial: bool = False
    """True for a lazily fetched eStargz layer whose bytes are not all here (see :class:`PartialBlob`)."""


@attrs.frozen
class PartialBlob:
    """The record of a partially present blob: a layer fetched lazily (footer and TOC only).

    ``ref`` is the reference it was fetched from (where its chunks are read from),
    ``toc_digest`` the digest of its TOC JSON (a blob of its own in the store) and
    ``toc_offset`` where the TOC's gzip member starts in the layer.
    """

    digest: str
    size: int
    ref: str
    toc_digest: str
    toc_offset: int


@attrs.frozen
class IngestStatus:
    """Progress of one ingest (an uncommitted, resumable write keyed by ``ref``)."""

    ref: str
    offset: int
    total: int
    started_at: datetime
    updated_at: datetime
    expected: str = ""


class ContentWriter(Protocol):
    """One open ingest: bytes written to it become a blob only at :meth:`commit`.

    The ingest lifecycle (containerd ``content.Writer``): :meth:`Ingester.writer` opens a
    writer for a ``ref`` and locks the ref to it, so a ref has at most one live writer
    (in any thread or process). Each :meth:`write` appends and advances
    ``status().offset``. :meth:`close` without a commit releases the ref but keeps the
    ingest: the next writer opened for the same ref resumes it, with the bytes written so
    far already in place (``status().offset``) and hashed, so the caller continues from
    that offset; ``truncate(0)`` starts over instead. :meth:`commit` verifies the size and
    digest and publishes the bytes atomically as a blob under their digest; the writer is
    closed afterwards whatever happens. A size or digest mismatch keeps the ingest for a
    resume; AlreadyExists (the blob was already there) removes it.
    :meth:`ContentStore.statuses` lists the ingests left and :meth:`ContentStore.abort`
    removes one.
    """

    def write(self, data: bytes, /) -> int:
        """Append ``data`` at ``status().offset`` and return its length.

        Unavailable if the disk is full (the ingest keeps the bytes written before);
        FailedPrecondition once the writer is closed or committed.
        """
    def status(self) -> IngestStatus:
        """The ingest's ref, bytes written so far (``offset``), expected ``total`` and times."""
    def digest(self) -> str:
        """The digest of the bytes written so far (the empty blob's digest before any write)."""
    def truncate(self, size: int) -> None:
        """Discard written bytes. Only ``truncate(0)`` (restart the ingest) is supported.

        InvalidArgument for any other size; FailedPrecondition once the writer is closed.
        """
    def commit(
        self, size: int | None = None, expected: str | None = None, labels: Mapping[str, str] | None = None
    ) -> str:
        """Verify the written bytes, publish them as a blob and return its digest.

        ``size`` (if non-zero) must equal the bytes written and ``expected`` (if given)
        their digest; otherwise FailedPrecondition / DigestMismatch (a FailedPrecondition),
        and the ingest is kept so a new writer can resume or truncate it. The blob appears
        under its digest atomically, with ``labels``, and the ingest is gone. AlreadyExists
        if the store already held that blob; the ingest is removed then too. The writer
        is closed afterwards in every case (containerd ``Writer.Commit``).
        """
    def close(self) -> None:
        """Release the ref, keeping an uncommitted ingest for a later resume; idempotent."""
    def __enter__(self) -> ContentWriter: ...
    def __exit__(self, *exc: object) -> None: ...


class Provider(Protocol):
    """Read access to committed blobs (containerd ``content.Provider`` and ``InfoProvider``).

    Only committed blobs are visible: an ingest's bytes cannot be read until its
    writer commits them. A malformed digest raises InvalidArgument.
    """

    def exists(self, digest: str) -> bool:
        """Whether the blob is committed (and visible to this store)."""
    def info(self, digest: str) -> ContentInfo:
        """Size, labels and times of a committed blob; NotFound if the store lacks it."""
    def open(self, digest: str) -> BinaryIO:
        """A seekable binary reader of a committed blob (close it); NotFound if absent."""
    def read(self, digest: str) -> bytes:
        """A whole small blob, checked against its digest.

        NotFound if absent; SizeLimitExceeded for a blob too large to read whole (use
        :meth:`open`); DigestMismatch if the bytes on disk are corrupt.
        """


class Ingester(Protocol):
    """Write access: resumable writers keyed by a ref (containerd ``content.Ingester``).

    A ref names one ingest (an uncommitted write) and is locked to one live writer at a
    time. Opening a writer for a ref whose ingest was left uncommitted resumes it at
    ``status().offset``; see :class:`ContentWriter` for the rest of the lifecycle.
    """

    def writer(
        self, ref: str, total: int | None = None, expected: str | None = None
    ) -> ContentWriter:
        """Open a new ingest for ``ref``, or resume the one left there.

        ``total`` is the expected size, shown in the status (if the kept ingest and this
        call both give a total and they differ, the ingest starts over). ``expected`` is
        the digest the bytes should have: AlreadyExists if that blob is already in the
        store. A namespaced store may instead open a *shared* ingest for a blob that is on
        disk but not yet in its namespace: its status already shows every byte, so it
        commits without any write. Unavailable while
        another writer holds ``ref``; InvalidArgument for an empty ref or a malformed digest.
        """


class ContentStore(Provider, Ingester, Protocol):
    """The whole namespaced content store as ``Store.content`` offers it (containerd ``content.Store``).

    Reading (:class:`Provider`), ingesting (:class:`Ingester`, :class:`ContentWriter`),
    blob records (labels, walk, delete) and the ingests themselves: :meth:`statuses` lists
    the uncommitted ingests and :meth:`abort` removes one (containerd ``IngestManager``).
    """

    def ingest(
        self, data: bytes | BinaryIO, expected: str | None = None, labels: Mapping[str, str] | None = None,
        media_type: str = "application/octet-stream",
    ) -> Descriptor:
        """Write a whole blob (bytes or a readable stream), commit it and return its descriptor.

        A blob already in the store is not an error: ``labels`` are merged into its labels
        and its descriptor returned. DigestMismatch if the data does not hash to ``expected``
        (the ingest is aborted).
        """
    def update(self, digest: str, labels: Mapping[str, str], fieldpaths: list[str] | None = None) -> ContentInfo:
        """Change a blob's labels and return its new info; NotFound if absent.

        Without ``fieldpaths`` (or with ``labels``) the labels are replaced; ``labels.<key>``
        sets that key from ``labels`` or deletes it when missing or empty. InvalidArgument
        for another fieldpath or an invalid label.
        """
    def walk(self, filters: str | list[str] | None = None) -> Iterator[ContentInfo]:
        """The blobs matching ``filters`` (containerd filter syntax on ``digest`` and ``labels.<key>``)."""
    def delete(self, digest: str) -> None:
        """Remove the blob from this store; NotFound if absent.

        For ``Store.content`` this forgets the blob in the namespace; its bytes are removed
        by the next garbage collection if nothing else holds them.
        """
    def statuses(self) -> list[IngestStatus]:
        """The status of the uncommitted ingests (open, or closed and kept for resume)."""
    def abort(self, ref: str) -> None:
        """Remove the ingest ``ref`` and its bytes; NotFound if there is none, Unavailable while a writer holds it."""


@runtime_checkable
class PartialStore(ContentStore, Protocol):
    """A content store that also records partial blobs (lazily fetched eStargz layers)."""

    def partial(self, digest: str) -> PartialBlob | None:
        """The partial record of ``digest``, None when the blob is whole; NotFound if absent."""
        ...

    def record_partial(self, blob: PartialBlob, labels: Mapping[str, str] | None = None) -> bool:
        """Record ``blob`` as partial unless the digest is recorded already (then False)."""
        ...

    def shareable(self, digest: str) -> bool:
        """Whether the root holds the whole blob and this namespace may see it without its bytes."""
        ...


def is_partial(content: object, digest: str) -> bool:
    """Whether ``content`` is a :class:`PartialStore` that records ``digest`` as partial."""
    if not isinstance(content, PartialStore):
        return False
    try:
        return content.partial(digest) is not None
    except errors.NotFound:
        return False
