"""Checking an eStargz layer against its TOC while the layer streams past.

:func:`open_verifier` reads the footer and the TOC (from the end of a seekable blob),
checks the TOC's digest against the layer descriptor's annotation and validates it. The
returned :class:`LayerVerifier` is then told about each tar member as the layer is read,
in order, and about each chunk's bytes; at the end it is given where gzip members started
in the blob. It fails, with a typed error, when

* a tar member is not the next TOC entry (name, type, size, link, mode, owner, devices);
* a chunk's bytes do not hash to its ``chunkDigest`` (or a file to its ``digest``);
* a TOC offset is not where a gzip member starts, or that member does not inflate to the
  chunk's bytes at ``innerOffset`` (a lazy reader fetching that range would read something else);
* the TOC tar entry is not the last member, does not start the member the footer names,
  or holds other bytes than the TOC that was verified;
* the uncompressed size differs from ``io.containers.estargz.uncompressed-size``.
"""

from __future__ import annotations

import attrs

from ocistore import errors
from ocistore.estargz.reader import MAX_TOC_BYTES, Seekable, TOCBlob, read_toc_blob
from ocistore.estargz.toc import MAX_TOC_ENTRIES, TOC, TOC_NAME, Chunk, TOCEntry, clean_name, parse_toc
from ocistore.estargz.writer import NO_PREFETCH_LANDMARK, PREFETCH_LANDMARK

__all__ = [
    "TOC_DIGEST_ANNOTATION",
    "UNCOMPRESSED_SIZE_ANNOTATION",
    "LayerVerifier",
    "Member",
    "open_verifier",
]

TOC_DIGEST_ANNOTATION = "containerd.io/snapshot/stargz/toc.digest"
UNCOMPRESSED_SIZE_ANNOTATION = "io.containers.estargz.uncompressed-size"
_EMPTY_DIGEST = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
_HIDDEN = frozenset({PREFETCH_LANDMARK, NO_PREFETCH_LANDMARK})


@attrs.frozen
class Member:
    """A tar member as the layer stream shows it (the part the TOC must agree with)."""

    name: str
    type: str  # a TOC type: reg, dir, symlink, hardlink, char, block, fifo
    size: int
    link_name: str
    mode: int
    uid: int
    gid: int
    dev_major: int = 0
    dev_minor: int = 0


def _json_text(text: str) -> str:
    """A name as it reads back from the TOC JSON (bytes that are not UTF-8 became U+FFFD)."""
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


def open_verifier(
    blob: Seekable, blob_size: int, annotations: dict[str, str], *, max_entries: int | None = None,
    max_bytes: int | None = None, what: str = "layer",
) -> LayerVerifier:
    """Read and verify the TOC of an eStargz ``blob`` against the descriptor's annotations
    (limits default to ``MAX_TOC_ENTRIES`` and ``MAX_TOC_BYTES``)."""
    expected = annotations[TOC_DIGEST_ANNOTATION]
    size_text = annotations.get(UNCOMPRESSED_SIZE_ANNOTATION)
    uncompressed: int | None = None
    if size_text is not None:
        if not size_text.isdigit():
            raise errors.InvalidEStargz(f"{what}: {UNCOMPRESSED_SIZE_ANNOTATION}={size_text!r:.40} is not a size")
        uncompressed = int(size_text)
    toc_blob = read_toc_blob(blob, blob_size, max_bytes=MAX_TOC_BYTES if max_bytes is None else max_bytes)
    if toc_blob.digest != expected:
        raise errors.DigestMismatch(
            f"{what}: eStargz TOC digest is {toc_blob.digest}, the layer descriptor says {expected}",
            expected=expected, actual=toc_blob.digest,
        )
    toc = parse_toc(toc_blob.json, payload_size=toc_blob.toc_offset,
                    max_entries=MAX_TOC_ENTRIES if max_entries is None else max_entries)
    return LayerVerifier(toc, toc_blob, uncompressed, what)


class LayerVerifier:
    """Compares the members and chunks of a layer stream with a verified TOC."""

    def __init__(self, toc: TOC, toc_blob: TOCBlob, uncompressed_size: int | None, what: str = "layer") -> None:
        self.toc = toc
        self.toc_blob = toc_blob
        self.uncompressed_size = uncompressed_size
        self.what = what
        self._files = toc.files()
        self._starts: list[tuple[Chunk, int]] = []  # chunk, uncompressed position of its first byte
        self._toc_header_pos: int | None = None
        offsets = {c.offset for _e, chunks in toc.files() for c in chunks}
        offsets.update((toc_blob.toc_offset, toc_blob.footer_offset))
        self.member_offsets = frozenset(offsets)
        """Compressed offsets at which the layer must start a gzip member."""

    def member(self, m: Member, header_pos: int) -> tuple[str, list[Chunk], TOCEntry | None]:
        """The next tar member: returns ``(kind, chunks, toc_entry)``, kind ``"file"`` (apply it),
        ``"hidden"`` (a landmark: verify, do not apply) or ``"toc"`` (the TOC entry itself)."""
        if self._toc_header_pos is not None:
            raise errors.InvalidEStargz(f"{self.what}: tar member {m.name!r} follows the TOC entry")
        name = clean_name(m.name, "tar member")
        if name == TOC_NAME:
            if m.type != "reg":
                raise errors.InvalidEStargz(f"{self.what}: {TOC_NAME} is a {m.type}, not a file")
            if next(self._files, None) is not None:
                raise errors.InvalidEStargz(f"{self.what}: the TOC lists entries that the layer does not have")
            self._toc_header_pos = header_pos
            return "toc", [], None
        nxt = next(self._files, None)
        if nxt is None:
            raise errors.InvalidEStargz(f"{self.what}: tar member {m.name!r} is not in the eStargz TOC")
        entry, chunks = nxt
        self._compare(m, name, entry)
        if entry.type == "reg" and entry.size == 0 and entry.digest:
            self.file(entry, _EMPTY_DIGEST)
        return ("hidden" if name in _HIDDEN and m.type == "reg" else "file"), chunks, entry

    def _compare(self, m: Member, name: str, e: TOCEntry) -> None:
        toc_name = clean_name(e.name)
        if _json_text(name) != toc_name:
            raise errors.InvalidEStargz(
                f"{self.what}: tar member {m.name!r} comes where the eStargz TOC lists {e.name!r}"
            )
        diffs = []
        if m.type != e.type:
            diffs.append(f"type {m.type} vs {e.type}")
        if m.type == "reg" and m.size != e.size:
            diffs.append(f"size {m.size} vs {e.size}")
        if m.type in ("symlink", "hardlink") and _json_text(m.link_name) != e.link_name:
            diffs.append(f"link {m.link_name!r} vs {e.link_name!r}")
        if m.mode & 0o7777 != e.mode & 0o7777:
            diffs.append(f"mode {m.mode & 0o7777:o} vs {e.mode & 0o7777:o}")
        if (m.uid, m.gid) != (e.uid, e.gid):
            diffs.append(f"owner {m.uid}:{m.gid} vs {e.uid}:{e.gid}")
        if m.type in ("char", "block") and (m.dev_major, m.dev_minor) != (e.dev_major, e.dev_minor):
            diffs.append("device numbers")
        if diffs:
            raise errors.InvalidEStargz(
                f"{self.what}: the eStargz TOC disagrees with tar member {m.name!r}: {', '.join(diffs)}"
            )

    def chunk(self, chunk: Chunk, start_pos: int, digest: str) -> None:
        """A chunk's bytes went past: they started at uncompressed ``start_pos`` and hash to ``digest``."""
        if digest != chunk.digest:
            raise errors.DigestMismatch(
                f"{self.what}: chunk of {chunk.name!r} at byte {chunk.start} ({chunk.size} bytes) has digest "
                f"{digest}, the eStargz TOC says {chunk.digest}",
                expected=chunk.digest, actual=digest,
            )
        self._starts.append((chunk, start_pos))

    def file(self, entry: TOCEntry, digest: str) -> None:
        """A whole regular file went past (only called when the TOC has its ``digest``)."""
        if entry.digest and digest != entry.digest:
            raise errors.DigestMismatch(
                f"{self.what}: file {entry.name!r} has digest {digest}, the eStargz TOC says {entry.digest}",
                expected=entry.digest, actual=digest,
            )

    def toc_data(self, digest: str) -> None:
        """The data of the TOC tar entry in the stream hashes to ``digest``."""
        if digest != self.toc_blob.digest:
            raise errors.DigestMismatch(
                f"{self.what}: the {TOC_NAME} in the layer stream differs from the TOC the footer points at",
                expected=self.toc_blob.digest, actual=digest,
            )

    def finish(self, members: dict[int, int], uncompressed_size: int) -> None:
        """The stream ended: ``members`` maps compressed offsets (of :attr:`member_offsets`)
        to the uncompressed position where the gzip member starting there begins."""
        if next(self._files, None) is not None or self._toc_header_pos is None:
            raise errors.InvalidEStargz(f"{self.what}: the layer ends before its eStargz TOC entry")
        for chunk, pos in self._starts:
            at = members.get(chunk.offset)
            if at is None:
                raise errors.InvalidEStargz(
                    f"{self.what}: the eStargz TOC puts a chunk of {chunk.name!r} at offset {chunk.offset}, "
                    "where no gzip member starts"
                )
            if at + chunk.inner_offset != pos:
                raise errors.InvalidEStargz(
                    f"{self.what}: offset {chunk.offset} in the eStargz TOC does not lead to the chunk of "
                    f"{chunk.name!r} at byte {chunk.start}"
                )
        if members.get(self.toc_blob.toc_offset) != self._toc_header_pos:
            raise errors.InvalidEStargz(
                f"{self.what}: the eStargz footer's TOC offset {self.toc_blob.toc_offset} is not where the "
                "TOC entry starts"
            )
        if members.get(self.toc_blob.footer_offset) != uncompressed_size:
            raise errors.InvalidEStargz(f"{self.what}: the eStargz footer is not the last, empty gzip member")
        expected = self.uncompressed_size
        if expected is not None and expected != uncompressed_size:
            raise errors.DigestMismatch(
                f"{self.what}: uncompressed size is {uncompressed_size} bytes, the layer descriptor's "
                f"{UNCOMPRESSED_SIZE_ANNOTATION} says {expected}",
                expected=str(expected), actual=str(uncompressed_size),
            )

