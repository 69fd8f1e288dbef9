"""Removing an image's unpacked snapshots while keeping its blobs; eviction under a budget.

The state a fetch-only node wants after a one-off run: the image stays fetched (its blobs
and record are kept) and the next ``containers.create`` unpacks it again lazily. Only the
snapshots this image alone uses go: removal runs from the top of the chain down and stops
at the first layer that something else stands on (another image's layers, a container's
active snapshot, an unpack in progress) or that another image names as its top.

Eviction (:func:`evict`, ``store.evict``, ``snapshots evict``) does that for the images no
container uses, least recently used first (``metadata.imageuse``: unpacked, or a container
created), until the committed snapshots of the namespace take at most ``target_bytes``.
Images that share a top chain ID (one config under two names) go together. It never removes
a snapshot with a child (a container's active snapshot, a view, an unpack preparing on it),
one a lease holds (checked in the removing transaction; unpacks hold the layer they build
on), or the chain of an image another process is unpacking (its ``unpack/<ns>/<sn>/<top>``
lock is tried once and the image skipped when held).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Sequence
from datetime import datetime

import attrs

from ocistore import errors
from ocistore._time import to_ns
from ocistore.images.image import ImageParts, image_parts
from ocistore.oci.platform import PlatformArg
from ocistore.snapshots.types import Kind, Snapshotter
from ocistore.transfer.context import OperationContext

__all__ = ["EvictedLayer", "enforce_budget", "evict", "present_snapshotters", "remove_unpacked", "unpacked_bytes"]

_GC_REF_SNAPSHOT = "containerd.io/gc.ref.snapshot."
_PARENT_CHAIN = "containerd.io/snapshot/parent-chain-id"


def _committed(sn: Snapshotter, key: str) -> bool:
    try:
        return sn.stat(key).kind is Kind.COMMITTED
    except errors.NotFound:
        return False


def _tops_of_other_images(ctx: OperationContext, name: str, snapshotter: str) -> set[str]:
    """Top chain IDs (in ``snapshotter``) that other images of the namespace are unpacked to."""
    tops: set[str] = set()
    for img in ctx.images.list():
        if img.name == name:
            continue
        with contextlib.suppress(errors.Error):
            config = image_parts(ctx.content, img.target).manifest.config.digest
            top = ctx.content.info(config).labels.get(f"{_GC_REF_SNAPSHOT}{snapshotter}")
            if top:
                tops.add(top)
    return tops


def remove_unpacked(
    ctx: OperationContext, name: str, snapshotter: str = "overlayfs", platform: PlatformArg = None
) -> list[str]:
    """Remove the snapshots of image ``name`` in ``snapshotter`` that nothing else uses.

    Returns the chain IDs removed, top first. The image keeps its blobs; when its whole
    chain went, its config loses the ``containerd.io/gc.ref.snapshot.<snapshotter>`` label.
    FailedPrecondition when the image's layer blobs are not all present (it could not be
    unpacked again) or when a container's snapshot stands on its top layer.
    """
    img = ctx.images.find(name)
    parts = image_parts(ctx.content, img.target, platform)
    missing = [d.digest for d in parts.layers if not ctx.content.exists(d.digest)]
    if missing:
        raise errors.FailedPrecondition(
            f"image {img.name}: layer {missing[0]} is not in the content store (discarded after unpack?); "
            "removing its snapshots would leave it unusable: fetch it again first"
        )
    chains = parts.chain_ids
    if not chains:
        return []
    sn = ctx.snapshotter(snapshotter)
    with ctx.lock(f"unpack/{ctx.namespace}/{snapshotter}/{chains[-1]}"):
        return _remove_chain(ctx, sn, img.name, parts, _tops_of_other_images(ctx, img.name, snapshotter))


def _remove_chain(
    ctx: OperationContext, sn: Snapshotter, name: str, parts: ImageParts, protected: set[str]
) -> list[str]:
    chains = parts.chain_ids
    removed: list[str] = []
    for i in range(len(chains) - 1, -1, -1):
        chain = chains[i]
        if chain in protected or not _committed(sn, chain):
            break
        try:
            sn.remove(chain)
        except errors.FailedPrecondition:
            if i == len(chains) - 1:
                users = sorted(s.name for s in sn.walk(f"parent=={chain}"))
                raise errors.FailedPrecondition(
                    f"image {name}: its top snapshot {chain} in {sn.name} is in use by "
                    f"{', '.join(users) or 'another snapshot'}; delete those containers or snapshots first"
                ) from None
            break  # another image's layers or an unpack stand on it: keep it and everything below
        removed.append(chain)
    if removed and removed[0] == chains[-1]:
        label = f"{_GC_REF_SNAPSHOT}{sn.name}"
        config = parts.manifest.config.digest
        with contextlib.suppress(errors.NotFound):
            if ctx.content.info(config).labels.get(label) == chains[-1]:
                ctx.content.update(config, {}, [f"labels.{label}"])
    return removed


@attrs.frozen
class EvictedLayer:
    """One committed layer snapshot that eviction removed (or would remove, on a dry run)."""

    snapshotter: str
    chain_id: str
    size: int
    """Bytes recorded for the snapshot when it was committed."""
    images: tuple[str, ...]
    """The image names whose chain it was evicted from."""
    last_used: int
    """When those images were last used (nanoseconds since the epoch)."""


@attrs.define
class _Group:
    """The images of one snapshotter that share a top chain ID."""

    snapshotter: str
    top: str
    chains: list[str]
    names: list[str] = attrs.field(factory=list)
    configs: set[str] = attrs.field(factory=set)
    last_used: int = 0


def _sizes(ctx: OperationContext, snapshotters: Sequence[str]) -> dict[tuple[str, str], int]:
    out: dict[tuple[str, str], int] = {}
    for sn_name in snapshotters:
        sn = ctx.snapshotter(sn_name)
        for info in sn.walk("kind==committed"):
            with contextlib.suppress(errors.NotFound):
                out[sn_name, info.name] = sn.usage(info.name).size
    return out


def present_snapshotters(ctx: OperationContext) -> list[str]:
    """The snapshotters that have a directory under the root (the ones that may hold snapshots)."""
    return [name for name, _ in ctx.layout.snapshotter_dirs()]


def unpacked_bytes(ctx: OperationContext, snapshotters: Sequence[str] | None = None) -> int:
    """Bytes of the committed snapshots of the namespace (as recorded at commit)."""
    return sum(_sizes(ctx, present_snapshotters(ctx) if snapshotters is None else snapshotters).values())


def _groups(ctx: OperationContext, snapshotters: Sequence[str],
            sizes: dict[tuple[str, str], int], forget: bool) -> list[_Group]:
    """Every (snapshotter, top) some image is unpacked to, least recently used first."""
    images = ctx.images.list()
    parts_of: dict[str, ImageParts] = {}
    for img in images:
        with contextlib.suppress(errors.Error):
            parts_of[img.name] = image_parts(ctx.content, img.target)
    groups: dict[tuple[str, str], _Group] = {}
    for sn_name in snapshotters:
        used = ctx.image_use.last_used(sn_name) if ctx.image_use is not None else {}
        if ctx.image_use is not None and forget:
            ctx.image_use.forget(sn_name, [n for n in used if n not in parts_of])
        for img in images:
            parts = parts_of.get(img.name)
            if parts is None or not parts.chain_ids or (sn_name, parts.chain_ids[0]) not in sizes:
                continue
            top = parts.chain_ids[-1]
            group = groups.setdefault((sn_name, top), _Group(sn_name, top, parts.chain_ids))
            group.names.append(img.name)
            group.configs.add(parts.manifest.config.digest)
            stamp = used.get(img.name) or _ns(img.updated_at or img.created_at)
            group.last_used = max(group.last_used, stamp)
    return sorted(groups.values(), key=lambda g: (g.last_used, g.snapshotter, g.top))


def _ns(when: datetime | None) -> int:
    return 0 if when is None else to_ns(when)


def _active_parents(sn: Snapshotter) -> tuple[dict[str, set[str]], set[str]]:
    """(children of each snapshot, chain IDs unpacks in progress build on)."""
    children: dict[str, set[str]] = {}
    building: set[str] = set()
    for info in sn.walk():
        if info.parent:
            children.setdefault(info.parent, set()).add(info.name)
        if info.kind is not Kind.COMMITTED and info.labels.get(_PARENT_CHAIN):
            building.add(info.labels[_PARENT_CHAIN])
    return children, building


def evict(
    ctx: OperationContext, target_bytes: int, snapshotters: Sequence[str] | None = None, *,
    keep_tops: Iterable[tuple[str, str]] = (), dry_run: bool = False,
) -> list[EvictedLayer]:
    """Remove unpacked images, least recently used first, until the namespace's committed
    snapshots take at most ``target_bytes``; returns what went (top of each chain first).

    ``keep_tops`` are ``(snapshotter, top chain ID)`` never evicted (the image just unpacked).
    ``dry_run`` removes nothing and returns what would go.
    """
    if target_bytes < 0:
        raise errors.InvalidArgument(f"eviction target {target_bytes} must be >= 0 bytes")
    names = present_snapshotters(ctx) if snapshotters is None else list(snapshotters)
    sizes = _sizes(ctx, names)
    total = sum(sizes.values())
    if total <= target_bytes:
        return []
    keep = set(keep_tops)
    groups = _groups(ctx, names, sizes, forget=not dry_run)
    state = {sn_name: _active_parents(ctx.snapshotter(sn_name)) for sn_name in names}
    leased = {sn_name: ctx.snapshotter(sn_name).leased() for sn_name in names}
    gone: set[tuple[str, str]] = set()
    out: list[EvictedLayer] = []
    pending = [g for g in groups if (g.snapshotter, g.top) not in keep]
    progress = True
    while progress and pending and total > target_bytes:
        # A group may stand under a newer one (a base image under an app): it can go once the
        # newer one went, so pass again, oldest first, until a pass removes nothing.
        progress = False
        for group in list(pending):
            if total <= target_bytes:
                break
            removed = _try_group(ctx, group, groups, sizes, gone, state, leased, dry_run)
            if removed is None:
                continue
            for chain in removed:
                size = sizes.get((group.snapshotter, chain), 0)
                total -= size
                gone.add((group.snapshotter, chain))
                out.append(EvictedLayer(group.snapshotter, chain, size, tuple(sorted(group.names)), group.last_used))
            if all((group.snapshotter, c) in gone or (group.snapshotter, c) not in sizes for c in group.chains):
                pending.remove(group)
            progress = progress or bool(removed)
    return out


def _try_group(
    ctx: OperationContext, group: _Group, groups: list[_Group], sizes: dict[tuple[str, str], int],
    gone: set[tuple[str, str]], state: dict[str, tuple[dict[str, set[str]], set[str]]],
    leased: dict[str, set[str]], dry_run: bool,
) -> list[str] | None:
    """Evict what can go of one group's chain; None when another unpack holds its lock."""
    sn = ctx.snapshotter(group.snapshotter)
    others = {g.top for g in groups if g is not group and g.snapshotter == group.snapshotter
              and (g.snapshotter, g.top) not in gone}
    children, building = state[group.snapshotter]
    lock = (contextlib.nullcontext() if dry_run
            else ctx.lock(f"unpack/{ctx.namespace}/{group.snapshotter}/{group.top}", timeout=0))
    try:
        with lock:
            return _evict_group(ctx, sn, group, sizes, gone, others | building | leased[group.snapshotter],
                                children, dry_run)
    except errors.Unavailable:
        return None  # being unpacked by another process or thread


def _evict_group(
    ctx: OperationContext, sn: Snapshotter, group: _Group, sizes: dict[tuple[str, str], int],
    gone: set[tuple[str, str]], protected: set[str], children: dict[str, set[str]], dry_run: bool,
) -> list[str]:
    removed: list[str] = []
    for chain in reversed(group.chains):
        if (sn.name, chain) in gone:
            continue  # went in an earlier pass (from the top down)
        if chain in protected or (sn.name, chain) not in sizes:
            break
        if {c for c in children.get(chain, set()) if (sn.name, c) not in gone} - set(removed):
            break  # a container, a view, another image's layer or an unpack stands on it
        if not dry_run:
            try:
                sn.remove(chain, unless_leased=True)
            except (errors.FailedPrecondition, errors.NotFound):
                break  # changed since we looked: keep it and everything below
        removed.append(chain)
    if removed and removed[0] == group.top and not dry_run:
        label = f"{_GC_REF_SNAPSHOT}{sn.name}"
        for config in group.configs:
            with contextlib.suppress(errors.NotFound):
                if ctx.content.info(config).labels.get(label) == group.top:
                    ctx.content.update(config, {}, [f"labels.{label}"])
    return removed


def enforce_budget(ctx: OperationContext, keep_tops: Iterable[tuple[str, str]] = ()) -> list[EvictedLayer]:
    """Evict down to ``ctx.snapshot_budget`` when the namespace is over it (never ``keep_tops``)."""
    if ctx.snapshot_budget is None:
        return []
    return evict(ctx, ctx.snapshot_budget, keep_tops=keep_tops)
