"""Fetching an image graph from a source (a registry, an OCI layout) into the content store.

containerd's handler chain, in one place: for each descriptor, make the blob present
(download unless it already exists), read an index or manifest to find its children,
label the parent with ``containerd.io/gc.ref.content.*`` for every child (before platform
filtering, as containerd does), filter an index's manifests by platform, and recurse.
Layers are downloaded in parallel. Concurrent fetches of one blob (threads or processes)
download it once: the second writer waits for the ref lock and then finds the blob.
"""

from __future__ import annotations

import contextlib
import random
import time
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Protocol

from ocistore import errors
from ocistore.content.types import ContentStore, ContentWriter, IngestStatus
from ocistore.images.graph import child_gc_labels, children, filter_manifests, walk
from ocistore.images.image import platform_mismatch
from ocistore.oci import mediatypes as mt
from ocistore.oci.descriptor import Descriptor
from ocistore.oci.digest import EMPTY_DIGEST
from ocistore.oci.mediatypes import kind_of
from ocistore.oci.platform import PlatformArg, PlatformMatcher
from ocistore.transfer.progress import Progress, ref_key
from ocistore.transfer.workers import check_cancelled, worker_pool

if TYPE_CHECKING:
    from ocistore.transfer.tee import BlobTee

__all__ = ["Source", "fetch_graph", "fetch_blob"]

LOCK_WAIT = 600.0  # seconds to wait for another writer of the same blob


class Source(Protocol):
    """Where blobs come from."""

    def fetch_into(self, desc: Descriptor, writer: ContentWriter) -> None:
        """Write the blob into ``writer`` from ``writer.status().offset`` on and commit it
        with ``expected=desc.digest`` (AlreadyExists from commit is success)."""
        ...

    def blob_labels(self, desc: Descriptor) -> dict[str, str]:
        """Extra labels for a fetched blob (``containerd.io/distribution.source.*``)."""
        ...


def _writer_ref(desc: Descriptor) -> str:
    name = desc.annotations.get("org.opencontainers.image.ref.name")
    kind = kind_of(desc.media_type)
    return f"{kind}-{name}@{desc.digest}" if name else f"{kind}-{desc.digest}"


def fetch_blob(
    content: ContentStore, source: Source, desc: Descriptor, progress: Progress, tap: BlobTee | None = None
) -> bool:
    """Make ``desc`` present in the namespace; True if bytes were downloaded.

    ``tap`` (a pull's :class:`~ocistore.transfer.tee.BlobTee`) gets every chunk as it is
    written, so that the layer can be applied while it downloads; it is told when the
    download ends, however it ends.
    """
    if tap is None:
        return _fetch_blob(content, source, desc, progress, None)
    try:
        fetched = _fetch_blob(content, source, desc, progress, tap)
    except BaseException as exc:
        tap.finish(exc)
        raise
    tap.finish()
    return fetched


def _fetch_blob(
    content: ContentStore, source: Source, desc: Descriptor, progress: Progress, tap: BlobTee | None
) -> bool:
    if desc.size <= 0 and desc.digest != EMPTY_DIGEST:
        raise errors.InvalidArgument(f"descriptor {desc.digest} has size {desc.size}; cannot fetch it")
    ref = _writer_ref(desc)
    kind = kind_of(desc.media_type)
    deadline = time.monotonic() + LOCK_WAIT
    delay = 0.016
    waited = False
    while True:
        try:
            writer = content.writer(ref, total=desc.size, expected=desc.digest)
        except errors.AlreadyExists:
            progress.emit(ref_key(kind, desc.digest), desc.digest, kind, "exists", desc.size, desc.size)
            return False
        except errors.Unavailable:
            if time.monotonic() > deadline:
                raise
            if not waited:
                progress.emit(ref_key(kind, desc.digest), desc.digest, kind, "waiting", 0, desc.size)
                waited = True
            time.sleep(random.uniform(0, delay))
            delay = min(delay * 2, 1.0)
            continue
        break
    with writer:
        st = writer.status()
        if st.offset == desc.size and st.offset > 0 and writer.digest() == desc.digest:
            # a shared ingest (the root holds the blob) or a finished download: just commit
            with contextlib.suppress(errors.AlreadyExists):
                writer.commit(desc.size, desc.digest, labels=source.blob_labels(desc))
            progress.emit(ref_key(kind, desc.digest), desc.digest, kind, "exists", desc.size, desc.size)
            return False
        progress.emit(ref_key(kind, desc.digest), desc.digest, kind, "downloading", st.offset, desc.size)
        if tap is not None:
            tap.start(st.offset)
        try:
            source.fetch_into(desc, _LabelledWriter(writer, source.blob_labels(desc), tap))
        except errors.AlreadyExists:
            pass
        except errors.DigestMismatch:
            # never keep bytes that lied: start over next time
            _abort_quietly(content, ref)
            raise
    progress.emit(ref_key(kind, desc.digest), desc.digest, kind, "complete", desc.size, desc.size)
    return True


def _abort_quietly(content: ContentStore, ref: str) -> None:
    with contextlib.suppress(errors.NotFound, errors.Unavailable):
        content.abort(ref)


class _LabelledWriter:
    """Adds labels to the commit a source makes."""

    def __init__(self, inner: ContentWriter, labels: dict[str, str], tap: BlobTee | None = None) -> None:
        self._w = inner
        self._labels = labels
        self._tap = tap

    def write(self, data: bytes, /) -> int:
        check_cancelled()  # per chunk: an interrupted download stops here, its ingest kept
        n = self._w.write(data)
        if self._tap is not None:
            self._tap.feed(data)
        return n

    def status(self) -> IngestStatus:
        return self._w.status()

    def digest(self) -> str:
        return self._w.digest()

    def truncate(self, size: int) -> None:
        self._w.truncate(size)
        if self._tap is not None:
            self._tap.truncate()

    def commit(
        self, size: int | None = None, expected: str | None = None, labels: Mapping[str, str] | None = None
    ) -> str:
        merged = dict(self._labels)
        merged.update(labels or {})
        return self._w.commit(size, expected, labels=merged)

    def close(self) -> None:
        self._w.close()

    def __enter__(self) -> _LabelledWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def fetch_graph(
    content: ContentStore,
    source: Source,
    root: Descriptor,
    matcher: PlatformMatcher | None,
    *,
    limit: int = 0,
    progress: Progress | None = None,
    max_concurrent: int = 3,
    fetch_layers: bool = True,
    on_manifest: Callable[[Descriptor], None] | None = None,
    platform: PlatformArg = None,
    strict: bool = True,
    name: str = "",
    offer_all: bool = True,
    require_match: bool = True,
) -> list[Descriptor]:
    """Fetch ``root`` and its children for the platforms ``matcher`` accepts (None = all).

    Returns the manifests fetched. ``limit`` caps the manifests taken from an index (best
    matches first). With a matcher, an index of which no manifest at all is left after
    filtering is NotFound (with ``limit``: any index without a match, as containerd's
    ``LimitManifests``); the index blob may then be in the store, but nothing refers to it.
    ``platform`` and ``strict`` are what ``matcher`` was made from and ``name`` is the image;
    they word that error (``offer_all=False``: do not suggest all platforms).
    ``require_match=False`` fetches an index whose manifests all filter out without that error
    (a pull-through mirror takes the index alone and its clients ask for their platform next).
    """
    progress = progress or Progress(None)
    manifests: list[Descriptor] = []
    layers: list[Descriptor] = []
    top: list[Descriptor] = []  # the root index's children, for the error

    def handle(desc: Descriptor) -> Sequence[Descriptor]:
        if mt.is_layer(desc.media_type):
            layers.append(desc)  # downloaded below, in parallel
            return []
        # unknown types are fetched as plain blobs and have no children, as in containerd
        fetch_blob(content, source, desc, progress)
        kids = children(content, desc)
        if kids:
            _label_parent(content, desc, kids)  # before platform filtering, as containerd does
        if mt.is_index(desc.media_type):
            if desc.digest == root.digest:
                top.extend(kids)
            kept = filter_manifests(kids, matcher, 0)
            if limit > 0:
                if not kept:
                    raise platform_mismatch(platform, strict, desc.digest, kids, image=name, offer_all=offer_all)
                kept = kept[:limit]
            return kept
        if mt.is_manifest(desc.media_type):
            manifests.append(desc)
            if on_manifest is not None:
                on_manifest(desc)
        return kids

    walk(handle, root)
    if require_match and matcher is not None and mt.is_index(root.media_type) and not manifests:
        raise platform_mismatch(platform, strict, root.digest, top, image=name, offer_all=offer_all)
    if fetch_layers and layers:
        for layer in layers:
            progress.emit(ref_key("layer", layer.digest), layer.digest, "layer", "waiting", 0, layer.size)
        with worker_pool(min(max_concurrent, len(layers))) as pool:
            futures = [pool.submit(_fetch_layer, content, source, d, progress) for d in layers]
            for f in futures:
                f.result()
    return manifests


def _fetch_layer(content: ContentStore, source: Source, desc: Descriptor, progress: Progress) -> None:
    try:
        fetch_blob(content, source, desc, progress)
    except errors.NotFound:
        if mt.is_non_distributable(desc.media_type):
            return  # foreign layers may be absent from the source, as containerd tolerates
        raise


def _label_parent(content: ContentStore, parent: Descriptor, children: list[Descriptor]) -> None:
    labels = child_gc_labels(children)
    if labels:
        content.update(parent.digest, labels, [f"labels.{k}" for k in labels])
