"""Blob download: a verified, forward-seekable, resuming reader, and copying into an ingest.

``BlobReader`` never trusts the registry's bytes:

* it reads at most ``desc.size`` bytes; a body that goes on is ``SizeLimitExceeded``;
* a body cut short (connection reset, short read, read timeout) is reopened with
  ``Range: bytes=<offset>-`` at the current offset, at most ``Retry.read`` times; a
  server that answers the range with ``200`` and the whole blob has its first
  ``offset`` bytes discarded (containerd's ``httpreadseeker`` does the same);
* when it has seen every byte from offset 0 it checks the digest before handing out
  the last chunk, so a reader drained to EOF has delivered verified content or raised
  ``DigestMismatch``.

``copy_into`` continues a ``ContentWriter`` at ``writer.status().offset`` (containerd's
``content.Copy`` with a resumed ingest), checks the digest of everything written,
and commits; ``AlreadyExists`` on commit means another writer got there first.
"""

from __future__ import annotations

import contextlib
import io
import logging
import time
from collections.abc import Callable
from typing import Any

import urllib3
from urllib3.exceptions import HTTPError as Urllib3HTTPError

from ocistore import errors
from ocistore.content.types import ContentWriter
from ocistore.oci.descriptor import Descriptor
from ocistore.oci.digest import Hasher, algorithm_of, new_hasher
from ocistore.remotes.options import Retry
from ocistore.remotes.transport import raise_for_status

__all__ = ["CHUNK_SIZE", "BlobReader", "Opener", "ProgressFn", "check_bounded_range", "check_ranges_answer",
           "copy_into", "open_range", "read_bounded"]

log = logging.getLogger(__name__)

CHUNK_SIZE = 1 << 20
_SKIP_BY_READING = 1 << 20  # forward seeks shorter than this keep reading (and hashing)

Opener = Callable[[int], urllib3.BaseHTTPResponse]
"""``offset -> response`` whose body starts at ``offset`` of the blob (see ``open_range``)."""

ProgressFn = Callable[[int, int], None]
"""``(offset, total)`` after each chunk written."""


def open_range(resp: urllib3.BaseHTTPResponse, offset: int, size: int, what: str) -> urllib3.BaseHTTPResponse:
    """Check a (possibly ranged) GET answer and position its body at ``offset``."""
    if resp.status == 206:
        content_range = resp.headers.get("Content-Range", "")
        if not content_range.startswith(f"bytes {offset}-"):
            resp.close()
            raise errors.RegistryError(
                f"{what}: asked for bytes from {offset}, the registry sent range {content_range!r}",
                status=206,
            )
    elif resp.status == 200:
        if offset > 0:
            _discard(resp, offset, what)
    else:
        raise_for_status(resp, what)
    length = resp.headers.get("Content-Length")
    if length is not None and length.isdigit() and resp.status == 206 and int(length) > size - offset:
        resp.close()
        raise errors.SizeLimitExceeded(
            f"{what}: the registry announced {int(length)} bytes from offset {offset}, "
            f"the descriptor says {size - offset} remain"
        )
    return resp


def check_bounded_range(
    resp: urllib3.BaseHTTPResponse, start: int, end: int, size: int, what: str
) -> urllib3.BaseHTTPResponse:
    """Check the answer to ``Range: bytes=<start>-<end - 1>`` of a blob of ``size`` bytes.

    ``206`` must name exactly that range (and the blob's size, or ``*``); ``200`` is accepted
    only when the range is the whole blob, else ``RangeNotSupported`` (the registry ignored
    the range: the caller falls back to a whole download); other statuses are errors.
    """
    if resp.status == 206:
        content_range = resp.headers.get("Content-Range", "")
        if content_range not in (f"bytes {start}-{end - 1}/{size}", f"bytes {start}-{end - 1}/*"):
            resp.close()
            raise errors.RegistryError(
                f"{what}: asked for bytes {start}-{end - 1} of {size}, the registry sent range {content_range!r}",
                status=206,
            )
        length = resp.headers.get("Content-Length")
        if length is not None and length.isdigit() and int(length) != end - start:
            resp.close()
            raise errors.RegistryError(
                f"{what}: the registry announced {length} bytes for a range of {end - start}", status=206
            )
        return resp
    if resp.status == 200:
        if start == 0 and end == size:
            return resp
        resp.close()
        raise errors.RangeNotSupported(
            f"{what}: the registry ignored the Range request and sent the whole blob ({size} bytes)"
        )
    raise_for_status(resp, what)
    return resp


def check_ranges_answer(resp: urllib3.BaseHTTPResponse, what: str) -> urllib3.BaseHTTPResponse:
    """Check the answer to a request for several ranges: ``206`` (its body is split by
    ``ocistore.remotes.byteranges``), ``RangeNotSupported`` for ``200`` (the whole blob), other
    statuses are errors."""
    if resp.status == 206:
        return resp
    if resp.status == 200:
        resp.close()
        raise errors.RangeNotSupported(f"{what}: the registry ignored the Range request and sent the whole blob")
    raise_for_status(resp, what)
    return resp


def read_bounded(opener: Opener, start: int, end: int, retry: Retry, what: str) -> bytes:
    """Bytes ``[start, end)`` through ``opener`` (which asks for ``[offset, end)``), resuming
    a body cut short at most ``retry.read`` times; more bytes than asked is an error."""
    parts: list[bytes] = []
    pos = start
    while pos < end:
        resp = opener(pos)
        error: BaseException | None = None
        try:
            while pos < end:
                data = resp.read1(min(end - pos, CHUNK_SIZE), decode_content=True)
                if not data:
                    break
                parts.append(data)
                pos += len(data)
        except (Urllib3HTTPError, OSError) as exc:
            error = exc
        if pos < end:
            resp.close()
            retry = retry.increment_read("GET", what, error=error)
            if retry.is_exhausted():
                raise errors.Unavailable(
                    f"{what}: the range was cut short at byte {pos} too many times ({len(retry.history)})"
                ) from error
            continue
        try:
            extra = resp.read(1, decode_content=True)
        except (Urllib3HTTPError, OSError):
            extra = b""
        if extra:
            resp.close()
            raise errors.SizeLimitExceeded(f"{what}: the registry sent more bytes than the range asked for")
        resp.release_conn()
    return b"".join(parts)


def _discard(resp: urllib3.BaseHTTPResponse, count: int, what: str) -> None:
    """Skip the first ``count`` bytes of a body (a server that ignored our Range)."""
    log.debug("%s: server ignored Range; discarding %d bytes", what, count)
    left = count
    while left > 0:
        data = resp.read(min(left, CHUNK_SIZE), decode_content=True)
        if not data:
            resp.close()
            raise errors.Unavailable(f"{what}: body ended while skipping to offset {count}")
        left -= len(data)


class BlobReader(io.RawIOBase):
    """A file-like reader of one blob, capped at its size, verified, resuming on drops.

    ``verify`` applies only when reading from offset 0 (the digest needs every byte);
    a forward ``seek`` farther than 1 MiB reopens the stream with a Range request
    and turns verification off.
    """

    def __init__(
        self, desc: Descriptor, opener: Opener, retry: Retry, offset: int = 0, what: str = "", verify: bool = True
    ) -> None:
        """Read ``desc`` through ``opener`` starting at ``offset``.

        ``verify=False`` skips hashing when the consumer hashes anyway (a content writer).
        """
        super().__init__()
        if offset < 0 or offset > desc.size:
            raise errors.InvalidArgument(f"offset {offset} is outside blob {desc.digest} of {desc.size} bytes")
        self.desc = desc
        self._open_at = opener
        self._retry = retry
        self._pos = offset
        self._resp: urllib3.BaseHTTPResponse | None = None
        self._hasher: Hasher | None = new_hasher(algorithm_of(desc.digest)) if offset == 0 and verify else None
        self._what = what or f"blob {desc.digest}"
        self._verified = False

    @property
    def verified(self) -> bool:
        """True once every byte was read from offset 0 and matched the digest."""
        return self._verified

    def readable(self) -> bool:
        """Always True."""
        return True

    def seekable(self) -> bool:
        """True, though only forward seeks work (see :meth:`seek`)."""
        return True

    def tell(self) -> int:
        """The offset in the blob of the next byte to read."""
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        """Move forward (SEEK_SET, SEEK_CUR or SEEK_END); backwards is unsupported."""
        target = {io.SEEK_SET: offset, io.SEEK_CUR: self._pos + offset, io.SEEK_END: self.desc.size + offset}[whence]
        if target < self._pos:
            raise io.UnsupportedOperation(f"{self._what}: cannot seek backwards ({self._pos} -> {target})")
        target = min(target, self.desc.size)
        if target - self._pos <= _SKIP_BY_READING and self._hasher is not None:
            while self._pos < target:
                if not self.read(min(CHUNK_SIZE, target - self._pos)):
                    break
        elif target > self._pos:
            self._drop_connection()
            self._hasher = None
            self._pos = target
        return self._pos

    def readinto(self, buffer: Any) -> int:
        """Fill ``buffer`` as :meth:`read` would; returns the number of bytes (0 at the end)."""
        view = memoryview(buffer).cast("B")
        data = self.read(len(view))
        view[: len(data)] = data
        return len(data)

    def read(self, size: int | None = -1) -> bytes:
        """Up to ``size`` bytes (all the rest when negative); ``b""`` at the end."""
        remaining = self.desc.size - self._pos
        if remaining <= 0:
            self._finish()
            return b""
        want = remaining if size is None or size < 0 else min(size, remaining)
        if want == 0:
            return b""
        chunks: list[bytes] = []
        got = 0
        while got < want:
            data = self._read_some(min(want - got, CHUNK_SIZE))
            chunks.append(data)
            got += len(data)
            self._pos += len(data)
            if self._hasher is not None:
                self._hasher.update(data)
            if size is not None and size >= 0:
                break
        if self._pos == self.desc.size:
            self._finish()
        return b"".join(chunks)

    def _read_some(self, amount: int) -> bytes:
        """At least one byte from the current offset, reconnecting on drops."""
        while True:
            if self._resp is None:
                self._resp = self._open_at(self._pos)
            try:
                # read1: whatever arrived (at most ``amount``), so that bytes received
                # before a drop are kept and the resume starts after them.
                data = self._resp.read1(amount, decode_content=True)
            except (Urllib3HTTPError, OSError) as exc:
                self._reconnect_later(exc)
                continue
            if data:
                return data
            self._reconnect_later(None)

    def _reconnect_later(self, exc: BaseException | None) -> None:
        self._drop_connection()
        self._retry = self._retry.increment_read("GET", self._what, error=exc)
        why = f": {exc}" if exc is not None else ""
        if self._retry.is_exhausted():
            raise errors.Unavailable(
                f"{self._what}: the download was cut short at byte {self._pos} of {self.desc.size} "
                f"too many times ({len(self._retry.history)}){why}"
            ) from exc
        log.debug("%s: body cut short at %d%s; resuming", self._what, self._pos, why)
        delay = self._retry.backoff_time()
        if delay > 0:
            time.sleep(delay)

    def _finish(self) -> None:
        """At the end: no extra bytes, and the digest matches when we hashed everything."""
        if self._resp is not None:
            try:
                extra = self._resp.read(1, decode_content=True)
            except (Urllib3HTTPError, OSError):
                extra = b""
            if extra:
                self._drop_connection()
                raise errors.SizeLimitExceeded(
                    f"{self._what}: the registry sent more than the {self.desc.size} bytes of the descriptor"
                )
            self._resp.release_conn()
            self._resp = None
        if self._hasher is not None and not self._verified:
            actual = f"{algorithm_of(self.desc.digest)}:{self._hasher.hexdigest()}"
            if actual != self.desc.digest:
                self._hasher = None
                raise errors.DigestMismatch(
                    f"{self._what}: the registry sent content with digest {actual}",
                    expected=self.desc.digest,
                    actual=actual,
                )
            self._verified = True

    def _drop_connection(self) -> None:
        if self._resp is not None:
            self._resp.close()
            self._resp = None

    def close(self) -> None:
        """Close the open response, if any, and the reader."""
        self._drop_connection()
        super().close()


def copy_into(
    desc: Descriptor,
    writer: ContentWriter,
    open_reader: Callable[[int], BlobReader],
    progress: ProgressFn | None = None,
) -> str:
    """Download ``desc`` into ``writer`` from its current offset, verify, commit.

    Returns the digest. Wrong content truncates the ingest (a retry starts clean) and
    raises ``DigestMismatch``; nothing is committed.
    """
    offset = writer.status().offset
    if offset > desc.size:
        writer.truncate(0)
        offset = 0
    try:
        if offset < desc.size:
            with open_reader(offset) as reader:
                while chunk := reader.read(CHUNK_SIZE):
                    writer.write(chunk)
                    if progress is not None:
                        progress(reader.tell(), desc.size)
        actual = writer.digest()
        if actual != desc.digest:
            raise errors.DigestMismatch(
                f"blob {desc.digest}: the downloaded content has digest {actual}",
                expected=desc.digest,
                actual=actual,
            )
    except errors.DigestMismatch:
        writer.truncate(0)
        raise
    with contextlib.suppress(errors.AlreadyExists):  # another writer committed it: success
        writer.commit(size=desc.size, expected=desc.digest)
    return desc.digest
