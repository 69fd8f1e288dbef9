"""HTTP ``Range`` requests on blobs (RFC 9110 section 14), single ranges only.

``bytes=a-b``, ``bytes=a-`` and ``bytes=-n`` are answered with ``206``; a range that
cannot be satisfied (``a`` at or past the end, ``-0``, any range of an empty blob) or that
is malformed (``b < a``, signs, more than 19 digits, garbage) is refused with ``416`` and
``Content-Range: bytes */<size>``. A header naming another unit, or several ranges, is
ignored and the whole blob is sent (the RFC allows a server to ignore ``Range``; clients
of registries ask for one range to resume a download).
"""

from __future__ import annotations

import re

import attrs

__all__ = ["ByteRange", "RangeNotSatisfiable", "parse_range"]

_SPEC = re.compile(r"\s*(\d{0,19})\s*-\s*(\d{0,19})\s*\Z")
_UNIT = re.compile(r"\s*([A-Za-z]+)\s*=(.*)\Z", re.S)


class RangeNotSatisfiable(Exception):
    """The ``Range`` header asks for nothing this blob has, or is malformed."""


@attrs.frozen
class ByteRange:
    """``[start, end]`` (both inclusive) of a blob of ``size`` bytes."""

    start: int
    end: int
    size: int

    @property
    def length(self) -> int:
        """Bytes in the range."""
        return self.end - self.start + 1

    @property
    def content_range(self) -> str:
        """The ``Content-Range`` value of a ``206`` answer."""
        return f"bytes {self.start}-{self.end}/{self.size}"


def parse_range(header: str | None, size: int) -> ByteRange | None:
    """The range ``header`` asks for in a blob of ``size`` bytes; None to send the whole blob.

    Raises :class:`RangeNotSatisfiable` for a ``bytes`` range that is malformed or cannot
    be satisfied.
    """
    if header is None:
        return None
    unit = _UNIT.match(header)
    if unit is None:
        raise RangeNotSatisfiable(f"malformed Range header {header[:100]!r}")
    if unit.group(1).lower() != "bytes":
        return None
    spec = unit.group(2)
    if "," in spec:
        return None
    m = _SPEC.match(spec)
    if m is None or (not m.group(1) and not m.group(2)):
        raise RangeNotSatisfiable(f"malformed byte range {spec.strip()[:100]!r}")
    first, last = m.group(1), m.group(2)
    if not first:  # suffix: the last n bytes
        n = int(last)
        if n == 0 or size == 0:
            raise RangeNotSatisfiable(f"range -{n} of a blob of {size} bytes")
        return ByteRange(max(0, size - n), size - 1, size)
    start = int(first)
    if start >= size:
        raise RangeNotSatisfiable(f"range starts at {start}, the blob has {size} bytes")
    if not last:
        return ByteRange(start, size - 1, size)
    end = int(last)
    if end < start:
        raise RangeNotSatisfiable(f"range {start}-{end} ends before it starts")
    return ByteRange(start, min(end, size - 1), size)
