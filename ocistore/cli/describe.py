"""What the image verbs say about an image: its name lookup, platforms, size, completeness."""

from __future__ import annotations

from typing import Any

import attrs

from ocistore import errors
from ocistore.cli.output import timestamp
from ocistore.images.walk import image_parts
from ocistore.metadata.images import Image
from ocistore.oci import mediatypes as mt
from ocistore.oci.manifest import parse_config, parse_index, parse_manifest
from ocistore.oci.reference import parse_reference
from ocistore.store import Store

__all__ = ["Completeness", "completeness", "find_image", "image_json", "image_platforms", "image_size"]


def find_image(store: Store, name: str) -> Image:
    """The image ``name``, or the one its normalised reference names (``debian:gzip`` finds
    ``docker.io/library/debian:gzip``). NotFound names what the user typed."""
    try:
        return store.images.get(name)
    except errors.NotFound:
        try:
            normalised = str(parse_reference(name))
        except errors.InvalidArgument:
            normalised = name
        if normalised == name:
            raise
        return store.images.get(normalised)


def image_platforms(store: Store, image: Image) -> list[str]:
    """The platforms of ``image`` whose manifests are present (an index lists several)."""
    target = image.target
    try:
        if mt.is_index(target.media_type):
            index = parse_index(store.content.read(target.digest), target.media_type)
            found = [str(d.platform) for d in index.manifests
                     if d.platform is not None and store.content.exists(d.digest)]
            return sorted(set(found))
        if mt.is_manifest(target.media_type):
            manifest = parse_manifest(store.content.read(target.digest), target.media_type)
            return [str(parse_config(store.content.read(manifest.config.digest)).platform)]
    except errors.Error:
        return []
    return []


def image_size(store: Store, image: Image, platform: Any = None) -> int | None:
    """Compressed bytes for ``platform`` (host by default); ``None`` when it cannot be told."""
    try:
        return store.image_size(image.name, platform=platform)
    except errors.Error:
        return None


@attrs.frozen
class Completeness:
    """Which blobs of the selected platform are present (``images check``)."""

    required: int
    present: int
    missing: list[str]

    @property
    def complete(self) -> bool:
        return not self.missing and self.required > 0

    @property
    def status(self) -> str:
        if self.complete:
            return "complete"
        return f"incomplete ({self.present}/{self.required})"


def completeness(store: Store, image: Image, platform: Any = None) -> Completeness:
    """Count the target, the selected manifest, its config and layers that the store holds."""
    target = image.target
    if not store.content.exists(target.digest):
        return Completeness(required=1, present=0, missing=[target.digest])
    try:
        parts = image_parts(store.content, target, platform)
    except errors.Error:
        return Completeness(required=2, present=1, missing=["manifest for the platform"])
    wanted = [target.digest, parts.manifest_desc.digest, parts.manifest.config.digest,
              *(d.digest for d in parts.manifest.layers)]
    unique = list(dict.fromkeys(wanted))
    missing = [d for d in unique if not store.content.exists(d)]
    return Completeness(required=len(unique), present=len(unique) - len(missing), missing=missing)


def image_json(store: Store, image: Image) -> dict[str, Any]:
    """``images ls --json`` object of one image."""
    return {
        "name": image.name,
        "digest": image.target.digest,
        "media_type": image.target.media_type,
        "size": image_size(store, image),
        "target_size": image.target.size,
        "platforms": image_platforms(store, image),
        "labels": dict(image.labels),
        "created_at": timestamp(image.created_at),
        "updated_at": timestamp(image.updated_at),
    }
