"""Walking an image graph: children, gc labels, platform selection, size, rootfs.

Everything here reads from a content provider (``Store.content`` or anything with
``read(digest)`` and ``exists(digest)``); fetching is ``ocistore.transfer``'s job.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Protocol

import attrs

from ocistore import errors
from ocistore.oci import mediatypes as mt
from ocistore.oci.descriptor import Descriptor
from ocistore.oci.identity import chain_ids
from ocistore.oci.manifest import ImageConfig, Index, Manifest, parse_config, parse_index, parse_manifest
from ocistore.oci.platform import Platform, PlatformMatcher, matcher_for, preference_key

if TYPE_CHECKING:
    from ocistore.store import Store

__all__ = [
    "ImageParts",
    "ReadProvider",
    "child_gc_labels",
    "filter_manifests",
    "image_parts",
    "image_size",
    "kind_of",
    "resolve_matcher",
]

GC_REF_CONTENT = "containerd.io/gc.ref.content"


class ReadProvider(Protocol):
    def read(self, digest: str) -> bytes: ...
    def exists(self, digest: str) -> bool: ...


def kind_of(media_type: str) -> str:
    """The object kind a progress event or ingest ref names (containerd's MakeRefKey prefixes)."""
    if mt.is_index(media_type):
        return "index"
    if mt.is_manifest(media_type):
        return "manifest"
    if mt.is_layer(media_type):
        return "layer"
    if mt.is_config(media_type):
        return "config"
    if "attestation" in media_type or "in-toto" in media_type:
        return "attestation"
    return "unknown"


def child_gc_labels(children: Sequence[Descriptor], layers: bool = True) -> dict[str, str]:
    """containerd's ``ChildGCLabels``: ``...config``, ``...m.<i>``, ``...l.<i>``, ``...<i>``."""
    out: dict[str, str] = {}
    counters: dict[str, int] = {}
    for child in children:
        mtype = child.media_type
        if mt.is_config(mtype) or mtype == mt.OCI_EMPTY:
            pfx = f"{GC_REF_CONTENT}.config"
        elif mt.is_manifest(mtype) or mt.is_index(mtype):
            pfx = f"{GC_REF_CONTENT}.m."
        elif mt.is_layer(mtype):
            if not layers:
                continue
            pfx = f"{GC_REF_CONTENT}.l."
        else:
            pfx = f"{GC_REF_CONTENT}."
        idx = counters.get(pfx, 0)
        counters[pfx] = idx + 1
        k = f"{pfx}{idx}" if (idx > 0 or pfx.endswith(".")) else pfx
        out[k] = child.digest
    return out


def resolve_matcher(platform: Any = None, strict: bool = True) -> PlatformMatcher:
    """The matcher for a ``platform=`` argument (a Platform, a string, a matcher or None = host)."""
    if isinstance(platform, str):
        platform = Platform.parse(platform)
    return matcher_for(platform, strict=strict)


def filter_manifests(
    manifests: Sequence[Descriptor], matcher: PlatformMatcher | None, limit: int = 0,
) -> list[Descriptor]:
    """containerd's ``FilterPlatforms`` + ``LimitManifests``: keep matching children, best first.

    Children without a platform pass (their config decides later, when it can be read).
    ``matcher=None`` keeps everything. With ``limit>0`` and nothing left: NotFound.
    """
    if matcher is None:
        kept = list(manifests)
    else:
        kept = [d for d in manifests if d.platform is None or matcher.match(d.platform)]
        key = preference_key(matcher)
        with_p = [d for d in kept if d.platform is not None]
        without = [d for d in kept if d.platform is None]
        kept = sorted(with_p, key=lambda d: key(d.platform or Platform("", ""))) + without
    if limit > 0:
        if not kept:
            raise errors.NotFound("no match for platform in manifest")
        kept = kept[:limit]
    return kept


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
        return [d for d in self.manifest.layers if mt.is_layer(d.media_type)]

    @property
    def diff_ids(self) -> list[str]:
        return list(self.config.rootfs_diff_ids)

    @property
    def chain_ids(self) -> list[str]:
        return chain_ids(self.config.rootfs_diff_ids)

    @property
    def chain_id(self) -> str:
        ids = self.chain_ids
        return ids[-1] if ids else ""


def image_parts(
    provider: ReadProvider, target: Descriptor, platform: Any = None, strict: bool = False,
    require_present: bool = True,
) -> ImageParts:
    """containerd's ``images.Manifest``: the best manifest for ``platform`` under ``target``.

    A single manifest is returned whatever its platform. In an index, manifests whose
    blobs are absent locally are skipped (a fetch for one platform holds only that one).
    Unpack-style callers use non-strict matching by default (containerd's default
    platform matcher); pass ``strict=True`` for exact matching.
    """
    matcher = resolve_matcher(platform, strict=strict)
    index: Index | None = None
    if mt.is_index(target.media_type):
        index = parse_index(provider.read(target.digest), target.media_type)
        candidates = filter_manifests(index.manifests, matcher)
        for desc in candidates:
            if not mt.is_manifest(desc.media_type) and not mt.is_index(desc.media_type):
                continue
            if not provider.exists(desc.digest):
                continue
            if mt.is_index(desc.media_type):
                try:
                    return image_parts(provider, desc, platform, strict, require_present)
                except errors.NotFound:
                    continue
            manifest = parse_manifest(provider.read(desc.digest), desc.media_type)
            config = _config(provider, manifest)
            if desc.platform is None and not matcher.match(config.platform):
                continue
            return ImageParts(target, index, desc, manifest, config)
        raise errors.NotFound(
            f"no match for platform {_describe(platform)} in index {target.digest} "
            f"(it lists {', '.join(str(d.platform) for d in index.manifests if d.platform) or 'no platforms'}"
            " that are present locally)"
        )
    if mt.is_manifest(target.media_type):
        manifest = parse_manifest(provider.read(target.digest), target.media_type)
        return ImageParts(target, None, target, manifest, _config(provider, manifest))
    raise errors.InvalidArgument(f"unsupported image target media type {target.media_type!r}")


def _config(provider: ReadProvider, manifest: Manifest) -> ImageConfig:
    return parse_config(provider.read(manifest.config.digest))


def _describe(platform: Any) -> str:
    if platform is None:
        return str(Platform.host())
    return str(platform)


def image_size(store: Store, name: str, platform: Any = None) -> int:
    """Declared sizes of the target, the selected manifest, its config and its layers."""
    img = store.images.get(name)
    parts = image_parts(store.content, img.target, platform, strict=platform is not None)
    total = img.target.size
    if parts.manifest_desc.digest != img.target.digest:
        total += parts.manifest_desc.size
    total += parts.manifest.config.size + sum(d.size for d in parts.manifest.layers)
    return total
