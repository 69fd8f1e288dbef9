"""Lazy fetch of eStargz layers: footer and TOC by HTTP Range, chunks on demand.

``fetch(ref, lazy=True)`` downloads manifests and configs as a fetch does; for each layer
whose descriptor carries ``containerd.io/snapshot/stargz/toc.digest`` it asks for the
layer's tail only (:data:`TAIL_GUESS` bytes, and a second range when the TOC is larger),
checks the footer and the TOC digest against the annotation and validates the TOC
(:func:`ocistore.estargz.open_verifier`) *before* recording anything, stores the TOC JSON
as a blob of its own, and records the layer as **partial** in the content store
(``ContentInfo.partial``; its labels carry ``containerd.io/gc.ref.content.estargz.toc`` so gc
keeps the TOC with the layer). Other layers, and layers no larger than the tail, are
downloaded whole. A registry that ignores
``Range`` (answers ``200`` with the whole blob) gets the layer downloaded whole instead.

:class:`RemoteLayerSource` (:func:`remote_source`) is the
:class:`ocistore.estargz.source.LayerSource` of a partial layer: a chunk's compressed member
``[chunk.offset, next member offset)`` is fetched by one ranged ``GET`` (adjacent members of a
:meth:`~RemoteLayerSource.prefetch` coalesced into one), inflated from ``inner_offset``, and its
``chunkDigest`` checked before it is cached under ``content/chunks/<layer>/`` (atomically,
shared by every image and namespace holding the layer; counted by ``du``; removed by gc once
no namespace records the layer as partial) and returned.

:func:`complete_layers` and :func:`complete_image` download partial layers whole (verified
against the layer digest) from where they were fetched: unpack, export and push call them.
"""

from __future__ import annotations

import bisect
import contextlib
import hashlib
import os
import threading
import uuid
import weakref
import zlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from ocistore import errors
from ocistore._lazy import lazy_module
from ocistore._lru import LRU
from ocistore.content.types import PartialBlob, PartialStore
from ocistore.estargz import FOOTER_SIZE, MAX_TOC_BYTES, TOC, TOC_DIGEST_ANNOTATION, Chunk, open_verifier, parse_footer
from ocistore.estargz.reader import TOCBlob
from ocistore.estargz.toc import parse_toc
from ocistore.images.graph import children, walk
from ocistore.layout import ContentLayout, chunk_file_name
from ocistore.oci import mediatypes as mt
from ocistore.oci.descriptor import Descriptor
from ocistore.oci.digest import algorithm_of, new_hasher
from ocistore.oci.reference import parse_reference
from ocistore.transfer.context import OperationContext
from ocistore.transfer.fetch import fetch_blob
from ocistore.transfer.progress import Progress, ProgressEvent, ref_key
from ocistore.transfer.sources import RegistrySource
from ocistore.transfer.workers import worker_pool

if TYPE_CHECKING:
    from ocistore import remotes
else:
    remotes = lazy_module("ocistore.remotes")

__all__ = [
    "MAX_CHUNK_BYTES",
    "MAX_RANGES_PER_REQUEST",
    "MAX_RANGE_BYTES",
    "TAIL_GUESS",
    "TOC_LABEL",
    "RemoteLayerSource",
    "complete_image",
    "complete_layers",
    "registry_client",
    "fetch_layers_lazily",
    "fetch_toc",
    "partial_layers",
    "remote_source",
]

TOC_LABEL = "containerd.io/gc.ref.content.estargz.toc"
"""Label of a lazily fetched layer's content record naming its TOC blob (gc keeps the TOC)."""
TOC_MEDIA_TYPE = "application/vnd.stargz.toc.v1+json"
TAIL_GUESS = 256 << 10
"""Bytes asked for from a layer's end at first: the footer and, most often, the whole TOC."""
MAX_RANGE_BYTES = 16 << 20
"""Largest single ranged request (prefetch coalesces adjacent members up to this)."""
MAX_RANGES_PER_REQUEST = 64
"""Most ranges asked for in one request by a prefetch (``Range: bytes=a-b,c-d,...``)."""
MAX_CHUNK_BYTES = 64 << 20
"""Largest chunk accepted (uncompressed); eStargz writers use 4 MiB by default."""


def _store(ctx: OperationContext) -> PartialStore:
    if not isinstance(ctx.content, PartialStore):
        raise errors.NotImplementedKind("this content store cannot record partial blobs (lazy fetch)")
    return ctx.content


def registry_client(ctx: OperationContext, registry: Mapping[str, Any] | None = None) -> remotes.RegistryClient:
    """A registry client with the store's registry options (``registry`` overrides them):
    one that many remote sources can share (:func:`remote_source` ``client=``); close it."""
    return _client(ctx, registry)


def _client(ctx: OperationContext, registry: Mapping[str, Any] | None) -> remotes.RegistryClient:
    options = dict(ctx.registry)
    options.update({k: v for k, v in (registry or {}).items() if v is not None})
    return remotes.RegistryClient(remotes.RegistryOptions(**options))


# -- fetching the TOC -----------------------------------------------------------------------------


class _Window:
    """A seekable view of blob bytes ``[base, base + len(data))`` (what was fetched of its end)."""

    def __init__(self, data: bytes, base: int) -> None:
        self._data = data
        self._base = base
        self._pos = base

    def seek(self, offset: int, whence: int = 0, /) -> int:
        self._pos = offset
        return offset

    def read(self, n: int = -1, /) -> bytes:
        if self._pos < self._base:
            raise errors.InvalidEStargz(f"eStargz footer points at offset {self._pos}, before the TOC range fetched")
        start = self._pos - self._base
        data = self._data[start:] if n < 0 else self._data[start:start + n]
        self._pos += len(data)
        return data


def fetch_toc(client: remotes.RegistryClient, ref: str, desc: Descriptor) -> tuple[TOC, TOCBlob]:
    """The verified TOC of the eStargz layer ``desc`` at ``ref``, read by at most two ranges.

    ``DigestMismatch`` when the TOC does not hash to the annotation, ``InvalidEStargz`` for a
    footer or TOC that lies, ``SizeLimitExceeded`` beyond the TOC limits,
    ``RangeNotSupported`` when the registry ignores ranges.
    """
    size = desc.size
    if size < FOOTER_SIZE:
        raise errors.InvalidEStargz(f"layer {desc.digest}: {size} bytes is too small for an eStargz footer")
    base = size - min(size, TAIL_GUESS)
    data = client.read_range(ref, desc, base, size)
    toc_offset = parse_footer(data[-FOOTER_SIZE:])
    if toc_offset >= size - FOOTER_SIZE:
        raise errors.InvalidEStargz(
            f"layer {desc.digest}: eStargz footer points at offset {toc_offset}, outside the blob's payload"
        )
    if size - FOOTER_SIZE - toc_offset > MAX_TOC_BYTES:
        raise errors.SizeLimitExceeded(
            f"layer {desc.digest}: eStargz TOC member of {size - FOOTER_SIZE - toc_offset} bytes exceeds the "
            f"limit of {MAX_TOC_BYTES} bytes"
        )
    if toc_offset < base:
        data = client.read_range(ref, desc, toc_offset, base) + data
        base = toc_offset
    verifier = open_verifier(_Window(data, base), size, dict(desc.annotations), what=f"layer {desc.digest}")
    return verifier.toc, verifier.toc_blob


def fetch_layers_lazily(
    ctx: OperationContext, client: remotes.RegistryClient, name: str, source: RegistrySource,
    target: Descriptor, progress: Progress,
) -> None:
    """After a layer-less fetch of ``target``: fetch eStargz layers lazily, the others whole."""
    layers = _layers_of(ctx, target)
    if not layers:
        return
    with worker_pool(min(client.options.max_concurrent_downloads, len(layers))) as pool:
        futures = [pool.submit(_fetch_layer, ctx, client, name, source, d, progress) for d in layers]
        for f in futures:
            f.result()


def _layers_of(ctx: OperationContext, target: Descriptor) -> list[Descriptor]:
    """The layers of every manifest of ``target`` that is in the store, once each."""
    found: dict[str, Descriptor] = {}

    def handle(desc: Descriptor) -> Sequence[Descriptor]:
        if not (mt.is_index(desc.media_type) or mt.is_manifest(desc.media_type)):
            return []
        kids = children(ctx.content, desc)
        if mt.is_index(desc.media_type):
            return [k for k in kids if ctx.content.exists(k.digest)]
        for layer in kids[1:]:
            if mt.is_layer(layer.media_type):
                found.setdefault(layer.digest, layer)
        return []

    walk(handle, target)
    return list(found.values())


def _fetch_layer(
    ctx: OperationContext, client: remotes.RegistryClient, name: str, source: RegistrySource,
    desc: Descriptor, progress: Progress,
) -> None:
    store = _store(ctx)
    lazy = (TOC_DIGEST_ANNOTATION in desc.annotations and mt.compression_of(desc.media_type) == "gzip"
            and not mt.is_non_distributable(desc.media_type))
    small = desc.size <= TAIL_GUESS  # the tail would be the whole blob: take it whole
    if not lazy or small or ctx.content.exists(desc.digest) or store.shareable(desc.digest):
        fetch_blob(ctx.content, source, desc, progress)  # whole (or shared: no bytes)
        return
    with contextlib.suppress(errors.NotFound):
        if store.partial(desc.digest) is not None:
            progress.emit(ref_key("layer", desc.digest), desc.digest, "layer", "exists", desc.size, desc.size)
            return
    progress.emit(ref_key("layer", desc.digest), desc.digest, "layer", "downloading", 0, desc.size)
    try:
        toc, toc_blob = fetch_toc(client, name, desc)
    except errors.RangeNotSupported:
        fetch_blob(ctx.content, source, desc, progress)  # the registry sends whole blobs only
        return
    toc_desc = ctx.content.ingest(toc_blob.json, expected=toc_blob.digest, media_type=TOC_MEDIA_TYPE)
    progress.emit(ref_key("toc", toc_desc.digest), toc_desc.digest, "toc", "complete", toc_desc.size, toc_desc.size)
    labels = dict(source.blob_labels(desc))
    labels[TOC_LABEL] = toc_blob.digest
    store.record_partial(PartialBlob(desc.digest, desc.size, name, toc_blob.digest, toc_blob.toc_offset), labels)
    _PARSED_TOCS.put((toc_blob.digest, toc_blob.toc_offset), toc)  # the first read need not parse it again


# -- completing partial layers -------------------------------------------------------------------


def partial_layers(ctx: OperationContext, layers: Iterable[Descriptor]) -> list[tuple[Descriptor, PartialBlob]]:
    """Those of ``layers`` that this namespace records as partial, with their records."""
    if not isinstance(ctx.content, PartialStore):
        return []
    out = []
    for d in layers:
        try:
            p = ctx.content.partial(d.digest)
        except errors.NotFound:
            continue
        if p is not None:
            out.append((d, p))
    return out


def complete_layers(
    ctx: OperationContext, layers: Iterable[Descriptor], progress: Progress | None = None,
    registry: Mapping[str, Any] | None = None,
) -> int:
    """Download every partial layer of ``layers`` whole (verified against its digest) from the
    reference it was fetched from; returns how many were completed."""
    todo = partial_layers(ctx, layers)
    if not todo:
        return 0
    progress = progress or Progress(None)
    with _client(ctx, registry) as client:
        for desc, p in todo:
            r = parse_reference(p.ref)
            source = RegistrySource(client, p.ref, (r.domain, r.repository))
            try:
                fetch_blob(ctx.content, source, desc, progress)
            except (errors.NotFound, errors.Unavailable, errors.RegistryError, errors.Unauthorized) as exc:
                kind = errors.NotFound if isinstance(exc, errors.NotFound) else errors.Unavailable
                raise kind(
                    f"layer {desc.digest} was fetched lazily (partial) from {p.ref}; downloading the rest of it "
                    f"failed: {exc}"
                ) from exc
    return len(todo)


def complete_image(
    ctx: OperationContext, name: str, progress: Callable[[ProgressEvent], None] | None = None,
    registry: Mapping[str, Any] | None = None,
) -> int:
    """Complete every partial layer of image ``name`` (all manifests present); returns how many."""
    target = ctx.images.find(name).target
    return complete_layers(ctx, _layers_of(ctx, target), Progress(progress), registry)


# -- the remote chunk source ------------------------------------------------------------------------


def remote_source(
    ctx: OperationContext, image_name: str, layer: Descriptor, *, registry: Mapping[str, Any] | None = None,
    toc: TOC | None = None, client: remotes.RegistryClient | None = None,
) -> RemoteLayerSource:
    """The :class:`~ocistore.estargz.source.LayerSource` of a partial layer of image ``image_name``.

    Chunks come from the reference the layer was fetched from (the image's name when that
    was not recorded), reached with the store's registry options (``registry`` overrides
    them); ``toc``: the layer's TOC already parsed from the stored TOC blob (a reader's tree
    cache), which is parsed otherwise; ``client``: a shared client (see :func:`registry_client`;
    its connections and tokens are reused, and the source does not close it), else the source
    makes its own. NotFound when the namespace lacks the image or the layer;
    FailedPrecondition when the layer is whole (read it from the content store instead).
    Close the source (or use it as a context manager) to release its connections.
    """
    image = ctx.images.find(image_name)
    store = _store(ctx)
    p = store.partial(layer.digest)
    if p is None:
        raise errors.FailedPrecondition(
            f"layer {layer.digest} of {image.name} is whole in the content store; read it from there"
        )
    expected = layer.annotations.get(TOC_DIGEST_ANNOTATION)
    if expected is not None and expected != p.toc_digest:
        raise errors.InvalidArgument(
            f"layer {layer.digest}: the descriptor's TOC digest {expected} is not the one fetched ({p.toc_digest})"
        )
    if toc is None:
        toc = _PARSED_TOCS.get((p.toc_digest, p.toc_offset))
    if toc is None:
        toc = parse_toc(ctx.content.read(p.toc_digest), payload_size=p.toc_offset)
        _PARSED_TOCS.put((p.toc_digest, p.toc_offset), toc)
    ref = p.ref or image.name
    desc = Descriptor(layer.media_type, layer.digest, layer.size, dict(layer.annotations))
    if client is not None:
        return RemoteLayerSource(client, ref, desc, toc, p.toc_offset, ctx.layout.content)
    return RemoteLayerSource(_client(ctx, registry), ref, desc, toc, p.toc_offset, ctx.layout.content,
                             owns_client=True)


class RemoteLayerSource:
    """Verified chunks of one partial eStargz layer, from a registry through a chunk cache.

    ``requests`` and ``bytes_fetched`` count the ranged requests made and their bytes.
    """

    def __init__(
        self, client: remotes.RegistryClient, ref: str, desc: Descriptor, toc: TOC, toc_offset: int,
        content_layout: ContentLayout, *, owns_client: bool = False,
    ) -> None:
        """Read ``desc`` (whose verified ``toc`` starts at ``toc_offset``) from ``ref`` via ``client``."""
        self._client = client
        self._ref = ref
        self._desc = desc
        self._toc = toc
        self._layout = content_layout
        self._owns = owns_client
        self._offsets = _member_offsets(toc, toc_offset)
        self.requests = 0
        self.bytes_fetched = 0
        self._count_lock = threading.Lock()
        self._chunk_dir = str(content_layout.chunk_dir(desc.digest))
        self._known: set[str] = set()  # chunks this source cached (if gc removes one, a read fetches it again)

    # -- LayerSource --
    @property
    def layer_digest(self) -> str:
        """The digest of the layer blob this source reads."""
        return self._desc.digest

    def toc(self) -> TOC:
        """The layer's TOC (checked against the descriptor's TOC digest when it was fetched)."""
        return self._toc

    def read_chunk(self, chunk: Chunk) -> bytes:
        """The uncompressed, verified bytes of ``chunk`` (from the cache, else one ranged GET)."""
        cached = self._cached(chunk)
        if cached is not None:
            return cached
        start, end = self._member(chunk)
        data = self._inflate(self._read(start, end), chunk)
        self._store(chunk, data)
        return data

    def prefetch(self, chunks: Sequence[Chunk], parallel: int | None = None) -> None:
        """Fetch the missing ``chunks`` and cache them (each verified): adjacent members coalesced
        into ranges of at most :data:`MAX_RANGE_BYTES` bytes, up to :data:`MAX_RANGES_PER_REQUEST`
        ranges asked for in one request (``RegistryClient.read_ranges``), and up to ``parallel``
        requests at once (default: the client's ``max_concurrent_downloads``)."""
        wanted: dict[int, list[Chunk]] = {}
        for c in chunks:
            if not self.has(c):
                wanted.setdefault(self._member(c)[0], []).append(c)
        if not wanted:
            return
        batches = self._batches(self._runs(sorted(wanted)))

        def fetch(batch: list[list[int]]) -> None:
            spans = [(run[0], self._member_end(run[-1])) for run in batch]
            for run, (start, _end), data in zip(batch, spans, self._read_many(spans), strict=True):
                for member in run:
                    piece = data[member - start:self._member_end(member) - start]
                    for c in wanted[member]:
                        self._store(c, self._inflate(piece, c))

        workers = min(len(batches), parallel or self._client.options.max_concurrent_downloads)
        if workers <= 1:
            for batch in batches:
                fetch(batch)
            return
        with worker_pool(workers) as pool:
            for f in [pool.submit(fetch, b) for b in batches]:
                f.result()

    def prefetch_landmark(self) -> int:
        """With a ``.prefetch.landmark``: fetch every chunk before it (the prioritized files) in
        as few ranges as possible; returns the number of chunks asked for (0 without one)."""
        landmark = next((e for e in self._toc.entries
                         if e.type == "reg" and e.name == ".prefetch.landmark"), None)
        if landmark is None:
            return 0
        chunks = [c for _e, cs in self._toc.files() for c in cs if c.offset < landmark.offset]
        self.prefetch(chunks)
        return len(chunks)

    # -- lifecycle --
    def close(self) -> None:
        """Release the registry connections (when this source made the client)."""
        if self._owns:
            self._client.close()

    def __enter__(self) -> RemoteLayerSource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- internals --
    def _member_end(self, offset: int) -> int:
        i = bisect.bisect_right(self._offsets, offset)
        return self._offsets[i] if i < len(self._offsets) else self._desc.size - FOOTER_SIZE

    def _member(self, chunk: Chunk) -> tuple[int, int]:
        i = bisect.bisect_left(self._offsets, chunk.offset)
        if i == len(self._offsets) or self._offsets[i] != chunk.offset or chunk.offset == self._offsets[-1]:
            raise errors.InvalidArgument(f"chunk of {chunk.name!r} at offset {chunk.offset} is not in this layer's TOC")
        return chunk.offset, self._offsets[i + 1]

    def _runs(self, members: list[int]) -> list[list[int]]:
        runs: list[list[int]] = []
        for m in members:
            if runs and self._member_end(runs[-1][-1]) == m and self._member_end(m) - runs[-1][0] <= MAX_RANGE_BYTES:
                runs[-1].append(m)
            else:
                runs.append([m])
        return runs

    def _batches(self, runs: list[list[int]]) -> list[list[list[int]]]:
        """Runs grouped into requests of at most MAX_RANGES_PER_REQUEST ranges and
        MAX_RANGE_BYTES bytes (what one request holds in memory)."""
        batches: list[list[list[int]]] = []
        size = 0
        for run in runs:
            n = self._member_end(run[-1]) - run[0]
            if not batches or len(batches[-1]) >= MAX_RANGES_PER_REQUEST or size + n > MAX_RANGE_BYTES:
                batches.append([])
                size = 0
            batches[-1].append(run)
            size += n
        return batches

    def _check_span(self, start: int, end: int) -> None:
        if end - start > MAX_RANGE_BYTES:
            raise errors.SizeLimitExceeded(
                f"layer {self._desc.digest}: a gzip member of {end - start} bytes at offset {start} exceeds the "
                f"limit of {MAX_RANGE_BYTES} bytes"
            )

    def _read(self, start: int, end: int) -> bytes:
        return self._read_many([(start, end)])[0]

    def _read_many(self, spans: list[tuple[int, int]]) -> list[bytes]:
        for start, end in spans:
            self._check_span(start, end)
        try:
            if len(spans) == 1:
                datas = [self._client.read_range(self._ref, self._desc, *spans[0])]
            else:
                datas = self._client.read_ranges(self._ref, self._desc, spans)
        except errors.RangeNotSupported as exc:
            raise errors.RangeNotSupported(
                f"{exc}; chunks of layer {self._desc.digest} cannot be read lazily from {self._ref}: "
                "fetch the image without lazy=True"
            ) from exc
        with self._count_lock:
            self.requests += 1
            self.bytes_fetched += sum(len(d) for d in datas)
        return datas

    def _inflate(self, member: bytes, chunk: Chunk) -> bytes:
        """The chunk's bytes from its gzip member, digest checked."""
        if chunk.size > MAX_CHUNK_BYTES:
            raise errors.SizeLimitExceeded(
                f"chunk of {chunk.name!r} is {chunk.size} bytes, more than the limit of {MAX_CHUNK_BYTES}"
            )
        d = zlib.decompressobj(wbits=31)
        skip, want = chunk.inner_offset, chunk.size
        out: list[bytes] = []
        data = member
        try:
            while want and not d.eof:
                piece = d.decompress(data, min(skip, 1 << 20) if skip else want)
                data = d.unconsumed_tail
                if not piece and not data:
                    break
                if skip:
                    skip -= len(piece)
                    continue
                out.append(piece)
                want -= len(piece)
        except zlib.error as exc:
            raise errors.InvalidEStargz(
                f"layer {self._desc.digest}: no valid gzip member at offset {chunk.offset} ({exc})"
            ) from None
        if skip or want:
            raise errors.InvalidEStargz(
                f"layer {self._desc.digest}: the gzip member at offset {chunk.offset} ends before the chunk of "
                f"{chunk.name!r} at byte {chunk.start} ({chunk.size} bytes)"
            )
        result = b"".join(out)
        actual = _digest(result, chunk.digest)
        if actual != chunk.digest:
            raise errors.DigestMismatch(
                f"layer {self._desc.digest}: chunk of {chunk.name!r} at byte {chunk.start} has digest {actual}, "
                f"the eStargz TOC says {chunk.digest}",
                expected=chunk.digest, actual=actual,
            )
        return result

    def _chunk_file(self, chunk: Chunk) -> str:
        return os.path.join(self._chunk_dir, chunk_file_name(chunk.digest))

    def has(self, chunk: Chunk) -> bool:
        """Whether the cache holds the chunk (checked when it is read: a bad entry is fetched again then)."""
        return chunk.digest in self._known or os.path.exists(self._chunk_file(chunk))

    def _cached(self, chunk: Chunk) -> bytes | None:
        path = self._chunk_file(chunk)
        try:
            with open(path, "rb") as f:
                data = f.read(chunk.size + 1)
        except (FileNotFoundError, NotADirectoryError):
            return None
        if len(data) == chunk.size and _digest(data, chunk.digest) == chunk.digest:
            return data
        self._known.discard(chunk.digest)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)  # a damaged cache entry: fetch it again
        return None

    def _store(self, chunk: Chunk, data: bytes) -> None:
        """Cache verified bytes atomically; a cache that cannot be written is skipped."""
        path = self._chunk_file(chunk)
        tmp = os.path.join(self._chunk_dir, f".tmp-{uuid.uuid4().hex}")
        try:
            try:
                f = open(tmp, "wb")  # noqa: SIM115 (closed below)
            except FileNotFoundError:
                os.makedirs(self._chunk_dir, exist_ok=True)
                f = open(tmp, "wb")  # noqa: SIM115
            with f:
                f.write(data)
            os.replace(tmp, path)
            self._known.add(chunk.digest)
        except OSError:
            with contextlib.suppress(OSError):
                os.unlink(tmp)


# The last few TOCs parsed in this process, by TOC digest and payload size: a TOC blob is
# content-addressed and a parse depends on nothing else, and a large one takes a second.
_PARSED_TOCS: LRU[tuple[str, int], TOC] = LRU(8)

_OFFSETS: dict[tuple[int, int], list[int]] = {}
_OFFSETS_LOCK = threading.Lock()


def _member_offsets(toc: TOC, toc_offset: int) -> list[int]:
    """The sorted gzip member offsets of ``toc``'s chunks and the TOC's own, computed once per TOC
    object (a file opened through a cached tree makes a source each time; a large TOC has
    hundreds of thousands of chunks)."""
    key = (id(toc), toc_offset)
    with _OFFSETS_LOCK:
        hit = _OFFSETS.get(key)
    if hit is not None:
        return hit
    offsets = {c.offset for _e, chunks in toc.files() for c in chunks}
    offsets.add(toc_offset)
    result = sorted(offsets)
    with _OFFSETS_LOCK:
        if key not in _OFFSETS:
            _OFFSETS[key] = result
            weakref.finalize(toc, _OFFSETS.pop, key, None)  # forgotten with the TOC (its id may be reused)
    return result


def _digest(data: bytes, expected: str) -> str:
    alg = algorithm_of(expected)
    if alg == "sha256":
        return "sha256:" + hashlib.sha256(data).hexdigest()
    h = new_hasher(alg)
    h.update(data)
    return f"{alg}:{h.hexdigest()}"
