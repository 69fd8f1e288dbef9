"""Unpacking an image's layers into a snapshotter (containerd ``core/unpack``).

For each layer whose chain ID is not yet committed, prepare ``extract-<unique> <chainID>``,
apply the layer into the snapshot's directory (verifying the diffID), and commit it as
``<chainID>``. On snapshotters that can rebase (overlayfs), layers are applied in
parallel, each into its own parentless upper dir, and committed in chain order with
their parent. Afterwards the config blob is labelled
``containerd.io/gc.ref.snapshot.<snapshotter>=<top chainID>`` so GC keeps the chain.
Concurrent unpacks of one image (threads or processes) are serialised by a keyed lock
and the second one finds the work done.
"""

from __future__ import annotations

import base64
import contextlib
import os
import time
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, BinaryIO

import attrs

from ocistore import _faults, errors
from ocistore._files import disk_full
from ocistore._lazy import lazy_module
from ocistore.content.types import ContentStore
from ocistore.images.image import ImageParts, image_parts
from ocistore.oci import mediatypes as mt
from ocistore.oci.descriptor import Descriptor
from ocistore.oci.platform import PlatformArg
from ocistore.snapshots.base import SnapshotterBase
from ocistore.snapshots.types import Kind, SnapshotInfo, Snapshotter, Usage
from ocistore.transfer.context import OperationContext
from ocistore.transfer.progress import Progress, ProgressEvent, ref_key
from ocistore.transfer.workers import check_cancelled, worker_pool

if TYPE_CHECKING:
    from concurrent.futures import Future

    from ocistore import archive
    from ocistore.transfer import evict, lazyfetch
else:
    archive = lazy_module("ocistore.archive")  # the layer applier: not loaded by a create that finds the chain
    evict = lazy_module("ocistore.transfer.evict")  # only with a snapshot budget
    lazyfetch = lazy_module("ocistore.transfer.lazyfetch")  # the registry client loads only when needed

__all__ = ["first_missing_layer", "is_unpacked", "snapshot_labels_for", "unpack_image", "unpack_parts"]

SNAPSHOT_REF = "containerd.io/snapshot.ref"
DIFF_ID = "containerd.io/snapshot/diff-id"
PARENT_CHAIN = "containerd.io/snapshot/parent-chain-id"
CRI_IMAGE_REF = "containerd.io/snapshot/cri.image-ref"
CRI_MANIFEST = "containerd.io/snapshot/cri.manifest-digest"
CRI_LAYER = "containerd.io/snapshot/cri.layer-digest"
CRI_LAYERS = "containerd.io/snapshot/cri.image-layers"
UNCOMPRESSED = "containerd.io/uncompressed"
MAX_LABEL = 4096
MAX_PARALLEL_APPLY = 3


def unique_part() -> str:
    """containerd's ``uniquePart``: nanoseconds within the second, a dash, 4 base64url chars."""
    return f"{time.time_ns() % 1_000_000_000}-{base64.urlsafe_b64encode(os.urandom(3)).decode()}"


def cri_image_layers(layers: list[Descriptor], start: int) -> str:
    """Digests of layer ``start`` and the following ones, cut to the label size limit."""
    out: list[str] = []
    size = len(CRI_LAYERS)
    for d in layers[start:]:
        add = len(d.digest) + (1 if out else 0)
        if size + add > MAX_LABEL:
            break
        out.append(d.digest)
        size += add
    return ",".join(out)


def snapshot_labels_for(parts: ImageParts, i: int, image_ref: str, cri: bool) -> dict[str, str]:
    """The labels of layer ``i``'s extract snapshot: chain identity, layer annotations, CRI's."""
    chains = parts.chain_ids
    labels = {SNAPSHOT_REF: chains[i], DIFF_ID: parts.diff_ids[i]}
    if i > 0:
        labels[PARENT_CHAIN] = chains[i - 1]
    layer = parts.layers[i]
    labels.update({k: v for k, v in layer.annotations.items() if k.startswith("containerd.io/snapshot/")})
    if cri:
        labels[CRI_IMAGE_REF] = image_ref
        labels[CRI_MANIFEST] = parts.manifest_desc.digest
        labels[CRI_LAYER] = layer.digest
        labels[CRI_LAYERS] = cri_image_layers(parts.layers, i)
    return labels


def _exists(sn: Snapshotter, key: str) -> bool:
    try:
        sn.stat(key)
    except errors.NotFound:
        return False
    return True


def is_unpacked(ctx: OperationContext, name: str, snapshotter: str = "overlayfs",
                platform: PlatformArg = None) -> bool:
    """True if the image's top chain ID is committed in ``snapshotter``."""
    img = ctx.images.get(name)
    try:
        parts = image_parts(ctx.content, img.target, platform)
    except errors.NotFound:
        return False
    top = parts.chain_id
    if not top:
        return True
    return _committed(ctx.snapshotter(snapshotter), top)


def _stat(sn: Snapshotter, key: str) -> SnapshotInfo | None:
    try:
        return sn.stat(key)
    except errors.NotFound:
        return None


def unpack_image(
    ctx: OperationContext, name: str, snapshotter: str = "overlayfs", snapshot_labels: bool = True,
    progress: Callable[[ProgressEvent], None] | None = None, platform: PlatformArg = None,
    dedup: bool | None = None,
) -> str:
    """Unpack image ``name`` into ``snapshotter``; returns the top chain ID."""
    img = ctx.images.get(name)
    parts = image_parts(ctx.content, img.target, platform, image=img.name)
    return unpack_parts(ctx, parts, image_ref=name, snapshotter=snapshotter,
                        snapshot_labels=snapshot_labels, progress=Progress(progress), dedup=dedup)


def _check_parts(parts: ImageParts) -> None:
    if parts.config.rootfs_type not in ("", "layers"):
        raise errors.InvalidArgument(
            f"image config {parts.manifest.config.digest}: rootfs type {parts.config.rootfs_type!r} "
            "is not 'layers'"
        )
    if len(parts.layers) != len(parts.diff_ids):
        raise errors.InvalidArgument(
            f"mismatched image rootfs and manifest layers: manifest {parts.manifest_desc.digest} lists "
            f"{len(parts.layers)} layers, its config {len(parts.diff_ids)} diff IDs"
        )


LayerReady = Callable[[Descriptor], None]
LayerStream = Callable[[Descriptor], BinaryIO | None]


def unpack_parts(
    ctx: OperationContext, parts: ImageParts, *, image_ref: str, snapshotter: str = "overlayfs",
    snapshot_labels: bool = True, progress: Progress | None = None, layer_ready: LayerReady | None = None,
    layer_stream: LayerStream | None = None,
    dedup: bool | None = None,
) -> str:
    """Unpack the layers of ``parts`` into ``snapshotter``.

    ``layer_ready(desc)`` blocks until a layer blob is in the content store (downloads
    running ahead of applies); without it every layer must already be there.
    ``layer_stream(desc)`` may give the layer's bytes while they download (a pull's tee):
    the apply reads them, and ``layer_ready`` is awaited before the snapshot is committed.
    running ahead of applies); without it every layer must already be there. ``dedup``
    (default: the store's setting) links applied files to identical committed ones.
    """
    _check_parts(parts)
    progress = progress or Progress(None)
    sn = ctx.snapshotter(snapshotter)
    chains = parts.chain_ids
    top = chains[-1] if chains else ""
    if not top:
        return ""
    with ctx.lease():
        with ctx.lock(f"unpack/{ctx.namespace}/{snapshotter}/{top}"):
            todo = _todo(sn, chains)
            if todo and layer_ready is None:  # lazily fetched (partial) layers are downloaded whole first
                lazyfetch.complete_layers(ctx, parts.layers[todo[0]:], progress)
            use_dedup = ctx.dedup if dedup is None else dedup
            index = sn if use_dedup and isinstance(sn, SnapshotterBase) else None
            job = _Job(ctx.content, sn, parts, image_ref, snapshot_labels, progress, layer_ready, layer_stream,
                       index)
            _unpack_todo(job, todo)
            if todo:
                _faults.fault_point("unpack.label")
            ctx.content.update(
                parts.manifest.config.digest, {f"containerd.io/gc.ref.snapshot.{snapshotter}": top},
                [f"labels.containerd.io/gc.ref.snapshot.{snapshotter}"],
            )
            ctx.touch(snapshotter, image_ref)
        if todo and ctx.snapshot_budget is not None:
            evict.enforce_budget(ctx, keep_tops={(snapshotter, top)})
    return top


def _todo(sn: Snapshotter, chains: list[str]) -> list[int]:
    """The layers to apply; the committed layer below the first of them joins the lease.

    Eviction (another process, or a budget) leaves leased snapshots alone, and a parallel
    unpack rebases onto that layer only when it commits; the layers under it have children.
    """
    while True:
        todo = [i for i, c in enumerate(chains) if not _committed(sn, c)]
        if not todo or todo[0] == 0 or sn.hold([chains[todo[0] - 1]]):
            return todo
        # evicted between the two looks: look again


def _unpack_todo(job: _Job, todo: list[int]) -> None:
    if not todo:
        return
    chains = job.parts.chain_ids
    # every layer from the first missing one on is (re)applied, in chain order
    start = todo[0]
    parallel = bool(getattr(job.sn, "supports_rebase", False)) and len(chains) - start > 1
    if parallel:
        _unpack_parallel(job, start)
    else:
        for i in range(start, len(chains)):
            _unpack_one(job, i, sequential=True)


def first_missing_layer(ctx: OperationContext, parts: ImageParts, snapshotter: str) -> int:
    """Index of the first layer whose chain ID is not committed (``len(layers)`` if none)."""
    sn = ctx.snapshotter(snapshotter)
    chains = parts.chain_ids
    for i in range(len(chains) - 1, -1, -1):
        if _committed(sn, chains[i]):
            return i + 1
    return 0


def _committed(sn: Snapshotter, chain: str) -> bool:
    info = _stat(sn, chain)
    return info is not None and info.kind is Kind.COMMITTED


@attrs.frozen
class _Job:
    """What every step of one unpack needs."""

    content: ContentStore
    sn: Snapshotter
    parts: ImageParts
    image_ref: str
    cri: bool
    progress: Progress
    layer_ready: LayerReady | None
    layer_stream: LayerStream | None = None
    dedup_index: SnapshotterBase | None = None
    """Where applied files find link targets and get indexed (None: no dedup)."""
    dedup_files: dict[str, list[tuple[str, str]]] = attrs.field(factory=dict)
    """Per extract key: the files its apply offers to the index once it is committed."""


def _prepare(job: _Job, i: int, parent: str) -> tuple[str, dict[str, str]] | None:
    """Prepare the extract snapshot for layer ``i``; None when the layer is already there."""
    labels = snapshot_labels_for(job.parts, i, job.image_ref, job.cri)
    chain = job.parts.chain_ids[i]
    for _attempt in range(3):
        key = f"extract-{unique_part()} {chain}"
        try:
            job.sn.prepare(key, parent, labels=labels)
            return key, labels
        except errors.AlreadyExists:
            if _committed(job.sn, chain):
                return None
    raise errors.Unavailable(f"could not prepare an extract snapshot for layer {chain} after 3 tries")


def _apply(job: _Job, i: int, key: str, again: bool = False) -> archive.ApplyResult:
    """Apply layer ``i`` into ``key`` (``again``: from the committed blob, not the download)."""
    layer = job.parts.layers[i]
    progress = job.progress
    lref = ref_key("layer", layer.digest)
    stream = job.layer_stream(layer) if job.layer_stream is not None and not again else None
    if stream is None:
        stream = _open_layer(job, layer)
    progress.emit(lref, layer.digest, "layer", "extracting", 0, layer.size)
    overlay = job.sn.supports_mount  # layers are diffs over their parents: overlay whiteouts
    deduper = archive.FileDeduper(job.dedup_index.dedup_candidates) if job.dedup_index is not None else None
    with stream, _disk_errors(f"unpacking layer {layer.digest} into {job.sn.name}"):
        result = archive.apply_layer(
            stream, job.sn.path(key), media_type=layer.media_type, overlay=overlay,
            # the blob was verified when it was committed; the diffID check covers the bytes applied
            expected_diff_id=job.parts.diff_ids[i], blob_digest=False,
            annotations=layer.annotations,  # eStargz: TOC, chunk digests and sizes checked too
            lower_dirs=job.sn.parents_paths(key) if overlay else (),
            progress=lambda n: _applied(progress, lref, layer, n),
            dedup=deduper,
        )
    if deduper is not None:
        job.dedup_files[key] = deduper.entries
    progress.emit(lref, layer.digest, "layer", "extracted", layer.size, layer.size)
    return result


def _open_layer(job: _Job, layer: Descriptor) -> BinaryIO:
    """The layer's committed blob (waiting for its download first)."""
    if job.layer_ready is not None:
        job.layer_ready(layer)
    try:
        return job.content.open(layer.digest)
    except errors.NotFound:
        raise errors.NotFound(
            f"layer {layer.digest} of image manifest {job.parts.manifest_desc.digest} is not in the content "
            "store; fetch the image again"
        ) from None


def _applied(progress: Progress, lref: str, layer: Descriptor, n: int) -> None:
    """Per chunk applied: stop if the operation was interrupted, else report the offset."""
    check_cancelled()
    if progress:
        progress.emit(lref, layer.digest, "layer", "extracting", n, layer.size)


@contextlib.contextmanager
def _disk_errors(what: str) -> Iterator[None]:
    try:
        yield
    except OSError as exc:
        raise disk_full(exc, what) from exc


def _commit(
    job: _Job, i: int, key: str, labels: dict[str, str], parent: str | None, usage: Usage | None
) -> None:
    chain = job.parts.chain_ids[i]
    if job.layer_ready is not None:
        job.layer_ready(job.parts.layers[i])  # a layer applied while downloading: its blob is verified first
    try:
        job.sn.commit(chain, key, labels=labels, parent=parent, usage=usage)
    except errors.AlreadyExists:
        job.sn.remove(key)  # another unpack won the race: use its snapshot
        return
    files = job.dedup_files.pop(key, None)
    if files and job.dedup_index is not None:
        # its own transaction: a crash before it leaves a committed layer that is not indexed
        job.dedup_index.index_files(chain, files)
    layer = job.parts.layers[i]
    content = job.content
    if mt.compression_of(layer.media_type) != "none" and content.exists(layer.digest):
        content.update(layer.digest, {UNCOMPRESSED: job.parts.diff_ids[i]}, [f"labels.{UNCOMPRESSED}"])


def _unpack_one(job: _Job, i: int, sequential: bool, again: bool = False) -> None:
    chains = job.parts.chain_ids
    parent = chains[i - 1] if i > 0 else ""
    prepared = _prepare(job, i, parent if sequential else "")
    if prepared is None:
        return
    key, labels = prepared
    try:
        usage = _apply(job, i, key, again).usage
        _commit(job, i, key, labels, None if sequential else (parent or None), usage)
    except BaseException:
        _remove_quietly(job.sn, key)
        raise


def _adopt_parents(job: _Job, i: int, key: str, implicit_dirs: Sequence[str]) -> bool:
    """Give the parents layer ``i`` created with nothing to copy the lower layers' attributes
    (they are committed now); False when one is a symlink there (see ``adopt_lower_parents``)."""
    below = job.parts.chain_ids[i - 1]
    lowers = [job.sn.path(below), *job.sn.parents_paths(below)]
    return archive.adopt_lower_parents(job.sn.path(key), implicit_dirs, lowers, chown=os.geteuid() == 0)


def _remove_quietly(sn: Snapshotter, key: str) -> None:
    with contextlib.suppress(errors.NotFound):
        sn.remove(key)


def _unpack_parallel(job: _Job, start: int) -> None:
    """Apply layers ``start..`` concurrently into parentless snapshots; commit in order."""
    chains = job.parts.chain_ids
    prepared: dict[int, tuple[str, dict[str, str]]] = {}
    try:
        for i in range(start, len(chains)):
            p = _prepare(job, i, "")
            if p is not None:
                prepared[i] = p
        with worker_pool(min(MAX_PARALLEL_APPLY, len(prepared))) as pool:
            futures: dict[int, Future[archive.ApplyResult]] = {
                i: pool.submit(_apply, job, i, key) for i, (key, _l) in prepared.items()
            }
            for i in range(start, len(chains)):
                if i not in prepared:
                    continue
                result = futures[i].result()
                key, labels = prepared[i]
                if i > 0 and result.implicit_dirs and not _adopt_parents(job, i, key, result.implicit_dirs):
                    # a parent it lacks is a symlink below: apply it again over its parents
                    job.dedup_files.pop(key, None)
                    _remove_quietly(job.sn, key)
                    del prepared[i]
                    _unpack_one(job, i, sequential=True, again=True)
                    continue
                _commit(job, i, key, labels, chains[i - 1] if i > 0 else None, result.usage)
                del prepared[i]
    finally:
        for key, _labels in prepared.values():
            _remove_quietly(job.sn, key)
