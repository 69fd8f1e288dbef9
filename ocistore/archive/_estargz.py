"""Applying an eStargz layer while checking it against its TOC (``ocistore.estargz.verify``).

:class:`EStargzTarReader` is the tar reader of the apply loop with positions and hashing
added: it knows where each member starts in the uncompressed stream, hashes every chunk of
file data as it is written (or skipped), hands the TOC entry and the landmark files to the
verifier instead of the applier, and refuses sparse members (eStargz has none). The plain
path never sees this class.
"""

from __future__ import annotations

import hashlib
import os
from typing import BinaryIO

from ocistore import errors
from ocistore.archive._tarformat import (
    TYPE_BLOCK,
    TYPE_CHAR,
    TYPE_DIR,
    TYPE_FIFO,
    TYPE_LINK,
    TYPE_REG,
    TYPE_SYMLINK,
    ChunkSource,
    TarEntry,
    TarReader,
)
from ocistore.estargz.toc import Chunk, TOCEntry
from ocistore.estargz.verify import TOC_DIGEST_ANNOTATION, LayerVerifier, Member, open_verifier
from ocistore.oci.digest import algorithm_of

__all__ = ["TOC_TYPES", "EStargzTarReader", "PositionedTarReader", "is_estargz", "prepare_verifier"]

TOC_TYPES = {
    TYPE_REG: "reg", TYPE_DIR: "dir", TYPE_SYMLINK: "symlink", TYPE_LINK: "hardlink",
    TYPE_CHAR: "char", TYPE_BLOCK: "block", TYPE_FIFO: "fifo",
}


def is_estargz(annotations: dict[str, str] | None) -> bool:
    """Whether a layer descriptor's annotations ask for eStargz verification."""
    return bool(annotations) and TOC_DIGEST_ANNOTATION in annotations  # type: ignore[operator]


def prepare_verifier(stream: BinaryIO, annotations: dict[str, str], what: str) -> LayerVerifier:
    """Read and verify the footer and TOC at the end of ``stream``, then rewind it."""
    if not stream.seekable():
        raise errors.InvalidArgument(f"{what}: verifying an eStargz layer needs a seekable stream")
    start = stream.tell()
    size = stream.seek(0, os.SEEK_END) - start
    try:
        return open_verifier(_Window(stream, start), size, annotations, what=what)
    finally:
        stream.seek(start)


class _Window:
    """``stream`` seen from ``start`` on (a blob may be read from a non-zero position)."""

    def __init__(self, stream: BinaryIO, start: int) -> None:
        self._stream = stream
        self._start = start

    def seek(self, offset: int, whence: int = 0, /) -> int:
        assert whence == 0
        return self._stream.seek(self._start + offset) - self._start

    def read(self, n: int = -1, /) -> bytes:
        return self._stream.read(n)


class PositionedTarReader(TarReader):
    """A :class:`TarReader` that knows its position in the uncompressed stream."""

    def __init__(self, source: ChunkSource) -> None:
        super().__init__(source)
        self._base = 0  # stream position of the current buffer's first byte

    @property
    def position(self) -> int:
        """Bytes of the uncompressed stream consumed so far."""
        return self._base + self._pos

    def _fill(self) -> bool:
        size = len(self._buf)
        if super()._fill():
            self._base += size
            return True
        return False

    def skip_data(self) -> None:
        """Skip the rest of the current member (data and padding): the position is then
        where the next member's first header starts."""
        if self._remaining or self._padding:
            self._finish_member()


class EStargzTarReader(PositionedTarReader):
    """A :class:`TarReader` that feeds a :class:`LayerVerifier`."""

    def __init__(self, source: ChunkSource, verifier: LayerVerifier) -> None:
        super().__init__(source)
        self._verifier = verifier
        self._hashing = False  # the current member's data is being checked
        self._chunks: list[Chunk] = []
        self._chunk_index = 0
        self._chunk_left = 0
        self._chunk_pos = 0
        self._chunk_hash: hashlib._Hash | None = None
        self._file_hash: hashlib._Hash | None = None
        self._entry: TOCEntry | None = None
        self._toc_hash: hashlib._Hash | None = None

    # -- members -------------------------------------------------------------------------------

    def next(self) -> TarEntry | None:
        """The next member for the applier; TOC and landmark entries are checked and kept back."""
        while True:
            if self._remaining or self._padding:
                self._finish_member()
            self._end_data()
            header_pos = self.position
            entry = super().next()
            if entry is None:
                return None
            if entry.sparse is not None:
                raise errors.InvalidEStargz(f"{self._verifier.what}: sparse tar member {entry.name!r} in eStargz")
            kind = TOC_TYPES.get(entry.type, entry.type)
            member = Member(entry.name, kind, entry.size, entry.linkname, entry.mode, entry.uid, entry.gid,
                            entry.devmajor, entry.devminor)
            role, chunks, toc_entry = self._verifier.member(member, header_pos)
            if role == "toc":
                self._toc_hash = hashlib.sha256()
                self._hashing = True
                self._finish_member()
                assert self._toc_hash is not None
                self._verifier.toc_data("sha256:" + self._toc_hash.hexdigest())
                self._toc_hash = None
                continue
            self._start_data(chunks, toc_entry)
            if role == "hidden":
                self._finish_member()
                continue
            return entry

    def _start_data(self, chunks: list[Chunk], entry: TOCEntry | None) -> None:
        self._chunks = chunks
        self._chunk_index = 0
        self._entry = entry
        self._hashing = bool(chunks)
        self._file_hash = hashlib.sha256() if len(chunks) > 1 and entry is not None and entry.digest else None
        if chunks:
            self._begin_chunk()

    def _begin_chunk(self) -> None:
        chunk = self._chunks[self._chunk_index]
        self._chunk_left = chunk.size
        self._chunk_pos = self.position
        self._chunk_hash = hashlib.new(algorithm_of(chunk.digest))

    def _end_chunk(self) -> None:
        chunk = self._chunks[self._chunk_index]
        assert self._chunk_hash is not None
        self._verifier.chunk(chunk, self._chunk_pos, f"{algorithm_of(chunk.digest)}:{self._chunk_hash.hexdigest()}")
        self._chunk_index += 1
        if self._chunk_index < len(self._chunks):
            self._begin_chunk()
            return
        self._chunk_hash = None
        entry = self._entry
        if entry is not None and entry.digest:
            if self._file_hash is not None:
                self._verifier.file(entry, "sha256:" + self._file_hash.hexdigest())
            elif len(self._chunks) == 1:
                self._verifier.file(entry, self._chunks[0].digest)
        self._hashing = False

    def _end_data(self) -> None:
        if self._hashing and self._chunk_index < len(self._chunks):
            raise errors.InvalidEStargz(f"{self._verifier.what}: member {self.current!r} ended inside a chunk")
        self._hashing = False

    # -- data ------------------------------------------------------------------------------------

    def _finish_member(self) -> None:
        if self._hashing and self._remaining:
            n = self._remaining
            self._remaining = 0
            self._consume(n, None, None)
        super()._finish_member()

    def copy_to_fd(self, fd: int, n: int, offset: int | None = None) -> None:
        """Write the next ``n`` data bytes to ``fd``, hashing them into the current chunk."""
        if not self._hashing:
            super().copy_to_fd(fd, n, offset)
            return
        if n > self._remaining:
            raise errors.InvalidArgument(f"member {self.current!r}: more data asked for than the member holds")
        self._remaining -= n
        self._consume(n, fd, offset)

    def _consume(self, n: int, fd: int | None, offset: int | None) -> None:
        toc_hash = self._toc_hash
        while n:
            pos = self._pos
            avail = len(self._buf) - pos
            if not avail:
                if not self._fill():
                    raise errors.InvalidArgument(f"invalid tar stream: unexpected end in the data of {self.current!r}")
                continue
            take = min(avail, n)
            if toc_hash is None:
                take = min(take, self._chunk_left)
            view = self._view[pos : pos + take]
            self._pos = pos + take
            n -= take
            if toc_hash is not None:
                toc_hash.update(view)
            else:
                assert self._chunk_hash is not None
                self._chunk_hash.update(view)
                if self._file_hash is not None:
                    self._file_hash.update(view)
                self._chunk_left -= take
            if fd is not None:
                while view:
                    if offset is None:
                        done = os.write(fd, view)
                    else:
                        done = os.pwrite(fd, view, offset)
                        offset += done
                    view = view[done:]
            if toc_hash is None and not self._chunk_left:
                self._end_chunk()
                if not self._hashing and n:
                    raise errors.InvalidEStargz(
                        f"{self._verifier.what}: member {self.current!r} has more data than its TOC chunks"
                    )
