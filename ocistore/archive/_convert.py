"""Rewriting a layer blob (tar, tar+gzip, tar+zstd) as eStargz.

The source is inflated once, through the apply pipeline, into an anonymous spool file under
the store's scratch directory while its tar headers are parsed; nothing of the data stays in
memory. The members are then ordered as stargz-snapshotter's ``estargz.Build`` orders them
(a later member of the same name replaces an earlier one, existing landmarks and TOCs are
dropped, prioritized files and their parent directories and hard-link targets come first,
followed by ``.prefetch.landmark``, or ``.no.prefetch.landmark`` comes first when no file
of the layer is prioritized) and written by :class:`~ocistore.estargz.LayerWriter`. Each
member keeps the exact header bytes it had (PAX records, GNU long names, xattrs, whiteouts),
so the tar stream differs from the source only by order, landmarks and the TOC.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Sequence
from typing import BinaryIO

import attrs

from ocistore import errors
from ocistore.archive._compression import compression_for
from ocistore.archive._estargz import TOC_TYPES, PositionedTarReader
from ocistore.archive._pipeline import Pipeline
from ocistore.archive._tarformat import BLOCK, TYPE_LINK, TYPE_REG, TarEntry
from ocistore.estargz.toc import TOC_NAME, TOCEntry, clean_name, format_modtime
from ocistore.estargz.writer import (
    DEFAULT_CHUNK_SIZE,
    NO_PREFETCH_LANDMARK,
    PREFETCH_LANDMARK,
    LayerResult,
    LayerWriter,
)

__all__ = ["ConvertedLayer", "convert_layer"]

_LANDMARKS = frozenset({PREFETCH_LANDMARK, NO_PREFETCH_LANDMARK})
_USTAR_MAGICS = (b"ustar\x00", b"ustar ")


@attrs.frozen
class ConvertedLayer:
    """The eStargz blob written, the source's diffID, and which prioritized files it held."""

    result: LayerResult
    source_diff_id: str
    prioritized_found: frozenset[str]


@attrs.define(slots=True)
class _Member:
    header_start: int
    data_start: int
    entry: TarEntry
    name: str  # cleaned
    removed: bool = False


def convert_layer(
    stream: BinaryIO,
    write: Callable[[bytes], object],
    *,
    media_type: str | None,
    spool_dir: str | os.PathLike[str],
    prioritized_files: Sequence[str] = (),
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    level: int = 9,
    expected_diff_id: str | None = None,
    workers: int | None = None,
) -> ConvertedLayer:
    """Write the layer read from ``stream`` as an eStargz blob through ``write``.

    ``prioritized_files`` are paths (absolute or relative to ``/``) to put first; those the
    layer does not hold are ignored here (the caller decides whether that is an error).
    ``expected_diff_id`` checks the source layer (``DigestMismatch``). Sparse members are
    refused (``InvalidArgument``), as are names that escape the root (``UnsafeArchive``).
    ``workers`` compression threads are used (the output does not depend on it).
    """
    writer = LayerWriter(write, chunk_size=chunk_size, level=level, workers=workers)
    with writer, tempfile.TemporaryFile(dir=spool_dir, prefix="estargz-") as spool:
        members, diff_id = _spool(stream, media_type, spool)
        if expected_diff_id is not None and diff_id != expected_diff_id:
            raise errors.DigestMismatch(
                f"source layer diffID is {diff_id}, the image config says {expected_diff_id}",
                expected=expected_diff_id, actual=diff_id,
            )
        ordered, found = _order(members, prioritized_files)
        fd = spool.fileno()
        for item in ordered:
            if isinstance(item, str):
                writer.add_landmark(item)
                continue
            _write_member(writer, fd, item)
        result = writer.finish()
    return ConvertedLayer(result, diff_id, frozenset(found))


def _spool(stream: BinaryIO, media_type: str | None, spool: BinaryIO) -> tuple[list[_Member], str]:
    pipeline = Pipeline(stream, compression_for(media_type), blob_digest=False)
    write = spool.write

    def source() -> bytes:
        chunk = pipeline.next_chunk()
        if chunk:
            write(chunk)
        return chunk

    members: list[_Member] = []
    try:
        reader = PositionedTarReader(source)
        while True:
            reader.skip_data()
            start = reader.position
            entry = reader.next()
            if entry is None:
                break
            if entry.sparse is not None:
                raise errors.InvalidArgument(
                    f"tar member {entry.name!r} is a sparse file; eStargz conversion does not support them"
                )
            members.append(_Member(start, reader.position, entry, clean_name(entry.name, "tar member")))
        reader.drain()
    finally:
        pipeline.close()
    spool.flush()
    return members, pipeline.diff_id


def _order(members: list[_Member], prioritized: Sequence[str]) -> tuple[list[_Member | str], set[str]]:
    """stargz's ``sortEntries``: dedup (last wins), drop landmarks and TOCs, prioritized first."""
    index: dict[str, _Member] = {}
    for m in members:
        if m.name in _LANDMARKS or m.name == TOC_NAME:
            m.removed = True
            continue
        old = index.get(m.name)
        if old is not None:
            old.removed = True
        index[m.name] = m
    stream = [m for m in members if not m.removed]
    picked: set[str] = set()
    first: list[_Member] = []
    found: set[str] = set()

    def move(name: str, depth: int = 0) -> bool:
        if depth > 256:
            raise errors.InvalidArgument(f"prioritized file {name!r}: hard links nest too deeply")
        m = index.get(name)
        if name == "":  # the root: moved if the layer has an entry for it
            if m is not None and name not in picked:
                first.append(m)
                picked.add(name)
            return True
        if m is None and name not in picked:
            return False
        move(name.rpartition("/")[0], depth + 1)
        if m is not None and m.entry.type == TYPE_LINK:
            move(clean_name(m.entry.linkname, "hard link target"), depth + 1)
        if name not in picked and m is not None:
            first.append(m)
            picked.add(name)
        return True

    for path in prioritized:
        name = clean_name(path, "prioritized file")
        if move(name):
            found.add(path)
    rest = [m for m in stream if m.name not in picked]
    if found:
        return [*first, PREFETCH_LANDMARK, *rest], found
    return [NO_PREFETCH_LANDMARK, *rest], found


def _names(header: bytes) -> tuple[str, str]:
    """User and group names of the member's main (last) header block."""
    block = header[-BLOCK:]
    if block[257:263] not in _USTAR_MAGICS:
        return "", ""
    user = block[265:297].split(b"\x00", 1)[0].decode("utf-8", "surrogateescape")
    group = block[297:329].split(b"\x00", 1)[0].decode("utf-8", "surrogateescape")
    return user, group


def _write_member(writer: LayerWriter, fd: int, m: _Member) -> None:
    e = m.entry
    header = os.pread(fd, m.data_start - m.header_start, m.header_start)
    user, group = _names(header)
    kind = TOC_TYPES[e.type]
    toc = TOCEntry(
        name=e.name, type=kind, size=e.size if e.type == TYPE_REG else 0, modtime=format_modtime(e.mtime_ns),
        link_name=e.linkname if kind in ("symlink", "hardlink") else "", mode=e.mode, uid=e.uid, gid=e.gid,
        user_name=user, group_name=group, dev_major=e.devmajor, dev_minor=e.devminor,
        xattrs=dict(e.xattrs) if e.xattrs else None,
    )
    position = m.data_start

    def read(n: int) -> bytes:
        nonlocal position
        data = os.pread(fd, n, position)
        position += len(data)
        return data

    writer.add(header, toc, e.size, read)
