"""Consistency check of a store root: blobs, image graphs, snapshot chains and orphans.

:func:`check` reports one readable line per problem:

* every committed blob that some namespace records is present, has the recorded size and
  hashes to its digest (streamed, never read whole);
* every image's target is present in its namespace, and so is what it needs: at least one
  manifest of an index (a single-platform fetch keeps only its own), the config of each
  present manifest, and its layers -- unless the image is unpacked (its config carries a
  ``containerd.io/gc.ref.snapshot.*`` label), since layers may be discarded after unpack;
* every snapshot's parent exists in the same namespace and snapshotter and is committed,
  its directory ``<root>/snapshots/<snapshotter>/<id>`` and its ``fs/`` exist (for every
  snapshotter), and child links point at existing snapshots;
* a snapshotter directory holds nothing ocistore did not make (reported, never removed);
* no orphan blob file, ingest directory or snapshot directory (see
  :mod:`ocistore.metadata.orphans`);
* a *partial* blob (a layer fetched with ``lazy=True``: footer and TOC only) has no blob
  file and is not a problem: it is listed in ``CheckReport.partial``; its TOC blob must be
  in the same namespace, and the chunks cached for it must hash to their names. A chunk
  cache left by a layer that is no longer partial is removed by gc (and by ``repair``),
  not reported: it is a cache.
* every entry of the file-dedup index (:mod:`ocistore.metadata.dedup`) names a committed
  snapshot and a regular file there of the size its key says, and its two tables agree.

``repair=True`` removes orphans and stale dedup index entries only (what no record
references, and index entries naming nothing); referenced data that is damaged is reported,
never touched.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, BinaryIO

import attrs

from ocistore import errors
from ocistore.content.types import ContentInfo
from ocistore.images.graph import children, walk
from ocistore.layout import NEW_PREFIX, TRASH_PREFIX, RootLayout
from ocistore.metadata import dedup
from ocistore.metadata.db import DB, SEP, Txn, key
from ocistore.metadata.gc import LABEL_REF_SNAPSHOT
from ocistore.metadata.orphans import list_orphans, remove_orphans
from ocistore.oci import mediatypes
from ocistore.oci.descriptor import Descriptor
from ocistore.oci.digest import algorithm_of, new_hasher

__all__ = ["CheckReport", "check"]

_CHUNK = 1 << 20
_MAX_MANIFEST = 4 << 20


@attrs.frozen
class CheckReport:
    """Outcome of :func:`check`: ``ok`` when no problem remains.

    ``problems`` has one line per problem left; ``repaired`` one line per orphan that
    ``repair=True`` removed.
    """

    ok: bool
    problems: list[str] = attrs.field(factory=list)
    repaired: list[str] = attrs.field(factory=list)
    partial: list[str] = attrs.field(factory=list)
    """One line per partial blob (a lazily fetched layer: remote, not missing)."""


@attrs.define
class _State:
    """The records of every namespace, read in one transaction."""

    content: dict[str, dict[str, int]] = attrs.field(factory=dict)  # digest -> {ns: size}
    content_labels: dict[tuple[str, str], dict[str, str]] = attrs.field(factory=dict)
    images: list[tuple[str, str, dict[str, Any]]] = attrs.field(factory=list)
    snapshots: dict[tuple[str, str, str], dict[str, Any]] = attrs.field(factory=dict)
    children: list[tuple[str, str, str, str]] = attrs.field(factory=list)
    partial: dict[tuple[str, str], dict[str, Any]] = attrs.field(factory=dict)  # (ns, digest) -> record


def _load(txn: Txn) -> _State:
    st = _State()
    for k, rec in txn.scan("content"):
        ns, digest = k.decode().split(SEP, 1)
        st.content.setdefault(digest, {})[ns] = int(rec.get("size", -1))
        st.content_labels[ns, digest] = dict(rec.get("labels") or {})
        if isinstance(rec.get("partial"), dict):
            st.partial[ns, digest] = dict(rec["partial"])
    for k, rec in txn.scan("images"):
        ns, name = k.decode().split(SEP, 1)
        st.images.append((ns, name, dict(rec.get("target") or {})))
    for k, rec in txn.scan("snapshots"):
        ns, sn, skey = k.decode().split(SEP, 2)
        st.snapshots[ns, sn, skey] = rec
    for k in txn.keys("snapshot_children"):
        ns, sn, parent, child = k.decode().split(SEP, 3)
        st.children.append((ns, sn, parent, child))
    return st


def check(
    db: DB, root: RootLayout | str | os.PathLike[str], repair: bool = False, *, verify: bool = True
) -> CheckReport:
    """Check the store at ``root`` (every namespace); ``verify=False`` skips hashing blobs."""
    layout = root if isinstance(root, RootLayout) else RootLayout(root)
    with db.read() as txn:
        st = _load(txn)
    problems: list[str] = []
    problems += _check_blobs(layout, st, verify)
    partial, bad = _check_partial(layout, st, verify)
    problems += bad
    problems += _check_images(layout, st)
    problems += _check_snapshots(layout, st)
    stale = _check_dedup_index(db, layout, st)
    repaired: list[str] = []
    if repair:
        repaired = [f"removed {o.describe()}" for o in remove_orphans(db, layout)]
        repaired += _remove_stale(db, stale)
    else:
        problems += [line for line, _keys in stale]
    problems += [o.describe() for o in list_orphans(db, layout) if o.kind != "chunks"]
    return CheckReport(ok=not problems, problems=problems, repaired=repaired, partial=partial)


# -- blobs -----------------------------------------------------------------------------------


def _check_blobs(layout: RootLayout, st: _State, verify: bool) -> list[str]:
    out = []
    for digest, all_sizes in sorted(st.content.items()):
        sizes = {ns: n for ns, n in all_sizes.items() if (ns, digest) not in st.partial}
        if not sizes:
            continue  # partial everywhere: no blob file expected (see _check_partial)
        where = ", ".join(sorted(sizes))
        try:
            path = layout.content.blob_path(digest)
        except errors.InvalidArgument:
            out.append(f"content record {digest!r} (namespace {where}): not a valid digest")
            continue
        try:
            size = os.stat(path).st_size
        except FileNotFoundError:
            out.append(f"content {digest} (namespace {where}): blob file {path} is missing")
            continue
        for ns, recorded in sorted(sizes.items()):
            if recorded != size:
                out.append(
                    f"content {digest} (namespace {ns}): recorded size {recorded} but the blob "
                    f"file has {size} bytes"
                )
        if verify:
            actual = _hash_file(path, algorithm_of(digest))
            if actual is None:
                out.append(f"content {digest} (namespace {where}): blob file {path} cannot be read")
            elif actual != digest:
                out.append(f"content {digest} (namespace {where}): blob file hashes to {actual}")
    return out


def _check_partial(layout: RootLayout, st: _State, verify: bool) -> tuple[list[str], list[str]]:
    """(report lines, problems) of the partial blobs: TOC blob present, cached chunks intact."""
    lines: list[str] = []
    out: list[str] = []
    for (ns, digest), rec in sorted(st.partial.items()):
        toc = str(rec.get("toc_digest", ""))
        what = f"content {digest} (namespace {ns})"
        if ns not in st.content.get(toc, {}) or (ns, toc) in st.partial:
            out.append(f"{what}: partial layer whose TOC blob {toc or '(none)'} is not in the content store; "
                       "fetch the image again")
        try:
            chunk_dir = layout.content.chunk_dir(digest)
        except errors.InvalidArgument:
            continue  # reported as an invalid digest by the blob check
        cached = 0
        for entry in sorted(_scan(chunk_dir), key=lambda e: e.name):
            if entry.name.startswith("."):
                continue  # a chunk being written
            cached += 1
            if verify:
                alg, _, hexpart = entry.name.partition("-")
                actual = _hash_file(Path(entry.path), alg) if alg in ("sha256", "sha512") else None
                if actual != f"{alg}:{hexpart}":
                    out.append(f"{what}: cached chunk {entry.path} does not hash to its name; remove the file")
        lines.append(f"{what}: partial (lazily fetched eStargz layer from {rec.get('ref', '?')}: TOC {toc}, "
                     f"{cached} chunks cached)")
    return lines, out


def _scan(path: Path) -> list[os.DirEntry[str]]:
    try:
        with os.scandir(path) as it:
            return list(it)
    except (FileNotFoundError, NotADirectoryError):
        return []


def _hash_file(path: Path, alg: str) -> str | None:
    h = new_hasher(alg)
    try:
        with open(path, "rb") as f:
            while chunk := f.read(_CHUNK):
                h.update(chunk)
    except OSError:
        return None
    return f"{alg}:{h.hexdigest()}"


# -- images ----------------------------------------------------------------------------------


def _check_images(layout: RootLayout, st: _State) -> list[str]:
    out: list[str] = []
    for ns, name, target in st.images:
        what = f"image {name} (namespace {ns})"
        digest = str(target.get("digest", ""))
        if ns not in st.content.get(digest, {}):
            out.append(f"{what}: target {digest or '(none)'} is not in the content store")
            continue
        root = Descriptor(str(target.get("mediaType", "")), digest, int(target.get("size", 0) or 0))
        walk(_ImageCheck(_RecordedBlobs(layout, st, ns), st, ns, what, out).handle, root)
    return out


@attrs.frozen
class _RecordedBlobs:
    """A provider over the blob files that one namespace's records name (read in one txn)."""

    layout: RootLayout
    st: _State
    ns: str

    def exists(self, digest: str) -> bool:
        return self.ns in self.st.content.get(digest, {})

    def info(self, digest: str) -> ContentInfo:
        size = self.st.content.get(digest, {}).get(self.ns)
        if size is None:
            raise errors.NotFound(f"content {digest} not found in namespace {self.ns!r}")
        return ContentInfo(digest, size, self.st.content_labels.get((self.ns, digest), {}))

    def open(self, digest: str) -> BinaryIO:
        try:
            return open(self.layout.content.blob_path(digest), "rb")
        except (OSError, errors.InvalidArgument):
            raise errors.NotFound(f"blob file of {digest} cannot be read") from None

    def read(self, digest: str) -> bytes:
        with self.open(digest) as f:
            return f.read(_MAX_MANIFEST + 1)


@attrs.define
class _ImageCheck:
    """A walk handler over one image's graph that notes what is missing."""

    blobs: _RecordedBlobs
    st: _State
    ns: str
    what: str
    out: list[str]

    def handle(self, desc: Descriptor) -> Sequence[Descriptor]:
        media_type, digest = desc.media_type, desc.digest
        if not (mediatypes.is_index(media_type) or mediatypes.is_manifest(media_type)):
            return []
        try:
            kids = children(self.blobs, desc)
        except errors.NotFound:
            return []  # reported by the blob check
        except errors.Error as e:
            self.out.append(f"{self.what}: {digest} cannot be parsed as {media_type}: {e}")
            return []
        if mediatypes.is_index(media_type):
            present = [d for d in kids if self.blobs.exists(d.digest)]
            if kids and not present:
                self.out.append(
                    f"{self.what}: none of the {len(kids)} manifests of index {digest} "
                    "is in the content store"
                )
            return present
        self._manifest(digest, kids)
        return []

    def _manifest(self, digest: str, kids: list[Descriptor]) -> None:
        config, layers = kids[0], kids[1:]
        if not self.blobs.exists(config.digest):
            self.out.append(
                f"{self.what}: config {config.digest} of manifest {digest} is not in the content store"
            )
            return
        if _unpacked(self.st.content_labels.get((self.ns, config.digest), {})):
            return
        for layer in layers:
            if not self.blobs.exists(layer.digest):
                self.out.append(
                    f"{self.what}: layer {layer.digest} of manifest {digest} is not in the content store "
                    "and the image is not unpacked"
                )


def _unpacked(labels: Mapping[str, str]) -> bool:
    return any(k.startswith(LABEL_REF_SNAPSHOT) for k in labels)


# -- snapshots -------------------------------------------------------------------------------


def _check_snapshots(layout: RootLayout, st: _State) -> list[str]:
    out = []
    for (ns, sn, skey), rec in sorted(st.snapshots.items()):
        what = f"snapshot {sn}/{skey} (namespace {ns})"
        parent = rec.get("parent") or ""
        if parent:
            prec = st.snapshots.get((ns, sn, parent))
            if prec is None:
                out.append(f"{what}: parent {parent!r} does not exist")
            elif prec.get("kind") != "committed":
                out.append(f"{what}: parent {parent!r} is {prec.get('kind')}, not committed")
        sdir = layout.snapshot_dir(sn, str(rec.get("id")))
        fs = layout.snapshot_fs(sn, str(rec.get("id")))
        if not sdir.is_dir():
            out.append(f"{what}: directory {sdir} is missing; remove the snapshot (and what stacks on it)")
        elif not fs.is_dir():
            out.append(f"{what}: its files directory {fs} is missing; remove the snapshot (and what stacks on it)")
    out += _unexpected_entries(layout)
    for ns, sn, parent, child in st.children:
        if (ns, sn, child) not in st.snapshots or (ns, sn, parent) not in st.snapshots:
            out.append(
                f"snapshot child link {sn}/{parent} -> {child} (namespace {ns}): "
                "points at a snapshot that does not exist"
            )
    return out


def _unexpected_entries(layout: RootLayout) -> list[str]:
    """Entries of a snapshotter directory that ocistore never makes (orphans are listed apart).

    A snapshotter directory holds ``<id>`` directories and the ``new-*`` / ``gc-rm-*``
    directories of builds and removals in progress; anything else is reported, not removed.
    """
    out = []
    for snapshotter, sdir in layout.snapshotter_dirs():
        for e in sorted(os.scandir(sdir), key=lambda e: e.name):
            is_dir = e.is_dir(follow_symlinks=False)
            if is_dir and (e.name.isdigit() or e.name.startswith((NEW_PREFIX, TRASH_PREFIX))):
                continue
            kind = "directory" if is_dir else "file"
            out.append(
                f"unexpected {kind} {snapshotter}/{e.name} ({e.path}): ocistore did not create it and "
                "check(repair=True) leaves it; remove it by hand"
            )
    return out


# -- the file-dedup index ----------------------------------------------------------------------


_Stale = list[tuple[str, list[tuple[str, bytes]]]]  # (problem, [(table, key) to delete])


def _check_dedup_index(db: DB, layout: RootLayout, st: _State) -> _Stale:
    """Index entries that name no committed snapshot, no regular file of the right size, or
    that one of the two tables lacks."""
    committed = {(sn, int(rec.get("id", 0))) for (_ns, sn, _k), rec in st.snapshots.items()
                 if rec.get("kind") == "committed"}
    with db.read() as txn:
        forward = list(dedup.entries(txn))
        reverse = set(dedup.reverse_entries(txn))
    out: _Stale = []
    seen: set[tuple[str, int, str]] = set()
    for fkey, sn, sid, rel in forward:
        seen.add((sn, sid, fkey))
        keys = [(dedup.FILES, key(fkey, sn, str(sid))), (dedup.BY_SNAPSHOT, key(sn, str(sid), fkey))]
        what = f"dedup index entry {sn}/{sid}/{rel}"
        if (sn, sid) not in committed:
            out.append((f"{what}: snapshot {sn} id {sid} is not a committed snapshot; "
                        "check(repair=True) removes the entry", keys))
            continue
        try:
            fst = os.lstat(layout.snapshot_fs(sn, sid) / rel)
        except OSError:
            fst = None
        size = fkey.split(".")[1] if fkey.count(".") == 2 else ""
        if fst is None or not stat.S_ISREG(fst.st_mode) or f"{fst.st_size:x}" != size:
            out.append((f"{what}: no regular file of the indexed size there; check(repair=True) removes "
                        "the entry", keys))
            continue
        if (sn, sid, fkey) not in reverse:
            out.append((f"{what}: missing from table {dedup.BY_SNAPSHOT}; check(repair=True) removes the entry",
                        keys))
    for sn, sid, fkey in sorted(reverse - seen):
        out.append((f"dedup index entry {sn}/{sid} key {fkey}: missing from table {dedup.FILES}; "
                    "check(repair=True) removes it", [(dedup.BY_SNAPSHOT, key(sn, str(sid), fkey))]))
    return out


def _remove_stale(db: DB, stale: _Stale) -> list[str]:
    if not stale:
        return []
    with db.write() as txn:
        for _line, keys in stale:
            for table, k in keys:
                txn.delete(table, k)
    return [f"removed {line.split(';')[0]}" for line, _keys in stale]
