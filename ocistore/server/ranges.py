"""HTTP ``Range`` requests on blobs (RFC 9110 section 14).

``bytes=a-b``, ``bytes=a-`` and ``bytes=-n`` are answered with ``206``; a range that
cannot be satisfied (``a`` at or past the end, ``-0``, any range of an empty blob) or that
is malformed (``b < a``, signs, more than 19 digits, garbage) is refused with ``416`` and
``Content-Range: bytes */<size>``. A header naming another unit is ignored and the whole
blob is sent (the RFC allows a server to ignore ``Range``).

Several ranges (``bytes=a-b,c-d``: lazy pullers ask for the chunks of many files at once,
see :mod:`ocistore.remotes.byteranges`) are answered by :func:`parse_ranges`: sorted, the
ones that overlap or touch merged, those past the end dropped (416 only when none is left),
as one ``multipart/byteranges`` answer (or a single range when they merged into one). More
than :data:`MAX_RANGES` of them are ignored: the whole blob.
"""

from __future__ import annotations

import re

import attrs

__all__ = ["MAX_RANGES", "ByteRange", "RangeNotSatisfiable", "parse_range", "parse_ranges"]

MAX_RANGES = 128
"""Most ranges one request may ask for and get (more: the whole blob is sent)."""

_SPEC = re.compile(r"\s*(\d{0,19})\s*-\s*(\d{0,19})\s*\Z")
_UNIT = re.compile(r"\s*([A-Za-z]+)\s*=(.*)\Z", re.S)


class RangeNotSatisfiable(Exception):
    """The ``Range`` header asks for nothing this blob has, or is malformed."""


class _Outside(RangeNotSatisfiable):
    """A well-formed range with nothing of the blob in it."""


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
    spec = _byte_specs(header)
    if spec is None or "," in spec:
        return None
    return _one(spec, size)


def _byte_specs(header: str | None) -> str | None:
    """The range specs of a ``bytes`` Range header; None without one or for another unit."""
    if header is None:
        return None
    unit = _UNIT.match(header)
    if unit is None:
        raise RangeNotSatisfiable(f"malformed Range header {header[:100]!r}")
    if unit.group(1).lower() != "bytes":
        return None
    return unit.group(2)


def parse_ranges(header: str | None, size: int) -> list[ByteRange] | None:
    """The ranges ``header`` asks for, ascending and merged where they overlap or touch; None
    to send the whole blob (no header, another unit, more than :data:`MAX_RANGES` ranges).

    Raises :class:`RangeNotSatisfiable` for a malformed range, or when none can be satisfied.
    """
    spec = _byte_specs(header)
    if spec is None:
        return None
    specs = spec.split(",")
    if len(specs) > MAX_RANGES:
        return None
    if len(specs) == 1:
        return [_one(specs[0], size)]
    found: list[ByteRange] = []
    for spec in specs:
        try:
            found.append(_one(spec, size))
        except _Outside:
            continue  # one past the end among others: dropped
    if not found:
        raise RangeNotSatisfiable(f"none of the {len(specs)} ranges lies in the blob of {size} bytes")
    found.sort(key=lambda r: r.start)
    merged = [found[0]]
    for r in found[1:]:
        last = merged[-1]
        if r.start <= last.end + 1:
            merged[-1] = ByteRange(last.start, max(last.end, r.end), size)
        else:
            merged.append(r)
    return merged


def _one(spec: str, size: int) -> ByteRange:
    m = _SPEC.match(spec)
    if m is None or (not m.group(1) and not m.group(2)):
        raise RangeNotSatisfiable(f"malformed byte range {spec.strip()[:100]!r}")
    first, last = m.group(1), m.group(2)
    if not first:  # suffix: the last n bytes
        n = int(last)
        if n == 0 or size == 0:
            raise _Outside(f"range -{n} of a blob of {size} bytes")
        return ByteRange(max(0, size - n), size - 1, size)
    start = int(first)
    if start >= size:
        raise _Outside(f"range starts at {start}, the blob has {size} bytes")
    if not last:
        return ByteRange(start, size - 1, size)
    end = int(last)
    if end < start:
        raise RangeNotSatisfiable(f"range {start}-{end} ends before it starts")
    return ByteRange(start, min(end, size - 1), size)
