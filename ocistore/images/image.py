"""One image's selected platform: its manifest, config, layers, size and completeness.

containerd's ``images.Manifest``, ``images.Platforms``, ``Image.Size`` and ``images.Check``:
everything here reads from a content :class:`~ocistore.content.types.Provider` and never
fetches.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import attrs

from ocistore import errors
from ocistore.content.types import Provider, is_partial
from ocistore.images.graph import filter_manifests
from ocistore.oci import mediatypes as mt
from ocistore.oci.descriptor import Descriptor
from ocistore.oci.identity import chain_ids
from ocistore.oci.manifest import ImageConfig, Index, Manifest, parse_config, parse_index, parse_manifest
from ocistore.oci.platform import Platform, PlatformArg, PlatformMatcher, matcher_for

__all__ = [
    "Completeness",
    "ImageParts",
    "completeness",
    "describe_platform",
    "image_parts",
    "image_platforms",
    "image_size",
    "platform_mismatch",
]


@attrs.frozen
class ImageParts:
    """The selected manifest of an image and what hangs off it."""

    target: Descriptor
    index: Index | None
    manifest_desc: Descriptor
    manifest: Manifest
    config: ImageConfig

    @property
    def layers(self) -> list[Descriptor]:
        """The manifest's layers that are unpackable layer types, in order."""
        return [d for d in self.manifest.layers if mt.is_layer(d.media_type)]

    @property
    def diff_ids(self) -> list[str]:
        """The config's ``rootfs.diff_ids``."""
        return list(self.config.rootfs_diff_ids)

    @property
    def chain_ids(self) -> list[str]:
        """The chain ID of every layer (the snapshot names an unpack commits)."""
        return chain_ids(self.config.rootfs_diff_ids)

    @property
    def chain_id(self) -> str:
        """The top chain ID (``""`` for an image without layers)."""
        ids = self.chain_ids
        return ids[-1] if ids else ""

    @property
    def blobs(self) -> list[Descriptor]:
        """Every blob of the selected platform: the target, the manifest, the config, all layers."""
        wanted = [self.target]
        if self.manifest_desc.digest != self.target.digest:
            wanted.append(self.manifest_desc)
        wanted += [self.manifest.config, *self.manifest.layers]
        return list({d.digest: d for d in wanted}.values())

    @property
    def size(self) -> int:
        """Declared bytes of the target, the selected manifest, its config and its layers."""
        total = self.target.size
        if self.manifest_desc.digest != self.target.digest:
            total += self.manifest_desc.size
        return total + self.manifest.config.size + sum(d.size for d in self.manifest.layers)


def image_parts(provider: Provider, target: Descriptor, platform: PlatformArg = None,
                strict: bool = False, *, image: str = "") -> ImageParts:
    """containerd's ``images.Manifest``: the best manifest for ``platform`` under ``target``.

    A single manifest is returned whatever its platform. In an index, manifests whose
    blobs are absent locally are skipped (a fetch for one platform holds only that one).
    Unpack-style callers use non-strict matching by default (containerd's default
    platform matcher); pass ``strict=True`` for exact matching.

    Raises NotFound when no present manifest matches (naming ``image`` if given, the
    platforms listed and those present), InvalidArgument for a target that is neither an
    index nor a manifest.
    """
    matcher = matcher_for(platform, strict=strict)
    if mt.is_index(target.media_type):
        index = parse_index(provider.read(target.digest), target.media_type)
        for desc in filter_manifests(index.manifests, matcher):
            if not mt.is_manifest(desc.media_type) and not mt.is_index(desc.media_type):
                continue
            if not provider.exists(desc.digest):
                continue
            if mt.is_index(desc.media_type):
                try:
                    return image_parts(provider, desc, platform, strict, image=image)
                except errors.NotFound:
                    continue
            manifest = parse_manifest(provider.read(desc.digest), desc.media_type)
            config = _config(provider, manifest)
            if desc.platform is None and not matcher.match(config.platform):
                continue
            return ImageParts(target, index, desc, manifest, config)
        raise platform_mismatch(platform, strict, target.digest, index.manifests, present=provider.exists,
                                image=image)
    if mt.is_manifest(target.media_type):
        manifest = parse_manifest(provider.read(target.digest), target.media_type)
        return ImageParts(target, None, target, manifest, _config(provider, manifest))
    raise errors.InvalidArgument(f"unsupported image target media type {target.media_type!r}")


def _config(provider: Provider, manifest: Manifest) -> ImageConfig:
    return parse_config(provider.read(manifest.config.digest))


def describe_platform(platform: PlatformArg) -> str:
    """The platform an operation asked for, as text (the host's when ``None``)."""
    if platform is None:
        return str(Platform.host())
    if isinstance(platform, str):
        return str(Platform.parse(platform))
    return str(platform)


def _listed(manifests: Sequence[Descriptor]) -> list[Platform]:
    return [d.platform for d in manifests if d.platform is not None]


def platform_mismatch(
    platform: PlatformArg, strict: bool, index_digest: str, manifests: Sequence[Descriptor], *,
    present: Callable[[str], bool] | None = None, image: str = "", offer_all: bool = True,
) -> errors.NotFound:
    """The NotFound for an index with no (present) manifest for ``platform``.

    Names the platform asked for, the platforms the index lists and, when ``present`` is
    given (the question is about local content), which of them are present locally. The
    hint says what would work: fetching the platform, another platform, a non-strict match
    or all platforms.
    """
    wanted = describe_platform(platform)
    listed = _listed(manifests)
    of = f" of {image}" if image else ""
    text = f"no match for platform {wanted}{' (strict)' if strict else ''} in index {index_digest}{of}: "
    text += f"it lists {', '.join(str(p) for p in listed) or 'no platforms'}"
    matcher = matcher_for(platform, strict=strict)
    loose = [] if not strict or isinstance(platform, PlatformMatcher) else [
        p for p in listed if matcher_for(platform, strict=False).match(p)]
    if present is None:
        hints = ["pass one of them as platform="] if listed else []
        if loose:
            hints.append(f"strict=False to take {', '.join(str(p) for p in loose)} ({wanted} can run it)")
        if offer_all:
            hints.append("all_platforms=True to take every platform")
        return errors.NotFound(f"{text}; {_or(hints)}" if hints else text)
    here = [str(d.platform) for d in manifests if d.platform is not None and present(d.digest)]
    text += f"; present locally: {', '.join(here) if here else 'none of them'}"
    if any(matcher.match(p) for p in listed):
        hint = f"fetch the image for {wanted} first (fetch with platform={wanted})"
    elif here:
        hint = f"the image has no {wanted} manifest: pass one of the present platforms as platform="
    else:
        hint = "fetch the image for one of the platforms it lists"
    return errors.NotFound(f"{text}; {hint}")


def _or(items: list[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " or " + items[-1]


def image_size(provider: Provider, target: Descriptor, platform: PlatformArg = None) -> int:
    """Declared sizes of the target, the selected manifest, its config and its layers.

    A given ``platform`` is matched strictly; the default (host) is matched as unpack does.
    """
    return image_parts(provider, target, platform, strict=platform is not None).size


def image_platforms(provider: Provider, target: Descriptor) -> list[str]:
    """The platforms of the image whose manifests are present (an index lists several)."""
    try:
        if mt.is_index(target.media_type):
            index = parse_index(provider.read(target.digest), target.media_type)
            found = [str(d.platform) for d in index.manifests
                     if d.platform is not None and provider.exists(d.digest)]
            return sorted(set(found))
        if mt.is_manifest(target.media_type):
            manifest = parse_manifest(provider.read(target.digest), target.media_type)
            return [str(_config(provider, manifest).platform)]
    except errors.Error:
        return []
    return []


@attrs.frozen
class Completeness:
    """Which blobs of the selected platform are present (``images check``)."""

    required: int
    present: int
    missing: list[str]
    partial: list[str] = attrs.field(factory=list)
    """Layers recorded as partial (fetched with ``lazy=True``): remote, neither present nor missing."""

    @property
    def complete(self) -> bool:
        """Every required blob is present."""
        return not self.missing and not self.partial and self.required > 0

    @property
    def status(self) -> str:
        """``complete``, ``partial (<present>/<required>, <n> remote)`` or ``incomplete (<present>/<required>)``."""
        if self.complete:
            return "complete"
        if self.partial and not self.missing:
            return f"partial ({self.present}/{self.required}, {len(self.partial)} remote)"
        return f"incomplete ({self.present}/{self.required})"


def completeness(provider: Provider, target: Descriptor, platform: PlatformArg = None) -> Completeness:
    """Count the target, the selected manifest, its config and layers that ``provider`` holds."""
    if not provider.exists(target.digest):
        return Completeness(required=1, present=0, missing=[target.digest])
    try:
        parts = image_parts(provider, target, platform)
    except errors.Error:
        return Completeness(required=2, present=1, missing=["manifest for the platform"])
    unique = [d.digest for d in parts.blobs]
    absent = [d for d in unique if not provider.exists(d)]
    partial = [d for d in absent if is_partial(provider, d)]
    missing = [d for d in absent if d not in partial]
    return Completeness(required=len(unique), present=len(unique) - len(absent), missing=missing, partial=partial)

