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
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import attrs

from ocistore import errors
from ocistore._files import atomic_write
from ocistore.content.types import Provider
from ocistore.images.graph import children, filter_manifests, walk
from ocistore.images.image import describe_platform, platform_mismatch
from ocistore.metadata.images import ImageStore
from ocistore.oci import imagelayout
from ocistore.oci import mediatypes as mt
from ocistore.oci.descriptor import Descriptor
from ocistore.oci.digest import algorithm_of
from ocistore.oci.manifest import parse_index, parse_manifest
from ocistore.oci.platform import PlatformArg, matcher_for
from ocistore.oci.reference import normalize_name, parse_reference

__all__ = ["export_archive"]

_CHUNK = 1 << 20


def _add_manifest(content: Provider, desc: Descriptor, blobs: dict[str, Descriptor], what: str,
                  absent_ok: Callable[[str], bool] | None = None) -> None:
    """Add a manifest and its config and layers to ``blobs`` (FailedPrecondition if one is
    missing, unless ``absent_ok`` says the blob may be absent: it is added all the same)."""

    def handle(d: Descriptor) -> list[Descriptor]:
        blobs[d.digest] = d
        kids = children(content, d) if mt.is_manifest(d.media_type) else []
        for child in kids:
            if absent_ok is not None and mt.is_layer(child.media_type) and not content.exists(child.digest) \
                    and absent_ok(child.digest):
                blobs[child.digest] = child
                continue
            if not content.exists(child.digest) and not mt.is_non_distributable(child.media_type):
                raise errors.FailedPrecondition(
                    f"{what}: blob {child.digest} of manifest {d.digest} is not in the store "
                    "(discarded or never fetched); fetch the image again"
                )
        return [c for c in kids if content.exists(c.digest)]

    walk(handle, desc)


@attrs.frozen
class _Selection:
    """What to export of one image: every blob and the manifest a docker-archive names."""

    blobs: list[Descriptor]
    docker_manifest: Descriptor


def _select(
    content: Provider, target: Descriptor, platform: PlatformArg, all_platforms: bool, what: str,
    absent_ok: Callable[[str], bool] | None = None,
) -> _Selection:
    """containerd's exporter: the target is the entry, an index's manifests are filtered.

    An index keeps its own blob; of its manifests, those of the platform (the host's,
    strict, by default) are walked, or all of them with ``all_platforms``. Every walked
    manifest must be present with its config and layers (FailedPrecondition), and a
    platform that matches none of the listed manifests is NotFound.
    """
    blobs: dict[str, Descriptor] = {}
    if not mt.is_index(target.media_type):
        _add_manifest(content, target, blobs, what, absent_ok)
        return _Selection(list(blobs.values()), target)
    matcher = matcher_for(platform, strict=True)
    chosen: list[Descriptor] = []  # the manifests walked, for the docker-archive entry
    missing: list[Descriptor] = []
    listed: list[Descriptor] = []  # the target's own children, for the messages

    def handle(d: Descriptor) -> list[Descriptor]:
        if not mt.is_index(d.media_type):
            if not content.exists(d.digest):
                missing.append(d)
            else:
                chosen.append(d)
                _add_manifest(content, d, blobs, what, absent_ok)
            return []
        if not content.exists(d.digest):
            missing.append(d)
            return []
        blobs[d.digest] = d
        index = parse_index(content.read(d.digest), d.media_type)
        if d.digest == target.digest:
            listed.extend(index.manifests)
        kids = [m for m in index.manifests if mt.is_manifest(m.media_type) or mt.is_index(m.media_type)]
        if all_platforms:
            return kids
        kept = filter_manifests(kids, matcher)
        if not kept and d.digest == target.digest:
            raise platform_mismatch(platform, True, d.digest, index.manifests, present=content.exists, image=what)
        return kept

    walk(handle, target)
    if missing:
        absent = ", ".join(str(m.platform) if m.platform else m.digest for m in missing)
        here = [str(m.platform) for m in listed if m.platform and content.exists(m.digest)]
        if all_platforms:
            hint = "fetch it with all_platforms=True"
        else:
            hint = f"fetch it with platform={describe_platform(platform)}"
        if here:
            hint += f", or export a platform that is present with platform={here[0]}"
        raise errors.FailedPrecondition(
            f"{what}: index {target.digest} lists manifests for {absent} that are not in the store "
            f"(present locally: {', '.join(here) or 'none'}); {hint}"
        )
    if not chosen:
        raise platform_mismatch(platform, True, target.digest, listed, present=content.exists, image=what)
    best = filter_manifests(chosen, matcher) or filter_manifests(chosen, matcher_for(None, strict=False)) or chosen
    return _Selection(list(blobs.values()), best[0])


def selected_layers(
    content: Provider, images: ImageStore, names: Sequence[str], *, platform: PlatformArg = None,
    all_platforms: bool = False, absent_ok: Callable[[str], bool] | None = None,
) -> list[Descriptor]:
    """The layers :func:`export_archive` would write for ``names``, once each.

    A layer that is not in the content store is an error (as in the export) unless
    ``absent_ok(digest)`` is true: the store uses it to complete the lazily fetched (partial)
    layers of the selected platforms, and only those, before it exports.
    """
    found: dict[str, Descriptor] = {}
    for name in names:
        img = images.get(name)
        for b in _select(content, img.target, platform, all_platforms, f"image {img.name}", absent_ok).blobs:
            if mt.is_layer(b.media_type):
                found.setdefault(b.digest, b)
    return list(found.values())


def export_archive(
    content: Provider, images: ImageStore, path: str | os.PathLike[str], names: Sequence[str], *,
    platform: PlatformArg = None, all_platforms: bool = False, format: str = "oci",
) -> None:
    """Write ``names`` as an OCI layout (tar, or a directory when ``path`` is an existing dir).

    Each image's target is its ``index.json`` entry, so an index keeps its digest. Of an
    index, only the manifests of ``platform`` (default: the host's, matched strictly) are
    written, with their configs and layers; ``all_platforms=True`` writes every manifest
    (all must be in the store). ``format="docker"`` also writes ``manifest.json``
    (docker-archive) next to ``index.json``, naming the selected platform's manifest.
    Nothing is written when an image lacks what the export needs.
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
        top = img.target
        selection = _select(content, top, platform, all_platforms, f"image {img.name}")
        for b in selection.blobs:
            blobs[b.digest] = b
        ref = parse_reference(img.name) if normalize_name(img.name) else None
        ann = {imagelayout.NAME_ANNOTATION: img.name}
        if ref is not None and ref.tag:
            ann[imagelayout.REF_NAME_ANNOTATION] = ref.tag
        entries.append(Descriptor(top.media_type, top.digest, top.size, annotations=ann, platform=top.platform))
        if format == "docker":
            mdesc = selection.docker_manifest
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
