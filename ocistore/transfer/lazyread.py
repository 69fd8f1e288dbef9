"""Reading the files of an eStargz image without unpacking it: sources, merged tree, file objects.

:func:`layer_sources` is the one place that decides where each layer's bytes come from
(today: :class:`LocalSource`, a complete eStargz blob in the content store; a layer whose
blob is not complete locally is refused with FailedPrecondition). :func:`open_image` merges
the layers' TOCs into an :class:`~ocistore.estargz.tree.MergedTree`; :func:`read_file` and
:func:`open_file` serve a regular file by reading only the chunks a read touches, each one
verified against its ``chunkDigest``.
"""

from __future__ import annotations

import hashlib
import io
import os
import threading
import zlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, BinaryIO

import attrs

from ocistore import errors
from ocistore._lazy import lazy_module
from ocistore._lru import LRU
from ocistore.content.types import Provider, is_partial
from ocistore.estargz.source import LayerSource
from ocistore.estargz.toc import TOC, Chunk
from ocistore.estargz.tree import MergedTree, Node, merge_tocs
from ocistore.estargz.verify import TOC_DIGEST_ANNOTATION, open_verifier
from ocistore.images.image import ImageParts, image_parts
from ocistore.oci.descriptor import Descriptor
from ocistore.oci.digest import algorithm_of
from ocistore.oci.platform import PlatformArg
from ocistore.transfer.context import OperationContext

if TYPE_CHECKING:
    from ocistore.remotes import RegistryClient
    from ocistore.transfer import lazyfetch

    # a registry client, or a function that makes (or returns) the shared one on first use: an
    # image whose blobs are all local never loads the HTTP stack
    ClientArg = RegistryClient | Callable[[], RegistryClient] | None
else:
    lazyfetch = lazy_module("ocistore.transfer.lazyfetch")  # the registry client, for lazily fetched layers

__all__ = [
    "LazyFile",
    "LazyImage",
    "OpenImages",
    "LocalSource",
    "PrefetchFiles",
    "PrefetchResult",
    "TreeCache",
    "close_sources",
    "layer_sources",
    "lazy_image",
    "open_image",
]

_READ = 256 << 10  # compressed bytes read at once while inflating a chunk


class LocalSource:
    """A :class:`~ocistore.estargz.source.LayerSource` over a complete eStargz blob in the content store.

    A chunk is read from the blob at its gzip member's ``offset``, inflated (continuing into
    the next member if the chunk runs on), cut at ``inner_offset`` and checked against its
    ``chunkDigest``. Reads use ``pread``, so one source serves several threads.
    """

    def __init__(self, provider: Provider, desc: Descriptor, what: str = "layer", toc: TOC | None = None) -> None:
        """Open the blob of ``desc`` (NotFound if the store does not hold it); ``toc``: its TOC,
        already verified against ``desc`` (read from the blob otherwise)."""
        self._desc = desc
        self._what = what
        self._file = provider.open(desc.digest)
        self._lock = threading.Lock()
        try:
            self._fd: int | None = self._file.fileno()
        except (OSError, io.UnsupportedOperation):
            self._fd = None
        self._toc: TOC | None = toc

    @property
    def layer_digest(self) -> str:
        """The digest of the layer blob this source reads."""
        return self._desc.digest

    def toc(self) -> TOC:
        """The TOC, read from the blob's end, checked against the descriptor's TOC digest, validated."""
        if self._toc is None:
            with self._lock:
                self._file.seek(0)
                verifier = open_verifier(self._file, self._desc.size, dict(self._desc.annotations), what=self._what)
            self._toc = verifier.toc
        return self._toc

    def _pread(self, n: int, offset: int) -> bytes:
        if self._fd is not None:
            return os.pread(self._fd, n, offset)
        with self._lock:
            self._file.seek(offset)
            return self._file.read(n)

    def read_chunk(self, chunk: Chunk) -> bytes:
        """The chunk's bytes, inflated from the blob and verified."""
        want = chunk.inner_offset + chunk.size
        out = bytearray()
        d = zlib.decompressobj(wbits=31)
        pos = chunk.offset
        end = self._desc.size
        try:
            while len(out) < want and pos < end:
                data = self._pread(min(_READ, end - pos), pos)
                if not data:
                    break
                pos += len(data)
                while data and len(out) < want:
                    out += d.decompress(data, want - len(out))
                    data = d.unconsumed_tail
                    if d.eof:  # the member ended: the chunk may run on into the next one
                        data = d.unused_data + data
                        d = zlib.decompressobj(wbits=31)
        except zlib.error as exc:
            raise errors.InvalidEStargz(
                f"{self._what}: no valid gzip data at offset {chunk.offset} for {chunk.name!r}: {exc}"
            ) from None
        if len(out) < want:
            raise errors.InvalidEStargz(
                f"{self._what}: the data of {chunk.name!r} at offset {chunk.offset} ends before its chunk does"
            )
        data = bytes(out[chunk.inner_offset:want])
        verify_chunk(chunk, data, self._what)
        return data

    def has(self, chunk: Chunk) -> bool:
        """Always: the whole blob is local."""
        return True

    def prefetch(self, chunks: Sequence[Chunk]) -> None:
        """Nothing to do: the whole blob is local."""

    def close(self) -> None:
        """Close the blob."""
        self._file.close()


def verify_chunk(chunk: Chunk, data: bytes, what: str = "layer") -> None:
    """DigestMismatch unless ``data`` hashes to ``chunk.digest``."""
    alg = algorithm_of(chunk.digest)
    actual = f"{alg}:{hashlib.new(alg, data).hexdigest()}"
    if actual != chunk.digest:
        raise errors.DigestMismatch(
            f"{what}: chunk of {chunk.name!r} at byte {chunk.start} has digest {actual}, the eStargz TOC says "
            f"{chunk.digest}", expected=chunk.digest, actual=actual,
        )


def _not_estargz(image: str, index: int, desc: Descriptor) -> errors.FailedPrecondition:
    return errors.FailedPrecondition(
        f"image {image!r}: layer {index} ({desc.digest}) is not eStargz (no {TOC_DIGEST_ANNOTATION} annotation), "
        f"so its files cannot be read without unpacking; convert the image first: "
        f"store.convert({image!r}, to='estargz')"
    )


def layer_sources(ctx: OperationContext, parts: ImageParts, image: str = "",
                  tocs: Sequence[TOC] | None = None, client: ClientArg = None) -> list[LayerSource]:
    """Where each layer's chunks come from, bottom to top: the one place that decides.

    A complete eStargz blob in the content store is read by :class:`LocalSource`; a layer
    fetched lazily (a partial record) by the remote source of ``transfer.lazyfetch``.
    FailedPrecondition for a layer that is not eStargz (convert the image) or whose blob
    is not complete locally (fetch or pull the image). ``client``: a registry client the
    remote sources share (not closed by them), or a function called for it on the first
    remote layer; else each makes its own.
    """
    sources: list[LayerSource] = []
    for index, desc in enumerate(parts.layers):
        if TOC_DIGEST_ANNOTATION not in desc.annotations:
            raise _not_estargz(image, index, desc)
        if not ctx.content.exists(desc.digest):
            if is_partial(ctx.content, desc.digest):  # fetched lazily
                try:
                    shared = client() if callable(client) else client
                    sources.append(lazyfetch.remote_source(ctx, image, desc, client=shared,
                                                           toc=None if tocs is None else tocs[index]))
                except BaseException:
                    close_sources(sources)
                    raise
                continue
            close_sources(sources)
            raise errors.FailedPrecondition(
                f"image {image!r}: the blob of layer {index} ({desc.digest}) is not complete in the content store; "
                "fetch or pull the image first"
            )
        sources.append(LocalSource(ctx.content, desc, what=f"image {image!r} layer {index} ({desc.digest})",
                                   toc=None if tocs is None else tocs[index]))
    return sources


@attrs.define
class LazyImage:
    """An image's merged tree and the sources of its layers."""

    name: str
    tree: MergedTree
    sources: list[LayerSource]

    def file_node(self, path: str) -> Node:
        """The regular file at ``path`` (symlinks followed); NotFound, or InvalidArgument for a non-file."""
        try:
            node = self.tree.lookup(path)
        except errors.NotFound:
            raise errors.NotFound(f"image {self.name!r} has no file {path!r}") from None
        if node.type != "reg":
            kind = "a directory" if node.is_dir else f"not a regular file (a {node.type})"
            raise errors.InvalidArgument(f"image {self.name!r}: {path!r} is {kind}")
        return node

    def open(self, path: str, on_close: Callable[[], None] | None = None) -> BinaryIO:
        """A seekable binary reader of the file at ``path`` (``on_close`` runs when it is closed)."""
        node = self.file_node(path)
        raw = LazyFile(node, self.sources[node.layer] if node.chunks else None, on_close)
        return io.BufferedReader(raw, buffer_size=64 << 10)

    def read(self, path: str) -> bytes:
        """The whole file at ``path``."""
        node = self.file_node(path)
        source = self.sources[node.layer] if node.chunks else None
        return b"".join(source.read_chunk(c) for c in node.chunks) if source is not None else b""

    def close(self) -> None:
        """Close the sources that hold files open."""
        close_sources(self.sources)

    def prefetch(self, files: PrefetchFiles) -> PrefetchResult:
        """Make the chunks holding ``files`` local, fetched together (see :data:`PrefetchFiles`).

        Each remote layer's missing chunks go out in as few concurrent requests as its source
        can make (several ranges per request); chunks already cached or in a complete local
        blob cost nothing. A path the image lacks, or that is not a regular file, is skipped
        and listed in the result's ``skipped`` (a profile recorded on another version of an
        image still helps).
        """
        items: Iterable[tuple[str, Sequence[tuple[int, int]] | None]] = (
            files.items() if isinstance(files, Mapping) else ((f, None) for f in files))
        by_layer: dict[int, dict[tuple[int, int], Chunk]] = {}
        result = PrefetchResult()
        for path, ranges in items:
            try:
                node = self.file_node(path)
            except (errors.NotFound, errors.InvalidArgument, errors.UnsafeArchive):
                result.skipped.append(path)
                continue
            result.files += 1
            spans = [range(len(node.chunks))] if ranges is None else [node.chunk_span(s, e) for s, e in ranges]
            wanted = by_layer.setdefault(node.layer, {})
            for span in spans:
                for c in node.chunks[span.start:span.stop]:
                    wanted[(c.offset, c.inner_offset)] = c
        for layer, wanted in sorted(by_layer.items()):
            source = self.sources[layer]
            before = _counters(source)
            source.prefetch(list(wanted.values()))
            after = _counters(source)
            result.chunks += len(wanted)
            result.bytes += sum(c.size for c in wanted.values())
            result.requests += after[0] - before[0]
            result.fetched_bytes += after[1] - before[1]
        return result


PrefetchFiles = Iterable[str] | Mapping[str, Sequence[tuple[int, int]] | None]
"""What to prefetch: paths (whole files), or paths mapped to the byte ranges ``[start, end)``
of them to have local (``None``: the whole file), such as a start's recorded reads."""


@attrs.define
class PrefetchResult:
    """What a prefetch did: files and chunks covered, their uncompressed bytes, and the ranged
    requests and compressed bytes it took (0 when everything was local already)."""

    files: int = 0
    chunks: int = 0
    bytes: int = 0
    requests: int = 0
    fetched_bytes: int = 0
    skipped: list[str] = attrs.field(factory=list)


def _counters(source: LayerSource) -> tuple[int, int]:
    return getattr(source, "requests", 0), getattr(source, "bytes_fetched", 0)


class LazyFile(io.RawIOBase):
    """A file of a lazy image: seekable, reading only the chunks a read touches (one kept)."""

    def __init__(self, node: Node, source: LayerSource | None, on_close: Callable[[], None] | None = None) -> None:
        """Serve ``node``'s chunks from ``source`` (None for an empty file)."""
        super().__init__()
        self._on_close = on_close
        self._node = node
        self._source = source
        self._pos = 0
        self._cached: tuple[int, bytes] | None = None  # chunk index, its bytes

    def close(self) -> None:
        """Close the file (and run ``on_close`` once)."""
        if not self.closed:
            self._cached = None
            on_close, self._on_close = self._on_close, None
            super().close()
            if on_close is not None:
                on_close()

    def readable(self) -> bool:
        """Always true."""
        return True

    def seekable(self) -> bool:
        """Always true."""
        return True

    def tell(self) -> int:
        """The current position."""
        return self._pos

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        """Move to ``offset`` (from the start, the current position or the end)."""
        base = {os.SEEK_SET: 0, os.SEEK_CUR: self._pos, os.SEEK_END: self._node.size}.get(whence)
        if base is None:
            raise errors.InvalidArgument(f"invalid whence {whence}")
        if base + offset < 0:
            raise errors.InvalidArgument("negative seek position")
        self._pos = base + offset
        return self._pos

    def _chunk(self, index: int) -> bytes:
        if self._cached is not None and self._cached[0] == index:
            return self._cached[1]
        assert self._source is not None
        data = self._source.read_chunk(self._node.chunks[index])
        self._cached = (index, data)
        return data

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        """Fill ``buffer`` from the current position; 0 at the end."""
        if self._pos >= self._node.size or not len(buffer):
            return 0
        span = self._node.chunk_span(self._pos, self._pos + len(buffer))
        index = span.start
        chunk = self._node.chunks[index]
        if len(span) > 1 and (self._cached is None or self._cached[0] != index):
            # a read spanning several chunks, the first not local: ask for them together (a remote
            # source coalesces adjacent members into one ranged request). When the first one is
            # local, only it is served: a buffered reader asks past what its caller wants, and the
            # next call comes only if more is wanted.
            assert self._source is not None
            if not self._source.has(chunk):
                self._source.prefetch(self._node.chunks[span.start:span.stop])
        data = self._chunk(index)
        at = self._pos - chunk.start
        n = min(len(buffer), len(data) - at)
        memoryview(buffer)[:n] = data[at : at + n]
        self._pos += n
        return n


class TreeCache:
    """The last few merged trees (with their verified TOCs), by the layers' digests and TOC digests.

    A tree is never changed after it is built, so readers share it; what a hit saves is
    reading, hashing and parsing every TOC and merging them (about 0.1 s per 10k entries).
    """

    def __init__(self, size: int = 8) -> None:
        """Keep at most ``size`` trees."""
        self._items: LRU[tuple[tuple[str, str], ...], tuple[MergedTree, list[TOC]]] = LRU(size)

    def get(self, key: tuple[tuple[str, str], ...]) -> tuple[MergedTree, list[TOC]] | None:
        """The cached tree and TOCs of ``key``."""
        return self._items.get(key)

    def put(self, key: tuple[tuple[str, str], ...], tree: MergedTree, tocs: list[TOC]) -> None:
        """Remember a tree, dropping the least recently used beyond the size."""
        self._items.put(key, (tree, tocs))


class OpenImages:
    """The last few opened lazy images of a store (trees and layer sources), reused by its reads.

    Opening an image reads its records, manifest and config and opens a source per layer
    (a registry source reads the partial record); a start that opens hundreds of files paid
    that each time. An entry is reused while the image names the same target and none of the
    layers it reads remotely has become complete in the content store since (it is opened
    again then, to read the local blob). :meth:`close` closes the sources.
    """

    def __init__(self, size: int = 8) -> None:
        """Keep at most ``size`` open images."""
        self.trees = TreeCache()
        self._items: LRU[tuple[str, str, str], LazyImage] = LRU(size)  # evicted ones: open files keep them alive

    def get(self, ctx: OperationContext, image: str, platform: PlatformArg = None,
            client: ClientArg = None) -> LazyImage:
        """The open image ``image`` of ``ctx`` (opened now when not cached or stale)."""
        img = ctx.images.find(image)
        key = (img.name, img.target.digest, repr(platform))
        hit = self._items.get(key)
        if hit is not None and not any(
                not isinstance(src, LocalSource) and ctx.content.exists(src.layer_digest) for src in hit.sources):
            return hit
        parts = image_parts(ctx.content, img.target, platform, image=img.name)
        opened = open_image(ctx, parts, img.name, self.trees, client)
        self._items.put(key, opened)
        return opened

    def close(self) -> None:
        """Close the sources of every cached image and forget them."""
        for image in self._items.drain():
            image.close()


def open_image(ctx: OperationContext, parts: ImageParts, name: str, cache: TreeCache | None = None,
               client: ClientArg = None) -> LazyImage:
    """The merged tree of an image's layers, with the source of each (``client``: see :func:`layer_sources`)."""
    key = tuple((d.digest, d.annotations.get(TOC_DIGEST_ANNOTATION, "")) for d in parts.layers)
    hit = cache.get(key) if cache is not None else None
    sources = layer_sources(ctx, parts, name, tocs=None if hit is None else hit[1], client=client)
    if hit is not None:
        return LazyImage(name, hit[0], sources)
    try:
        tocs = [s.toc() for s in sources]
        tree = merge_tocs(tocs)
    except BaseException:
        close_sources(sources)
        raise
    if cache is not None:
        cache.put(key, tree, tocs)
    return LazyImage(name, tree, sources)


def close_sources(sources: Sequence[LayerSource]) -> None:
    """Close the sources that hold files open (those with a ``close`` method)."""
    for source in sources:
        close = getattr(source, "close", None)
        if close is not None:
            close()


def lazy_image(ctx: OperationContext, image: str, platform: PlatformArg = None,
               cache: TreeCache | None = None, client: RegistryClient | None = None) -> LazyImage:
    """:func:`open_image` of the stored image ``image``."""
    img = ctx.images.find(image)
    parts = image_parts(ctx.content, img.target, platform, image=img.name)
    return open_image(ctx, parts, img.name, cache, client)
