"""What the image verbs say about an image: its JSON object and size."""

from __future__ import annotations

from typing import Any

from ocistore import errors
from ocistore.cli.output import timestamp
from ocistore.images.image import image_platforms
from ocistore.metadata.images import Image
from ocistore.oci.platform import PlatformArg
from ocistore.store import Store

__all__ = ["image_json", "image_size"]


def image_size(store: Store, image: Image, platform: PlatformArg = None) -> int | None:
    """Compressed bytes for ``platform`` (host by default); ``None`` when it cannot be told."""
    try:
        return store.image_size(image.name, platform=platform)
    except errors.Error:
        return None


def image_json(store: Store, image: Image) -> dict[str, Any]:
    """``images ls --json`` object of one image."""
    return {
        "name": image.name,
        "digest": image.target.digest,
        "media_type": image.target.media_type,
        "size": image_size(store, image),
        "target_size": image.target.size,
        "platforms": image_platforms(store.content, image.target),
        "labels": dict(image.labels),
        "created_at": timestamp(image.created_at),
        "updated_at": timestamp(image.updated_at),
    }
