"""The 51-byte eStargz footer: an empty gzip member whose Extra field holds the TOC offset.

Layout (RFC 1952)::

    10 bytes  gzip header: 1f 8b 08, FLG=FEXTRA, MTIME=0, XFL=0, OS=255
     2 bytes  XLEN = 26
     2 bytes  subfield ID 'S' 'G'
     2 bytes  subfield LEN = 22
    22 bytes  "%016x" % toc_offset + "STARGZ"
     5 bytes  a final stored deflate block of length 0
     8 bytes  CRC32 = 0, ISIZE = 0

Plain gzip readers see an empty member and ignore it.
"""

from __future__ import annotations

import struct

from ocistore import errors

__all__ = ["FOOTER_SIZE", "footer_bytes", "parse_footer"]

FOOTER_SIZE = 51
_MAGIC = b"STARGZ"
_HEADER = b"\x1f\x8b\x08\x04\x00\x00\x00\x00\x00\xff"
_EXTRA_PREFIX = struct.pack("<H", 26) + b"SG" + struct.pack("<H", 22)
_TRAILER = b"\x01\x00\x00\xff\xff" + bytes(8)
_MAX_OFFSET = (1 << 63) - 1


def footer_bytes(toc_offset: int) -> bytes:
    """The footer pointing at a TOC gzip member that starts at ``toc_offset``."""
    if not 0 <= toc_offset <= _MAX_OFFSET:
        raise errors.InvalidArgument(f"eStargz TOC offset {toc_offset} out of range")
    out = _HEADER + _EXTRA_PREFIX + b"%016x" % toc_offset + _MAGIC + _TRAILER
    assert len(out) == FOOTER_SIZE
    return out


def parse_footer(data: bytes) -> int:
    """The TOC offset recorded in a 51-byte footer; ``InvalidEStargz`` if it is not one."""
    if len(data) != FOOTER_SIZE:
        raise errors.InvalidEStargz(f"eStargz footer must be {FOOTER_SIZE} bytes, got {len(data)}")
    if data[:4] != _HEADER[:4]:
        raise errors.InvalidEStargz("no eStargz footer: the last 51 bytes are not a gzip header with an Extra field")
    if data[10:16] != _EXTRA_PREFIX:
        raise errors.InvalidEStargz("no eStargz footer: the gzip Extra field has no 'SG' subfield of 22 bytes")
    field = data[16:38]
    if field[16:] != _MAGIC:
        raise errors.InvalidEStargz("no eStargz footer: the 'SG' subfield lacks the STARGZ magic")
    digits = field[:16]
    if not all(c in b"0123456789abcdefABCDEF" for c in digits):
        raise errors.InvalidEStargz(f"eStargz footer: TOC offset {digits!r} is not hexadecimal")
    if data[38:] != _TRAILER:
        raise errors.InvalidEStargz("eStargz footer: the gzip member is not empty")
    offset = int(digits, 16)
    if offset > _MAX_OFFSET:
        raise errors.InvalidEStargz(f"eStargz footer: TOC offset {offset:#x} out of range")
    return offset
