"""Records and protocols of the content store (containerd ``core/content``)."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from datetime import datetime
from typing import BinaryIO, Protocol

import attrs

from ocistore.oci.descriptor import Descriptor

__all__ = [
    "ContentInfo",
    "ContentStore",
    "ContentWriter",
    "IngestStatus",
    "Ingester",
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
    """A resumable writer. Leaving it without commit keeps the ingest for a later resume."""

    def write(self, data: bytes, /) -> int: ...
    def status(self) -> IngestStatus: ...
    def digest(self) -> str: ...
    def truncate(self, size: int) -> None: ...
    def commit(
        self, size: int | None = None, expected: str | None = None, labels: Mapping[str, str] | None = None
    ) -> str: ...
    def close(self) -> None: ...
    def __enter__(self) -> ContentWriter: ...
    def __exit__(self, *exc: object) -> None: ...


class Provider(Protocol):
    """Read access to committed blobs."""

    def exists(self, digest: str) -> bool: ...
    def info(self, digest: str) -> ContentInfo: ...
    def open(self, digest: str) -> BinaryIO: ...
    def read(self, digest: str) -> bytes: ...


class Ingester(Protocol):
    """Write access: resumable writers keyed by a ref."""

    def writer(
        self, ref: str, total: int | None = None, expected: str | None = None
    ) -> ContentWriter: ...


class ContentStore(Provider, Ingester, Protocol):
    """The whole namespaced content store as ``Store.content`` offers it."""

    def ingest(
        self, data: bytes | BinaryIO, expected: str | None = None, labels: Mapping[str, str] | None = None,
        media_type: str = "application/octet-stream",
    ) -> Descriptor: ...
    def update(self, digest: str, labels: Mapping[str, str], fieldpaths: list[str] | None = None) -> ContentInfo: ...
    def walk(self, filters: str | list[str] | None = None) -> Iterator[ContentInfo]: ...
    def delete(self, digest: str) -> None: ...
    def statuses(self) -> list[IngestStatus]: ...
    def abort(self, ref: str) -> None: ...
