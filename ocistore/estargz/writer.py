"""Writing an eStargz blob: tar members in gzip members, then the TOC member and the footer.

The writer lays members out as stargz-snapshotter's ``estargz.Writer`` does (with no
``MinChunkSize``): a gzip member starts at the top of the blob, at the data of every
non-empty regular file, at every further chunk of ``chunk_size`` bytes of a large file, at
the TOC's tar header, and at the footer. Tar headers (and the data of non-regular members)
go into the member that is open when they come. The TOC lists every member, the chunks of
regular files with their offsets and digests, and each file's digest.

Output is deterministic: gzip headers have MTIME 0 and OS 255 (unknown), the deflate level
is fixed, and the bytes depend only on the members given and their order. The writer keeps
nothing of the data: memory grows with the number of entries (the TOC), not their size.
"""

from __future__ import annotations

import hashlib
import os
import struct
import zlib
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor

import attrs

from ocistore import errors
from ocistore.estargz.footer import footer_bytes
from ocistore.estargz.tarheader import END_OF_ARCHIVE, padding, ustar_header
from ocistore.estargz.toc import TOC, TOC_NAME, TOCEntry, toc_json

__all__ = [
    "DEFAULT_CHUNK_SIZE",
    "LANDMARK_CONTENTS",
    "NO_PREFETCH_LANDMARK",
    "PREFETCH_LANDMARK",
    "LayerResult",
    "LayerWriter",
]

DEFAULT_CHUNK_SIZE = 4 << 20
PREFETCH_LANDMARK = ".prefetch.landmark"
NO_PREFETCH_LANDMARK = ".no.prefetch.landmark"
LANDMARK_CONTENTS = b"\x0f"
_COPY = 1 << 20
_EMPTY_DIGEST = "sha256:" + hashlib.sha256(b"").hexdigest()
_PIECE = 1 << 20  # uncompressed bytes handed to a compression worker at once
_IN_FLIGHT = 8  # pieces queued or being compressed

Write = Callable[[bytes], object]
Read = Callable[[int], bytes]


@attrs.frozen
class LayerResult:
    """What writing a layer produced.

    ``digest``/``size`` are the blob's, ``diff_id``/``uncompressed_size`` those of the tar
    stream the gzip members inflate to, ``toc_digest`` the digest of the TOC JSON.
    """

    digest: str
    size: int
    diff_id: str
    uncompressed_size: int
    toc_digest: str
    toc_offset: int
    toc: TOC


class _Member:
    """One gzip member being compressed: pieces go to a worker in order, one job at a time."""

    __slots__ = ("deflate", "entries", "last", "start")

    def __init__(self, level: int) -> None:
        self.deflate = zlib.compressobj(level, zlib.DEFLATED, -15)
        self.entries: list[TOCEntry] = []  # TOC entries whose offset is this member's start
        self.last: Future[bytes] | None = None  # the member's latest job
        self.start = -1


def _compress(member: _Member, prev: Future[bytes] | None, data: bytes, trailer: bytes | None) -> bytes:
    if prev is not None:
        prev.result()  # jobs of one member run in order (the earlier one is running or done)
    out = member.deflate.compress(data)
    if trailer is not None:
        out += member.deflate.flush() + trailer
    return out


class LayerWriter:
    """Builds one eStargz blob, handing the compressed bytes to ``write`` in order.

    gzip members are compressed by ``workers`` threads (zlib releases the GIL), at most
    ``_IN_FLIGHT`` pieces of at most ``_PIECE`` bytes at a time; the bytes are written in
    order, so the output does not depend on the number of workers. Use as a context manager
    or call :meth:`close` (:meth:`finish` does).
    """

    def __init__(self, write: Write, *, chunk_size: int = DEFAULT_CHUNK_SIZE, level: int = 9,
                 workers: int | None = None) -> None:
        if chunk_size <= 0:
            raise errors.InvalidArgument(f"chunk size must be positive, got {chunk_size}")
        if not 0 <= level <= 9:
            raise errors.InvalidArgument(f"gzip compression level must be 0-9, got {level}")
        self._write = write
        self.chunk_size = chunk_size
        self._level = level
        # gzip XFL as Go's compress/gzip sets it: 2 = best compression, 4 = fastest
        xfl = 2 if level == 9 else 4 if level == 1 else 0
        self._gzip_header = b"\x1f\x8b\x08\x00\x00\x00\x00\x00" + bytes([xfl, 255])
        self._blob = hashlib.sha256()
        self._diff = hashlib.sha256()
        self.offset = 0  # compressed bytes written
        self.uncompressed = 0
        self._pool = ThreadPoolExecutor(max_workers=workers or min(4, os.cpu_count() or 1),
                                        thread_name_prefix="ocistore-estargz")
        self._jobs: deque[tuple[Future[bytes], _Member, bool]] = deque()
        self._member: _Member | None = None
        self._pieces: list[bytes] = []
        self._pending = 0  # bytes in _pieces
        self._crc = 0
        self._isize = 0
        self._toc = TOC()
        self._names: tuple[dict[int, str], dict[int, str]] = ({}, {})
        self._finished = False

    def __enter__(self) -> LayerWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Stop the compression workers (pending work is dropped unless :meth:`finish` ran)."""
        for future, _m, _f in self._jobs:
            future.cancel()
        self._pool.shutdown(wait=True, cancel_futures=True)

    # -- gzip members -----------------------------------------------------------------------

    def _emit(self, data: bytes) -> None:
        if data:
            self._blob.update(data)
            self.offset += len(data)
            self._write(data)

    def _emit_ready(self, limit: int) -> None:
        """Write finished jobs at the head of the queue; wait while more than ``limit`` are queued."""
        jobs = self._jobs
        while jobs and (len(jobs) > limit or jobs[0][0].done()):
            future, member, first = jobs.popleft()
            if first:
                member.start = self.offset
                for entry in member.entries:
                    entry.offset = self.offset
                self._emit(self._gzip_header)
            self._emit(future.result())

    def _submit(self, trailer: bytes | None) -> None:
        member = self._member
        assert member is not None
        data = b"".join(self._pieces)
        self._pieces = []
        self._pending = 0
        first = member.last is None
        future = self._pool.submit(_compress, member, member.last, data, trailer)
        member.last = future
        self._jobs.append((future, member, first))
        self._emit_ready(_IN_FLIGHT)

    def _open(self) -> _Member:
        if self._member is None:
            self._member = _Member(self._level)
            self._crc = 0
            self._isize = 0
        return self._member

    def _close(self) -> None:
        if self._member is not None:
            self._submit(struct.pack("<II", self._crc, self._isize & 0xFFFFFFFF))
            self._member = None

    def _put(self, data: bytes) -> None:
        if not data:
            return
        self._open()
        self._diff.update(data)
        self._crc = zlib.crc32(data, self._crc)
        self._isize += len(data)
        self.uncompressed += len(data)
        self._pieces.append(data)
        self._pending += len(data)
        if self._pending >= _PIECE:
            self._submit(None)

    # -- members ----------------------------------------------------------------------------------

    def add(self, header: bytes, entry: TOCEntry, data_size: int = 0, read: Read | None = None) -> None:
        """Append one tar member: its raw header bytes (extension headers included), its TOC
        entry (name, type, metadata; offsets and digests are filled in here) and ``data_size``
        bytes of data pulled through ``read``."""
        if self._finished:
            raise errors.FailedPrecondition("eStargz writer already finished")
        entry.user_name = self._name_if_changed(0, entry.uid, entry.user_name)
        entry.group_name = self._name_if_changed(1, entry.gid, entry.group_name)
        self._put(header)
        if entry.type == "reg" and data_size > 0:
            assert read is not None
            self._regular(entry, data_size, read)
        else:
            if entry.type == "reg":
                entry.digest = _EMPTY_DIGEST  # stargz records it for empty files too
            if data_size:
                assert read is not None
                self._copy(read, data_size, None)
            self._toc.entries.append(entry)
        self._put(padding(data_size))

    def add_landmark(self, name: str) -> None:
        """Append a landmark file (one byte, 0x0f) at the root of the layer."""
        if name not in (PREFETCH_LANDMARK, NO_PREFETCH_LANDMARK):
            raise errors.InvalidArgument(f"{name!r} is not an eStargz landmark")
        data = LANDMARK_CONTENTS
        pending = [data]
        self.add(ustar_header(name, len(data)), TOCEntry(name=name, type="reg", size=len(data)), len(data),
                 lambda n: pending.pop() if pending else b"")

    def _name_if_changed(self, which: int, ident: int, name: str) -> str:
        """stargz records a user/group name only when it differs from the last one of that id."""
        seen = self._names[which]
        if not name or seen.get(ident) == name:
            return ""
        seen[ident] = name
        return name

    def _regular(self, entry: TOCEntry, size: int, read: Read) -> None:
        file_hash = hashlib.sha256()
        written = 0
        current = entry
        while written < size:
            remain = size - written
            length = min(remain, self.chunk_size)
            if remain >= self.chunk_size:
                current.chunk_size = length
            self._close()
            self._open().entries.append(current)
            current.chunk_offset = written
            chunk_hash = hashlib.sha256()
            self._copy(read, length, (file_hash, chunk_hash))
            current.chunk_digest = "sha256:" + chunk_hash.hexdigest()
            self._toc.entries.append(current)
            written += length
            current = TOCEntry(name=entry.name, type="chunk")
        entry.digest = "sha256:" + file_hash.hexdigest()

    def _copy(self, read: Read, n: int, hashes: tuple[hashlib._Hash, hashlib._Hash] | None) -> None:
        while n:
            data = read(min(n, _COPY))
            if not data:
                raise errors.InvalidArgument("layer data ended early while writing an eStargz blob")
            if len(data) > n:
                raise errors.InvalidArgument("layer data source returned more bytes than asked for")
            n -= len(data)
            if hashes is not None:
                hashes[0].update(data)
                hashes[1].update(data)
            self._put(data)

    # -- the end --------------------------------------------------------------------------------

    def finish(self) -> LayerResult:
        """Write the TOC member and the footer; returns the blob's digests and the TOC."""
        if self._finished:
            raise errors.FailedPrecondition("eStargz writer already finished")
        self._finished = True
        try:
            self._close()
            self._emit_ready(0)  # every offset in the TOC is known now
            toc_offset = self.offset
            data = toc_json(self._toc)
            self._put(ustar_header(TOC_NAME, len(data)))
            self._put(data)
            self._put(padding(len(data)))
            self._put(END_OF_ARCHIVE)
            self._close()
            self._emit_ready(0)
            self._emit(footer_bytes(toc_offset))
        finally:
            self.close()
        return LayerResult(
            digest="sha256:" + self._blob.hexdigest(),
            size=self.offset,
            diff_id="sha256:" + self._diff.hexdigest(),
            uncompressed_size=self.uncompressed,
            toc_digest="sha256:" + hashlib.sha256(data).hexdigest(),
            toc_offset=toc_offset,
            toc=self._toc,
        )
