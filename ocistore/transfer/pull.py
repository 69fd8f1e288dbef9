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
from typing import TYPE_CHECKING, Any

from ocistore import errors
from ocistore.images.walk import image_parts, kind_of, resolve_matcher
from ocistore.metadata.images import Image
from ocistore.oci import mediatypes as mt
from ocistore.oci.descriptor import Descriptor
from ocistore.oci.reference import parse_reference
from ocistore.transfer.archive import store_image
from ocistore.transfer.fetch import fetch_graph
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
) -> tuple[Image, Any]:
    parsed = parse_reference(ref)
    client = _client(registry)
    try:
        prog.emit(str(parsed), "", "image", "resolving")
        name, desc = client.resolve(str(parsed))
        prog.emit(name, desc.digest, kind_of(desc.media_type), "resolved", 0, desc.size)
        source = RegistrySource(client, name, (parsed.domain, parsed.repository))
        fetch_graph(store.content, source, desc, matcher, limit=limit, progress=prog,
                    max_concurrent=client.options.max_concurrent_downloads)
        img = store_image(store, name, Descriptor(desc.media_type, desc.digest, desc.size))
        return img, client
    except BaseException:
        client.close()
        raise


def fetch(
    store: Store, ref: str, *, platform: Any = None, strict: bool = True, all_platforms: bool = False,
    progress: Callable[[ProgressEvent], None] | None = None, registry: dict[str, Any] | None = None,
) -> Image:
    """Download an image for ``platform`` (default: the host, strict) or all platforms."""
    matcher = None if all_platforms else resolve_matcher(platform, strict=strict)
    img, client = _fetch(store, ref, matcher, 0, Progress(progress), registry or {})
    client.close()
    return img


def pull(
    store: Store, ref: str, *, snapshotter: str = "overlayfs", platform: Any = None, strict: bool = True,
    progress: Callable[[ProgressEvent], None] | None = None, registry: dict[str, Any] | None = None,
    unpack: str = "always", threshold: int = DEFAULT_THRESHOLD, discard_layers: bool = False,
    snapshot_labels: bool = True,
) -> Image:
    """Fetch one platform of ``ref`` and unpack it according to ``unpack``."""
    from ocistore.transfer.unpack import unpack_parts

    if unpack not in UNPACK_POLICIES:
        raise errors.InvalidArgument(f"unpack must be one of {', '.join(UNPACK_POLICIES)}, not {unpack!r}")
    prog = Progress(progress)
    matcher = resolve_matcher(platform, strict=strict)
    img, client = _fetch(store, ref, matcher, 1, prog, registry or {})
    client.close()
    if unpack == "never":
        return img
    parts = image_parts(store.content, img.target, platform, strict=strict)
    if unpack == "auto":
        size = img.target.size + parts.manifest.config.size + sum(d.size for d in parts.manifest.layers)
        if parts.manifest_desc.digest != img.target.digest:
            size += parts.manifest_desc.size
        if size >= threshold:
            return img
    unpack_parts(store, parts, image_ref=img.name, snapshotter=snapshotter,
                 snapshot_labels=snapshot_labels, progress=prog)
    if discard_layers:
        discard_unpacked_layers(store, parts.manifest_desc, parts.layers)
    return img


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
