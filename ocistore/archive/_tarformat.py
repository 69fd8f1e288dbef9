"""A lean reader of tar headers: ustar, GNU (long names, old sparse) and PAX.

It is fed a stream of uncompressed chunks and hands out one :class:`TarEntry` per
member; the member's data is consumed by the caller (``copy_to_fd``, ``read_all``)
or skipped automatically before the next header is read. Every header checksum is
verified, and every variable-sized part of a header (PAX records, GNU long names,
sparse maps) is capped.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Callable
from zlib import adler32

import attrs

from ocistore import errors

__all__ = [
    "BLOCK",
    "MAX_NAME",
    "MAX_SPECIAL",
    "MAX_SPARSE_ENTRIES",
    "TYPE_BLOCK",
    "TYPE_CHAR",
    "TYPE_DIR",
    "TYPE_FIFO",
    "TYPE_LINK",
    "TYPE_REG",
    "TYPE_SYMLINK",
    "TarEntry",
    "TarReader",
]

BLOCK = 512
MAX_SPECIAL = 1 << 20  # PAX records, GNU long names and sparse maps: as Go's archive/tar
MAX_NAME = 4096  # PATH_MAX: a longer member or link name can never be created
MAX_SPARSE_ENTRIES = 1 << 16

# Normalised entry types (GNU old sparse "S" and contiguous "7" become regular files).
TYPE_REG = "0"
TYPE_LINK = "1"
TYPE_SYMLINK = "2"
TYPE_CHAR = "3"
TYPE_BLOCK = "4"
TYPE_DIR = "5"
TYPE_FIFO = "6"

_ZERO_BLOCK = bytes(BLOCK)
# name mode uid gid size mtime chksum typeflag linkname magic(6) version uname gname devmajor devminor prefix
_HEADER = struct.Struct("100s8s8s8s12s12s8sc100s6s2s32s32s8s8s155s12x")
_USTAR_MAGIC = b"ustar\x00"
_GNU_MAGIC = b"ustar "
_REGULAR_FLAGS = {b"0": TYPE_REG, b"\x00": TYPE_REG, b"7": TYPE_REG}
_PLAIN_FLAGS = {
    b"1": TYPE_LINK,
    b"2": TYPE_SYMLINK,
    b"3": TYPE_CHAR,
    b"4": TYPE_BLOCK,
    b"5": TYPE_DIR,
    b"6": TYPE_FIFO,
}

ChunkSource = Callable[[], bytes]
"""Returns the next chunk of the uncompressed stream, ``b""`` at its end."""


@attrs.define(slots=True)
class TarEntry:
    """One member as the header (and any PAX / GNU extension headers) describe it.

    ``size`` is the number of data bytes the member occupies in the archive;
    for a sparse file ``real_size`` is the size of the file and ``sparse`` its map
    of ``(offset, length)`` data segments, in archive order.
    """

    name: str
    type: str
    mode: int
    uid: int
    gid: int
    size: int
    mtime_ns: int
    atime_ns: int | None = None
    linkname: str = ""
    devmajor: int = 0
    devminor: int = 0
    xattrs: dict[str, bytes] | None = None
    sparse: list[tuple[int, int]] | None = None
    real_size: int = 0
    sparse_map_in_data: bool = False


@attrs.define(slots=True)
class _Extensions:
    """What extension headers (PAX ``x``, GNU ``L``/``K``) said about the next member."""

    pax: dict[str, bytes] = attrs.Factory(dict)
    sparse_pairs: list[bytes] = attrs.Factory(list)
    long_name: bytes | None = None
    long_link: bytes | None = None


def _bad(what: str) -> errors.InvalidArgument:
    return errors.InvalidArgument(f"invalid tar stream: {what}")


def _decode(raw: bytes) -> str:
    return raw.decode("utf-8", "surrogateescape")


def _cstring(raw: bytes) -> bytes:
    end = raw.find(b"\x00")
    return raw if end < 0 else raw[:end]


def parse_number(field: bytes, what: str) -> int:
    """A numeric header field: octal ASCII, or GNU base-256 when the high bit is set."""
    try:
        return int(field.rstrip(b"\x00"), 8)  # the common, well-formed case
    except ValueError:
        pass
    if field and field[0] & 0x80:
        value = int.from_bytes(field[1:], "big")
        if field[0] == 0xFF:  # negative two's complement
            value -= 1 << (8 * (len(field) - 1))
        elif field[0] != 0x80:
            raise _bad(f"{what}: malformed base-256 number")
        return value
    text = field.split(b"\x00", 1)[0].strip(b" ")
    if not text:
        return 0
    try:
        return int(text, 8)
    except ValueError:
        raise _bad(f"{what}: {text[:16]!r} is not an octal number") from None


_NUMBERS: dict[bytes, int] = {}  # numeric header fields already parsed (octal ASCII only)
_NUMBERS_MAX = 4096


def _number(field: bytes, what: str) -> int:
    """A numeric header field: the cached value of the same bytes, or parsed (and cached)."""
    value = _NUMBERS.get(field)
    return value if value is not None else _cached_number(field, what)


def _cached_number(field: bytes, what: str) -> int:
    """``parse_number``, remembering the octal fields (the next headers repeat most of them)."""
    try:
        value = int(field.rstrip(b"\x00"), 8)
    except ValueError:
        return parse_number(field, what)
    if len(_NUMBERS) >= _NUMBERS_MAX:  # bounded, whatever the archive holds
        _NUMBERS.clear()
    _NUMBERS[field] = value
    return value


def _byte_sum(data: bytes) -> int:
    # adler32's low half is 1 + sum(bytes) mod 65521; 256 bytes never reach the modulus,
    # so two halves give the exact sum at C speed
    return (adler32(data[:256], 0) & 0xFFFF) + (adler32(data[256:], 0) & 0xFFFF)


def _verify_checksum(block: bytes, stored_field: bytes) -> None:
    stored = parse_number(stored_field, "header checksum")
    unsigned = _byte_sum(block) - sum(stored_field) + 8 * 0x20
    if stored == unsigned:
        return
    signed = unsigned - 2 * sum(b for b in block if b > 127)
    if stored != signed:
        name = _decode(_cstring(block[:100]))[:200]
        raise _bad(f"header checksum mismatch at member {name!r} (stored {stored}, computed {unsigned})")


class TarReader:
    """Iterates the members of an uncompressed tar stream delivered in chunks."""

    def __init__(self, source: ChunkSource) -> None:
        self._source = source
        self._buf = b""
        self._view = memoryview(self._buf)
        self._pos = 0
        self._remaining = 0  # data bytes of the current member not yet consumed
        self._padding = 0
        self._eof = False
        self.current = ""  # name of the current member, for error messages

    # -- low-level stream access -------------------------------------------------------

    def _fill(self) -> bool:
        """Load the next non-empty chunk; False at the end of the stream."""
        while not self._eof:
            chunk = self._source()
            if not chunk:
                self._eof = True
                break
            self._buf = chunk
            self._view = memoryview(chunk)
            self._pos = 0
            return True
        return False

    def _read_exact(self, n: int, what: str) -> bytes:
        pos = self._pos
        if len(self._buf) - pos >= n:
            self._pos = pos + n
            return self._buf[pos : pos + n]
        parts = []
        while n:
            avail = len(self._buf) - self._pos
            if not avail:
                if not self._fill():
                    raise _bad(f"unexpected end of stream in {what}")
                continue
            take = min(avail, n)
            parts.append(self._buf[self._pos : self._pos + take])
            self._pos += take
            n -= take
        return b"".join(parts)

    def _skip(self, n: int, what: str) -> None:
        while n:
            avail = len(self._buf) - self._pos
            if not avail:
                if not self._fill():
                    raise _bad(f"unexpected end of stream in {what}")
                continue
            take = min(avail, n)
            self._pos += take
            n -= take

    def _read_block(self) -> bytes | None:
        """The next 512-byte block, or None at a clean end of stream (a block boundary)."""
        pos = self._pos
        if len(self._buf) - pos >= BLOCK:
            self._pos = pos + BLOCK
            return self._buf[pos : pos + BLOCK]
        if len(self._buf) == pos and not self._fill():
            return None
        return self._read_exact(BLOCK, "a header block")

    def drain(self) -> None:
        """Consume the rest of the stream (bytes after the end-of-archive marker)."""
        self._pos = len(self._buf)
        while self._fill():
            self._pos = len(self._buf)

    # -- member data -------------------------------------------------------------------

    def _finish_member(self) -> None:
        if self._remaining or self._padding:
            self._skip(self._remaining + self._padding, f"the data of {self.current!r}")
            self._remaining = self._padding = 0

    def read_all(self, limit: int = MAX_SPECIAL) -> bytes:
        """All remaining data of the current member (small special members only)."""
        n = self._remaining
        if n > limit:
            raise errors.SizeLimitExceeded(
                f"tar member {self.current!r}: {n} bytes of extension data exceed the {limit}-byte limit"
            )
        data = self._read_exact(n, f"the data of {self.current!r}")
        self._remaining = 0
        return data

    def copy_to_fd(self, fd: int, n: int, offset: int | None = None) -> None:
        """Write the next ``n`` data bytes of the current member to ``fd`` (at ``offset``)."""
        if n > self._remaining:
            raise _bad(f"member {self.current!r}: sparse map covers more data than the member holds")
        self._remaining -= n
        write = os.write
        pos = self._pos
        if offset is None and len(self._buf) - pos >= n:  # all in this chunk: one write, as a rule
            end = pos + n
            self._pos = end
            view = self._view[pos:end]
            done = write(fd, view)
            while done < len(view):  # a short write (a signal, a full disk about to say so)
                view = view[done:]
                done = write(fd, view)
            return
        while n:
            pos = self._pos
            avail = len(self._buf) - pos
            if not avail:
                if not self._fill():
                    raise _bad(f"unexpected end of stream in the data of {self.current!r}")
                continue
            take = avail if avail < n else n
            view = self._view[pos : pos + take]
            self._pos = pos + take
            n -= take
            while view:
                if offset is None:
                    done = write(fd, view)
                else:
                    done = os.pwrite(fd, view, offset)
                    offset += done
                view = view[done:]

    # -- headers -----------------------------------------------------------------------

    def next(self) -> TarEntry | None:
        """The next member, or None at the end of the archive."""
        if self._remaining or self._padding:
            end = self._pos + self._remaining + self._padding
            if end <= len(self._buf):  # the member's data and padding are in this chunk
                self._pos = end
                self._remaining = self._padding = 0
            else:
                self._finish_member()
        ext: _Extensions | None = None
        while True:
            pos = self._pos
            buf = self._buf
            if len(buf) - pos >= BLOCK:  # the common case of _read_block, inline
                self._pos = pos + BLOCK
                block = buf[pos : pos + BLOCK]
            else:
                read = self._read_block()
                if read is None:
                    return None  # end of stream on a block boundary: accepted, as Go's archive/tar does
                block = read
            if block == _ZERO_BLOCK:
                second = self._read_block()
                if second is None or second == _ZERO_BLOCK:
                    return None
                raise _bad("a zero block followed by a non-zero block")
            fields = _HEADER.unpack(block)
            checksum = fields[6]
            # the unsigned sum with the checksum field read as spaces (8 * 0x20); see _byte_sum
            unsigned = ((adler32(block[:256], 0) & 0xFFFF) + (adler32(block[256:], 0) & 0xFFFF)
                        - (adler32(checksum, 0) & 0xFFFF) + 256)
            if checksum != b"%06o\x00 " % unsigned:  # not written the way GNU tar and Go write it
                _verify_checksum(block, checksum)  # any other spelling, the signed sum; raises on a mismatch
            flag = fields[7]
            size = _number(fields[4], "size field")
            if size < 0:
                raise _bad(f"negative size in the header of {_decode(_cstring(fields[0]))!r}")
            self._remaining = size
            self._padding = -size % BLOCK
            if flag in (b"x", b"g", b"L", b"K"):
                self.current = _decode(_cstring(fields[0]))
                data = self.read_all()
                self._finish_member()
                if ext is None:
                    ext = _Extensions()
                if flag == b"x":
                    _parse_pax(data, ext.pax, ext.sparse_pairs)
                elif flag == b"L":
                    ext.long_name = _limited_name(_cstring(data), "GNU long name")
                elif flag == b"K":
                    ext.long_link = _limited_name(_cstring(data), "GNU long link name")
                continue  # global headers ("g") are ignored, as containerd does
            return self._build(block, fields, size, ext)

    def _build(self, block: bytes, fields: tuple[bytes, ...], size: int, ext: _Extensions | None) -> TarEntry:
        flag = fields[7]
        magic = fields[9]
        name = _cstring(fields[0])
        if magic == _USTAR_MAGIC and fields[15][:1] != b"\x00":
            name = _cstring(fields[15]) + b"/" + name
        link = fields[8]
        if ext is not None:
            if ext.long_name is not None:
                name = ext.long_name
            if ext.long_link is not None:
                link = ext.long_link
        # mode, owner and time fields repeat from member to member: cached by their bytes
        mode = _number(fields[1], "mode field")
        uid, gid = _number(fields[2], "uid field"), _number(fields[3], "gid field")
        mtime = _number(fields[5], "mtime field")
        entry = TarEntry(
            name.decode("utf-8", "surrogateescape"), "", mode & 0o7777, uid, gid, size, mtime * 1_000_000_000
        )
        if link[:1] != b"\x00":
            entry.linkname = _decode(_cstring(link))
        kind = _REGULAR_FLAGS.get(flag)
        if kind is not None:
            entry.type = TYPE_DIR if flag == b"\x00" and name.endswith(b"/") else kind
        elif flag in _PLAIN_FLAGS:
            entry.type = _PLAIN_FLAGS[flag]
            if entry.type in (TYPE_CHAR, TYPE_BLOCK):
                entry.devmajor = parse_number(fields[13], "devmajor field")
                entry.devminor = parse_number(fields[14], "devminor field")
        elif flag == b"S" and magic == _GNU_MAGIC:
            self.current = entry.name
            entry.type = TYPE_REG
            entry.sparse, entry.real_size = self._old_gnu_sparse(block)
        else:
            raise _bad(f"member {entry.name!r} has unsupported type flag {flag!r}")
        if ext is not None and (ext.pax or ext.sparse_pairs):
            _apply_pax(entry, ext.pax, ext.sparse_pairs)
            if entry.size != size:  # PAX size overrides the header's
                self._remaining = entry.size
                self._padding = -entry.size % BLOCK
            if len(entry.name.encode("utf-8", "surrogateescape")) > MAX_NAME:
                raise errors.SizeLimitExceeded(f"tar member name longer than {MAX_NAME} bytes")
        self.current = entry.name
        if entry.sparse_map_in_data:
            self._read_sparse_map_1_0(entry)
        if entry.sparse is not None:
            _check_sparse(entry)
        return entry

    def _old_gnu_sparse(self, block: bytes) -> tuple[list[tuple[int, int]], int]:
        entries = _sparse_array(block[386:482], 4)
        extended = block[482]
        while extended:
            ext = self._read_exact(BLOCK, "a GNU sparse extension block")
            entries.extend(_sparse_array(ext[:504], 21))
            if len(entries) > MAX_SPARSE_ENTRIES:
                raise errors.SizeLimitExceeded(
                    f"tar member {self.current!r}: sparse map has more than {MAX_SPARSE_ENTRIES} entries"
                )
            extended = ext[504]
        return entries, parse_number(block[483:495], "sparse real size")

    def _read_sparse_map_1_0(self, entry: TarEntry) -> None:
        """PAX sparse 1.0: the map is decimal lines at the start of the data, block-padded."""
        values: list[int] = []
        text = b""
        count = -1
        consumed = 0
        while count < 0 or len(values) < 1 + 2 * count:
            if consumed >= MAX_SPECIAL or consumed + BLOCK > self._remaining:
                raise _bad(f"member {entry.name!r}: truncated or oversized sparse map")
            text += self._read_exact(BLOCK, f"the sparse map of {entry.name!r}")
            consumed += BLOCK
            *lines, text = text.split(b"\n")
            for line in lines:
                values.append(_decimal(line, entry.name))
                if count < 0:
                    count = values[0]
                    if count > MAX_SPARSE_ENTRIES:
                        raise errors.SizeLimitExceeded(f"tar member {entry.name!r}: sparse map has {count} entries")
        self._remaining -= consumed
        entry.size -= consumed
        pairs = values[1 : 1 + 2 * count]
        entry.sparse = list(zip(pairs[0::2], pairs[1::2], strict=True))


def _decimal(raw: bytes, name: str) -> int:
    if not raw.isdigit():
        raise _bad(f"member {name!r}: {raw[:32]!r} is not a decimal number")
    return int(raw)


def _limited_name(raw: bytes, what: str) -> bytes:
    if b"\x00" in raw:
        raise _bad(f"{what} contains a NUL byte")
    if len(raw) > MAX_NAME:
        raise errors.SizeLimitExceeded(f"{what} of {len(raw)} bytes exceeds the {MAX_NAME}-byte limit")
    return raw


def _sparse_array(raw: bytes, count: int) -> list[tuple[int, int]]:
    out = []
    for i in range(count):
        field = raw[i * 24 : i * 24 + 24]
        if field[0] == 0:
            break
        out.append((parse_number(field[:12], "sparse offset"), parse_number(field[12:], "sparse length")))
    return out


def _parse_pax(data: bytes, pax: dict[str, bytes], sparse_pairs: list[bytes]) -> None:
    """Parse ``"<len> <key>=<value>\\n"`` records into ``pax`` (later records win)."""
    pos = 0
    while pos < len(data):
        space = data.find(b" ", pos, pos + 20)
        if space < 0:
            raise _bad("malformed PAX record length")
        length = _decimal(data[pos:space], "PAX header")
        end = pos + length
        if length < 5 or end > len(data) or data[end - 1 : end] != b"\n":
            raise _bad("PAX record length out of range")
        key, eq, value = data[space + 1 : end - 1].partition(b"=")
        if not eq:
            raise _bad("PAX record without '='")
        skey = _decode(key)
        if skey in ("GNU.sparse.offset", "GNU.sparse.numbytes"):
            sparse_pairs.append(value)  # sparse 0.0: repeated keys, order matters
        else:
            pax[skey] = value
        pos = end


def _pax_time(value: bytes, name: str) -> int:
    text = value.decode("ascii", "replace")
    sign = -1 if text.startswith("-") else 1
    whole, _, frac = text.lstrip("-").partition(".")
    if not whole.isdigit() or (frac and not frac.isdigit()):
        raise _bad(f"member {name!r}: malformed PAX time {text[:40]!r}")
    return sign * (int(whole) * 1_000_000_000 + int((frac + "000000000")[:9]))


def _apply_pax(entry: TarEntry, pax: dict[str, bytes], sparse_pairs: list[bytes]) -> None:
    if (path := pax.get("path")) is not None:
        entry.name = _decode(_limited_name(path, "PAX path"))
    if (link := pax.get("linkpath")) is not None:
        entry.linkname = _decode(_limited_name(link, "PAX linkpath"))
    for key, attr in (("size", "size"), ("uid", "uid"), ("gid", "gid")):
        if (raw := pax.get(key)) is not None:
            setattr(entry, attr, _decimal(raw, entry.name))
    if (raw := pax.get("mtime")) is not None:
        entry.mtime_ns = _pax_time(raw, entry.name)
    if (raw := pax.get("atime")) is not None:
        entry.atime_ns = _pax_time(raw, entry.name)
    for key, value in pax.items():
        if key.startswith("SCHILY.xattr."):
            if "\x00" in key or len(key) == len("SCHILY.xattr."):
                raise _bad(f"member {entry.name!r}: malformed xattr name {key[:80]!r}")
            if entry.xattrs is None:
                entry.xattrs = {}
            entry.xattrs[key[len("SCHILY.xattr.") :]] = value
    if any(key.startswith("GNU.sparse.") for key in pax) or sparse_pairs:
        _apply_pax_sparse(entry, pax, sparse_pairs)


def _apply_pax_sparse(entry: TarEntry, pax: dict[str, bytes], sparse_pairs: list[bytes]) -> None:
    major, minor = pax.get("GNU.sparse.major"), pax.get("GNU.sparse.minor")
    if (name := pax.get("GNU.sparse.name")) is not None:
        entry.name = _decode(_limited_name(name, "GNU.sparse.name"))
    real = pax.get("GNU.sparse.realsize", pax.get("GNU.sparse.size"))
    if real is None:
        raise _bad(f"member {entry.name!r}: PAX sparse file without a real size")
    entry.real_size = _decimal(real, entry.name)
    if major == b"1" and minor == b"0":
        entry.sparse_map_in_data = True
        return
    if major is not None and (major, minor) not in ((b"0", b"0"), (b"0", b"1")):
        raise _bad(f"member {entry.name!r}: unsupported GNU sparse format {major!r}.{minor!r}")
    if (raw_map := pax.get("GNU.sparse.map")) is not None:  # 0.1
        numbers = [_decimal(x, entry.name) for x in raw_map.split(b",")] if raw_map else []
    else:  # 0.0
        numbers = [_decimal(x, entry.name) for x in sparse_pairs]
    if len(numbers) % 2 or len(numbers) > 2 * MAX_SPARSE_ENTRIES:
        raise _bad(f"member {entry.name!r}: malformed PAX sparse map")
    entry.sparse = list(zip(numbers[0::2], numbers[1::2], strict=True))


def _check_sparse(entry: TarEntry) -> None:
    assert entry.sparse is not None
    end = 0
    total = 0
    for offset, length in entry.sparse:
        if offset < end or length < 0:
            raise _bad(f"member {entry.name!r}: sparse map entries overlap or are out of order")
        end = offset + length
        total += length
    if end > entry.real_size or total != entry.size:
        raise _bad(
            f"member {entry.name!r}: sparse map ({total} data bytes up to offset {end}) does not "
            f"match the member ({entry.size} data bytes, real size {entry.real_size})"
        )
