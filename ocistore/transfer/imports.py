"""Import of image archives: OCI layouts (dir or tar) and docker-archives.

Import streams blobs out of the archive (a tar is read in place, never extracted),
verifies every digest, and runs the same handlers as a registry fetch (gc labels,
platform filter, image record), then unpacks unless ``fetch_only``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path

from ocistore import errors
from ocistore.archive import detect_compression
from ocistore.images.graph import child_gc_labels
from ocistore.images.image import image_parts
from ocistore.metadata.images import Image
from ocistore.oci import imagelayout
from ocistore.oci import mediatypes as mt
from ocistore.oci.descriptor import Descriptor
from ocistore.oci.manifest import parse_config, parse_index
from ocistore.oci.platform import PlatformArg, matcher_for
from ocistore.oci.reference import normalize_name
from ocistore.transfer.context import OperationContext
from ocistore.transfer.fetch import fetch_graph
from ocistore.transfer.progress import Progress, ProgressEvent
from ocistore.transfer.sources import MAX_JSON, LayoutSource, open_layout
from ocistore.transfer.unpack import unpack_parts

__all__ = ["import_archive"]

_LAYER_TYPES = {"gzip": mt.DOCKER_LAYER_GZIP, "zstd": mt.DOCKER_LAYER_ZSTD, "none": mt.DOCKER_LAYER}


def _layout_images(src: LayoutSource) -> list[tuple[str, Descriptor]]:
    """(name, descriptor) for every named manifest/index listed in ``index.json``."""
    doc = src.read_json(imagelayout.INDEX)
    index = parse_index(json.dumps(doc).encode(), mt.OCI_INDEX)
    out = []
    for desc in index.manifests:
        raw = (desc.annotations.get(imagelayout.NAME_ANNOTATION)
               or desc.annotations.get(imagelayout.REF_NAME_ANNOTATION) or "")
        # a bare tag with no repository normalises to docker.io/library/<tag>: as before,
        # only what parses as a reference names an image
        name = normalize_name(raw) if raw else None
        if name:
            out.append((name, desc))
    return out


def _docker_manifest_images(src: LayoutSource, ctx: OperationContext) -> list[tuple[str, Descriptor]]:
    """Synthesise Docker schema2 manifests for a docker-archive's ``manifest.json`` entries."""
    entries = src.read_json(imagelayout.DOCKER_MANIFEST)
    if not isinstance(entries, list):
        raise errors.InvalidArgument(f"{src.path}: manifest.json must be a JSON list")
    out: list[tuple[str, Descriptor]] = []
    for entry in entries:
        if not isinstance(entry, dict) or not isinstance(entry.get("Config"), str):
            raise errors.InvalidArgument(f"{src.path}: malformed manifest.json entry {entry!r:.200}")
        config_data = _read_member(src, entry["Config"])
        config_desc = ctx.content.ingest(config_data, media_type=mt.DOCKER_CONFIG)
        layers = [_ingest_layer(src, ctx, str(name)) for name in entry.get("Layers") or []]
        _check_diff_ids(src, config_data, layers)
        manifest = {
            "schemaVersion": 2,
            "mediaType": mt.DOCKER_MANIFEST,
            "config": {"mediaType": mt.DOCKER_CONFIG, "digest": config_desc.digest, "size": config_desc.size},
            "layers": [d.to_json() for d in layers],
        }
        data = json.dumps(manifest, separators=(",", ":")).encode()
        mdesc = ctx.content.ingest(data, media_type=mt.DOCKER_MANIFEST)
        labels = child_gc_labels([Descriptor(mt.DOCKER_CONFIG, config_desc.digest, config_desc.size), *layers])
        ctx.content.update(mdesc.digest, labels, [f"labels.{k}" for k in labels])
        target = Descriptor(mt.DOCKER_MANIFEST, mdesc.digest, mdesc.size)
        for tag in entry.get("RepoTags") or []:
            name = normalize_name(str(tag))
            if name:
                out.append((name, target))
    return out


def _read_member(src: LayoutSource, name: str) -> bytes:
    with src.open_file(name) as f:
        data = f.read(MAX_JSON + 1)
    if len(data) > MAX_JSON:
        raise errors.SizeLimitExceeded(f"{name} in {src.path} is larger than {MAX_JSON >> 20} MiB")
    return data


def _ingest_layer(src: LayoutSource, ctx: OperationContext, name: str) -> Descriptor:
    with src.open_file(name) as f:
        head = f.peek(4)[:4] if hasattr(f, "peek") else b""
        media = _LAYER_TYPES[detect_compression(head)]
        desc = ctx.content.ingest(f, media_type=media)
    return Descriptor(media, desc.digest, desc.size)


def _check_diff_ids(src: LayoutSource, config_data: bytes, layers: list[Descriptor]) -> None:
    cfg = parse_config(config_data)
    for i, (layer, diff) in enumerate(zip(layers, cfg.rootfs_diff_ids, strict=False)):
        if layer.media_type == mt.DOCKER_LAYER and layer.digest != diff:
            raise errors.DigestMismatch(
                f"{src.path}: layer {i} hashes to {layer.digest} but the config lists diff ID {diff}",
                expected=diff, actual=layer.digest,
            )
    if len(layers) != len(cfg.rootfs_diff_ids):
        raise errors.InvalidArgument(
            f"{src.path}: {len(layers)} layers but the config lists {len(cfg.rootfs_diff_ids)} diff IDs"
        )


def import_archive(
    ctx: OperationContext, path: str | os.PathLike[str], *, fetch_only: bool = False,
    platform: PlatformArg = None, snapshotter: str = "overlayfs", all_platforms: bool = False,
    progress: Callable[[ProgressEvent], None] | None = None,
) -> list[Image]:
    """Import every named image of an archive; see module docs."""
    src, close = open_layout(Path(path))
    prog = Progress(progress)
    try:
        if src.exists(imagelayout.INDEX) and src.exists(imagelayout.LAYOUT_FILE):
            named = _layout_images(src)
            if not named and src.exists(imagelayout.DOCKER_MANIFEST):
                named = _docker_manifest_images(src, ctx)
        elif src.exists(imagelayout.DOCKER_MANIFEST):
            named = _docker_manifest_images(src, ctx)
        else:
            raise errors.InvalidArgument(
                f"{path} is neither an OCI image layout (oci-layout + index.json) nor a docker-archive "
                "(manifest.json)"
            )
        if not named:
            raise errors.NotFound(
                f"{path} names no images (no {imagelayout.NAME_ANNOTATION} / "
                f"{imagelayout.REF_NAME_ANNOTATION} annotations or RepoTags)"
            )
        strict = platform is not None
        matcher = None if all_platforms else matcher_for(platform, strict=strict)
        targets = []
        for name, desc in named:
            fetch_graph(ctx.content, src, desc, matcher, limit=0 if all_platforms else 1, progress=prog,
                        platform=platform, strict=strict, name=name)
            targets.append((name, Descriptor(desc.media_type, desc.digest, desc.size, annotations=desc.annotations)))
        # every image's blobs are in before the first record is written: all or nothing
        images = [ctx.images.upsert(name, target) for name, target in targets]
        if not fetch_only:
            for img in images:
                parts = image_parts(ctx.content, img.target, platform, image=img.name)
                unpack_parts(ctx, parts, image_ref=img.name, snapshotter=snapshotter, progress=prog)
        return images
    finally:
        close()
