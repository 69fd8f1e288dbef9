"""Import and export of image archives: OCI layouts (dir or tar) and docker-archives.

Import streams blobs out of the archive (a tar is read in place, never extracted),
verifies every digest, and runs the same handlers as a registry fetch (gc labels,
platform filter, image record), then unpacks unless ``fetch_only``.
"""

from __future__ import annotations

import io
import json
import os
import tarfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ocistore import errors
from ocistore.images.walk import image_parts, resolve_matcher
from ocistore.metadata.images import Image
from ocistore.oci import mediatypes as mt
from ocistore.oci.descriptor import Descriptor
from ocistore.oci.digest import algorithm_of, encoded
from ocistore.oci.manifest import parse_index, parse_manifest
from ocistore.oci.reference import parse_reference
from ocistore.transfer.fetch import fetch_graph
from ocistore.transfer.progress import Progress, ProgressEvent
from ocistore.transfer.sources import LayoutSource, open_layout

if TYPE_CHECKING:
    from ocistore.store import Store

__all__ = ["export_archive", "import_archive", "store_image"]

NAME_ANNOTATION = "io.containerd.image.name"
REF_NAME_ANNOTATION = "org.opencontainers.image.ref.name"


def store_image(store: Store, name: str, target: Descriptor, labels: dict[str, str] | None = None) -> Image:
    """Create the image record, or replace target and labels of an existing one (containerd 6.7)."""
    img = Image(name=name, target=target, labels=dict(labels or {}))
    for _ in range(3):
        try:
            return store.images.create(img)
        except errors.AlreadyExists:
            try:
                return store.images.update(img)
            except errors.NotFound:
                continue
    raise errors.Unavailable(f"image {name!r} changed concurrently; retry")


def _normalise(name: str) -> str | None:
    try:
        return str(parse_reference(name))
    except errors.InvalidArgument:
        return None


def _layout_images(src: LayoutSource) -> list[tuple[str, Descriptor]]:
    """(name, descriptor) for every named manifest/index listed in ``index.json``."""
    doc = src.read_json("index.json")
    index = parse_index(json.dumps(doc).encode(), mt.OCI_INDEX)
    out = []
    for desc in index.manifests:
        raw = desc.annotations.get(NAME_ANNOTATION) or desc.annotations.get(REF_NAME_ANNOTATION) or ""
        name = _normalise(raw) if raw else None
        if name is None and raw and ":" not in raw and "/" not in raw:
            name = None  # a bare tag with no repository: nothing to name the image by
        if name:
            out.append((name, desc))
    return out


def _docker_manifest_images(src: LayoutSource, store: Store) -> list[tuple[str, Descriptor]]:
    """Synthesise Docker schema2 manifests for a docker-archive's ``manifest.json`` entries."""
    entries = src.read_json("manifest.json")
    if not isinstance(entries, list):
        raise errors.InvalidArgument(f"{src.path}: manifest.json must be a JSON list")
    out: list[tuple[str, Descriptor]] = []
    for entry in entries:
        if not isinstance(entry, dict) or not isinstance(entry.get("Config"), str):
            raise errors.InvalidArgument(f"{src.path}: malformed manifest.json entry {entry!r:.200}")
        config_data = _read_member(src, entry["Config"])
        config_desc = store.content.ingest(config_data, media_type=mt.DOCKER_CONFIG)
        layers = []
        for layer_name in entry.get("Layers") or []:
            layers.append(_ingest_layer(src, store, str(layer_name)))
        _check_diff_ids(src, config_data, layers)
        manifest = {
            "schemaVersion": 2,
            "mediaType": mt.DOCKER_MANIFEST,
            "config": {"mediaType": mt.DOCKER_CONFIG, "digest": config_desc.digest, "size": config_desc.size},
            "layers": [d.to_json() for d in layers],
        }
        data = json.dumps(manifest, separators=(",", ":")).encode()
        mdesc = store.content.ingest(data, media_type=mt.DOCKER_MANIFEST)
        from ocistore.images.walk import child_gc_labels

        labels = child_gc_labels([Descriptor(mt.DOCKER_CONFIG, config_desc.digest, config_desc.size), *layers])
        store.content.update(mdesc.digest, labels, [f"labels.{k}" for k in labels])
        target = Descriptor(mt.DOCKER_MANIFEST, mdesc.digest, mdesc.size)
        for tag in entry.get("RepoTags") or []:
            name = _normalise(str(tag))
            if name:
                out.append((name, target))
    return out


def _read_member(src: LayoutSource, name: str) -> bytes:
    with src.open_file(name) as f:
        data = f.read(8 << 20 + 1)
    if len(data) > 8 << 20:
        raise errors.SizeLimitExceeded(f"{name} in {src.path} is larger than 8 MiB")
    return data


def _ingest_layer(src: LayoutSource, store: Store, name: str) -> Descriptor:
    with src.open_file(name) as f:
        head = f.peek(4)[:4] if hasattr(f, "peek") else b""
        media = mt.DOCKER_LAYER
        if head.startswith(b"\x1f\x8b"):
            media = mt.DOCKER_LAYER_GZIP
        elif head.startswith(b"\x28\xb5\x2f\xfd"):
            media = mt.DOCKER_LAYER_ZSTD
        desc = store.content.ingest(f, media_type=media)
    return Descriptor(media, desc.digest, desc.size)


def _check_diff_ids(src: LayoutSource, config_data: bytes, layers: list[Descriptor]) -> None:
    from ocistore.oci.manifest import parse_config

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
    store: Store, path: str | os.PathLike[str], *, fetch_only: bool = False, platform: Any = None,
    snapshotter: str = "overlayfs", all_platforms: bool = False,
    progress: Callable[[ProgressEvent], None] | None = None,
) -> list[Image]:
    """Import every named image of an archive; see module docs."""
    from ocistore.transfer.unpack import unpack_parts

    src, close = open_layout(Path(path))
    prog = Progress(progress)
    try:
        if src.exists("index.json") and src.exists("oci-layout"):
            named = _layout_images(src)
            if not named and src.exists("manifest.json"):
                named = _docker_manifest_images(src, store)
        elif src.exists("manifest.json"):
            named = _docker_manifest_images(src, store)
        else:
            raise errors.InvalidArgument(
                f"{path} is neither an OCI image layout (oci-layout + index.json) nor a docker-archive "
                "(manifest.json)"
            )
        if not named:
            raise errors.NotFound(f"{path} names no images (no {NAME_ANNOTATION} / {REF_NAME_ANNOTATION} "
                                  "annotations or RepoTags)")
        matcher = None if all_platforms else resolve_matcher(platform, strict=platform is not None)
        images = []
        for name, desc in named:
            fetch_graph(store.content, src, desc, matcher, limit=0 if all_platforms else 1, progress=prog)
            img = store_image(store, name, Descriptor(desc.media_type, desc.digest, desc.size,
                                                      annotations=desc.annotations))
            images.append(img)
        if not fetch_only:
            for img in images:
                parts = image_parts(store.content, img.target, platform)
                unpack_parts(store, parts, image_ref=img.name, snapshotter=snapshotter, progress=prog)
        return images
    finally:
        close()


# -- export ------------------------------------------------------------------------------------------------


def _blobs_for(
    store: Store, target: Descriptor, platform: Any, all_platforms: bool
) -> tuple[Descriptor, list[Descriptor]]:
    """The descriptor to list in index.json and every blob to write."""
    blobs: dict[str, Descriptor] = {}

    def add_manifest(desc: Descriptor) -> None:
        blobs[desc.digest] = desc
        m = parse_manifest(store.content.read(desc.digest), desc.media_type)
        for child in m.children:
            if store.content.exists(child.digest):
                blobs[child.digest] = child
            elif not mt.is_non_distributable(child.media_type):
                raise errors.FailedPrecondition(
                    f"blob {child.digest} of manifest {desc.digest} is not in the store; fetch the image again"
                )

    if mt.is_index(target.media_type):
        index = parse_index(store.content.read(target.digest), target.media_type)
        present = [d for d in index.manifests if store.content.exists(d.digest)]
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
                        add_manifest(d)
                return target, list(blobs.values())
        parts = image_parts(store.content, target, platform)
        add_manifest(parts.manifest_desc)
        return parts.manifest_desc, list(blobs.values())
    add_manifest(target)
    return target, list(blobs.values())


def export_archive(
    store: Store, path: str | os.PathLike[str], names: list[str], *, platform: Any = None,
    all_platforms: bool = False, format: str = "oci",
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
        img = store.images.get(name)
        top, bl = _blobs_for(store, img.target, platform, all_platforms)
        for b in bl:
            blobs[b.digest] = b
        ref = parse_reference(img.name) if _normalise(img.name) else None
        ann = {NAME_ANNOTATION: img.name}
        if ref is not None and ref.tag:
            ann[REF_NAME_ANNOTATION] = ref.tag
        entries.append(Descriptor(top.media_type, top.digest, top.size, annotations=ann, platform=top.platform))
        if format == "docker":
            mdesc = top
            if mt.is_index(top.media_type):
                mdesc = image_parts(store.content, top, platform).manifest_desc
            m = parse_manifest(store.content.read(mdesc.digest), mdesc.media_type)
            docker_entries.append({
                "Config": f"blobs/{algorithm_of(m.config.digest)}/{encoded(m.config.digest)}",
                "RepoTags": [ref.familiar_name] if ref is not None and ref.tag else [],
                "Layers": [f"blobs/{algorithm_of(d.digest)}/{encoded(d.digest)}" for d in m.layers],
            })
    index = {"schemaVersion": 2, "mediaType": mt.OCI_INDEX, "manifests": [d.to_json() for d in entries]}
    files: list[tuple[str, bytes]] = [
        ("oci-layout", b'{"imageLayoutVersion":"1.0.0"}'),
        ("index.json", json.dumps(index, separators=(",", ":")).encode()),
    ]
    if format == "docker":
        files.append(("manifest.json", json.dumps(docker_entries, separators=(",", ":")).encode()))
    target = Path(path)
    if target.is_dir():
        _write_dir(store, target, files, list(blobs.values()))
    else:
        _write_tar(store, target, files, list(blobs.values()))


def _write_dir(store: Store, root: Path, files: list[tuple[str, bytes]], blobs: list[Descriptor]) -> None:
    from ocistore._files import atomic_write

    for d in blobs:
        dest = root / "blobs" / algorithm_of(d.digest) / encoded(d.digest)
        if dest.exists() and dest.stat().st_size == d.size:
            continue
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.with_name(dest.name + ".tmp")
        with store.content.open(d.digest) as src, open(tmp, "wb") as out:
            while chunk := src.read(1 << 20):
                out.write(chunk)
        os.replace(tmp, dest)
    for name, data in files:
        atomic_write(root / name, data)


def _write_tar(store: Store, path: Path, files: list[tuple[str, bytes]], blobs: list[Descriptor]) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    now = int(time.time())
    try:
        with tarfile.open(tmp, "w", format=tarfile.PAX_FORMAT) as tf:
            for dirname in ("blobs", *sorted({f"blobs/{algorithm_of(d.digest)}" for d in blobs})):
                info = tarfile.TarInfo(dirname)
                info.type, info.mode, info.mtime = tarfile.DIRTYPE, 0o755, now
                tf.addfile(info)
            for d in blobs:
                info = tarfile.TarInfo(f"blobs/{algorithm_of(d.digest)}/{encoded(d.digest)}")
                info.size, info.mode, info.mtime = d.size, 0o444, now
                with store.content.open(d.digest) as src:
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

