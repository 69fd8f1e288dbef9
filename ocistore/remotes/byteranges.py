"""Several byte ranges of a blob in one request: ``Range: bytes=a-b,c-d`` and its answers.

RFC 9110 (section 14) lets a server answer a request for several ranges in three ways, and
registries use all three:

* ``206`` with a ``multipart/byteranges`` body, one part per range, each with its own
  ``Content-Range`` (CNCF distribution, through Go's ``http.ServeContent``); a server may
  also merge ranges that overlap or lie close together into one part;
* ``206`` with a single ``Content-Range``: either one range covering all of them (merged),
  or only the first one (the server supports single ranges only);
* ``200`` with the whole blob (the server ignores ``Range``).

:func:`split_answer` turns a ``206`` body into the bytes of each range asked for. Nothing
here trusts the server: a part must name a range inside the blob, its body must be as long as
its range says, and every byte handed out comes from a part that claims it (the caller still
verifies content against digests: a lying server gets wrong bytes caught there).
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from ocistore import errors

__all__ = ["MAX_PART_HEADER_BYTES", "expected_body_limit", "range_header", "split_answer"]

MAX_PART_HEADER_BYTES = 1024
"""Largest header block accepted for one part of a ``multipart/byteranges`` body."""

_CONTENT_RANGE = re.compile(r"bytes (\d+)-(\d+)/(\d+|\*)\Z")
_BOUNDARY = re.compile(r'boundary=(?:"([^"]{1,200})"|([^\s;,]{1,200}))', re.IGNORECASE)


def range_header(ranges: Sequence[tuple[int, int]]) -> str:
    """The ``Range`` value for half-open ranges ``[start, end)``, in order."""
    return "bytes=" + ",".join(f"{s}-{e - 1}" for s, e in ranges)


def expected_body_limit(ranges: Sequence[tuple[int, int]], boundary_hint: int = 70) -> int:
    """The most bytes an honest multipart answer to ``ranges`` can hold (their bytes plus,
    per part, a boundary line and a header block)."""
    return sum(e - s for s, e in ranges) + len(ranges) * (MAX_PART_HEADER_BYTES + 2 * boundary_hint + 16) + 1024


def _parse_content_range(value: str, size: int, what: str) -> tuple[int, int]:
    m = _CONTENT_RANGE.match(value.strip())
    if m is None:
        raise errors.RegistryError(f"{what}: malformed Content-Range {value!r}", status=206)
    start, last = int(m.group(1)), int(m.group(2))
    total = m.group(3)
    if last < start or last >= size or (total != "*" and int(total) != size):
        raise errors.RegistryError(f"{what}: Content-Range {value!r} does not fit the blob of {size} bytes",
                                   status=206)
    return start, last + 1


def _parts(body: bytes, content_type: str, size: int, what: str) -> list[tuple[int, bytes]]:
    """The ``(start, bytes)`` parts of a ``multipart/byteranges`` body."""
    m = _BOUNDARY.search(content_type)
    if m is None:
        raise errors.RegistryError(f"{what}: multipart answer without a boundary ({content_type!r})", status=206)
    delimiter = b"--" + (m.group(1) or m.group(2)).encode("latin-1")
    parts: list[tuple[int, bytes]] = []
    pos = body.find(delimiter)
    if pos < 0:
        raise errors.RegistryError(f"{what}: multipart answer without its boundary line", status=206)
    while True:
        pos += len(delimiter)
        if body[pos:pos + 2] == b"--":  # the closing delimiter
            return parts
        head_end = body.find(b"\r\n\r\n", pos, pos + MAX_PART_HEADER_BYTES)
        if head_end < 0:
            raise errors.RegistryError(f"{what}: a part of the multipart answer has no header block", status=206)
        content_range = None
        for line in body[pos:head_end].split(b"\r\n"):
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-range":
                content_range = value.decode("latin-1")
        if content_range is None:
            raise errors.RegistryError(f"{what}: a part of the multipart answer has no Content-Range", status=206)
        start, end = _parse_content_range(content_range, size, what)
        data_at = head_end + 4
        data = body[data_at:data_at + end - start]
        if len(data) != end - start or body[data_at + len(data):data_at + len(data) + 2] != b"\r\n":
            raise errors.RegistryError(
                f"{what}: a part for bytes {start}-{end - 1} of the multipart answer is cut short or runs on",
                status=206)
        parts.append((start, data))
        pos = body.find(delimiter, data_at + len(data))
        if pos < 0:
            raise errors.RegistryError(f"{what}: the multipart answer ends without its closing boundary", status=206)


def split_answer(
    body: bytes, content_type: str, content_range: str | None, ranges: Sequence[tuple[int, int]], size: int,
    what: str,
) -> list[bytes | None]:
    """The bytes of each of ``ranges`` in a ``206`` answer (``None`` for a range no part covers:
    a server that sent only the first range; ask for the rest one by one)."""
    if content_type.lower().startswith("multipart/byteranges"):
        parts = _parts(body, content_type, size, what)
    else:
        if content_range is None:
            raise errors.RegistryError(f"{what}: a 206 answer without Content-Range", status=206)
        start, end = _parse_content_range(content_range, size, what)
        if len(body) != end - start:
            raise errors.RegistryError(
                f"{what}: the answer for bytes {start}-{end - 1} holds {len(body)} bytes", status=206)
        parts = [(start, body)]
    out: list[bytes | None] = []
    for s, e in ranges:
        for start, data in parts:
            if start <= s and e <= start + len(data):
                out.append(data[s - start:e - start])
                break
        else:
            out.append(None)
    return out
