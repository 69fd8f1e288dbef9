"""When each image was last used, per snapshotter: the order in which eviction removes them.

An image is *used* when it is unpacked into a snapshotter (pull, unpack, import, the lazy
unpack of a container create) and whenever a container is created from it. Records live
in table ``image_use`` under ``<ns>\\0<snapshotter>\\0<image name>`` -> ``{"last_used": <ns>}``
(nanoseconds since the epoch), apart from the image records so that using an image does
not change its ``updated_at``. An image without a record counts as used when it was last
updated. Records of deleted images are dropped by :meth:`ImageUse.forget` (eviction does it
for the names it no longer finds).
"""

from __future__ import annotations

from ocistore._time import now, to_ns
from ocistore.metadata.db import DB, Txn, key, prefix

__all__ = ["ImageUse"]

_TABLE = "image_use"


class ImageUse:
    """The last-used times of one namespace's images."""

    def __init__(self, db: DB, namespace: str) -> None:
        """Bind to ``namespace`` of the database ``db``."""
        self.db = db
        self.namespace = namespace

    def touch(self, snapshotter: str, name: str, when: int | None = None) -> None:
        """Record that image ``name`` was used in ``snapshotter`` now (or at ``when``, in ns)."""
        if self.db.readonly:
            return
        with self.db.write() as txn:
            self.touch_in(txn, snapshotter, name, when)

    def touch_in(self, txn: Txn, snapshotter: str, name: str, when: int | None = None) -> None:
        """:meth:`touch` inside the caller's write transaction ``txn``."""
        stamp = to_ns(now()) if when is None else when
        txn.put(_TABLE, key(self.namespace, snapshotter, name), {"last_used": stamp})

    def last_used(self, snapshotter: str) -> dict[str, int]:
        """``image name -> last used (ns)`` of every recorded image in ``snapshotter``."""
        pfx = prefix(self.namespace, snapshotter)
        with self.db.read() as txn:
            return {k[len(pfx):].decode(): int(v.get("last_used", 0)) for k, v in txn.scan(_TABLE, pfx)}

    def forget(self, snapshotter: str, names: list[str]) -> None:
        """Drop the records of ``names`` in ``snapshotter``."""
        if not names or self.db.readonly:
            return
        with self.db.write() as txn:
            for name in names:
                txn.delete(_TABLE, key(self.namespace, snapshotter, name))
