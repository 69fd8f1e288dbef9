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
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from ocistore import errors
from ocistore.images.walk import ImageParts, image_parts, kind_of, resolve_matcher
from ocistore.metadata.images import Image
from ocistore.oci import mediatypes as mt
from ocistore.oci.descriptor import Descriptor
from ocistore.oci.reference import parse_reference
from ocistore.transfer.archive import store_image
from ocistore.transfer.fetch import fetch_blob, fetch_graph
from ocistore.transfer.progress import Progress, ProgressEvent
from ocistore.transfer.sources import RegistrySource

if TYPE_CHECKING:
    from ocistore.store import Store

__all__ = ["DEFAULT_THRESHOLD", "fetch", "pull"]

DEFAULT_THRESHOLD = 150 << 20
UNPACK_POLICIES = ("always", "never", "auto")


def _client(registry: dict[str, Any]) -> Any:
    from ocistore.remotes import RegistryClient, RegistryOptions

    return RegistryClient(RegistryOptions(**registry))


def _fetch(
    store: Store, ref: str, matcher: Any, limit: int, prog: Progress, registry: dict[str, Any],
    fetch_layers: bool = True,
) -> tuple[str, Descriptor, Any, RegistrySource]:
    """Resolve and fetch the graph; returns (name, target, open client, source)."""
    parsed = parse_reference(ref)
    client = _client(registry)
    try:
        prog.emit(str(parsed), "", "image", "resolving")
        name, desc = client.resolve(str(parsed))
        prog.emit(name, desc.digest, kind_of(desc.media_type), "resolved", 0, desc.size)
        source = RegistrySource(client, name, (parsed.domain, parsed.repository))
        fetch_graph(store.content, source, desc, matcher, limit=limit, progress=prog,
                    max_concurrent=client.options.max_concurrent_downloads, fetch_layers=fetch_layers)
        return name, Descriptor(desc.media_type, desc.digest, desc.size), client, source
    except BaseException:
        client.close()
        raise


def fetch(
    store: Store, ref: str, *, platform: Any = None, strict: bool = True, all_platforms: bool = False,
    progress: Callable[[ProgressEvent], None] | None = None, registry: dict[str, Any] | None = None,
) -> Image:
    """Download an image for ``platform`` (default: the host, strict) or all platforms."""
    matcher = None if all_platforms else resolve_matcher(platform, strict=strict)
    name, target, client, _source = _fetch(store, ref, matcher, 0, Progress(progress), registry or {})
    client.close()
    return store_image(store, name, target)


def pull(
    store: Store, ref: str, *, snapshotter: str = "overlayfs", platform: Any = None, strict: bool = True,
    progress: Callable[[ProgressEvent], None] | None = None, registry: dict[str, Any] | None = None,
    unpack: str = "always", threshold: int = DEFAULT_THRESHOLD, discard_layers: bool = False,
    snapshot_labels: bool = True,
) -> Image:
    """Fetch one platform of ``ref`` and unpack it according to ``unpack``.

    With ``unpack="always"`` layer downloads run ahead of the applies, and layers whose
    chain ID is already committed in ``snapshotter`` are not downloaded (as containerd).
    The image record is written once everything is in place.
    """
    if unpack not in UNPACK_POLICIES:
        raise errors.InvalidArgument(f"unpack must be one of {', '.join(UNPACK_POLICIES)}, not {unpack!r}")
    prog = Progress(progress)
    matcher = resolve_matcher(platform, strict=strict)
    name, target, client, source = _fetch(store, ref, matcher, 1, prog, registry or {},
                                          fetch_layers=unpack != "always")
    try:
        parts = image_parts(store.content, target, platform, strict=strict)
        if unpack == "never" or (unpack == "auto" and _size(target, parts) >= threshold):
            return store_image(store, name, target)
        _unpack_streaming(store, parts, name, snapshotter, snapshot_labels, prog, source,
                          client.options.max_concurrent_downloads)
    finally:
        client.close()
    if discard_layers:
        discard_unpacked_layers(store, parts.manifest_desc, parts.layers)
    return store_image(store, name, target)


def _size(target: Descriptor, parts: ImageParts) -> int:
    size = target.size + parts.manifest.config.size + sum(d.size for d in parts.manifest.layers)
    if parts.manifest_desc.digest != target.digest:
        size += parts.manifest_desc.size
    return size


def _unpack_streaming(
    store: Store, parts: ImageParts, name: str, snapshotter: str, snapshot_labels: bool, prog: Progress,
    source: RegistrySource, parallel: int,
) -> None:
    """Download the layers that are needed while unpacking them as they arrive."""
    from ocistore.transfer.unpack import first_missing_layer, unpack_parts

    start = first_missing_layer(store, parts, snapshotter)
    needed = [d for d in parts.layers[start:] if not store.content.exists(d.digest)]
    for d in needed:
        prog.emit(f"layer-{d.digest}", d.digest, "layer", "waiting", 0, d.size)
    with ThreadPoolExecutor(max_workers=max(1, min(parallel, len(needed) or 1))) as pool:
        futures = {d.digest: pool.submit(fetch_blob, store.content, source, d, prog) for d in needed}

        def layer_ready(desc: Descriptor) -> None:
            f = futures.get(desc.digest)
            if f is not None:
                f.result()

        try:
            unpack_parts(store, parts, image_ref=name, snapshotter=snapshotter,
                         snapshot_labels=snapshot_labels, progress=prog, layer_ready=layer_ready)
        except BaseException:
            for f in futures.values():
                f.cancel()
            raise
        for f in futures.values():
            f.result()


def discard_unpacked_layers(store: Store, manifest: Descriptor, layers: list[Descriptor]) -> None:
    """Stop referencing the layer blobs of ``manifest`` and forget them in this namespace."""
    info = store.content.info(manifest.digest)
    drop = [k for k in info.labels if k.startswith("containerd.io/gc.ref.content.l.")]
    if drop:
        store.content.update(manifest.digest, {}, [f"labels.{k}" for k in drop])
    for layer in layers:
        if mt.is_layer(layer.media_type):
            with contextlib.suppress(errors.NotFound):
                store.content.delete(layer.digest)
