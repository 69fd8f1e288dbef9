"""Fetch and pull from registries (containerd ``client.Fetch`` / ``client.Pull``).

* **fetch**: resolve, download the blobs of the selected platform(s) with gc labels, and
  create or update the image record. No snapshot is created.
* **pull**: fetch one platform and unpack it, subject to the ``unpack`` policy:
  ``"always"``, ``"never"`` (fetch only) or ``"auto"`` (unpack images whose compressed size
  is below ``threshold``, fetch-only the rest). ``discard_layers=True`` drops the compressed
  layer blobs after a successful unpack (containerd's ``discard_unpacked_layers``): the
  manifest stops referencing them and the next gc frees them.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, BinaryIO, cast

from ocistore import errors
from ocistore._lazy import lazy_module
from ocistore.content.types import ContentStore
from ocistore.images.image import ImageParts, image_parts
from ocistore.metadata.images import Image
from ocistore.oci import mediatypes as mt
from ocistore.oci.descriptor import Descriptor
from ocistore.oci.mediatypes import kind_of
from ocistore.oci.platform import PlatformArg, PlatformMatcher, matcher_for
from ocistore.oci.reference import parse_reference
from ocistore.transfer import DEFAULT_THRESHOLD
from ocistore.transfer.context import OperationContext
from ocistore.transfer.fetch import fetch_blob, fetch_graph
from ocistore.transfer.progress import Progress, ProgressEvent
from ocistore.transfer.sources import RegistrySource
from ocistore.transfer.tee import BlobTee
from ocistore.transfer.unpack import MAX_PARALLEL_APPLY, first_missing_layer, unpack_parts
from ocistore.transfer.workers import worker_pool

if TYPE_CHECKING:
    from ocistore import remotes
    from ocistore.transfer import lazyfetch
else:
    remotes = lazy_module("ocistore.remotes")  # urllib3 and ssl load on the first registry call
    lazyfetch = lazy_module("ocistore.transfer.lazyfetch")

__all__ = ["DEFAULT_THRESHOLD", "discard_unpacked_layers", "fetch", "pull"]

ESTARGZ_TOC = "containerd.io/snapshot/stargz/toc.digest"
UNPACK_POLICIES = ("always", "never", "auto")


def _client(registry: Mapping[str, Any]) -> remotes.RegistryClient:
    return remotes.RegistryClient(remotes.RegistryOptions(**registry))


def _fetch(
    ctx: OperationContext, ref: str, matcher: PlatformMatcher | None, limit: int, prog: Progress,
    registry: Mapping[str, Any], fetch_layers: bool = True, platform: PlatformArg = None, strict: bool = True,
) -> tuple[str, Descriptor, remotes.RegistryClient, RegistrySource]:
    """Resolve and fetch the graph; returns (name, target, open client, source)."""
    parsed = parse_reference(ref)
    client = _client(registry)
    try:
        prog.emit(str(parsed), "", "image", "resolving")
        name, desc = client.resolve(str(parsed))
        prog.emit(name, desc.digest, kind_of(desc.media_type), "resolved", 0, desc.size)
        source = RegistrySource(client, name, (parsed.domain, parsed.repository))
        fetch_graph(ctx.content, source, desc, matcher, limit=limit, progress=prog,
                    max_concurrent=client.options.max_concurrent_downloads, fetch_layers=fetch_layers,
                    platform=platform, strict=strict, name=name, offer_all=limit == 0)
        return name, Descriptor(desc.media_type, desc.digest, desc.size), client, source
    except BaseException:
        client.close()
        raise


def fetch(
    ctx: OperationContext, ref: str, *, platform: PlatformArg = None, strict: bool = True,
    all_platforms: bool = False, progress: Callable[[ProgressEvent], None] | None = None,
    registry: Mapping[str, Any] | None = None, lazy: bool = False,
) -> Image:
    """Download an image for ``platform`` (default: the host, strict) or all platforms.

    ``lazy=True``: eStargz layers are fetched as footer and TOC only (partial blobs, see
    :mod:`ocistore.transfer.lazyfetch`); the other layers whole.
    """
    matcher = None if all_platforms else matcher_for(platform, strict=strict)
    prog = Progress(progress)
    name, target, client, source = _fetch(ctx, ref, matcher, 0, prog, registry or {},
                                          fetch_layers=not lazy, platform=platform, strict=strict)
    try:
        if lazy:
            lazyfetch.fetch_layers_lazily(ctx, client, name, source, target, prog)
    finally:
        client.close()
    return ctx.images.upsert(name, target)


def pull(
    ctx: OperationContext, ref: str, *, snapshotter: str = "overlayfs", platform: PlatformArg = None,
    strict: bool = True, progress: Callable[[ProgressEvent], None] | None = None,
    registry: Mapping[str, Any] | None = None,
    unpack: str = "always", threshold: int = DEFAULT_THRESHOLD, discard_layers: bool = False,
    snapshot_labels: bool = True, dedup: bool | None = None,
) -> Image:
    """Fetch one platform of ``ref`` and unpack it according to ``unpack``.

    With ``unpack="always"`` layer downloads run ahead of the applies. Layers whose chain ID
    is already committed in ``snapshotter`` are not applied again, and their blobs, when
    missing from the content store, are downloaded like a fetch does -- unless
    ``discard_layers`` (then they are skipped, as containerd's unpacker skips them). So a
    pull repairs a lost layer blob, and ends with every blob of the platform present unless
    layers are discarded. The image record is written once everything is in place.
    ``dedup`` (default: the store's setting) links unpacked files to identical committed ones.
    """
    if unpack not in UNPACK_POLICIES:
        raise errors.InvalidArgument(f"unpack must be one of {', '.join(UNPACK_POLICIES)}, not {unpack!r}")
    prog = Progress(progress)
    matcher = matcher_for(platform, strict=strict)
    name, target, client, source = _fetch(ctx, ref, matcher, 1, prog, registry or {},
                                          fetch_layers=unpack != "always", platform=platform, strict=strict)
    try:
        parts = image_parts(ctx.content, target, platform, strict=strict, image=name)
        if unpack == "never" or (unpack == "auto" and parts.size >= threshold):
            return ctx.images.upsert(name, target)
        _unpack_streaming(ctx, parts, name, snapshotter, snapshot_labels, prog, source,
                          client.options.max_concurrent_downloads, keep_blobs=not discard_layers,
                          dedup=dedup)
    finally:
        client.close()
    if discard_layers:
        discard_unpacked_layers(ctx.content, parts.manifest_desc, parts.layers)
    return ctx.images.upsert(name, target)


def _unpack_streaming(
    ctx: OperationContext, parts: ImageParts, name: str, snapshotter: str, snapshot_labels: bool,
    prog: Progress, source: RegistrySource, parallel: int, keep_blobs: bool = True,
    dedup: bool | None = None,
) -> None:
    """Download the missing layers while applying them as their bytes arrive.

    The layers to apply are downloaded if absent, each through a :class:`BlobTee` that the
    apply reads from while the download writes the ingest (the pipelined pull; see
    ``transfer.tee``); an apply's snapshot is committed only once its blob is. Layers whose
    chain ID is already committed are not applied again; their blobs are downloaded if
    absent unless ``keep_blobs`` is false (a pull that discards layers anyway), so that a
    pull leaves every blob of the platform in the store and a lost one comes back.
    """
    start = first_missing_layer(ctx, parts, snapshotter)
    needed = [d for i, d in enumerate(parts.layers)
              if (i >= start or keep_blobs) and not ctx.content.exists(d.digest)]
    applied = {d.digest for d in parts.layers[start:]}
    for d in needed:
        prog.emit(f"layer-{d.digest}", d.digest, "layer", "waiting", 0, d.size)
    # eStargz layers are checked against their TOC, read from the blob's end: no tee for them
    # the applies that start at once (overlayfs: up to MAX_PARALLEL_APPLY; else the first)
    soon = {d.digest for d in parts.layers[start:start + (MAX_PARALLEL_APPLY if _rebases(ctx, snapshotter) else 1)]}
    tees = {d.digest: BlobTee(d.size, expect_reader=d.digest in soon) for d in needed
            if d.digest in applied and ESTARGZ_TOC not in d.annotations}
    with worker_pool(min(parallel, len(needed) or 1)) as pool:
        futures = {d.digest: pool.submit(fetch_blob, ctx.content, source, d, prog, tees.get(d.digest))
                   for d in needed}

        def layer_ready(desc: Descriptor) -> None:
            f = futures.get(desc.digest)
            if f is not None:
                f.result()

        def layer_stream(desc: Descriptor) -> BinaryIO | None:
            tee = tees.pop(desc.digest, None)
            if tee is None:
                return None
            return cast(BinaryIO, tee.reader(lambda: ctx.content.open(desc.digest)))

        try:
            unpack_parts(ctx, parts, image_ref=name, snapshotter=snapshotter,
                         snapshot_labels=snapshot_labels, progress=prog, layer_ready=layer_ready,
                         layer_stream=layer_stream, dedup=dedup)
        except BaseException:
            for f in futures.values():
                f.cancel()
            raise
        finally:
            for tee in tees.values():  # layers not applied (already there): the downloads never wait
                tee.close()
        for f in futures.values():
            f.result()


def _rebases(ctx: OperationContext, snapshotter: str) -> bool:
    return bool(getattr(ctx.snapshotter(snapshotter), "supports_rebase", False))


def discard_unpacked_layers(content: ContentStore, manifest: Descriptor, layers: list[Descriptor]) -> None:
    """Stop referencing the layer blobs of ``manifest`` and forget them in this namespace."""
    info = content.info(manifest.digest)
    drop = [k for k in info.labels if k.startswith("containerd.io/gc.ref.content.l.")]
    if drop:
        content.update(manifest.digest, {}, [f"labels.{k}" for k in drop])
    for layer in layers:
        if mt.is_layer(layer.media_type):
            with contextlib.suppress(errors.NotFound):
                content.delete(layer.digest)
