"""Export of images as OCI layouts (a tar, or a directory) and docker-archives.

Blobs stream from the content store into the archive; nothing is held whole in memory.
A tar is written under a temporary name and renamed into place when complete.
"""

from __future__ import annotations

import io
import json
import os
import tarfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ocistore import errors
from ocistore._files import atomic_write
from ocistore.content.types import Provider
from ocistore.images.graph import children, walk
from ocistore.images.image import image_parts
from ocistore.metadata.images import ImageStore
from ocistore.oci import imagelayout
from ocistore.oci import mediatypes as mt
from ocistore.oci.descriptor import Descriptor
from ocistore.oci.digest import algorithm_of
from ocistore.oci.manifest import parse_index, parse_manifest
from ocistore.oci.platform import PlatformArg
from ocistore.oci.reference import normalize_name, parse_reference

__all__ = ["export_archive"]

_CHUNK = 1 << 20


def _add_manifest(content: Provider, desc: Descriptor, blobs: dict[str, Descriptor]) -> None:
    """Add a manifest and its config and layers to ``blobs`` (FailedPrecondition if one is missing)."""

    def handle(d: Descriptor) -> list[Descriptor]:
        blobs[d.digest] = d
        kids = children(content, d) if mt.is_manifest(d.media_type) else []
        for child in kids:
            if not content.exists(child.digest) and not mt.is_non_distributable(child.media_type):
                raise errors.FailedPrecondition(
                    f"blob {child.digest} of manifest {d.digest} is not in the store; fetch the image again"
                )
        return [c for c in kids if content.exists(c.digest)]

    walk(handle, desc)


def _blobs_for(
    content: Provider, target: Descriptor, platform: PlatformArg, all_platforms: bool
) -> tuple[Descriptor, list[Descriptor]]:
    """The descriptor to list in index.json and every blob to write."""
    blobs: dict[str, Descriptor] = {}
    if mt.is_index(target.media_type):
        index = parse_index(content.read(target.digest), target.media_type)
        present = [d for d in index.manifests if content.exists(d.digest)]
        if all_platforms or len(present) == len(index.manifests):
            if all_platforms and len(present) != len(index.manifests):
                raise errors.FailedPrecondition(
                    f"index {target.digest} lists manifests that are not in the store; fetch with all_platforms"
                )
            chosen = present if all_platforms or platform is None else []
            if chosen:
                blobs[target.digest] = target
                for d in chosen:
                    if mt.is_manifest(d.media_type):
                        _add_manifest(content, d, blobs)
                return target, list(blobs.values())
        parts = image_parts(content, target, platform)
        _add_manifest(content, parts.manifest_desc, blobs)
        return parts.manifest_desc, list(blobs.values())
    _add_manifest(content, target, blobs)
    return target, list(blobs.values())


def export_archive(
    content: Provider, images: ImageStore, path: str | os.PathLike[str], names: Sequence[str], *,
    platform: PlatformArg = None, all_platforms: bool = False, format: str = "oci",
) -> None:
    """Write ``names`` as an OCI layout (tar, or a directory when ``path`` is an existing dir).

    ``format="docker"`` also writes ``manifest.json`` (docker-archive) next to ``index.json``.
    """
    if format not in ("oci", "docker"):
        raise errors.InvalidArgument(f"unknown archive format {format!r}: use 'oci' or 'docker'")
    if not names:
        raise errors.InvalidArgument("export needs at least one image name")
    entries: list[Descriptor] = []
    blobs: dict[str, Descriptor] = {}
    docker_entries: list[dict[str, Any]] = []
    for name in names:
        img = images.get(name)
        top, found = _blobs_for(content, img.target, platform, all_platforms)
        for b in found:
            blobs[b.digest] = b
        ref = parse_reference(img.name) if normalize_name(img.name) else None
        ann = {imagelayout.NAME_ANNOTATION: img.name}
        if ref is not None and ref.tag:
            ann[imagelayout.REF_NAME_ANNOTATION] = ref.tag
        entries.append(Descriptor(top.media_type, top.digest, top.size, annotations=ann, platform=top.platform))
        if format == "docker":
            mdesc = top
            if mt.is_index(top.media_type):
                mdesc = image_parts(content, top, platform).manifest_desc
            m = parse_manifest(content.read(mdesc.digest), mdesc.media_type)
            docker_entries.append({
                "Config": imagelayout.blob_name(m.config.digest),
                "RepoTags": [ref.familiar_name] if ref is not None and ref.tag else [],
                "Layers": [imagelayout.blob_name(d.digest) for d in m.layers],
            })
    index = {"schemaVersion": 2, "mediaType": mt.OCI_INDEX, "manifests": [d.to_json() for d in entries]}
    files: list[tuple[str, bytes]] = [
        (imagelayout.LAYOUT_FILE, imagelayout.LAYOUT_VERSION),
        (imagelayout.INDEX, json.dumps(index, separators=(",", ":")).encode()),
    ]
    if format == "docker":
        files.append((imagelayout.DOCKER_MANIFEST, json.dumps(docker_entries, separators=(",", ":")).encode()))
    target = Path(path)
    if target.is_dir():
        _write_dir(content, target, files, list(blobs.values()))
    else:
        _write_tar(content, target, files, list(blobs.values()))


def _write_dir(content: Provider, root: Path, files: list[tuple[str, bytes]], blobs: list[Descriptor]) -> None:
    for d in blobs:
        dest = root / imagelayout.blob_name(d.digest)
        if dest.exists() and dest.stat().st_size == d.size:
            continue
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.with_name(dest.name + ".tmp")
        with content.open(d.digest) as src, open(tmp, "wb") as out:
            while chunk := src.read(_CHUNK):
                out.write(chunk)
        os.replace(tmp, dest)
    for name, data in files:
        atomic_write(root / name, data)


def _write_tar(content: Provider, path: Path, files: list[tuple[str, bytes]], blobs: list[Descriptor]) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    now = int(time.time())
    dirs = sorted({imagelayout.blob_dir(algorithm_of(d.digest)) for d in blobs})
    try:
        with tarfile.open(tmp, "w", format=tarfile.PAX_FORMAT) as tf:
            for dirname in (imagelayout.BLOBS, *dirs):
                info = tarfile.TarInfo(dirname)
                info.type, info.mode, info.mtime = tarfile.DIRTYPE, 0o755, now
                tf.addfile(info)
            for d in blobs:
                info = tarfile.TarInfo(imagelayout.blob_name(d.digest))
                info.size, info.mode, info.mtime = d.size, 0o444, now
                with content.open(d.digest) as src:
                    tf.addfile(info, src)
            for name, data in files:
                info = tarfile.TarInfo(name)
                info.size, info.mode, info.mtime = len(data), 0o644, now
                tf.addfile(info, io.BytesIO(data))
        os.replace(tmp, path)
    except BaseException:
        if tmp.exists():
            tmp.unlink()
        raise
