"""Reading an eStargz blob's footer and TOC from a seekable file (two reads at its end)."""

from __future__ import annotations

import hashlib
import zlib
from typing import Protocol

import attrs

from ocistore import errors
from ocistore.estargz.footer import FOOTER_SIZE, parse_footer
from ocistore.estargz.tarheader import BLOCK, parse_simple_header
from ocistore.estargz.toc import TOC_NAME, clean_name

__all__ = ["MAX_TOC_BYTES", "Seekable", "TOCBlob", "read_toc_blob"]

MAX_TOC_BYTES = 64 << 20
"""Largest TOC JSON accepted (uncompressed), and largest TOC gzip member."""
_READ = 1 << 20


class Seekable(Protocol):
    """What is read of a blob: ``seek`` to an absolute offset and ``read``."""

    def seek(self, offset: int, whence: int = 0, /) -> int:
        """Move to ``offset``."""
    def read(self, n: int = -1, /) -> bytes:
        """Up to ``n`` bytes."""


@attrs.frozen
class TOCBlob:
    """Where the TOC is in a blob, its JSON and the digest of that JSON."""

    toc_offset: int
    json: bytes
    digest: str
    blob_size: int

    @property
    def footer_offset(self) -> int:
        """Where the footer's gzip member starts."""
        return self.blob_size - FOOTER_SIZE


def read_toc_blob(f: Seekable, blob_size: int, *, max_bytes: int = MAX_TOC_BYTES) -> TOCBlob:
    """Read the footer and the TOC member it points to; nothing is parsed as JSON yet.

    ``InvalidEStargz`` when the footer is missing or points at something that is not a
    gzip member holding exactly the ``stargz.index.json`` tar entry up to the footer;
    ``SizeLimitExceeded`` beyond ``max_bytes``.
    """
    if blob_size < FOOTER_SIZE:
        raise errors.InvalidEStargz(f"blob of {blob_size} bytes is too small for an eStargz footer")
    footer_at = blob_size - FOOTER_SIZE
    f.seek(footer_at)
    toc_offset = parse_footer(_read_exact(f, FOOTER_SIZE))
    if toc_offset >= footer_at:
        raise errors.InvalidEStargz(
            f"eStargz footer points at offset {toc_offset}, outside the blob's payload ({footer_at} bytes)"
        )
    compressed = footer_at - toc_offset
    if compressed > max_bytes:
        raise errors.SizeLimitExceeded(
            f"eStargz TOC member of {compressed} bytes exceeds the limit of {max_bytes} bytes"
        )
    f.seek(toc_offset)
    plain = _inflate_member(f, compressed, max_bytes + 4 * BLOCK, toc_offset)
    if len(plain) < BLOCK:
        raise errors.InvalidEStargz(f"eStargz TOC member at offset {toc_offset} holds no tar header")
    header = parse_simple_header(plain[:BLOCK])
    if clean_name(header.name) != TOC_NAME or header.typeflag not in (b"0", b"\x00"):
        raise errors.InvalidEStargz(
            f"the member at the footer's TOC offset {toc_offset} holds {header.name!r}, not {TOC_NAME}"
        )
    if header.size > max_bytes:
        raise errors.SizeLimitExceeded(f"eStargz TOC of {header.size} bytes exceeds the limit of {max_bytes} bytes")
    end = BLOCK + header.size
    if len(plain) < end:
        raise errors.InvalidEStargz("eStargz TOC tar entry is truncated")
    if plain[end:].strip(b"\x00"):
        raise errors.InvalidEStargz("eStargz TOC member has data after the TOC entry")
    data = plain[BLOCK:end]
    return TOCBlob(toc_offset, data, "sha256:" + hashlib.sha256(data).hexdigest(), blob_size)


def _read_exact(f: Seekable, n: int) -> bytes:
    data = f.read(n)
    if len(data) != n:
        raise errors.InvalidEStargz(f"eStargz blob is shorter than announced (read {len(data)} of {n} bytes)")
    return data


def _inflate_member(f: Seekable, compressed: int, limit: int, offset: int) -> bytes:
    d = zlib.decompressobj(wbits=31)
    out: list[bytes] = []
    size = 0
    left = compressed
    try:
        while left and not d.eof:
            data = _read_exact(f, min(left, _READ))
            left -= len(data)
            while data and not d.eof:
                piece = d.decompress(data, limit - size + 1)
                size += len(piece)
                if size > limit:
                    raise errors.SizeLimitExceeded(f"eStargz TOC member inflates to more than {limit} bytes")
                out.append(piece)
                data = d.unconsumed_tail
            if d.eof and (data or d.unused_data or left):
                raise errors.InvalidEStargz(
                    f"the gzip member at the footer's TOC offset {offset} ends before the footer"
                )
    except zlib.error as exc:
        raise errors.InvalidEStargz(f"no valid gzip member at the footer's TOC offset {offset}: {exc}") from None
    if not d.eof:
        raise errors.InvalidEStargz(f"the gzip member at the footer's TOC offset {offset} runs into the footer")
    return b"".join(out)
