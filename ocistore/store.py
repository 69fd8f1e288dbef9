"""The Store facade: one root directory, one namespace view."""

from __future__ import annotations

import os
import re
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from ocistore import errors
from ocistore._files import remove_tree
from ocistore._lazy import lazy_module
from ocistore.content.local import LocalStore
from ocistore.images.image import image_size
from ocistore.layout import RootLayout
from ocistore.metadata.containers import ContainerRecords
from ocistore.metadata.content import NamespacedContent
from ocistore.metadata.db import DB
from ocistore.metadata.gc import GCStats, collect
from ocistore.metadata.images import Image, ImageStore
from ocistore.metadata.labels import validate_labels
from ocistore.metadata.leases import Lease, LeaseManager, lease_context
from ocistore.oci.descriptor import Descriptor
from ocistore.oci.platform import PlatformArg
from ocistore.snapshots import Snapshotter, open_snapshotter
from ocistore.transfer import pull as _pull
from ocistore.transfer import push as _push
from ocistore.transfer.check import CheckReport, check
from ocistore.transfer.containers import Containers
from ocistore.transfer.context import OperationContext
from ocistore.transfer.exports import export_archive
from ocistore.transfer.imports import import_archive
from ocistore.transfer.progress import ProgressEvent
from ocistore.transfer.unpack import is_unpacked, unpack_image
from ocistore.transfer.usage import DiskUsage, disk_usage

if TYPE_CHECKING:
    from ocistore import server
else:
    server = lazy_module("ocistore.server")  # http.server and ssl load when a store first serves

__all__ = ["Store"]

_NS_RE = re.compile(r"[A-Za-z0-9]+(?:[._-][A-Za-z0-9]+)*")
REGISTRY_OPTIONS = ("hosts_dir", "credentials", "plain_http", "skip_verify", "ca_file")


def validate_namespace(ns: str) -> str:
    """``ns`` if it is a valid namespace name (containerd's rules), else InvalidArgument."""
    if not isinstance(ns, str) or not ns or len(ns) > 76 or not _NS_RE.fullmatch(ns) or ns == "version":
        raise errors.InvalidArgument(
            f"invalid namespace {ns!r}: use letters, digits and single '.', '_' or '-' between them "
            "(at most 76 characters)"
        )
    return ns


class Store:
    """An OCI image store rooted at ``root``, seen through one namespace.

    Several ``Store`` objects (and processes) may use one root at once; in a process
    they share one LMDB environment. Use as a context manager or call :meth:`close`.
    """

    def __init__(
        self, root: str | os.PathLike[str], namespace: str = "default", *, content_sharing: str = "shared",
        **registry: Any,
    ) -> None:
        unknown = set(registry) - set(REGISTRY_OPTIONS)
        if unknown:
            raise TypeError(f"unknown Store option(s): {', '.join(sorted(unknown))}")
        self.namespace = validate_namespace(namespace)
        self.layout = RootLayout(root)
        self.root = self.layout.root
        self.layout.create()
        self.registry_options: dict[str, Any] = dict(registry)
        self.db = DB.open(str(self.layout.metadata))
        self._closed = False
        self._backend = LocalStore(self.layout.content)
        self.content_sharing = content_sharing
        self.content = NamespacedContent(self.db, self.namespace, self._backend, content_sharing)
        self.images = ImageStore(self.db, self.namespace, gc=self.gc)
        self._snapshotters: dict[str, Snapshotter] = {}
        self._lock = threading.Lock()
        self._ops = OperationContext(
            namespace=self.namespace, layout=self.layout, content=self.content, images=self.images,
            snapshotter=self.snapshots, leases=self.leases,
        )
        self._containers = Containers(self._ops, ContainerRecords(self.db, self.namespace))
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
        return Store(self.root, namespace, content_sharing=self.content_sharing, **self.registry_options)

    def close(self) -> None:
        """Release the snapshotters and this view's hold on the shared LMDB environment."""
        if self._closed:
            return
        self._closed = True
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
    def labels(self) -> dict[str, str]:
        """This namespace's labels (``containerd.io/namespace.shareable=true`` shares its content)."""
        return self.db.namespace_labels(self.namespace)

    def set_labels(self, labels: Mapping[str, str]) -> None:
        """Replace this namespace's labels."""
        self.db.set_namespace_labels(self.namespace, validate_labels(labels, f"namespace {self.namespace}: "))

    # -- snapshots ------------------------------------------------------------------------------------
    def snapshots(self, name: str = "overlayfs") -> Snapshotter:
        """The snapshotter ``name`` ("overlayfs" or "native") for this namespace."""
        with self._lock:
            sn = self._snapshotters.get(name)
            if sn is None:
                sn = open_snapshotter(name, self.db, self.namespace, self.layout)
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
        return collect(self.db, self.layout)

    def check(self, repair: bool = False) -> CheckReport:
        """Verify blobs, records and snapshot chains; ``repair`` removes orphans only."""
        return check(self.db, self.layout, repair=repair)

    # -- containers ---------------------------------------------------------------------------------------
    @property
    def containers(self) -> Containers:
        """The containers of this namespace (``create`` unpacks a fetched image lazily)."""
        return self._containers

    # -- operations (ocistore.transfer) ----------------------------------------------------------------
    def _registry(self, overrides: Mapping[str, Any]) -> dict[str, Any]:
        opts = dict(self.registry_options)
        opts.update({k: v for k, v in overrides.items() if k in REGISTRY_OPTIONS and v is not None})
        return opts

    def fetch(self, ref: str, platform: PlatformArg = None, strict: bool = True, all_platforms: bool = False,
              progress: Callable[[ProgressEvent], None] | None = None, **options: Any) -> Image:
        """Download an image's blobs and record it; nothing is unpacked."""
        with self._ops.lease():
            return _pull.fetch(self._ops, ref, platform=platform, strict=strict, all_platforms=all_platforms,
                               progress=progress, registry=self._registry(options), **_rest(options))

    def pull(self, ref: str, snapshotter: str = "overlayfs", platform: PlatformArg = None,
             progress: Callable[[ProgressEvent], None] | None = None, **options: Any) -> Image:
        """Fetch and unpack (see ``unpack=`` for the size policy)."""
        with self._ops.lease():
            return _pull.pull(self._ops, ref, snapshotter=snapshotter, platform=platform, progress=progress,
                              registry=self._registry(options), **_rest(options))

    def push(self, name: str, ref: str, platform: PlatformArg = None, all_platforms: bool = False,
             progress: Callable[[ProgressEvent], None] | None = None, **options: Any) -> Descriptor:
        """Upload the image ``name`` to the registry reference ``ref``; returns what the tag names.

        The whole image by default (FailedPrecondition if a blob it needs is not in the store),
        or only ``platform``'s manifest, config and layers (the tag then names that manifest).
        Also takes ``strict``, ``chunk_size``, ``mount_from``, ``max_concurrent`` and the
        registry options.
        """
        return _push.push(self._ops, name, ref, platform=platform, all_platforms=all_platforms,
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
               progress: Callable[[ProgressEvent], None] | None = None, platform: PlatformArg = None) -> str:
        """Unpack a fetched image into ``snapshotter``; returns the top chain ID."""
        with self._ops.lease():
            return unpack_image(self._ops, name, snapshotter=snapshotter, snapshot_labels=snapshot_labels,
                                progress=progress, platform=platform)

    def is_unpacked(self, name: str, snapshotter: str = "overlayfs", platform: PlatformArg = None) -> bool:
        """Whether the image's top chain ID is committed in ``snapshotter``."""
        return is_unpacked(self._ops, name, snapshotter=snapshotter, platform=platform)

    def image_size(self, name: str, platform: PlatformArg = None) -> int:
        """Compressed bytes of every blob reachable for the selected platform (index included)."""
        return image_size(self.content, self.images.get(name).target, platform=platform)

    def import_archive(self, path: str | os.PathLike[str], fetch_only: bool = False, platform: PlatformArg = None,
                       snapshotter: str = "overlayfs", all_platforms: bool = False,
                       progress: Callable[[ProgressEvent], None] | None = None) -> list[Image]:
        """Import an OCI layout (dir or tar) or a docker-archive; unpack unless ``fetch_only``."""
        with self._ops.lease():
            return import_archive(self._ops, path, fetch_only=fetch_only, platform=platform,
                                  snapshotter=snapshotter, all_platforms=all_platforms, progress=progress)

    def export_archive(self, path: str | os.PathLike[str], names: list[str] | str, platform: PlatformArg = None,
                       all_platforms: bool = False, format: str = "oci") -> None:
        """Write images as an OCI layout tar/dir or a docker-archive."""
        export_archive(self.content, self.images, path, [names] if isinstance(names, str) else list(names),
                       platform=platform, all_platforms=all_platforms, format=format)

    def disk_usage(self) -> DiskUsage:
        """Bytes allocated on disk by content, ingests, snapshots and metadata."""
        return disk_usage(self.layout)


def _rest(options: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in options.items() if k not in REGISTRY_OPTIONS}
