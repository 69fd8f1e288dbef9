"""Records and the protocol of snapshotters (containerd ``core/snapshots/snapshotter.go``).

Vocabulary, as in containerd: a ``key`` names an active or view snapshot, a ``name`` a
committed one, and a ``parent`` is always committed (or ``""`` for none). Keys and names
share one key space per snapshotter and namespace.
"""

from __future__ import annotations

import enum
from collections.abc import Iterator, Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Protocol

import attrs

__all__ = [
    "Kind",
    "Mount",
    "SnapshotInfo",
    "Snapshotter",
    "Usage",
]


class Kind(enum.StrEnum):
    """The kind of a snapshot. The value is the lowercase form filters and records use."""

    VIEW = "view"
    ACTIVE = "active"
    COMMITTED = "committed"

    @classmethod
    def parse(cls, text: str) -> Kind:
        """``"Active"``, ``"active"`` or ``"ACTIVE"`` -> :attr:`Kind.ACTIVE`; else ``ValueError``."""
        return cls(text.lower())

    @property
    def display(self) -> str:
        """containerd's display form: ``View``, ``Active``, ``Committed``."""
        return self.value.capitalize()


@attrs.frozen
class SnapshotInfo:
    """What a snapshotter knows of one snapshot (containerd ``snapshots.Info``)."""

    name: str
    parent: str = ""
    kind: Kind = Kind.ACTIVE
    labels: dict[str, str] = attrs.field(factory=dict, hash=False)
    created_at: datetime | None = None
    updated_at: datetime | None = None


@attrs.frozen
class Usage:
    """Disk resources of one snapshot, parents excluded: allocated bytes and inodes."""

    size: int = 0
    inodes: int = 0


@attrs.frozen
class Mount:
    """One mount(2) call: ``mount -t <type> -o <options> <source> <target>``."""

    type: str
    source: str
    options: list[str] = attrs.field(factory=list, hash=False)


class Snapshotter(Protocol):
    """A snapshotter bound to one namespace.

    ``supports_mount`` tells whether the mounts it returns must really be mounted to see
    the snapshot's content (overlayfs) or whether :meth:`path` already holds the whole tree
    (native: bind mounts of full copies, usable without mount privileges).
    """

    name: str
    namespace: str
    supports_mount: bool
    supports_rebase: bool

    def prepare(self, key: str, parent: str = "", labels: Mapping[str, str] | None = None) -> list[Mount]:
        """Create an active (writable) snapshot ``key`` on top of the committed ``parent``."""
        ...

    def view(self, key: str, parent: str = "", labels: Mapping[str, str] | None = None) -> list[Mount]:
        """Create a read-only view ``key`` of the committed ``parent``."""
        ...

    def mounts(self, key: str) -> list[Mount]:
        """The mounts of an active snapshot or view (the same as prepare/view returned)."""
        ...

    def commit(
        self, name: str, key: str, labels: Mapping[str, str] | None = None, parent: str | None = None,
        *, usage: Usage | None = None,
    ) -> None:
        """Turn the active snapshot ``key`` into the committed snapshot ``name``.

        ``usage``: the snapshot's usage when the caller counted it while writing (a layer
        apply does); otherwise the snapshotter measures the directory.
        """
        ...

    def stat(self, key: str) -> SnapshotInfo:
        """The info of snapshot ``key``."""
        ...

    def update(self, info: SnapshotInfo, fieldpaths: Sequence[str] | None = None) -> SnapshotInfo:
        """Change the labels of snapshot ``info.name``; return the new info."""
        ...

    def usage(self, key: str) -> Usage:
        """Disk usage of snapshot ``key`` (its own data only)."""
        ...

    def walk(self, filters: str | Sequence[str] | None = None) -> Iterator[SnapshotInfo]:
        """Every snapshot of this namespace matching ``filters``."""
        ...

    def remove(self, key: str, *, unless_leased: bool = False) -> None:
        """Remove snapshot ``key`` (which must have no children) and its directory;
        ``unless_leased`` also refuses one a lease holds (FailedPrecondition)."""
        ...

    def leased(self) -> set[str]:
        """Keys of snapshots a lease of the namespace holds."""
        ...

    def hold(self, keys: Sequence[str]) -> list[str]:
        """Add the committed ones of ``keys`` to the thread's current lease; returns them."""
        ...

    def close(self) -> None:
        """Release resources; idempotent."""
        ...

    def path(self, key: str) -> Path:
        """The directory holding the snapshot's own files (overlay upper dir / native tree)."""
        ...

    def parents_paths(self, key: str) -> list[Path]:
        """The ``fs`` directories of the committed ancestors of ``key``, nearest first."""
        ...
