"""The operation context: what an operation needs of a store, and nothing more.

:class:`~ocistore.store.Store` builds one :class:`OperationContext` when it opens and
passes it to every operation in :mod:`ocistore.transfer`. Operations see the content
store through its protocols, the image records, a snapshotter lookup, a lease factory,
keyed locks and the root's layout -- never the facade, so nothing below the facade
imports it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any

import attrs

from ocistore._locks import keyed_lock
from ocistore.content.types import ContentStore
from ocistore.layout import RootLayout
from ocistore.metadata.images import ImageStore
from ocistore.metadata.imageuse import ImageUse
from ocistore.metadata.leases import LeaseManager, operation_lease

if TYPE_CHECKING:  # the snapshotters load when one is first opened
    from ocistore.snapshots.types import Snapshotter

__all__ = ["OperationContext", "SnapshotterLookup"]

SnapshotterLookup = Callable[[str], "Snapshotter"]
"""``name -> Snapshotter`` of the store's namespace (NotFound for an unknown name)."""


@attrs.frozen
class OperationContext:
    """One namespace of one store root, as operations use it."""

    namespace: str
    layout: RootLayout
    content: ContentStore
    images: ImageStore
    snapshotter: SnapshotterLookup
    leases: LeaseManager
    image_use: ImageUse | None = None
    """When each image was last used (eviction order); None: not recorded."""
    snapshot_budget: int | None = None
    """Bytes the committed snapshots of the namespace may take; unpacks evict above it."""
    registry: Mapping[str, Any] = attrs.field(factory=dict)
    """The store's registry options, for operations that reach a registry on their own
    (completing a lazily fetched layer, reading its chunks)."""
    dedup: bool = False
    """Whether unpacks link applied files to identical committed ones (``Store(dedup=)``)."""

    def touch(self, snapshotter: str, name: str) -> None:
        """Record that image ``name`` was used in ``snapshotter`` (unpacked, or a container created)."""
        if self.image_use is not None:
            self.image_use.touch(snapshotter, name)

    def lease(self) -> AbstractContextManager[None]:
        """Run under the thread's current lease, or a temporary 24 h one deleted at the end."""
        return operation_lease(self.leases)

    def lock(self, name: str, timeout: float = 3600.0) -> AbstractContextManager[None]:
        """Hold the keyed lock ``name`` across threads and processes of this root
        (Unavailable after ``timeout`` seconds; 0 tries once)."""
        return keyed_lock(self.layout, name, timeout=timeout)
