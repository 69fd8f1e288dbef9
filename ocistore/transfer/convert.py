"""Image conversion: rewrite an image's layers as eStargz, as a new image (containerd's
``converter.Convert`` with stargz-snapshotter's ``LayerConvertFunc``).

For the selected platform's manifest, every layer is rewritten by
:func:`ocistore.archive.convert_layer` (once per distinct layer blob), written straight
into the content store; the config gets the new diffIDs, the manifest the new layers with
their ``containerd.io/snapshot/stargz/toc.digest`` and
``io.containers.estargz.uncompressed-size`` annotations, and a new image record points at
it. The source image and its blobs are left as they are. Everything is written under the
operation's lease, so GC keeps it until the image record exists. The result depends only
on the source image and the options: converting twice gives the same digests.
"""

from __future__ import annotations

import contextlib
import json
import uuid
from collections.abc import Sequence
from typing import Any

from ocistore import errors
from ocistore.archive import convert_layer
from ocistore.estargz import DEFAULT_CHUNK_SIZE, TOC_DIGEST_ANNOTATION, UNCOMPRESSED_SIZE_ANNOTATION
from ocistore.images.graph import child_gc_labels
from ocistore.images.image import ImageParts, image_parts
from ocistore.metadata.images import Image
from ocistore.oci import mediatypes as mt
from ocistore.oci.descriptor import Descriptor
from ocistore.oci.platform import PlatformArg
from ocistore.oci.reference import normalize_name
from ocistore.transfer.context import OperationContext

__all__ = ["CONVERT_FORMATS", "convert_image", "default_convert_name"]

CONVERT_FORMATS = ("estargz",)
UNCOMPRESSED_LABEL = "containerd.io/uncompressed"


def default_convert_name(name: str, to: str = "estargz") -> str:
    """``<name>-esgz`` on the tag (``docker.io/library/debian:gzip`` -> ``...:gzip-esgz``),
    ``:latest-esgz`` for a name without a tag, as ``ctr-remote``'s examples name them."""
    suffix = {"estargz": "-esgz"}.get(to, f"-{to}")
    repo, at, digest = name.partition("@")
    if at:
        return f"{repo}:{digest.replace(':', '-')[:64]}{suffix}"
    head, colon, tag = name.rpartition(":")
    if colon and "/" not in tag:
        return f"{head}:{tag}{suffix}"
    return f"{name}:latest{suffix}"


def convert_image(
    ctx: OperationContext,
    name: str,
    dst: str,
    *,
    to: str = "estargz",
    prioritized_files: Sequence[str] | None = None,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    compression_level: int = 9,
    platform: PlatformArg = None,
    oci: bool = True,
) -> Image:
    """Convert image ``name`` into a new image ``dst``; see the module docs.

    ``prioritized_files`` go first in the layers that hold them, followed by
    ``.prefetch.landmark``; a layer without any gets ``.no.prefetch.landmark``, and a
    prioritized file in no layer is ``NotFound``. ``oci=True`` (as ``ctr-remote image
    convert --oci``) writes an OCI manifest and config even for a Docker image.
    """
    if to not in CONVERT_FORMATS:
        raise errors.InvalidArgument(f"cannot convert to {to!r}: supported formats are {', '.join(CONVERT_FORMATS)}")
    if isinstance(prioritized_files, str):
        raise errors.InvalidArgument("prioritized_files must be a list of paths, not one string")
    src = ctx.images.find(name)
    dst_name = normalize_name(dst) or dst
    if not dst_name:
        raise errors.InvalidArgument("destination image name must not be empty")
    if dst_name == src.name:
        raise errors.InvalidArgument(
            f"converting {src.name!r} onto itself would replace the source; name a new image"
        )
    parts = image_parts(ctx.content, src.target, platform)
    if len(parts.layers) != len(parts.diff_ids):
        raise errors.InvalidArgument(
            f"image {src.name!r}: manifest lists {len(parts.layers)} layers, its config {len(parts.diff_ids)} diff IDs"
        )
    wanted = list(prioritized_files or ())
    with ctx.lease():
        layers, diff_ids, found = _convert_layers(ctx, parts, wanted, chunk_size, compression_level, oci)
        missing = [p for p in wanted if p not in found]
        if missing:
            raise errors.NotFound(
                f"prioritized file(s) {', '.join(map(repr, missing))} are in no layer of image {src.name!r}"
            )
        config = _write_config(ctx, parts, diff_ids, oci)
        target = _write_manifest(ctx, parts, config, layers, oci)
        return ctx.images.upsert(dst_name, target, labels=src.labels)


def _convert_layers(
    ctx: OperationContext, parts: ImageParts, prioritized: list[str], chunk_size: int, level: int, oci: bool,
) -> tuple[list[Descriptor], list[str], set[str]]:
    done: dict[str, tuple[Descriptor, str, frozenset[str]]] = {}
    layers: list[Descriptor] = []
    diff_ids: list[str] = []
    found: set[str] = set()
    for layer, diff_id in zip(parts.layers, parts.diff_ids, strict=True):
        if layer.digest not in done:
            done[layer.digest] = _convert_one(ctx, layer, diff_id, prioritized, chunk_size, level, oci)
        desc, new_diff, hit = done[layer.digest]
        layers.append(desc)
        diff_ids.append(new_diff)
        found |= hit
    return layers, diff_ids, found


def _convert_one(
    ctx: OperationContext, layer: Descriptor, diff_id: str, prioritized: list[str], chunk_size: int, level: int,
    oci: bool,
) -> tuple[Descriptor, str, frozenset[str]]:
    try:
        stream = ctx.content.open(layer.digest)
    except errors.NotFound:
        raise errors.NotFound(f"layer {layer.digest} is not in the content store; fetch the image again") from None
    ref = f"convert-estargz-{layer.digest}-{uuid.uuid4().hex[:12]}"
    try:
        with stream, ctx.content.writer(ref) as writer:
            converted = convert_layer(
                stream, writer.write, media_type=layer.media_type, spool_dir=ctx.layout.tmp,
                prioritized_files=prioritized, chunk_size=chunk_size, level=level, expected_diff_id=diff_id,
            )
            res = converted.result
            try:
                writer.commit(size=res.size, expected=res.digest, labels={UNCOMPRESSED_LABEL: res.diff_id})
            except errors.AlreadyExists:  # converted before: the same bytes
                ctx.content.update(res.digest, {UNCOMPRESSED_LABEL: res.diff_id}, [f"labels.{UNCOMPRESSED_LABEL}"])
    except BaseException:
        with contextlib.suppress(errors.NotFound):
            ctx.content.abort(ref)
        raise
    docker = layer.media_type.startswith("application/vnd.docker.")
    media = mt.DOCKER_LAYER_GZIP if docker and not oci else mt.OCI_LAYER_GZIP
    annotations = {k: v for k, v in layer.annotations.items()
                   if k not in (TOC_DIGEST_ANNOTATION, UNCOMPRESSED_SIZE_ANNOTATION)}
    annotations[TOC_DIGEST_ANNOTATION] = res.toc_digest
    annotations[UNCOMPRESSED_SIZE_ANNOTATION] = str(res.uncompressed_size)
    desc = Descriptor(media, res.digest, res.size, annotations=annotations)
    return desc, res.diff_id, converted.prioritized_found


def _dumps(doc: Any) -> bytes:
    return json.dumps(doc, separators=(",", ":"), ensure_ascii=False).encode()


def _write_config(ctx: OperationContext, parts: ImageParts, diff_ids: list[str], oci: bool) -> Descriptor:
    cfg_desc = parts.manifest.config
    doc = json.loads(ctx.content.read(cfg_desc.digest))
    rootfs = dict(doc.get("rootfs") or {})
    rootfs["type"] = rootfs.get("type") or "layers"
    rootfs["diff_ids"] = diff_ids
    doc["rootfs"] = rootfs
    media = mt.OCI_CONFIG if oci and cfg_desc.media_type == mt.DOCKER_CONFIG else cfg_desc.media_type
    return ctx.content.ingest(_dumps(doc), media_type=media)


def _write_manifest(
    ctx: OperationContext, parts: ImageParts, config: Descriptor, layers: list[Descriptor], oci: bool,
) -> Descriptor:
    src_desc = parts.manifest_desc
    doc = json.loads(ctx.content.read(src_desc.digest))
    media = mt.OCI_MANIFEST if oci else src_desc.media_type
    doc["mediaType"] = media
    doc["config"] = {**(doc.get("config") or {}), **config.to_json()}
    converted = iter(layers)
    new_layers = []
    for raw in doc.get("layers") or []:
        if isinstance(raw, dict) and mt.is_layer(str(raw.get("mediaType", ""))):
            new_layers.append(next(converted).to_json())
        else:
            new_layers.append(raw)
    doc["layers"] = new_layers
    data = _dumps(doc)
    labels = child_gc_labels([config, *layers])
    desc = ctx.content.ingest(data, media_type=media, labels=labels)
    return Descriptor(media, desc.digest, desc.size, platform=src_desc.platform)
