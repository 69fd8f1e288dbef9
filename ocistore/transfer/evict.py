"""Removing an image's unpacked snapshots while keeping its blobs.

The state a fetch-only node wants after a one-off run: the image stays fetched (its blobs
and record are kept) and the next ``containers.create`` unpacks it again lazily. Only the
snapshots this image alone uses go: removal runs from the top of the chain down and stops
at the first layer that something else stands on (another image's layers, a container's
active snapshot, an unpack in progress) or that another image names as its top.
"""

from __future__ import annotations

import contextlib

from ocistore import errors
from ocistore.images.image import ImageParts, image_parts
from ocistore.oci.platform import PlatformArg
from ocistore.snapshots.types import Kind, Snapshotter
from ocistore.transfer.context import OperationContext

__all__ = ["remove_unpacked"]

_GC_REF_SNAPSHOT = "containerd.io/gc.ref.snapshot."


def _committed(sn: Snapshotter, key: str) -> bool:
    try:
        return sn.stat(key).kind is Kind.COMMITTED
    except errors.NotFound:
        return False


def _tops_of_other_images(ctx: OperationContext, name: str, snapshotter: str) -> set[str]:
    """Top chain IDs (in ``snapshotter``) that other images of the namespace are unpacked to."""
    tops: set[str] = set()
    for img in ctx.images.list():
        if img.name == name:
            continue
        with contextlib.suppress(errors.Error):
            config = image_parts(ctx.content, img.target).manifest.config.digest
            top = ctx.content.info(config).labels.get(f"{_GC_REF_SNAPSHOT}{snapshotter}")
            if top:
                tops.add(top)
    return tops


def remove_unpacked(
    ctx: OperationContext, name: str, snapshotter: str = "overlayfs", platform: PlatformArg = None
) -> list[str]:
    """Remove the snapshots of image ``name`` in ``snapshotter`` that nothing else uses.

    Returns the chain IDs removed, top first. The image keeps its blobs; when its whole
    chain went, its config loses the ``containerd.io/gc.ref.snapshot.<snapshotter>`` label.
    FailedPrecondition when the image's layer blobs are not all present (it could not be
    unpacked again) or when a container's snapshot stands on its top layer.
    """
    img = ctx.images.find(name)
    parts = image_parts(ctx.content, img.target, platform)
    missing = [d.digest for d in parts.layers if not ctx.content.exists(d.digest)]
    if missing:
        raise errors.FailedPrecondition(
            f"image {img.name}: layer {missing[0]} is not in the content store (discarded after unpack?); "
            "removing its snapshots would leave it unusable: fetch it again first"
        )
    chains = parts.chain_ids
    if not chains:
        return []
    sn = ctx.snapshotter(snapshotter)
    with ctx.lock(f"unpack/{ctx.namespace}/{snapshotter}/{chains[-1]}"):
        return _remove_chain(ctx, sn, img.name, parts, _tops_of_other_images(ctx, img.name, snapshotter))


def _remove_chain(
    ctx: OperationContext, sn: Snapshotter, name: str, parts: ImageParts, protected: set[str]
) -> list[str]:
    chains = parts.chain_ids
    removed: list[str] = []
    for i in range(len(chains) - 1, -1, -1):
        chain = chains[i]
        if chain in protected or not _committed(sn, chain):
            break
        try:
            sn.remove(chain)
        except errors.FailedPrecondition:
            if i == len(chains) - 1:
                users = sorted(s.name for s in sn.walk(f"parent=={chain}"))
                raise errors.FailedPrecondition(
                    f"image {name}: its top snapshot {chain} in {sn.name} is in use by "
                    f"{', '.join(users) or 'another snapshot'}; delete those containers or snapshots first"
                ) from None
            break  # another image's layers or an unpack stand on it: keep it and everything below
        removed.append(chain)
    if removed and removed[0] == chains[-1]:
        label = f"{_GC_REF_SNAPSHOT}{sn.name}"
        config = parts.manifest.config.digest
        with contextlib.suppress(errors.NotFound):
            if ctx.content.info(config).labels.get(label) == chains[-1]:
                ctx.content.update(config, {}, [f"labels.{label}"])
    return removed
