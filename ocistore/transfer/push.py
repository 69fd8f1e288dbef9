"""Pushing an image from the content store to a registry (containerd ``remotes.PushContent``).

What is pushed:

* by default, the image as it is recorded: its target (an index or a manifest) and every
  blob below it. An index whose platforms are not all in the store cannot be pushed as it
  is (the registry would hold an index naming manifests it does not have, and CNCF
  distribution refuses such an index): that is a ``FailedPrecondition`` naming the missing
  manifest, the platforms present and what to do;
* with ``all_platforms=True``, the same, said explicitly (the whole index or nothing);
* with ``platform=``, only that platform's manifest, its config and its layers; the
  destination tag then names that **manifest** (its digest is the one the index lists for
  the platform), not the index. This is what ``crane copy --platform`` does, and the only
  honest way to publish one platform of a partially fetched index.

A manifest whose config or layers are missing (``pull(discard_layers=True)``, an interrupted
fetch) is a ``FailedPrecondition`` naming the blob; non-distributable (foreign) layers are
skipped, as containerd skips them. Configs and layers are uploaded first (in parallel, each
skipped when the registry already has it or can mount it from a repository named by the
blob's ``containerd.io/distribution.source.<host>`` label), then the manifests, children
before parents, the tagged one last. Every byte sent is read from a committed blob and
hashed on the way; manifests are read whole and verified before they are sent.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, BinaryIO, cast

import attrs

from ocistore import errors
from ocistore._lazy import lazy_module
from ocistore.content.types import ContentStore, Provider
from ocistore.images.graph import children, walk
from ocistore.images.image import image_parts, image_platforms
from ocistore.oci import mediatypes as mt
from ocistore.oci.descriptor import Descriptor
from ocistore.oci.mediatypes import kind_of
from ocistore.oci.platform import PlatformArg
from ocistore.oci.reference import Reference, parse_reference
from ocistore.transfer.context import OperationContext
from ocistore.transfer.progress import Progress, ProgressEvent, ref_key

if TYPE_CHECKING:
    from ocistore import remotes
    from ocistore.transfer import lazyfetch
else:
    remotes = lazy_module("ocistore.remotes")  # urllib3 and ssl load on the first registry call
    lazyfetch = lazy_module("ocistore.transfer.lazyfetch")

__all__ = ["DISTRIBUTION_SOURCE", "PushPlan", "plan_push", "push"]

DISTRIBUTION_SOURCE = "containerd.io/distribution.source."
_PROGRESS_EVERY = 0.25  # seconds between two "uploading" events of one blob


@attrs.frozen
class PushPlan:
    """What a push sends: the blobs first, then the manifests, children before parents.

    ``root`` is the manifest or index the destination tag will name (the last entry of
    ``manifests``).
    """

    root: Descriptor
    blobs: list[Descriptor]
    manifests: list[Descriptor]

    @property
    def size(self) -> int:
        """Declared bytes of everything in the plan."""
        return sum(d.size for d in self.blobs) + sum(d.size for d in self.manifests)


def _missing(name: str, parent: Descriptor, child: Descriptor, present: Sequence[str]) -> errors.FailedPrecondition:
    if mt.is_index(parent.media_type):
        what = f"the manifest {child.digest}"
        if child.platform is not None:
            what += f" for {child.platform}"
        have = ", ".join(present) or "no platform"
        hint = f"platform={present[0]!r} (--platform {present[0]})" if present else "platform=..."
        return errors.FailedPrecondition(
            f"image {name}: {what} listed by index {parent.digest} is not in the store (it holds {have}); "
            f"push one platform with {hint}, or fetch the image with all_platforms=True first"
        )
    return errors.FailedPrecondition(
        f"image {name}: {kind_of(child.media_type)} {child.digest} of manifest {parent.digest} is not in the "
        "store (its layers were discarded after unpack, or a fetch did not finish); fetch the image again, "
        "then push it"
    )


def plan_push(
    content: Provider, name: str, target: Descriptor, *, platform: PlatformArg = None,
    all_platforms: bool = False, strict: bool = True,
) -> PushPlan:
    """The blobs and manifests a push of the image ``name`` (recorded as ``target``) sends.

    Raises FailedPrecondition for a blob the push needs and the store lacks, NotFound when
    ``platform`` matches no manifest present, InvalidArgument for ``platform`` together with
    ``all_platforms``.
    """
    if platform is not None and all_platforms:
        raise errors.InvalidArgument("push: give platform= or all_platforms=True, not both")
    if not content.exists(target.digest):
        raise errors.FailedPrecondition(
            f"image {name}: its {kind_of(target.media_type)} {target.digest} is not in the store; fetch it again"
        )
    root = Descriptor(target.media_type, target.digest, target.size)
    if platform is not None:
        try:
            parts = image_parts(content, target, platform, strict=strict)
        except errors.NotFound as exc:
            raise errors.NotFound(f"image {name}: {exc}") from None
        root = Descriptor(parts.manifest_desc.media_type, parts.manifest_desc.digest, parts.manifest_desc.size)
    present = image_platforms(content, target)
    kept: dict[str, list[Descriptor]] = {}
    nodes: dict[str, Descriptor] = {}

    def handle(desc: Descriptor) -> list[Descriptor]:
        nodes[desc.digest] = desc
        out: list[Descriptor] = []
        for child in children(content, desc):
            if content.exists(child.digest):
                out.append(child)
            elif not mt.is_non_distributable(child.media_type):
                raise _missing(name, desc, child, present)
        kept[desc.digest] = out
        return out

    walk(handle, root)
    manifests = [nodes[d] for d in _children_first(root.digest, kept)
                 if mt.is_manifest(nodes[d].media_type) or mt.is_index(nodes[d].media_type)]
    blobs = [d for d in nodes.values() if not (mt.is_manifest(d.media_type) or mt.is_index(d.media_type))]
    return PushPlan(root=root, blobs=blobs, manifests=manifests)


def _children_first(root: str, kept: Mapping[str, list[Descriptor]]) -> list[str]:
    """The digests of a walked graph in post-order: every child before its parents."""
    out: list[str] = []
    done: set[str] = set()
    stack: list[tuple[str, bool]] = [(root, False)]
    while stack:
        digest, expanded = stack.pop()
        if digest in done:
            continue
        if expanded:
            done.add(digest)
            out.append(digest)
            continue
        stack.append((digest, True))
        stack.extend((c.digest, False) for c in reversed(kept.get(digest, [])) if c.digest not in done)
    return out


class _ProgressReader:
    """A blob reader that reports ``uploading`` events as the client reads it."""

    def __init__(self, source: BinaryIO, desc: Descriptor, progress: Progress) -> None:
        self._source = source
        self._desc = desc
        self._progress = progress
        self._key = ref_key(kind_of(desc.media_type), desc.digest)
        self.sent = 0
        self._last = 0.0

    def read(self, amount: int = -1) -> bytes:
        data = self._source.read(amount)
        if data:
            now = time.monotonic()
            first = self.sent == 0
            self.sent += len(data)
            if self._progress and (first or now - self._last >= _PROGRESS_EVERY):
                self._last = now
                self._progress.emit(self._key, self._desc.digest, kind_of(self._desc.media_type), "uploading",
                                    self.sent, self._desc.size)
        return data


def _with_sources(content: ContentStore, desc: Descriptor) -> Descriptor:
    """``desc`` annotated with the blob's distribution-source labels (cross-repository mounts)."""
    try:
        labels = content.info(desc.digest).labels
    except errors.NotFound:
        return desc
    sources = {k: v for k, v in labels.items() if k.startswith(DISTRIBUTION_SOURCE)}
    if not sources:
        return desc
    return attrs.evolve(desc, annotations={**desc.annotations, **sources})


def _record_source(content: ContentStore, desc: Descriptor, r: Reference, lock: threading.Lock) -> None:
    """Add ``r``'s repository to the blob's ``containerd.io/distribution.source.<host>`` label."""
    label = DISTRIBUTION_SOURCE + r.domain
    with lock, contextlib.suppress(errors.NotFound, errors.InvalidArgument):
        current = content.info(desc.digest).labels.get(label, "")
        repos = [s for s in current.split(",") if s]
        if r.repository in repos:
            return
        value = ",".join([*repos, r.repository])
        if len(label) + len(value) > 4096:  # containerd's label size limit: keep what is there
            return
        content.update(desc.digest, {label: value}, [f"labels.{label}"])


def _destination(ref: str, root: Descriptor) -> Reference:
    r = parse_reference(ref)
    if r.digest is not None and r.digest != root.digest:
        raise errors.InvalidArgument(
            f"push to {ref}: the reference names {r.digest}, but the image to push is {root.digest}"
        )
    return r


def push(
    ctx: OperationContext, name: str, ref: str, *, platform: PlatformArg = None, all_platforms: bool = False,
    strict: bool = True, progress: Callable[[ProgressEvent], None] | None = None,
    registry: Mapping[str, Any] | None = None, chunk_size: int | None = None,
    mount_from: Sequence[str] = (), max_concurrent: int | None = None,
) -> Descriptor:
    """Upload the image ``name`` to ``ref``; returns the descriptor the tag names.

    See the module docstring for what is pushed. Layers fetched lazily (partial) are
    downloaded whole first, from where they were fetched. ``chunk_size`` uploads blobs in ``PATCH``
    chunks of that many bytes (default: one streamed ``PUT``); ``mount_from`` names
    repositories of the destination registry to try cross-repository mounts from;
    ``max_concurrent`` bounds the parallel blob uploads (default: the registry options'
    ``max_concurrent_downloads``).
    """
    image = ctx.images.find(name)
    with ctx.lease():  # lazily fetched layers: downloaded whole (verified) before they are sent
        lazyfetch.complete_image(ctx, image.name, progress)
    plan = plan_push(ctx.content, image.name, image.target, platform=platform, all_platforms=all_platforms,
                     strict=strict)
    dest = _destination(ref, plan.root)
    prog = Progress(progress)
    client = remotes.RegistryClient(remotes.RegistryOptions(**(registry or {})))
    label_lock = threading.Lock()
    try:
        for d in plan.blobs:
            prog.emit(ref_key(kind_of(d.media_type), d.digest), d.digest, kind_of(d.media_type), "waiting", 0, d.size)

        def upload(desc: Descriptor) -> None:
            kind = kind_of(desc.media_type)
            with ctx.content.open(desc.digest) as f:
                reader = _ProgressReader(f, desc, prog)
                client.push_blob(str(dest), _with_sources(ctx.content, desc), cast(BinaryIO, reader),
                                 mount_from=tuple(mount_from), chunk_size=chunk_size)
            status = "complete" if reader.sent else "exists"
            prog.emit(ref_key(kind, desc.digest), desc.digest, kind, status, desc.size, desc.size)
            _record_source(ctx.content, desc, dest, label_lock)

        workers = max_concurrent or client.options.max_concurrent_downloads
        if plan.blobs:
            with ThreadPoolExecutor(max_workers=max(1, min(workers, len(plan.blobs)))) as pool:
                for future in [pool.submit(upload, d) for d in plan.blobs]:
                    future.result()
        for desc in plan.manifests:
            kind = kind_of(desc.media_type)
            target = str(dest) if desc.digest == plan.root.digest else f"{dest.name}@{desc.digest}"
            prog.emit(ref_key(kind, desc.digest), desc.digest, kind, "uploading", 0, desc.size)
            client.push_manifest(target, desc, ctx.content.read(desc.digest))
            prog.emit(ref_key(kind, desc.digest), desc.digest, kind, "complete", desc.size, desc.size)
    finally:
        client.close()
    return plan.root
