"""What a store knows about one image: ``store.inspect(name)`` and ``ocistore images inspect``.

The selected platform's manifest, config, diff IDs and chain IDs; its compressed size; in
which snapshotters it is unpacked and how many bytes its snapshots take there; and which of
its blobs are present (layers may be absent after a fetch of another platform, or discarded
after an unpack).
"""

from __future__ import annotations

import attrs

from ocistore import errors
from ocistore.images.image import image_parts, image_platforms
from ocistore.metadata.images import Image
from ocistore.oci import mediatypes as mt
from ocistore.oci.descriptor import Descriptor
from ocistore.oci.platform import PlatformArg
from ocistore.snapshots import SNAPSHOTTERS
from ocistore.snapshots.types import Kind, Snapshotter
from ocistore.transfer.context import OperationContext

__all__ = ["BlobState", "ImageInspection", "UnpackState", "inspect_image"]


@attrs.frozen
class BlobState:
    """One blob of the selected platform: what it is and whether the store holds it."""

    digest: str
    media_type: str
    kind: str
    size: int
    present: bool


@attrs.frozen
class UnpackState:
    """The image's layers in one snapshotter: how many are committed and their bytes on disk."""

    snapshotter: str
    committed_layers: int
    layers: int
    size: int
    unpacked: bool
    """Every layer's chain ID is committed (an image without layers counts as unpacked)."""


@attrs.frozen
class ImageInspection:
    """Everything :func:`inspect_image` found (field names are the ``--json`` keys)."""

    image: Image
    manifest: Descriptor
    platform: str
    platforms: list[str]
    config: Descriptor
    diff_ids: list[str]
    chain_ids: list[str]
    chain_id: str
    compressed_size: int
    blobs: list[BlobState]
    unpacked: list[UnpackState]


def _unpack_state(sn: Snapshotter, chain_ids: list[str]) -> UnpackState:
    committed = size = 0
    for chain in chain_ids:
        try:
            info = sn.stat(chain)
        except errors.NotFound:
            break  # a chain is unpacked from the bottom up: nothing above a gap counts
        if info.kind is not Kind.COMMITTED:
            break
        committed += 1
        size += sn.usage(chain).size
    return UnpackState(snapshotter=sn.name, committed_layers=committed, layers=len(chain_ids), size=size,
                       unpacked=committed == len(chain_ids))


def inspect_image(ctx: OperationContext, name: str, platform: PlatformArg = None) -> ImageInspection:
    """Describe image ``name`` (any reference that normalises to it) for ``platform``.

    NotFound if the image does not exist or none of its present manifests matches.
    """
    img = ctx.images.find(name)
    parts = image_parts(ctx.content, img.target, platform)
    blobs = [
        BlobState(d.digest, d.media_type, mt.kind_of(d.media_type), d.size, ctx.content.exists(d.digest))
        for d in parts.blobs
    ]
    unpacked = [_unpack_state(ctx.snapshotter(sn), parts.chain_ids) for sn in sorted(SNAPSHOTTERS)]
    return ImageInspection(
        image=img,
        manifest=parts.manifest_desc,
        platform=str(parts.config.platform),
        platforms=image_platforms(ctx.content, img.target),
        config=parts.manifest.config,
        diff_ids=parts.diff_ids,
        chain_ids=parts.chain_ids,
        chain_id=parts.chain_id,
        compressed_size=parts.size,
        blobs=blobs,
        unpacked=unpacked,
    )
