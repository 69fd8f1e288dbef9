"""Garbage collection policy: roots, references, sweep and backend cleanup.

This is containerd's ``core/metadata/gc.go`` + ``DB.GarbageCollect`` over LMDB; the graph
walk itself is :func:`ocistore.metadata.gcmark.tricolor`.

**Roots** (per namespace):

* every lease that has not expired (``containerd.io/gc.expire`` in the future, or absent or
  unparsable), and every resource it holds -- as *flat* nodes when the lease carries
  ``containerd.io/gc.flat``;
* every image without ``containerd.io/gc.expire`` or whose expiry is in the future;
* every container;
* content and snapshots with a label starting ``containerd.io/gc.root``;
* ingests whose ``expire_at`` is in the future (an ingest without one is kept only by a lease);
* **active snapshots** -- ocistore departs from containerd here on purpose: a prepared
  snapshot is never collected, unless it is held by a lease that has expired (then the
  lease governs, as containerd lets leases take precedence over "active" resources, so a
  crashed unpack's ``extract-*`` snapshot goes away once its lease expires).

**References** (after any back references of the node):

* content -> its ``gc.ref.content[.|/...]``, ``gc.ref.snapshot.<sn>[/...]`` and
  ``gc.ref.image[.|/...]`` labels;
* snapshot -> its parent, then its label references (flat: the parent only, as flat);
* image -> its target digest, then its label references (flat: the target only, as flat
  content, whose references are not followed);
* ingest -> its ``expected`` digest;
* container -> ``<snapshotter>/<snapshot_key>`` and its label references.

Back references (``containerd.io/gc.bref.{container,content,image}[.|/...]`` and
``gc.bref.snapshot.<sn>[/...]``) on content, snapshots, containers and *expired* images make
the labelled object reachable whenever the named parent is. References may dangle.

**Collection** (:func:`collect`): mark and sweep happen in one LMDB write transaction, so
nothing can change between the two; the sweep deletes unreachable leases (with their
resource lists), snapshots (with their child links), ingests, content records and images.
After that commits, a second write transaction is held -- it writes nothing; holding it
keeps every committer out, and committers publish blobs and rename snapshot directories
inside write transactions -- while the backends are compared with what *any* namespace
still references: unreferenced blob files are deleted, unreferenced ingest directories are
removed unless a writer holds their ref lock, and unreferenced snapshot directories are
renamed to ``gc-rm-<id>`` and deleted after the transaction ends (children before
parents). A process killed anywhere leaves only orphans, which the next run removes.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterable, Iterator

import attrs

from ocistore import _time
from ocistore.layout import ContentLayout, RootLayout
from ocistore.metadata import dedup
from ocistore.metadata.db import DB, SEP, Txn, key, prefix
from ocistore.metadata.gcmark import (
    CONTAINER,
    CONTENT,
    FLAT,
    IMAGE,
    INGEST,
    LEASE,
    SNAPSHOT,
    TYPE_MASK,
    Node,
    tricolor,
)
from ocistore.metadata.orphans import clean_backends

__all__ = [
    "LABEL_BREF_CONTAINER",
    "LABEL_BREF_CONTENT",
    "LABEL_BREF_IMAGE",
    "LABEL_BREF_SNAPSHOT",
    "LABEL_EXPIRE",
    "LABEL_FLAT",
    "LABEL_REF_CONTENT",
    "LABEL_REF_IMAGE",
    "LABEL_REF_SNAPSHOT",
    "LABEL_ROOT",
    "GCStats",
    "collect",
    "mark",
]

LABEL_ROOT = "containerd.io/gc.root"
LABEL_REF_CONTENT = "containerd.io/gc.ref.content"
LABEL_REF_SNAPSHOT = "containerd.io/gc.ref.snapshot."
LABEL_REF_IMAGE = "containerd.io/gc.ref.image"
LABEL_BREF_CONTAINER = "containerd.io/gc.bref.container"
LABEL_BREF_CONTENT = "containerd.io/gc.bref.content"
LABEL_BREF_IMAGE = "containerd.io/gc.bref.image"
LABEL_BREF_SNAPSHOT = "containerd.io/gc.bref.snapshot."
LABEL_EXPIRE = "containerd.io/gc.expire"
LABEL_FLAT = "containerd.io/gc.flat"
_GC_PREFIX = "containerd.io/gc."



@attrs.frozen
class GCStats:
    """What one collection removed.

    ``removed_content`` counts blobs that left the store (their file was deleted, or their
    last record was swept when no file existed); ``removed_snapshots`` counts snapshots
    removed (a record swept or an orphan directory deleted, one per snapshot id);
    ``bytes_freed`` is blob, ingest and snapshot bytes (snapshot directories measured as
    allocated blocks before removal); ``duration`` is seconds. ``removed_images``,
    ``removed_leases`` and ``removed_ingests`` count swept records (an ingest whose record
    and directory both went counts once).
    """

    removed_content: int
    removed_snapshots: int
    bytes_freed: int
    duration: float
    removed_images: int = 0
    removed_leases: int = 0
    removed_ingests: int = 0


# -- labels ----------------------------------------------------------------------------------


def _named(k: str, pfx: str) -> bool:
    """``k`` is ``pfx`` itself or ``pfx`` followed by ``.`` or ``/`` and a name."""
    return len(k) == len(pfx) or k[len(pfx)] in "./"


def _snapshot_ref(ns: str, k: str, pfx: str, value: str) -> Node | None:
    snapshotter = k[len(pfx):].partition("/")[0]
    if not snapshotter:
        return None
    return (SNAPSHOT, ns, f"{snapshotter}/{value}")


def _label_nodes(
    ns: str, labels: Iterable[tuple[str, str]], named: tuple[tuple[str, int], ...], snapshot_prefix: str
) -> Iterator[Node]:
    """Nodes named by labels: ``named`` maps a prefix (exact, or followed by ``.``/``/``) to a
    node type; ``<snapshot_prefix><snapshotter>[/...]`` names a snapshot."""
    for k, v in labels:
        if k.startswith(snapshot_prefix):
            node = _snapshot_ref(ns, k, snapshot_prefix, v)
            if node is not None:
                yield node
            continue
        for pfx, kind in named:
            if k.startswith(pfx):
                if _named(k, pfx):
                    yield (kind, ns, v)
                break


_REF_KINDS = ((LABEL_REF_CONTENT, CONTENT), (LABEL_REF_IMAGE, IMAGE))
_BREF_KINDS = ((LABEL_BREF_CONTAINER, CONTAINER), (LABEL_BREF_CONTENT, CONTENT), (LABEL_BREF_IMAGE, IMAGE))


def label_refs(ns: str, labels: Iterable[tuple[str, str]]) -> Iterator[Node]:
    """Forward references declared by ``containerd.io/gc.ref.*`` labels."""
    return _label_nodes(ns, labels, _REF_KINDS, LABEL_REF_SNAPSHOT)


def label_brefs(ns: str, labels: Iterable[tuple[str, str]]) -> Iterator[Node]:
    """Parents named by ``containerd.io/gc.bref.*`` labels (the child is kept with them)."""
    return _label_nodes(ns, labels, _BREF_KINDS, LABEL_BREF_SNAPSHOT)


def _gc_labels(labels: dict[str, str] | None) -> list[tuple[str, str]]:
    return [(k, v) for k, v in (labels or {}).items() if k.startswith(_GC_PREFIX)]


def _has_root(labels: list[tuple[str, str]]) -> bool:
    return any(k.startswith(LABEL_ROOT) for k, _ in labels)


def _expired(labels: list[tuple[str, str]], now: float) -> bool:
    """Whether a ``gc.expire`` label lies in the past (an unparsable value never expires)."""
    for k, v in labels:
        if k == LABEL_EXPIRE:
            try:
                return _time.parse_rfc3339(v).timestamp() < now
            except ValueError:
                return False
    return False


# -- the graph -------------------------------------------------------------------------------


class _Graph:
    """The metadata of every namespace as the GC sees it, read in one transaction."""

    def __init__(self, txn: Txn, now: float) -> None:
        self.now = now
        self.roots: list[Node] = []
        self.backrefs: dict[Node, list[Node]] = {}
        # node -> gc.* labels (only the labels the policy reads)
        self.content: dict[Node, list[tuple[str, str]]] = {}
        self.images: dict[Node, tuple[str, list[tuple[str, str]]]] = {}
        self.snapshots: dict[Node, tuple[str, list[tuple[str, str]]]] = {}
        self.containers: dict[Node, tuple[str, list[tuple[str, str]]]] = {}
        self.ingests: dict[Node, str] = {}
        self.leases: list[Node] = []
        self._expired_lease_snapshots: set[Node] = set()
        self._scan_leases(txn)
        self._scan_images(txn)
        self._scan_ingests(txn)
        self._scan_content(txn)
        self._scan_containers(txn)
        self._scan_snapshots(txn)

    def _bref(self, parent: Node, child: Node) -> None:
        self.backrefs.setdefault(parent, []).append(child)

    def _scan_leases(self, txn: Txn) -> None:
        live: dict[tuple[str, str], bool] = {}  # (ns, id) -> flat, for unexpired leases
        expired: set[tuple[str, str]] = set()
        for k, rec in txn.scan("leases"):
            ns, lease_id = k.decode().split(SEP, 1)
            self.leases.append((LEASE, ns, lease_id))
            labels = _gc_labels(rec.get("labels"))
            if _expired(labels, self.now):
                expired.add((ns, lease_id))
                continue
            live[ns, lease_id] = any(k == LABEL_FLAT for k, _ in labels)
            self.roots.append((LEASE, ns, lease_id))
        for k in txn.keys("lease_resources"):
            ns, lease_id, rtype, rid = k.decode().split(SEP, 3)
            flat = live.get((ns, lease_id))
            if flat is None:
                if (ns, lease_id) in expired and rtype.startswith("snapshots/"):
                    self._expired_lease_snapshots.add((SNAPSHOT, ns, f"{rtype[10:]}/{rid}"))
                continue
            node = _lease_resource_node(ns, rtype, rid, flat)
            if node is not None:
                self.roots.append(node)

    def _scan_images(self, txn: Txn) -> None:
        for k, rec in txn.scan("images"):
            ns, name = k.decode().split(SEP, 1)
            node = (IMAGE, ns, name)
            labels = _gc_labels(rec.get("labels"))
            target = rec.get("target") or {}
            self.images[node] = (str(target.get("digest", "")), labels)
            if not _expired(labels, self.now):
                self.roots.append(node)
            else:
                for parent in label_brefs(ns, labels):
                    self._bref(parent, node)

    def _scan_ingests(self, txn: Txn) -> None:
        now_ns = int(self.now * 1e9)
        for k, rec in txn.scan("ingests"):
            ns, ref = k.decode().split(SEP, 1)
            node = (INGEST, ns, ref)
            self.ingests[node] = str(rec.get("expected") or "")
            expire_at = rec.get("expire_at")
            if expire_at is not None and int(expire_at) > now_ns:
                self.roots.append(node)

    def _scan_content(self, txn: Txn) -> None:
        # The hot loop (one record per blob): decode JSON only for records with gc labels.
        no_labels: list[tuple[str, str]] = []
        marker = _GC_PREFIX.encode()
        with txn.raw.cursor(db=txn.db.handles["content"]) as cur:
            for k, v in cur.iternext():
                ns, digest = bytes(k).decode().split(SEP, 1)
                node = (CONTENT, ns, digest)
                if marker not in v:
                    self.content[node] = no_labels
                    continue
                labels = _gc_labels(json.loads(bytes(v)).get("labels"))
                self.content[node] = labels
                if _has_root(labels):
                    self.roots.append(node)
                for parent in label_brefs(ns, labels):
                    self._bref(parent, node)

    def _scan_containers(self, txn: Txn) -> None:
        for k, rec in txn.scan("containers"):
            ns, cid = k.decode().split(SEP, 1)
            node = (CONTAINER, ns, cid)
            labels = _gc_labels(rec.get("labels"))
            sn, skey = rec.get("snapshotter") or "", rec.get("snapshot_key") or ""
            self.containers[node] = (f"{sn}/{skey}" if sn else "", labels)
            self.roots.append(node)
            for parent in label_brefs(ns, labels):
                self._bref(parent, node)

    def _scan_snapshots(self, txn: Txn) -> None:
        for k, rec in txn.scan("snapshots"):
            ns, sn, skey = k.decode().split(SEP, 2)
            node = (SNAPSHOT, ns, f"{sn}/{skey}")
            labels = _gc_labels(rec.get("labels"))
            parent = rec.get("parent") or ""
            self.snapshots[node] = (f"{sn}/{parent}" if parent else "", labels)
            active = rec.get("kind") == "active" and node not in self._expired_lease_snapshots
            if active or _has_root(labels):
                self.roots.append(node)
            for p in label_brefs(ns, labels):
                self._bref(p, node)

    # -- references ----------------------------------------------------------------------
    def refs(self, node: Node) -> list[Node]:
        """What ``node`` keeps alive (see the module docstring)."""
        brefs = self.backrefs.get(node)
        out = list(brefs) if brefs else []
        t, ns = node[0], node[1]
        base = t & TYPE_MASK
        flat = bool(t & FLAT)
        if base == CONTENT:
            if not flat:
                labels = self.content.get(node)
                if labels:
                    out.extend(label_refs(ns, labels))
        elif base == SNAPSHOT:
            snap = self.snapshots.get((SNAPSHOT, ns, node[2]))
            if snap is not None:
                parent, labels = snap
                if parent:
                    out.append((t, ns, parent))
                if not flat:
                    out.extend(label_refs(ns, labels))
        elif base == IMAGE:
            image = self.images.get((IMAGE, ns, node[2]))
            if image is not None:
                target, labels = image
                if target:
                    out.append((CONTENT | FLAT if flat else CONTENT, ns, target))
                if not flat:
                    out.extend(label_refs(ns, labels))
        elif base == INGEST:
            expected = self.ingests.get(node)
            if expected:
                out.append((CONTENT, ns, expected))
        elif base == CONTAINER:
            container = self.containers.get(node)
            if container is not None:
                snapshot, labels = container
                if snapshot:
                    out.append((SNAPSHOT, ns, snapshot))
                out.extend(label_refs(ns, labels))
        return out

    def all_nodes(self) -> Iterator[Node]:
        """Every collectable node, in sweep order: leases, snapshots, ingests, content, images."""
        yield from self.leases
        yield from self.snapshots
        yield from self.ingests
        yield from self.content
        yield from self.images


def _lease_resource_node(ns: str, rtype: str, rid: str, flat: bool) -> Node | None:
    f = FLAT if flat else 0
    if rtype == "content":
        return (CONTENT | f, ns, rid)
    if rtype == "images":
        return (IMAGE | f, ns, rid)
    if rtype == "ingests":
        return (INGEST, ns, rid)
    if rtype.startswith("snapshots/"):
        return (SNAPSHOT | f, ns, f"{rtype[len('snapshots/'):]}/{rid}")
    return None


def mark(txn: Txn, now: float | None = None) -> tuple[set[Node], list[Node]]:
    """Mark from the roots: (reachable nodes, unreachable nodes in sweep order)."""
    graph = _Graph(txn, time.time() if now is None else now)
    reachable = tricolor(graph.roots, graph.refs)
    return reachable, [n for n in graph.all_nodes() if n not in reachable]


# -- sweep -----------------------------------------------------------------------------------


@attrs.define
class _Swept:
    content: set[str] = attrs.field(factory=set)
    snapshots: set[tuple[str, int]] = attrs.field(factory=set)
    images: int = 0
    leases: int = 0
    ingests: int = 0
    ingest_dirs: set[str] = attrs.field(factory=set)


def _sweep(txn: Txn, dead: list[Node]) -> _Swept:
    swept = _Swept()
    for node in dead:
        ns, k = node[1], node[2]
        if node[0] == LEASE:
            txn.delete("leases", key(ns, k))
            txn.delete_prefix("lease_resources", prefix(ns, k))
            swept.leases += 1
        elif node[0] == SNAPSHOT:
            sn, _, skey = k.partition("/")
            rec = txn.get("snapshots", key(ns, sn, skey))
            if rec is None:
                continue
            txn.delete("snapshots", key(ns, sn, skey))
            if rec.get("parent"):
                txn.delete("snapshot_children", key(ns, sn, rec["parent"], skey))
            txn.delete_prefix("snapshot_children", prefix(ns, sn, skey))
            dedup.drop(txn, sn, int(rec.get("id", 0)))  # the index never names a removed file
            swept.snapshots.add((sn, int(rec.get("id", 0))))
        elif node[0] == INGEST:
            rec = txn.get("ingests", key(ns, k))
            txn.delete("ingests", key(ns, k))
            swept.ingests += 1
            if rec and rec.get("bref"):
                swept.ingest_dirs.add(ContentLayout.ingest_key(str(rec["bref"])))
        elif node[0] == CONTENT:
            txn.delete("content", key(ns, k))
            swept.content.add(k)
        elif node[0] == IMAGE:
            txn.delete("images", key(ns, k))
            swept.images += 1
    return swept


# -- collect ---------------------------------------------------------------------------------


def collect(db: DB, root: RootLayout | str | os.PathLike[str], *, now: float | None = None) -> GCStats:
    """Run one garbage collection over every namespace of the store at ``root``.

    ``now`` (seconds since the epoch) overrides the clock for expiry decisions and for the
    grace periods of fresh ingest and ``new-*`` snapshot directories.
    """
    started = time.monotonic()
    with db.write() as txn:
        _, dead = mark(txn, now)
        swept = _sweep(txn, dead)
    db.dirty = 0
    removed = clean_backends(db, root if isinstance(root, RootLayout) else RootLayout(root), now)
    gone_content = (swept.content - removed.referenced) | removed.blobs
    gone_snapshots = swept.snapshots | removed.snapshots
    return GCStats(
        removed_content=len(gone_content),
        removed_snapshots=len(gone_snapshots),
        bytes_freed=removed.bytes,
        duration=time.monotonic() - started,
        removed_images=swept.images,
        removed_leases=swept.leases,
        removed_ingests=swept.ingests + len(removed.ingests - swept.ingest_dirs),
    )
