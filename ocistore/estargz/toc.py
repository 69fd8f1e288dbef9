"""The eStargz table of contents (``stargz.index.json``): model, JSON form and validation.

The JSON is written the way stargz-snapshotter writes it (Go's ``json.MarshalIndent`` with a
tab, fields in the order of its ``TOCEntry`` struct, empty fields left out, ``<``, ``>`` and
``&`` escaped), so a TOC made here and one made by ``ctr-remote`` for the same tar differ
only where the tar or the gzip members differ.

:func:`parse_toc` checks everything that can be checked without the layer's bytes: types
and ranges of every field, names that climb out of the root, entries under a symlink, chunk
sequences that do not tile their file, data offsets outside the payload or overlapping,
hard links to nothing, and a cap on the number of entries.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import json
import re
from collections.abc import Callable, Iterator
from typing import Any

import attrs

from ocistore import errors
from ocistore.oci.digest import validate_digest
from ocistore.oci.paths import clean_member_name

__all__ = [
    "DATA_TYPES",
    "ENTRY_TYPES",
    "MAX_TOC_ENTRIES",
    "TOC",
    "Chunk",
    "TOCEntry",
    "clean_name",
    "format_modtime",
    "parse_toc",
    "toc_json",
]

ENTRY_TYPES = frozenset({"dir", "reg", "symlink", "hardlink", "char", "block", "fifo", "chunk"})
DATA_TYPES = frozenset({"reg", "chunk"})
MAX_TOC_ENTRIES = 1 << 19
"""Entries a TOC may have (a "TOC bomb" beyond it is refused): 5x the largest layers seen."""
TOC_NAME = "stargz.index.json"
_INT64 = (1 << 63) - 1
_GO_ESCAPES = re.compile("[<>&\u2028\u2029]")


def clean_name(name: str, what: str = "eStargz TOC entry") -> str:
    """A name as stargz cleans it (relative to the root, no ``.``, no empty parts); ``..``
    climbing above the root raises ``UnsafeArchive`` (see :func:`ocistore.oci.paths.clean_member_name`)."""
    return "/".join(clean_member_name(name, what))


def format_modtime(mtime_ns: int) -> str:
    """UTC RFC 3339 to the second (rounded), ``""`` for the epoch: stargz's ``formatModtime``."""
    seconds = (mtime_ns + 500_000_000) // 1_000_000_000
    if seconds == 0:
        return ""
    try:
        when = dt.datetime(1970, 1, 1, tzinfo=dt.UTC) + dt.timedelta(seconds=seconds)
    except OverflowError:
        return ""
    return when.strftime("%Y-%m-%dT%H:%M:%SZ")


@attrs.define(slots=True)
class TOCEntry:
    """One TOC entry; field names follow the JSON keys (``linkName`` is ``link_name``...)."""

    name: str
    type: str
    size: int = 0
    modtime: str = ""
    link_name: str = ""
    mode: int = 0
    uid: int = 0
    gid: int = 0
    user_name: str = ""
    group_name: str = ""
    offset: int = 0
    inner_offset: int = 0
    dev_major: int = 0
    dev_minor: int = 0
    xattrs: dict[str, bytes] | None = None
    digest: str = ""
    chunk_offset: int = 0
    chunk_size: int = 0
    chunk_digest: str = ""

    def to_json(self) -> dict[str, Any]:
        """The JSON object, empty fields left out (Go's ``omitempty``), in Go's field order."""
        out: dict[str, Any] = {"name": self.name, "type": self.type}
        for key, value in (
            ("size", self.size), ("modtime", self.modtime), ("linkName", self.link_name),
            ("mode", self.mode), ("uid", self.uid), ("gid", self.gid), ("userName", self.user_name),
            ("groupName", self.group_name), ("offset", self.offset), ("innerOffset", self.inner_offset),
            ("devMajor", self.dev_major), ("devMinor", self.dev_minor),
        ):
            if value:
                out[key] = value
        if self.xattrs:
            out["xattrs"] = {k: base64.b64encode(v).decode() for k, v in sorted(self.xattrs.items())}
        for key, value in (
            ("digest", self.digest), ("chunkOffset", self.chunk_offset), ("chunkSize", self.chunk_size),
            ("chunkDigest", self.chunk_digest),
        ):
            if value:
                out[key] = value
        return out


@attrs.frozen
class Chunk:
    """A piece of a regular file's data, as the TOC describes it.

    ``offset`` is where its gzip member starts in the blob, ``inner_offset`` where its
    bytes start in that member's output; ``start`` and ``size`` locate it in the file.
    """

    name: str
    start: int
    size: int
    offset: int
    inner_offset: int
    digest: str


@attrs.define
class TOC:
    """A parsed table of contents."""

    version: int = 1
    entries: list[TOCEntry] = attrs.Factory(list)
    _files: tuple[int, list[tuple[TOCEntry, list[Chunk]]]] | None = attrs.field(
        default=None, init=False, repr=False, eq=False)

    def files(self) -> Iterator[tuple[TOCEntry, list[Chunk]]]:
        """Every non-chunk entry with the chunks of its data (empty for non-files), in order
        (worked out once per number of entries: a parsed TOC is read many times, never changed)."""
        if self._files is None or self._files[0] != len(self.entries):
            self._files = (len(self.entries), list(self._group()))
        return iter(self._files[1])

    def _group(self) -> Iterator[tuple[TOCEntry, list[Chunk]]]:
        current: TOCEntry | None = None
        chunks: list[Chunk] = []
        for entry in self.entries:
            if entry.type == "chunk":
                assert current is not None  # parse_toc guarantees it
                chunks.append(_chunk(current, entry))
                continue
            if current is not None:
                yield current, chunks
            current = entry
            chunks = [_chunk(entry, entry)] if entry.type == "reg" and entry.size > 0 else []
        if current is not None:
            yield current, chunks

    def landmark(self) -> str | None:
        """``.prefetch.landmark`` or ``.no.prefetch.landmark`` if the TOC has one at its root."""
        for entry in self.entries:
            if entry.type == "reg" and entry.name in (".prefetch.landmark", ".no.prefetch.landmark"):
                return entry.name
        return None


def _chunk(file: TOCEntry, entry: TOCEntry) -> Chunk:
    size = entry.chunk_size or (file.size - entry.chunk_offset)
    return Chunk(file.name, entry.chunk_offset, size, entry.offset, entry.inner_offset, entry.chunk_digest)


def toc_json(toc: TOC) -> bytes:
    """The TOC as stargz-snapshotter serialises it (``json.MarshalIndent(toc, "", "\\t")``)."""
    doc = {"version": toc.version, "entries": [e.to_json() for e in toc.entries]}
    text = json.dumps(doc, indent="\t", ensure_ascii=False)
    text = _GO_ESCAPES.sub(lambda m: f"\\u{ord(m.group()):04x}", text)
    # names that are not UTF-8 (surrogate escapes) become U+FFFD, as Go's encoder does
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "replace").encode()


# -- parsing ------------------------------------------------------------------------------------------


def _bad(message: str) -> errors.InvalidEStargz:
    return errors.InvalidEStargz(f"invalid eStargz TOC: {message}")


def _int(obj: dict[str, Any], key: str, where: str) -> int:
    value = obj.get(key, 0)
    if isinstance(value, bool) or not isinstance(value, int):
        raise _bad(f"{where}: {key!r} must be an integer, got {value!r:.40}")
    if not -_INT64 - 1 <= value <= _INT64:
        raise _bad(f"{where}: {key!r} is out of range")
    return value


def _natural(obj: dict[str, Any], key: str, where: str) -> int:
    value = _int(obj, key, where)
    if value < 0:
        raise _bad(f"{where}: {key!r} must not be negative, got {value}")
    return value


def _str(obj: dict[str, Any], key: str, where: str) -> str:
    value = obj.get(key, "")
    if not isinstance(value, str):
        raise _bad(f"{where}: {key!r} must be a string, got {value!r:.40}")
    return value


def _digest(obj: dict[str, Any], key: str, where: str) -> str:
    value = _str(obj, key, where)
    if value:
        try:
            validate_digest(value)
        except errors.InvalidArgument as exc:
            raise _bad(f"{where}: {key!r}: {exc}") from None
    return value


def _xattrs(obj: dict[str, Any], where: str) -> dict[str, bytes] | None:
    raw = obj.get("xattrs")
    if raw is None:
        return None
    if not isinstance(raw, dict):
        raise _bad(f"{where}: 'xattrs' must be an object")
    out = {}
    for key, value in raw.items():
        if not isinstance(value, str):
            raise _bad(f"{where}: xattr {key!r} must be a base64 string")
        try:
            out[key] = base64.b64decode(value, validate=True)
        except binascii.Error:
            raise _bad(f"{where}: xattr {key!r} is not valid base64") from None
    return out


_NATURAL, _INTEGER, _STRING, _DIGEST = range(4)
_FIELDS: dict[str, tuple[str, int]] = {
    "size": ("size", _NATURAL), "uid": ("uid", _NATURAL), "gid": ("gid", _NATURAL),
    "offset": ("offset", _NATURAL), "innerOffset": ("inner_offset", _NATURAL),
    "devMajor": ("dev_major", _NATURAL), "devMinor": ("dev_minor", _NATURAL),
    "chunkOffset": ("chunk_offset", _NATURAL), "chunkSize": ("chunk_size", _NATURAL),
    "mode": ("mode", _INTEGER), "modtime": ("modtime", _STRING), "linkName": ("link_name", _STRING),
    "userName": ("user_name", _STRING), "groupName": ("group_name", _STRING),
    "digest": ("digest", _DIGEST), "chunkDigest": ("chunk_digest", _DIGEST),
}
"""JSON key -> (TOCEntry field, check); other keys are ignored, as Go's decoder ignores them."""
_CHECKS: tuple[Callable[[dict[str, Any], str, str], Any], ...] = (_natural, _int, _str, _digest)


def _entry(obj: object, index: int) -> TOCEntry:
    if not isinstance(obj, dict):
        raise _bad(f"entry {index} is not an object")
    name = obj.get("name")
    if not isinstance(name, str):
        raise _bad(f"entry {index} has no name")
    kind = obj.get("type")
    if kind not in ENTRY_TYPES:
        raise _bad(f"entry {index} ({name[:200]!r}): unknown type {kind!r:.40}")
    # one pass over the keys the entry has (a TOC has hundreds of thousands of entries, most
    # with a few keys), the common case checked inline; a value that fails goes through the
    # checkers, which raise with the entry's name
    fields: dict[str, Any] = {}
    field = _FIELDS.get
    for key, value in obj.items():
        spec = field(key)
        if spec is None:
            continue
        attr, check = spec
        if check == _NATURAL:
            ok = type(value) is int and 0 <= value <= _INT64
        elif check == _STRING:
            ok = type(value) is str
        elif check == _DIGEST:
            ok = value == ""  # any other value goes through the digest parser
        else:
            ok = type(value) is int and -_INT64 - 1 <= value <= _INT64
        fields[attr] = value if ok else _CHECKS[check](obj, key, f"entry {index} ({name[:200]!r})")
    xattrs = _xattrs(obj, f"entry {index} ({name[:200]!r})") if "xattrs" in obj else None
    return TOCEntry(name=name, type=kind, xattrs=xattrs, **fields)


def parse_toc(data: bytes, *, payload_size: int, max_entries: int = MAX_TOC_ENTRIES) -> TOC:
    """Parse and validate TOC JSON of a blob whose payload (before the TOC member) has
    ``payload_size`` bytes.

    Raises ``InvalidEStargz`` for a malformed or inconsistent TOC, ``UnsafeArchive`` for
    names or hard links escaping the root and entries under a symlink, and
    ``SizeLimitExceeded`` beyond ``max_entries`` entries.
    """
    try:
        doc = json.loads(data)
    except (ValueError, RecursionError) as exc:
        raise _bad(f"not JSON ({exc})") from None
    if not isinstance(doc, dict):
        raise _bad("the top level is not an object")
    if doc.get("version") != 1:
        raise _bad(f"version is {doc.get('version')!r:.40}, only 1 is defined")
    raw_entries = doc.get("entries")
    if raw_entries is None:
        raw_entries = []
    if not isinstance(raw_entries, list):
        raise _bad("'entries' is not a list")
    if len(raw_entries) > max_entries:
        raise errors.SizeLimitExceeded(
            f"eStargz TOC has {len(raw_entries)} entries, more than the limit of {max_entries}"
        )
    toc = TOC(1, [_entry(obj, i) for i, obj in enumerate(raw_entries)])
    _validate(toc, payload_size)
    return toc


def _validate(toc: TOC, payload_size: int) -> None:
    symlinks: set[str] = set()
    files: dict[str, str] = {}  # cleaned name -> type, of entries seen so far
    open_file: TOCEntry | None = None  # the regular file whose chunks are being read
    covered = 0  # bytes of open_file covered by its chunks so far
    last_data: Chunk | None = None

    def close_file() -> None:
        if open_file is not None and covered != open_file.size:
            raise _bad(f"the chunks of {open_file.name!r} cover {covered} of its {open_file.size} bytes")

    for i, entry in enumerate(toc.entries):
        where = _Where(i, entry.name)
        if entry.type == "chunk":
            if open_file is None:
                raise _bad(f"{where}: a chunk that follows no regular file with data")
            file = open_file
        else:
            close_file()
            open_file = None
            name = clean_name(entry.name)
            if not name and entry.type != "dir":
                raise errors.UnsafeArchive(f"eStargz TOC {where}: a {entry.type} in place of the root directory")
            if name == TOC_NAME:
                raise _bad(f"{where}: the TOC lists {TOC_NAME} itself")
            _check_parents(name, symlinks, where)
            _check_links(entry, name, files, where)
            if entry.type == "symlink":
                symlinks.add(name)
            else:
                symlinks.discard(name)
            files[name] = entry.type
            if entry.type != "reg" or entry.size == 0:
                continue
            file = open_file = entry
            covered = 0
        chunk = _chunk(file, entry)
        if not entry.chunk_digest:
            raise _bad(f"{where}: no chunkDigest")
        if chunk.start != covered:
            raise _bad(f"{where}: chunk starts at byte {chunk.start} of the file, expected {covered}")
        if chunk.size <= 0 or chunk.start + chunk.size > file.size:
            raise _bad(f"{where}: chunk of {chunk.size} bytes at {chunk.start} does not fit {file.size} bytes")
        covered += chunk.size
        if chunk.offset >= payload_size:
            raise _bad(f"{where}: offset {chunk.offset} points outside the payload ({payload_size} bytes)")
        if last_data is not None:
            overlap = chunk.offset < last_data.offset or (
                chunk.offset == last_data.offset and chunk.inner_offset < last_data.inner_offset + last_data.size
            )
            if overlap:
                raise _bad(
                    f"{where}: chunk at offset {chunk.offset}+{chunk.inner_offset} overlaps the previous one "
                    f"({last_data.name!r} at {last_data.offset}+{last_data.inner_offset}, {last_data.size} bytes)"
                )
        last_data = chunk
    close_file()


class _Where:
    """``entry N ('name')`` for error messages, formatted only when one is raised."""

    __slots__ = ("index", "name")

    def __init__(self, index: int, name: str) -> None:
        self.index, self.name = index, name

    def __str__(self) -> str:
        return f"entry {self.index} ({self.name[:200]!r})"


def _check_parents(name: str, symlinks: set[str], where: str | _Where) -> None:
    if not symlinks:
        return
    parent = name.rpartition("/")[0]
    while parent:
        if parent in symlinks:
            raise errors.UnsafeArchive(f"eStargz TOC {where}: lies under the symlink {parent!r}")
        parent = parent.rpartition("/")[0]


def _check_links(entry: TOCEntry, name: str, files: dict[str, str], where: str | _Where) -> None:
    if entry.type in ("symlink", "hardlink") and not entry.link_name:
        raise _bad(f"{where}: a {entry.type} without linkName")
    if entry.type == "hardlink":
        target = clean_name(entry.link_name, f"eStargz TOC {where}: hard link target")
        kind = files.get(target)
        if kind is None or kind == "dir":
            raise _bad(f"{where}: hard link to {entry.link_name!r}, which is no earlier non-directory entry")
    if entry.type in ("char", "block") and (entry.dev_major > 0xFFFFFFFF or entry.dev_minor > 0xFFFFFFFF):
        raise _bad(f"{where}: device number out of range")
