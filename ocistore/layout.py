"""The on-disk layout of a store root: the one place that knows where things live.

::

    ROOT/
      metadata.lmdb/                      the LMDB environment
      content/blobs/<alg>/<hex>           committed blobs
      content/ingest/<sha256(ref)>/       one resumable ingest (data, ref, total, ...)
      content/ingest/<sha256(ref)>.lock   its ref lock
      snapshots/<snapshotter>/<id>/fs     one directory per snapshot (+ work/ while active)
      snapshots/<snapshotter>/new-*       a snapshot being built (renamed to <id> on commit)
      snapshots/<snapshotter>/gc-rm-*     a snapshot directory being removed
      tmp/                                scratch, cleaned on open
      tmp/locks/<hash>.lock               keyed locks (unpacks)
      lazyfs/<namespace>/<id>/            a lazy container: FUSE mount point (mnt/), helper pid, log

Every module that touches the disk asks :class:`RootLayout` (or the
:class:`ContentLayout` of its ``content`` directory) for paths; none rebuilds them.
Nothing here does I/O except :meth:`RootLayout.create`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

import attrs

from ocistore._lazy import lazy_module
from ocistore.oci.digest import ALGORITHMS, algorithm_of, encoded

if TYPE_CHECKING:
    import hashlib
else:
    hashlib = lazy_module("hashlib")

__all__ = ["NEW_PREFIX", "TRASH_PREFIX", "ContentLayout", "RootLayout", "fs_of", "work_of"]

NEW_PREFIX = "new-"
"""Prefix of a snapshot directory being built."""
TRASH_PREFIX = "gc-rm-"
"""Prefix of a snapshot directory moved aside for removal."""
LOCK_SUFFIX = ".lock"


def fs_of(snapshot_dir: Path) -> Path:
    """The ``fs`` directory (the snapshot's files) of a snapshot directory, final or being built."""
    return snapshot_dir / "fs"


def work_of(snapshot_dir: Path) -> Path:
    """The overlayfs ``work`` directory of an active snapshot's directory."""
    return snapshot_dir / "work"


@attrs.frozen
class ContentLayout:
    """Paths of the blob store under one directory (``ROOT/content``)."""

    root: Path = attrs.field(converter=Path)

    @property
    def blobs(self) -> Path:
        """``blobs/``: one subdirectory per digest algorithm."""
        return self.root / "blobs"

    @property
    def ingest(self) -> Path:
        """``ingest/``: one directory and one lock file per open ingest."""
        return self.root / "ingest"

    @property
    def chunks(self) -> Path:
        """``chunks/``: verified eStargz chunks of partial (lazily fetched) layers."""
        return self.root / "chunks"

    def chunk_dir(self, layer_digest: str) -> Path:
        """``chunks/<alg>/<hex>`` of a layer: its cached chunks, named by their digests."""
        return self.chunks / algorithm_of(layer_digest) / encoded(layer_digest)

    def chunk_path(self, layer_digest: str, chunk_digest: str) -> Path:
        """``chunks/<alg>/<hex>/<chunk alg>-<chunk hex>``: one verified chunk of a layer."""
        return self.chunk_dir(layer_digest) / chunk_file_name(chunk_digest)

    def algorithm_dir(self, algorithm: str) -> Path:
        """``blobs/<alg>``."""
        return self.blobs / algorithm

    def algorithms(self) -> list[tuple[str, Path]]:
        """(algorithm, directory) for every algorithm a blob may be stored under."""
        return [(alg, self.algorithm_dir(alg)) for alg in sorted(ALGORITHMS)]

    def blob_path(self, digest: str) -> Path:
        """``blobs/<alg>/<hex>``; the digest is validated first (it may come from the network)."""
        return self.blobs / algorithm_of(digest) / encoded(digest)

    @staticmethod
    def ingest_key(ref: str) -> str:
        """The directory name of the ingest ``ref`` (refs are arbitrary strings)."""
        return hashlib.sha256(ref.encode()).hexdigest()

    def ingest_path(self, ref: str) -> Path:
        """The directory of the ingest ``ref``."""
        return self.ingest / self.ingest_key(ref)

    def ingest_lock(self, key: str) -> Path:
        """The ref lock file of the ingest directory named ``key``."""
        return self.ingest / f"{key}{LOCK_SUFFIX}"

    def create(self) -> None:
        """Create ``blobs/`` and ``ingest/``."""
        self.blobs.mkdir(parents=True, exist_ok=True)
        self.ingest.mkdir(parents=True, exist_ok=True)


def _absolute(path: str | os.PathLike[str]) -> Path:
    return Path(path).absolute()


@attrs.frozen
class RootLayout:
    """Paths of one store root."""

    root: Path = attrs.field(converter=_absolute)

    @property
    def content(self) -> ContentLayout:
        """The blob store's layout (``ROOT/content``)."""
        return ContentLayout(self.root / "content")

    @property
    def metadata(self) -> Path:
        """The LMDB environment directory."""
        return self.root / "metadata.lmdb"

    @property
    def tmp(self) -> Path:
        """Scratch space on the store's filesystem, cleaned on open."""
        return self.root / "tmp"

    @property
    def locks(self) -> Path:
        """Keyed lock files (never deleted)."""
        return self.tmp / "locks"

    def lock_path(self, name: str) -> Path:
        """The lock file of the keyed lock ``name``."""
        return self.locks / (hashlib.sha256(name.encode()).hexdigest()[:32] + LOCK_SUFFIX)

    @property
    def snapshots(self) -> Path:
        """The parent of every snapshotter's directory."""
        return self.root / "snapshots"

    def snapshotter_dir(self, snapshotter: str) -> Path:
        """``snapshots/<snapshotter>``."""
        return self.snapshots / snapshotter

    def snapshot_dir(self, snapshotter: str, sid: int | str) -> Path:
        """``snapshots/<snapshotter>/<id>``: everything of one snapshot."""
        return self.snapshotter_dir(snapshotter) / str(sid)

    def snapshot_fs(self, snapshotter: str, sid: int | str) -> Path:
        """``snapshots/<snapshotter>/<id>/fs``: the snapshot's files (an overlay upper dir)."""
        return fs_of(self.snapshot_dir(snapshotter, sid))

    @property
    def lazyfs(self) -> Path:
        """The FUSE mounts of lazy containers (``lazyfs/<namespace>/<id>/``)."""
        return self.root / "lazyfs"

    def lazy_dir(self, namespace: str, container: str) -> Path:
        """``lazyfs/<namespace>/<id>``: the lazy rootfs helper's mount point, pid and log."""
        return self.lazyfs / namespace / container

    def snapshotter_dirs(self) -> list[tuple[str, Path]]:
        """(snapshotter, directory) for every snapshotter directory present, by name."""
        try:
            with os.scandir(self.snapshots) as it:
                found = [(e.name, Path(e.path)) for e in it if e.is_dir(follow_symlinks=False)]
        except (FileNotFoundError, NotADirectoryError):
            return []
        return sorted(found)

    def create(self) -> None:
        """Create the root, ``tmp/`` and the content directories."""
        self.root.mkdir(parents=True, exist_ok=True)
        self.tmp.mkdir(exist_ok=True)
        self.content.create()


def chunk_file_name(chunk_digest: str) -> str:
    """The name of a cached chunk's file in its layer's chunk directory: ``<alg>-<hex>``."""
    return f"{algorithm_of(chunk_digest)}-{encoded(chunk_digest)}"
