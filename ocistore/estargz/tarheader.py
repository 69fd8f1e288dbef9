"""The few tar headers an eStargz writer makes itself (landmarks, the TOC), and their parser.

Headers are USTAR, formatted the way Go's ``archive/tar`` writes them for a header with
only a name, a type and a size: every numeric field zero-padded octal ending in NUL,
``ustar\\0`` + ``00``, checksum as six octal digits, NUL, space. Everything else in a
converted layer keeps the header bytes it had in the source layer.
"""

from __future__ import annotations

import attrs

from ocistore import errors

__all__ = ["BLOCK", "END_OF_ARCHIVE", "SimpleHeader", "padding", "parse_simple_header", "ustar_header"]

BLOCK = 512
END_OF_ARCHIVE = bytes(2 * BLOCK)


def padding(size: int) -> bytes:
    """The NUL bytes that round a member's data of ``size`` bytes up to a block."""
    return bytes(-size % BLOCK)


def _octal(value: int, width: int) -> bytes:
    digits = b"%o" % value
    if value < 0 or len(digits) > width - 1:
        raise errors.InvalidArgument(f"value {value} does not fit a {width}-byte tar field")
    return digits.rjust(width - 1, b"0") + b"\x00"


def _text(value: str, width: int) -> bytes:
    raw = value.encode("utf-8", "surrogateescape")
    if len(raw) > width:
        raise errors.InvalidArgument(f"{value!r} does not fit a {width}-byte tar field")
    return raw.ljust(width, b"\x00")


def ustar_header(name: str, size: int, typeflag: bytes = b"0", *, mode: int = 0, mtime: int = 0) -> bytes:
    """A 512-byte USTAR header with owner 0:0, no link name and no user/group names."""
    block = b"".join([
        _text(name, 100),
        _octal(mode, 8),
        _octal(0, 8),  # uid
        _octal(0, 8),  # gid
        _octal(size, 12),
        _octal(mtime, 12),
        b" " * 8,  # checksum placeholder
        typeflag,
        bytes(100),  # linkname
        b"ustar\x0000",
        bytes(64),  # uname, gname
        _octal(0, 8),  # devmajor
        _octal(0, 8),  # devminor
        bytes(155 + 12),  # prefix, padding
    ])
    assert len(block) == BLOCK
    checksum = b"%06o\x00 " % sum(block)
    return block[:148] + checksum + block[156:]


@attrs.frozen
class SimpleHeader:
    """What :func:`parse_simple_header` reads: a member's name, type flag and data size."""

    name: str
    typeflag: bytes
    size: int


def _number(field: bytes) -> int:
    text = field.split(b"\x00", 1)[0].strip(b" ")
    if not text:
        return 0
    try:
        return int(text, 8)
    except ValueError:
        raise errors.InvalidEStargz(f"tar header field {field!r} is not an octal number") from None


def parse_simple_header(block: bytes) -> SimpleHeader:
    """Parse one USTAR/GNU header block (no extension headers); the checksum is verified."""
    if len(block) != BLOCK:
        raise errors.InvalidEStargz("truncated tar header")
    stored = _number(block[148:156])
    unsigned = sum(block[:148]) + 8 * 0x20 + sum(block[156:])
    if stored != unsigned:
        raise errors.InvalidEStargz("tar header checksum mismatch")
    name = block[:100].split(b"\x00", 1)[0]
    if block[257:263] == b"ustar\x00" and block[345:346] != b"\x00":
        name = block[345:500].split(b"\x00", 1)[0] + b"/" + name
    return SimpleHeader(name.decode("utf-8", "surrogateescape"), block[156:157], _number(block[124:136]))
