"""The Store facade: one root directory, one namespace view."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

from ocistore import errors
from ocistore._files import remove_tree
from ocistore._lazy import lazy_module
from ocistore.content.local import LocalStore
from ocistore.content.types import is_partial
from ocistore.layout import RootLayout
from ocistore.metadata.containers import ContainerRecords
from ocistore.metadata.content import NamespacedContent
from ocistore.metadata.db import DB
from ocistore.metadata.images import Image, ImageStore
from ocistore.metadata.imageuse import ImageUse
from ocistore.metadata.leases import Lease, LeaseManager, lease_context
from ocistore.metadata.namespaces import Namespaces, validate_namespace
from ocistore.oci.descriptor import Descriptor
from ocistore.oci.platform import PlatformArg
from ocistore.transfer.context import OperationContext

if TYPE_CHECKING:
    from ocistore import images as _images
    from ocistore import remotes, server, snapshots
    from ocistore.metadata import gc
    from ocistore.metadata.gc import GCStats
    from ocistore.snapshots import Snapshotter
    from ocistore.transfer import (
        check,
        containers,
        convert,
        evict,
        exports,
        imports,
        inspect,
        lazyfetch,
        lazyread,
        pull,
        push,
        unpack,
        usage,
        workers,
    )
    from ocistore.transfer.check import CheckReport
    from ocistore.transfer.containers import Container, Containers
    from ocistore.transfer.evict import EvictedLayer
    from ocistore.transfer.inspect import ImageInspection
    from ocistore.transfer.progress import ProgressEvent
    from ocistore.transfer.usage import DiskUsage, ImageUsage, WhatIf
else:
    # The operations load on first use: `import ocistore` and `Store()` stay cheap for the
    # many short-lived processes of test tooling and the CLI (tarfile, zstd, isal, threads).
    snapshots = lazy_module("ocistore.snapshots")
    _images = lazy_module("ocistore.images")
    gc = lazy_module("ocistore.metadata.gc")
    check = lazy_module("ocistore.transfer.check")
    containers = lazy_module("ocistore.transfer.containers")
    lazyread = lazy_module("ocistore.transfer.lazyread")
    convert = lazy_module("ocistore.transfer.convert")
    evict = lazy_module("ocistore.transfer.evict")
    exports = lazy_module("ocistore.transfer.exports")
    imports = lazy_module("ocistore.transfer.imports")
    inspect = lazy_module("ocistore.transfer.inspect")
    lazyfetch = lazy_module("ocistore.transfer.lazyfetch")
    pull = lazy_module("ocistore.transfer.pull")
    push = lazy_module("ocistore.transfer.push")
    server = lazy_module("ocistore.server")  # http.server and ssl load when a store first serves
    unpack = lazy_module("ocistore.transfer.unpack")
    usage = lazy_module("ocistore.transfer.usage")
    workers = lazy_module("ocistore.transfer.workers")

__all__ = ["Store", "validate_namespace"]

REGISTRY_OPTIONS = ("hosts_dir", "credentials", "plain_http", "skip_verify", "ca_file")


class Store:
    """An OCI image store rooted at ``root``, seen through one namespace.

    Several ``Store`` objects (and processes) may use one root at once; in a process
    they share one LMDB environment. Use as a context manager or call :meth:`close`.
    """

    def __init__(
        self, root: str | os.PathLike[str], namespace: str = "default", *, content_sharing: str = "shared",
        readonly: bool | None = None, snapshot_budget: int | None = None, dedup: bool = False,
        **registry: Any,
    ) -> None:
        """Open (creating it if needed) the store at ``root``, seen through ``namespace``.

        ``readonly=True`` opens an existing root for reading only (listing, ``du``, ``check``
        without repair, reading blobs and snapshots); anything that writes raises
        FailedPrecondition. The default (None) opens read-only by itself when the root exists
        but cannot be written (read-only media, no permission).

        ``snapshot_budget`` (bytes) bounds the committed snapshots of the namespace: an unpack
        (pull, unpack, import, a container create's lazy unpack) that leaves them above it
        evicts the least recently used images no container uses (see :meth:`evict`), never
        the image it unpacked.

        ``dedup=True`` makes unpacks (pull, unpack, import, a container create's lazy unpack)
        hard-link each applied regular file of at least 16 KiB to an identical file (same
        bytes, compared in full, and same mode, owner, times and xattrs) of a committed
        snapshot of this root instead of keeping a second copy; ``pull`` and ``unpack`` also
        take ``dedup=`` per call. See docs/guide.md, "Inline file dedup".
        """
        unknown = set(registry) - set(REGISTRY_OPTIONS)
        if unknown:
            raise TypeError(f"unknown Store option(s): {', '.join(sorted(unknown))}")
        if snapshot_budget is not None and snapshot_budget < 0:
            raise errors.InvalidArgument(f"snapshot_budget={snapshot_budget} must be >= 0 bytes (or None)")
        self.namespace = validate_namespace(namespace)
        self.snapshot_budget = snapshot_budget
        self.dedup = bool(dedup)
        self.layout = RootLayout(root)
        self.root = self.layout.root
        if readonly is None:
            readonly = self.root.is_dir() and self.layout.metadata.is_dir() and not _writable(self.root)
        self.readonly = readonly
        if readonly:
            if not self.layout.metadata.is_dir():
                raise errors.NotFound(f"store root {self.root} has no metadata database; is it an ocistore root?")
        else:
            _create_root(self.layout)
        self.registry_options: dict[str, Any] = dict(registry)
        self.db = DB.open(str(self.layout.metadata), readonly=readonly)
        self._closed = False
        self._backend = LocalStore(self.layout.content, create=not readonly)
        self.content_sharing = content_sharing
        self.content = NamespacedContent(self.db, self.namespace, self._backend, content_sharing)
        self.images = ImageStore(self.db, self.namespace, gc=self.gc)
        self._snapshotters: dict[str, Snapshotter] = {}
        self._lock = threading.Lock()
        self._ops = OperationContext(
            namespace=self.namespace, layout=self.layout, content=self.content, images=self.images,
            snapshotter=self.snapshots, leases=self.leases, image_use=ImageUse(self.db, self.namespace),
            snapshot_budget=snapshot_budget, registry=self.registry_options, dedup=self.dedup,
        )
        self._containers: Containers | None = None
        self._lazy_images: lazyread.OpenImages | None = None  # eStargz images open for read_file/open_file
        self._lazy_client: remotes.RegistryClient | None = None  # their ranged reads share its connections
        if not readonly:
            self._clean_tmp()

    def _clean_tmp(self, older_than: float = 24 * 3600) -> None:
        cutoff = time.time() - older_than
        for entry in os.scandir(self.layout.tmp):
            if entry.name == self.layout.locks.name:
                continue
            try:
                if entry.stat(follow_symlinks=False).st_mtime < cutoff:
                    remove_tree(entry.path)
            except FileNotFoundError:
                continue

    # -- lifecycle --------------------------------------------------------------------------------
    def with_namespace(self, namespace: str) -> Store:
        """A view of the same root in another namespace (close it too)."""
        return Store(self.root, namespace, content_sharing=self.content_sharing, readonly=self.readonly,
                     snapshot_budget=self.snapshot_budget, dedup=self.dedup, **self.registry_options)

    def close(self) -> None:
        """Release the snapshotters and this view's hold on the shared LMDB environment."""
        if self._closed:
            return
        self._closed = True
        if self._lazy_images is not None:
            self._lazy_images.close()
        if self._lazy_client is not None:
            self._lazy_client.close()
        for sn in self._snapshotters.values():
            sn.close()
        self.db.release()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Store({str(self.root)!r}, namespace={self.namespace!r})"

    @property
    def namespaces(self) -> Namespaces:
        """Every namespace of the root: ``list()``, ``labels(name)``, ``delete(name)`` (empty only), ..."""
        return Namespaces(self.db)

    @property
    def labels(self) -> dict[str, str]:
        """This namespace's labels (``containerd.io/namespace.shareable=true`` shares its content)."""
        return self.namespaces.labels(self.namespace)

    def set_labels(self, labels: Mapping[str, str]) -> None:
        """Replace this namespace's labels."""
        self.namespaces.set_labels(self.namespace, labels)

    # -- snapshots ------------------------------------------------------------------------------------
    def snapshots(self, name: str = "overlayfs") -> Snapshotter:
        """The snapshotter ``name`` ("overlayfs" or "native") for this namespace."""
        with self._lock:
            sn = self._snapshotters.get(name)
            if sn is None:
                sn = snapshots.open_snapshotter(name, self.db, self.namespace, self.layout)
                self._snapshotters[name] = sn
            return sn

    # -- leases and gc ----------------------------------------------------------------------------------
    @property
    def leases(self) -> LeaseManager:
        """The leases of this namespace."""
        return LeaseManager(self.db, self.namespace, gc=self.gc)

    @contextmanager
    def lease(
        self, expire: timedelta | None = timedelta(hours=24), labels: Mapping[str, str] | None = None,
        id: str | None = None,
    ) -> Iterator[Lease]:
        """Create a lease that this thread's operations join; deleted on exit."""
        with lease_context(self.leases, expire=expire, labels=labels, id=id) as lease:
            yield lease

    def gc(self) -> GCStats:
        """Collect everything unreachable from the roots (all namespaces of the root)."""
        return gc.collect(self.db, self.layout)

    def check(self, repair: bool = False) -> CheckReport:
        """Verify blobs, records and snapshot chains; ``repair`` removes orphans only."""
        return check.check(self.db, self.layout, repair=repair)

    # -- containers ---------------------------------------------------------------------------------------
    @property
    def containers(self) -> Containers:
        """The containers of this namespace (``create`` unpacks a fetched image lazily)."""
        with self._lock:
            if self._containers is None:
                self._containers = containers.Containers(self._ops, ContainerRecords(self.db, self.namespace),
                                                         open_lazy=self._lazy_image)
            return self._containers

    # -- operations (ocistore.transfer) ----------------------------------------------------------------
    def _registry(self, overrides: Mapping[str, Any]) -> dict[str, Any]:
        opts = dict(self.registry_options)
        opts.update({k: v for k, v in overrides.items() if k in REGISTRY_OPTIONS and v is not None})
        return opts

    def fetch(self, ref: str, platform: PlatformArg = None, strict: bool = True, all_platforms: bool = False,
              progress: Callable[[ProgressEvent], None] | None = None, cancel: threading.Event | None = None,
              **options: Any) -> Image:
        """Download an image's blobs and record it; nothing is unpacked.

        Setting ``cancel`` (from any thread) stops the downloads within a chunk and raises
        ``errors.Cancelled``; an interrupt (``KeyboardInterrupt``) stops them the same way.
        Downloads stopped half-way are kept as ingests and resume on the next fetch.

        ``lazy=True``: layers in eStargz (their descriptor carries
        ``containerd.io/snapshot/stargz/toc.digest``) are fetched as footer and TOC only, by
        HTTP Range, and recorded as partial blobs (``content.info(d).partial``); their chunks
        are read later on demand. Other layers are downloaded whole. A later fetch without
        ``lazy``, a pull, an unpack, an export or a push downloads partial layers whole.
        """
        with workers.cancellation(cancel), self._ops.lease():
            return pull.fetch(self._ops, ref, platform=platform, strict=strict, all_platforms=all_platforms,
                               progress=progress, registry=self._registry(options), **_rest(options))

    def pull(self, ref: str, snapshotter: str = "overlayfs", platform: PlatformArg = None,
             progress: Callable[[ProgressEvent], None] | None = None, cancel: threading.Event | None = None,
             **options: Any) -> Image:
        """Fetch and unpack (see ``unpack=`` for the size policy; ``cancel`` as for :meth:`fetch`;
        ``dedup=`` overrides the store's setting)."""
        with workers.cancellation(cancel), self._ops.lease():
            return pull.pull(self._ops, ref, snapshotter=snapshotter, platform=platform, progress=progress,
                              registry=self._registry(options), **_rest(options))

    def push(self, name: str, ref: str, platform: PlatformArg = None, all_platforms: bool = False,
             progress: Callable[[ProgressEvent], None] | None = None, **options: Any) -> Descriptor:
        """Upload the image ``name`` to the registry reference ``ref``; returns what the tag names.

        The whole image by default (FailedPrecondition if a blob it needs is not in the store),
        or only ``platform``'s manifest, config and layers (the tag then names that manifest).
        Also takes ``strict``, ``chunk_size``, ``mount_from``, ``max_concurrent`` and the
        registry options.
        """
        return push.push(self._ops, name, ref, platform=platform, all_platforms=all_platforms,
                          progress=progress, registry=self._registry(options), **_rest(options))

    def serve(self, listen: str = "127.0.0.1:5000", upstream: str | None = None, *, workers: int = 16,
              queue_size: int = 64, timeout: float = 30.0, keepalive: float = 5.0, tls_cert: str | None = None,
              tls_key: str | None = None, credentials: server.CredentialsCheck | None = None,
              default_registry: str | None = None, access_log: bool = False,
              allow_push: bool = False) -> server.Server:
        """A server of this namespace's images over the OCI distribution API (read side); not started.

        ``with store.serve("127.0.0.1:0") as srv:`` starts it (``srv.address``, ``srv.url``)
        and stops it. ``credentials`` (``{"user": "password"}`` or a check function) turns
        on read-only basic auth; ``tls_cert``/``tls_key`` on HTTPS; ``default_registry`` is
        the registry a request without ``?ns=`` means. ``upstream`` (a registry host or URL)
        pulls what the store lacks through from that registry, reached with the store's
        registry options. ``allow_push`` also accepts pushes into this namespace (from
        whoever passes ``credentials``). Keep the store open while serving.
        """
        return server.Server(self._ops, listen, upstream, workers=workers, queue_size=queue_size,
                             timeout=timeout, keepalive=keepalive, tls_cert=tls_cert, tls_key=tls_key,
                             credentials=credentials, default_registry=default_registry, access_log=access_log,
                             registry=self.registry_options, allow_push=allow_push)

    def unpack(self, name: str, snapshotter: str = "overlayfs", snapshot_labels: bool = True,
               progress: Callable[[ProgressEvent], None] | None = None, platform: PlatformArg = None,
               remove: bool = False, cancel: threading.Event | None = None, dedup: bool | None = None) -> str:
        """Unpack a fetched image into ``snapshotter``; returns the top chain ID.

        ``dedup`` overrides the store's ``dedup`` setting for this unpack.

        ``remove=True`` does the opposite: it removes the snapshots only this image uses and
        keeps its blobs (see :meth:`remove_unpacked`), and still returns the top chain ID.
        """
        if remove:
            self.remove_unpacked(name, snapshotter=snapshotter, platform=platform)
            return _images.image_parts(self.content, self.images.find(name).target, platform).chain_id
        with workers.cancellation(cancel), self._ops.lease():
            return unpack.unpack_image(self._ops, name, snapshotter=snapshotter, snapshot_labels=snapshot_labels,
                                progress=progress, platform=platform, dedup=dedup)

    def remove_unpacked(self, name: str, snapshotter: str = "overlayfs", platform: PlatformArg = None) -> list[str]:
        """Remove the snapshots of ``name`` that nothing else uses, keeping its blobs.

        The next ``containers.create`` unpacks it again lazily. Returns the chain IDs removed.
        """
        return evict.remove_unpacked(self._ops, name, snapshotter=snapshotter, platform=platform)

    def evict(self, target_bytes: int | None = None, dry_run: bool = False) -> list[str]:
        """Remove the unpacked snapshots of images no container uses, least recently used
        first, until the namespace's committed snapshots take at most ``target_bytes``
        (default: the store's ``snapshot_budget``); returns the chain IDs removed.

        Blobs and image records stay: the next ``containers.create`` unpacks again, only the
        layers that went. ``dry_run`` removes nothing and returns what would go.
        """
        return [e.chain_id for e in self.evict_layers(target_bytes, dry_run=dry_run)]

    def evict_layers(self, target_bytes: int | None = None, dry_run: bool = False) -> list[EvictedLayer]:
        """:meth:`evict` with the details: snapshotter, chain ID, size and images of each layer."""
        target = self.snapshot_budget if target_bytes is None else target_bytes
        if target is None:
            raise errors.InvalidArgument(
                "evict: no target_bytes given and the store has no snapshot_budget; pass target_bytes=N"
            )
        if not dry_run:
            self.db.check_writable("evicting snapshots")
        return evict.evict(self._ops, target, dry_run=dry_run)

    def unpacked_bytes(self) -> int:
        """Bytes of the namespace's committed snapshots (what ``snapshot_budget`` bounds)."""
        return evict.unpacked_bytes(self._ops)

    def is_unpacked(self, name: str, snapshotter: str = "overlayfs", platform: PlatformArg = None) -> bool:
        """Whether the image's top chain ID is committed in ``snapshotter``."""
        return unpack.is_unpacked(self._ops, name, snapshotter=snapshotter, platform=platform)

    def inspect(self, name: str, platform: PlatformArg = None) -> ImageInspection:
        """Manifest, config, diff and chain IDs, sizes, unpack state and blob presence of an image."""
        return inspect.inspect_image(self._ops, name, platform)

    def image_size(self, name: str, platform: PlatformArg = None) -> int:
        """Compressed bytes of every blob reachable for the selected platform (index included)."""
        return _images.image_size(self.content, self.images.get(name).target, platform=platform)

    def import_archive(self, path: str | os.PathLike[str], fetch_only: bool = False, platform: PlatformArg = None,
                       snapshotter: str = "overlayfs", all_platforms: bool = False,
                       progress: Callable[[ProgressEvent], None] | None = None,
                       cancel: threading.Event | None = None) -> list[Image]:
        """Import an OCI layout (dir or tar) or a docker-archive; unpack unless ``fetch_only``."""
        with workers.cancellation(cancel), self._ops.lease():
            return imports.import_archive(self._ops, path, fetch_only=fetch_only, platform=platform,
                                  snapshotter=snapshotter, all_platforms=all_platforms, progress=progress)

    def export_archive(self, path: str | os.PathLike[str], names: list[str] | str, platform: PlatformArg = None,
                       all_platforms: bool = False, format: str = "oci") -> None:
        """Write images as an OCI layout tar/dir or a docker-archive.

        Layers fetched lazily (partial) are downloaded whole first (verified against their
        digests) from the registry they came from; when it cannot be reached the export fails
        and writes nothing.
        """
        names = [names] if isinstance(names, str) else list(names)
        with self._ops.lease():
            layers = exports.selected_layers(self.content, self.images, names, platform=platform,
                                             all_platforms=all_platforms,
                                             absent_ok=lambda d: is_partial(self.content, d))
            lazyfetch.complete_layers(self._ops, layers)  # only the platforms exported
        exports.export_archive(self.content, self.images, path, names,
                               platform=platform, all_platforms=all_platforms, format=format)

    def convert(self, name: str, to: str = "estargz", prioritized_files: Sequence[str] | None = None, *,
                dst: str | None = None, chunk_size: int = 4 << 20,
                compression_level: int = 9, platform: PlatformArg = None, oci: bool = True) -> Image:
        """Rewrite an image's layers as eStargz into a new image ``dst`` (default: the source
        name with ``-esgz`` appended to its tag); the source image is kept."""
        with self._ops.lease():
            return convert.convert_image(
                self._ops, name, dst or convert.default_convert_name(self.images.find(name).name, to),
                to=to, prioritized_files=prioritized_files, chunk_size=chunk_size,
                compression_level=compression_level, platform=platform, oci=oci)

    def remote_source(self, image: str, layer: Descriptor, **options: Any) -> lazyfetch.RemoteLayerSource:
        """The chunk source (``ocistore.estargz.source.LayerSource``) of a layer of ``image`` that
        was fetched lazily: verified chunks by ranged reads from its registry, cached in the store.
        Registry options override the store's. Close it when done."""
        return lazyfetch.remote_source(self._ops, image, layer, registry=self._registry(options))

    def _lazy_image(self, image_or_container: str | Container, platform: PlatformArg) -> lazyread.LazyImage:
        if isinstance(image_or_container, containers.Container):
            name = image_or_container.image
        else:
            name = image_or_container
            try:
                self.images.find(name)
            except errors.NotFound:
                try:
                    name = self.containers.get(name).image
                except (errors.NotFound, errors.InvalidArgument):
                    raise errors.NotFound(
                        f"no image or container {image_or_container!r} in namespace {self.namespace!r}"
                    ) from None
        with self._lock:
            if self._lazy_images is None:
                self._lazy_images = lazyread.OpenImages()
        return self._lazy_images.get(self._ops, name, platform, self._shared_lazy_client)

    def _shared_lazy_client(self) -> remotes.RegistryClient:
        """The registry client the ranged reads of lazily fetched layers share, made on the first
        one (reads of complete local eStargz blobs never load the HTTP stack)."""
        with self._lock:
            if self._lazy_client is None:
                self._lazy_client = lazyfetch.registry_client(self._ops)
            return self._lazy_client

    def read_file(self, image_or_container: str | Container, path: str, platform: PlatformArg = None) -> bytes:
        """The bytes of the file at ``path`` in an eStargz image (or a container's image), read
        from the chunks of its layers without unpacking; see docs/guide.md "Lazy pulling"."""
        return self._lazy_image(image_or_container, platform).read(path)

    def open_file(self, image_or_container: str | Container, path: str, platform: PlatformArg = None) -> BinaryIO:
        """A seekable binary reader of ``path`` in an eStargz image that reads only the chunks it
        touches (close it when done); errors as :meth:`read_file`."""
        return self._lazy_image(image_or_container, platform).open(path)

    def prefetch(self, image_or_container: str | Container, files: lazyread.PrefetchFiles,
                 platform: PlatformArg = None, **options: Any) -> lazyread.PrefetchResult:
        """Make the chunks of ``files`` of an eStargz image local ahead of reads: paths (whole
        files), or paths mapped to the byte ranges of them a start reads (``None``: whole),
        such as a profile recorded by a lazy container (``Container.read_profile``). A lazily
        fetched layer's missing chunks are fetched verified, several ranges per request and
        several requests at once, into the store's chunk cache, where ``read_file``,
        ``open_file`` and lazy containers find them. Paths the image lacks are skipped.
        Registry options (as for :meth:`fetch`) override the store's for this call.
        """
        if not options:
            return self._lazy_image(image_or_container, platform).prefetch(files)
        name = self._lazy_image(image_or_container, platform).name
        with lazyfetch.registry_client(self._ops, self._registry(options)) as client:
            image = lazyread.lazy_image(self._ops, name, platform, client=client)
            try:
                return image.prefetch(files)
            finally:
                image.close()

    def disk_usage(self) -> DiskUsage:
        """Bytes allocated on disk by content, ingests, snapshots and metadata."""
        return usage.disk_usage(self.layout)

    def dedup_saved(self) -> int:
        """Bytes the snapshots of the root do not allocate because inline dedup (``dedup=True``)
        made their files hard links to identical files of other snapshots."""
        return sum(usage.dedup_savings(self.layout).values())

    def image_usage(self, snapshotters: list[str] | None = None) -> list[ImageUsage]:
        """Per image: compressed bytes, unpacked bytes per snapshotter, and how much is its own."""
        return usage.image_usage(self._ops, snapshotters or sorted(snapshots.SNAPSHOTTERS))

    def what_if(self, snapshotter: str = "overlayfs") -> WhatIf:
        """What the namespace's images would take fetched-only, pulled, pulled with discard, and
        what unpacking the fetched-only ones would add; estimated without unpacking anything."""
        return usage.what_if(self._ops, self.layout, snapshotter)


def _writable(path: Path) -> bool:
    """Whether this process may create files in ``path`` (False on read-only mounts, even for root)."""
    return os.access(path, os.W_OK | os.X_OK)


def _create_root(layout: RootLayout) -> None:
    """Create the root's skeleton; an unusable root is a clear error, not an OSError."""
    try:
        layout.create()
    except (FileExistsError, NotADirectoryError):
        blocker = next((p for p in (layout.root, *layout.root.parents) if p.exists()), layout.root)
        raise errors.InvalidArgument(
            f"store root {layout.root}: {blocker} is not a directory; "
            "pass a directory (it is created if missing)"
        ) from None
    except PermissionError as exc:
        raise errors.FailedPrecondition(
            f"store root {layout.root}: cannot create {exc.filename or layout.root} (permission denied); "
            "choose a directory you can write or run with the needed rights"
        ) from None


def _rest(options: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in options.items() if k not in REGISTRY_OPTIONS}
