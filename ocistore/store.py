"""The Store facade: one root directory, one namespace view."""

from __future__ import annotations

import os
import re
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ocistore import errors
from ocistore._files import remove_tree
from ocistore.content.local import LocalStore
from ocistore.metadata.containers import ContainerRecords
from ocistore.metadata.content import NamespacedContent
from ocistore.metadata.db import DB
from ocistore.metadata.images import Image, ImageStore

if TYPE_CHECKING:
    from ocistore.metadata.check import CheckReport
    from ocistore.metadata.gc import GCStats
    from ocistore.metadata.leases import Lease, LeaseManager
    from ocistore.snapshots import Snapshotter
    from ocistore.transfer.containers import Containers

__all__ = ["Store"]

_NS_RE = re.compile(r"[A-Za-z0-9]+(?:[._-][A-Za-z0-9]+)*")
REGISTRY_OPTIONS = ("hosts_dir", "credentials", "plain_http", "skip_verify", "ca_file")


def validate_namespace(ns: str) -> str:
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
        self.root = Path(root).absolute()
        self.root.mkdir(parents=True, exist_ok=True)
        (self.root / "tmp").mkdir(exist_ok=True)
        self.registry_options: dict[str, Any] = dict(registry)
        self.db = DB.open(str(self.root / "metadata.lmdb"))
        self._closed = False
        self._shared_root_objects()
        self.content_sharing = content_sharing
        self.content = NamespacedContent(self.db, self.namespace, self._backend, content_sharing)
        self.images = ImageStore(self.db, self.namespace, gc=self.gc)
        self._container_records = ContainerRecords(self.db, self.namespace)
        self._snapshotters: dict[str, Snapshotter] = {}
        self._lock = threading.Lock()
        self._clean_tmp()

    def _shared_root_objects(self) -> None:
        self._backend = LocalStore(self.root / "content")

    def _clean_tmp(self, older_than: float = 24 * 3600) -> None:
        cutoff = time.time() - older_than
        for entry in os.scandir(self.root / "tmp"):
            if entry.name == "locks":
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
        from ocistore.metadata.labels import validate_labels

        self.db.set_namespace_labels(self.namespace, validate_labels(labels, f"namespace {self.namespace}: "))

    # -- snapshots ------------------------------------------------------------------------------------
    def snapshots(self, name: str = "overlayfs") -> Snapshotter:
        """The snapshotter ``name`` ("overlayfs" or "native") for this namespace."""
        from ocistore.snapshots import open_snapshotter

        with self._lock:
            sn = self._snapshotters.get(name)
            if sn is None:
                sn = open_snapshotter(name, self.db, self.namespace, self.root)
                self._snapshotters[name] = sn
            return sn

    # -- leases and gc ----------------------------------------------------------------------------------
    @property
    def leases(self) -> LeaseManager:
        from ocistore.metadata.leases import LeaseManager

        return LeaseManager(self.db, self.namespace, gc=self.gc)

    @contextmanager
    def lease(
        self, expire: timedelta | None = timedelta(hours=24), labels: Mapping[str, str] | None = None,
        id: str | None = None,
    ) -> Iterator[Lease]:
        """Create a lease that this thread's operations join; deleted on exit."""
        from ocistore.metadata.leases import lease_context

        with lease_context(self.leases, expire=expire, labels=labels, id=id) as lease:
            yield lease

    @contextmanager
    def _operation_lease(self) -> Iterator[None]:
        """Run an operation under the caller's lease, or a temporary 24 h one."""
        if self.db.current_lease(self.namespace) is not None:
            yield
            return
        with self.lease(expire=timedelta(hours=24)):
            yield

    def gc(self) -> GCStats:
        """Collect everything unreachable from the roots (all namespaces of the root)."""
        from ocistore.metadata.gc import collect

        return collect(self.db, self.root)

    def check(self, repair: bool = False) -> CheckReport:
        """Verify blobs, records and snapshot chains; ``repair`` removes orphans only."""
        from ocistore.metadata.check import check

        return check(self.db, self.root, repair=repair)

    # -- containers ---------------------------------------------------------------------------------------
    @property
    def containers(self) -> Containers:
        from ocistore.transfer.containers import Containers

        return Containers(self)

    # -- operations (ocistore.transfer) ----------------------------------------------------------------
    def _registry(self, overrides: Mapping[str, Any]) -> dict[str, Any]:
        opts = dict(self.registry_options)
        opts.update({k: v for k, v in overrides.items() if k in REGISTRY_OPTIONS and v is not None})
        return opts

    def fetch(self, ref: str, platform: Any = None, strict: bool = True, all_platforms: bool = False,
              progress: Callable[[Any], None] | None = None, **options: Any) -> Image:
        """Download an image's blobs and record it; nothing is unpacked."""
        from ocistore.transfer.pull import fetch

        with self._operation_lease():
            return fetch(self, ref, platform=platform, strict=strict, all_platforms=all_platforms,
                         progress=progress, registry=self._registry(options), **_rest(options))

    def pull(self, ref: str, snapshotter: str = "overlayfs", platform: Any = None,
             progress: Callable[[Any], None] | None = None, **options: Any) -> Image:
        """Fetch and unpack (see ``unpack=`` for the size policy)."""
        from ocistore.transfer.pull import pull

        with self._operation_lease():
            return pull(self, ref, snapshotter=snapshotter, platform=platform, progress=progress,
                        registry=self._registry(options), **_rest(options))

    def unpack(self, name: str, snapshotter: str = "overlayfs", snapshot_labels: bool = True,
               progress: Callable[[Any], None] | None = None, platform: Any = None) -> str:
        """Unpack a fetched image into ``snapshotter``; returns the top chain ID."""
        from ocistore.transfer.unpack import unpack_image

        with self._operation_lease():
            return unpack_image(self, name, snapshotter=snapshotter, snapshot_labels=snapshot_labels,
                                progress=progress, platform=platform)

    def is_unpacked(self, name: str, snapshotter: str = "overlayfs", platform: Any = None) -> bool:
        from ocistore.transfer.unpack import is_unpacked

        return is_unpacked(self, name, snapshotter=snapshotter, platform=platform)

    def image_size(self, name: str, platform: Any = None) -> int:
        """Compressed bytes of every blob reachable for the selected platform (index included)."""
        from ocistore.images.walk import image_size

        return image_size(self, name, platform=platform)

    def import_archive(self, path: str | os.PathLike[str], fetch_only: bool = False, platform: Any = None,
                       snapshotter: str = "overlayfs", all_platforms: bool = False,
                       progress: Callable[[Any], None] | None = None) -> list[Image]:
        """Import an OCI layout (dir or tar) or a docker-archive; unpack unless ``fetch_only``."""
        from ocistore.transfer.archive import import_archive

        with self._operation_lease():
            return import_archive(self, path, fetch_only=fetch_only, platform=platform,
                                  snapshotter=snapshotter, all_platforms=all_platforms, progress=progress)

    def export_archive(self, path: str | os.PathLike[str], names: list[str] | str, platform: Any = None,
                       all_platforms: bool = False, format: str = "oci") -> None:
        """Write images as an OCI layout tar/dir or a docker-archive."""
        from ocistore.transfer.archive import export_archive

        export_archive(self, path, [names] if isinstance(names, str) else list(names), platform=platform,
                       all_platforms=all_platforms, format=format)

    def disk_usage(self) -> Any:
        """Bytes allocated on disk by content, ingests, snapshots and metadata."""
        from ocistore.transfer.usage import disk_usage

        return disk_usage(self)


def _rest(options: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in options.items() if k not in REGISTRY_OPTIONS}
