"""Blob sources for fetches: OCI layouts (directory or tar) and registries."""

from __future__ import annotations

import contextlib
import io
import json
import os
import posixpath
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

from ocistore import errors
from ocistore._lazy import lazy_module
from ocistore.content.types import ContentWriter
from ocistore.oci.descriptor import Descriptor
from ocistore.oci.imagelayout import blob_name

if TYPE_CHECKING:
    import tarfile

    from ocistore.remotes import RegistryClient
else:
    tarfile = lazy_module("tarfile")  # archives only: loaded on first use, not by every fresh process

__all__ = ["LayoutSource", "RegistrySource", "TarIndex", "copy_into"]

_CHUNK = 1 << 20
MAX_JSON = 8 << 20


def copy_into(src: BinaryIO, desc: Descriptor, writer: ContentWriter) -> None:
    """Copy ``src`` (positioned at 0) into ``writer`` from its offset, capped at ``desc.size``,
    and commit with the descriptor's digest (DigestMismatch if the bytes lie)."""
    offset = writer.status().offset
    if offset > desc.size:
        writer.truncate(0)
        offset = 0
    if offset:
        src.seek(offset)
    left = desc.size - offset
    while left > 0:
        chunk = src.read(min(_CHUNK, left))
        if not chunk:
            raise errors.InvalidArgument(
                f"blob {desc.digest} is truncated in the source: {desc.size - left} of {desc.size} bytes"
            )
        writer.write(chunk)
        left -= len(chunk)
    if src.read(1):
        raise errors.DigestMismatch(
            f"blob {desc.digest} in the source is larger than its descriptor's {desc.size} bytes",
            expected=desc.digest,
        )
    with contextlib.suppress(errors.AlreadyExists):
        writer.commit(desc.size, desc.digest)


class _Section(io.RawIOBase):
    """A read-only window ``[start, start+size)`` of a file."""

    def __init__(self, fd: int, start: int, size: int) -> None:
        self._fd, self._start, self._size, self._pos = fd, start, size, 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def seek(self, pos: int, whence: int = 0) -> int:
        base = {0: 0, 1: self._pos, 2: self._size}[whence]
        self._pos = max(0, base + pos)
        return self._pos

    def tell(self) -> int:
        return self._pos

    def readinto(self, b: Any) -> int:
        n = min(len(b), self._size - self._pos)
        if n <= 0:
            return 0
        data = os.pread(self._fd, n, self._start + self._pos)  # thread-safe: no shared offset
        b[: len(data)] = data
        self._pos += len(data)
        return len(data)


class TarIndex:
    """Members of an uncompressed tar on disk, readable in place (never extracted)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.members: dict[str, tarfile.TarInfo] = {}
        try:
            with tarfile.open(path, "r:") as tf:
                for m in tf:
                    self.members[posixpath.normpath(m.name.lstrip("/")).removeprefix("./")] = m
        except tarfile.TarError as e:
            raise errors.InvalidArgument(f"{path} is not a tar archive or is corrupt: {e}") from None
        self._f = open(path, "rb")  # noqa: SIM115 - closed by close()

    def _resolve(self, name: str, depth: int = 0) -> tarfile.TarInfo:
        name = posixpath.normpath(name.lstrip("/")).removeprefix("./")
        m = self.members.get(name)
        if m is None:
            raise errors.NotFound(f"{name} not found in archive {self.path}")
        if (m.issym() or m.islnk()) and depth < 16:
            target = m.linkname if m.islnk() else posixpath.join(posixpath.dirname(name), m.linkname)
            return self._resolve(target, depth + 1)
        if not m.isfile():
            raise errors.InvalidArgument(f"{name} in archive {self.path} is not a regular file")
        return m

    def has(self, name: str) -> bool:
        """Whether ``name`` resolves (through links) to a regular file member."""
        try:
            self._resolve(name)
        except (errors.NotFound, errors.InvalidArgument):
            return False
        return True

    def open(self, name: str) -> BinaryIO:
        """A reader of member ``name``'s bytes, in place in the tar."""
        m = self._resolve(name)
        return io.BufferedReader(_Section(self._f.fileno(), m.offset_data, m.size))

    def size(self, name: str) -> int:
        """The size of member ``name``."""
        return self._resolve(name).size

    def close(self) -> None:
        """Close the tar file."""
        self._f.close()


class LayoutSource:
    """An OCI image layout, as a directory or inside a tar."""

    def __init__(self, path: Path, tar: TarIndex | None, prefix: str = "") -> None:
        self.path = path
        self.tar = tar
        self.prefix = prefix

    def _name(self, rel: str) -> str:
        return posixpath.join(self.prefix, rel) if self.prefix else rel

    def exists(self, rel: str) -> bool:
        """Whether the layout holds the file ``rel``."""
        if self.tar is not None:
            return self.tar.has(self._name(rel))
        return (self.path / rel).is_file()

    def open_file(self, rel: str) -> BinaryIO:
        """A reader of the layout's file ``rel``; NotFound if absent."""
        if self.tar is not None:
            return self.tar.open(self._name(rel))
        try:
            return open(self.path / rel, "rb")
        except FileNotFoundError:
            raise errors.NotFound(f"{rel} not found in OCI layout {self.path}") from None

    def read_json(self, rel: str) -> Any:
        """The layout's JSON file ``rel``, parsed (at most 8 MiB)."""
        with self.open_file(rel) as f:
            data = f.read(MAX_JSON + 1)
        if len(data) > MAX_JSON:
            raise errors.SizeLimitExceeded(f"{rel} in {self.path} is larger than {MAX_JSON} bytes")
        try:
            return json.loads(data)
        except (ValueError, UnicodeDecodeError, RecursionError) as e:  # RecursionError: deep nesting
            raise errors.InvalidArgument(f"{rel} in {self.path} is not valid JSON: {e}") from None

    def fetch_into(self, desc: Descriptor, writer: ContentWriter) -> None:
        """Copy the layout's blob ``desc`` into ``writer`` and commit it (see :class:`Source`)."""
        try:
            src = self.open_file(blob_name(desc.digest))
        except errors.NotFound:
            raise errors.NotFound(f"blob {desc.digest} is missing from archive {self.path}") from None
        with src:
            copy_into(src, desc, writer)

    def blob_labels(self, desc: Descriptor) -> dict[str, str]:
        """No extra labels for blobs from a layout."""
        return {}

    def close(self) -> None:
        """Close the underlying tar, if any."""
        if self.tar is not None:
            self.tar.close()


class RegistrySource:
    """Blobs of one image reference from a registry (``ocistore.remotes``)."""

    def __init__(self, client: RegistryClient, ref: str, source_label: tuple[str, str] | None = None) -> None:
        self.client = client
        self.ref = ref
        self._label = source_label

    def fetch_into(self, desc: Descriptor, writer: ContentWriter) -> None:
        """Download the blob ``desc`` into ``writer`` (resuming at its offset) and commit it."""
        self.client.fetch_into(self.ref, desc, writer)

    def blob_labels(self, desc: Descriptor) -> dict[str, str]:
        """``containerd.io/distribution.source.<registry>=<repository>``, as containerd labels fetched blobs."""
        if self._label is None:
            return {}
        return {f"containerd.io/distribution.source.{self._label[0]}": self._label[1]}


def open_layout(path: Path) -> tuple[LayoutSource, Callable[[], None]]:
    """Open ``path`` (a layout dir, a tar of one, or a docker-archive tar)."""
    if not os.path.exists(path):
        raise errors.NotFound(f"archive {path} does not exist")
    if path.is_dir():
        src = LayoutSource(path, None)
        return src, src.close
    tar = TarIndex(path)
    src = LayoutSource(path, tar)
    return src, src.close
