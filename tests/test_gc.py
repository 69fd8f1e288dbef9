"""Garbage collection: roots, references, sweep and backend cleanup (semantics section 5)."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from test_gc_support import (
    REF,
    blob_exists,
    blob_path,
    build_image,
    has_snapshot,
    put_record,
    snapshot_bytes,
    snapshot_dir,
    snapshot_record,
)

from ocistore import Store
from ocistore._time import rfc3339, to_ns
from ocistore.content.locks import RefLock
from ocistore.metadata.db import key
from ocistore.metadata.gc import collect
from ocistore.metadata.gcmark import CONTENT, FLAT, IMAGE, Node, sweep, tricolor
from ocistore.metadata.leases import Resource

DAY = 24 * 3600.0


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    with Store(tmp_path / "root") as s:
        yield s


def blob(store: Store, data: bytes, labels: dict[str, str] | None = None) -> str:
    with store.lease(expire=timedelta(hours=1)):
        return store.content.ingest(data, labels=labels).digest


def has_content(store: Store, digest: str) -> bool:
    return store.content.exists(digest)


# -- the mark algorithm ------------------------------------------------------------------------


def test_tricolor_marks_reachable_and_strips_flags() -> None:
    a, b, c, d = ((CONTENT, "ns", x) for x in "abcd")
    graph = {a: [b], b: [a, c], (CONTENT | FLAT, "ns", "d"): [a]}
    reachable = tricolor([a, (CONTENT | FLAT, "ns", "d")], lambda n: graph.get(n, []))
    assert reachable == {a, b, c, d}
    assert sweep(reachable, [a, (IMAGE, "ns", "x"), c]) == [(IMAGE, "ns", "x")]


def test_tricolor_expands_flat_and_full_variants_separately() -> None:
    a, b = (CONTENT, "ns", "a"), (CONTENT, "ns", "b")
    flat_a = (CONTENT | FLAT, "ns", "a")

    def refs(n: Node) -> list[Node]:
        return [] if n[0] & FLAT else ([b] if n == a else [])

    assert tricolor([flat_a, a], refs) == {a, b}


# -- images: everything they need stays, and goes with them -------------------------------------


def test_image_keeps_blobs_and_snapshot_chain(store: Store) -> None:
    built = build_image(store, "docker.io/library/app:1", [b"layer-0" * 100, b"layer-1" * 100])
    stats = store.gc()
    assert stats.removed_content == 0 and stats.removed_snapshots == 0 and stats.bytes_freed == 0
    for d in built.blobs:
        assert has_content(store, d.digest) and blob_exists(store, d.digest)
    sn = store.snapshots("native")
    for cid in built.chain:
        sn.stat(cid)
    assert store.check().ok


def test_deleting_image_frees_exactly_its_bytes(store: Store) -> None:
    keep = build_image(store, "docker.io/library/keep:1", [b"shared-base", b"keep-top"])
    gone = build_image(store, "docker.io/library/gone:1", [b"shared-base", b"gone-top"])
    own_blobs = [d for d in gone.blobs if d.digest not in {k.digest for k in keep.blobs}]
    own_ids = [i for i in gone.snapshot_ids if i not in keep.snapshot_ids]
    assert len(own_blobs) == 3 and len(own_ids) == 1  # manifest, config, top layer; top snapshot
    expected = sum(d.size for d in own_blobs) + snapshot_bytes(store, "native", own_ids)
    store.images.delete(gone.name)
    assert all(has_content(store, d.digest) for d in own_blobs)  # nothing happens before gc
    stats = store.gc()
    assert stats.removed_content == 3
    assert stats.removed_snapshots == 1
    assert stats.bytes_freed == expected
    assert stats.removed_images == 0  # deleted by the user, not by gc
    assert stats.duration >= 0
    for d in own_blobs:
        assert not has_content(store, d.digest) and not blob_exists(store, d.digest)
    assert not snapshot_dir(store, "native", own_ids[0]).exists()
    for d in keep.blobs:
        assert blob_exists(store, d.digest)
    for i in keep.snapshot_ids:
        assert snapshot_dir(store, "native", i).is_dir()
    report = store.check()
    assert report.ok, report.problems
    assert store.gc().bytes_freed == 0  # idempotent


def test_synchronous_image_delete_collects(store: Store) -> None:
    built = build_image(store, "docker.io/library/app:1", [b"x"], snapshotter=None)
    store.images.delete(built.name, sync=True)
    assert not blob_exists(store, built.manifest.digest)


def test_expired_image_is_not_a_root_unless_leased(store: Store) -> None:
    past = rfc3339(datetime.now(UTC) - timedelta(seconds=5))
    exp = build_image(store, "docker.io/library/expired:1", [b"e"], snapshotter=None,
                      image_labels={"containerd.io/gc.expire": past})
    future = rfc3339(datetime.now(UTC) + timedelta(hours=1))
    fut = build_image(store, "docker.io/library/future:1", [b"f"], snapshotter=None,
                      image_labels={"containerd.io/gc.expire": future})
    bad = build_image(store, "docker.io/library/bad:1", [b"b"], snapshotter=None,
                      image_labels={"containerd.io/gc.expire": "not a time"})
    lease = store.leases.create(id="hold")
    leased = build_image(store, "docker.io/library/leased:1", [b"l"], snapshotter=None,
                         image_labels={"containerd.io/gc.expire": past})
    store.leases.add_resource(lease.id, Resource(leased.name, "images"))
    stats = store.gc()
    assert stats.removed_images == 1
    names = {i.name for i in store.images.list()}
    assert names == {fut.name, bad.name, leased.name}
    assert not blob_exists(store, exp.manifest.digest)
    assert all(blob_exists(store, d.digest) for d in leased.blobs)


# -- leases ---------------------------------------------------------------------------------------


def test_content_under_live_lease_survives(store: Store) -> None:
    with store.lease(expire=timedelta(hours=1)) as lease:
        digest = store.content.ingest(b"leased").digest
        store.gc()
        assert has_content(store, digest)
        assert Resource(digest, "content") in store.leases.list_resources(lease.id)
    store.gc()  # the lease ended with the block
    assert not has_content(store, digest) and not blob_exists(store, digest)


def test_expired_lease_is_dropped_with_its_resources(store: Store) -> None:
    lease = store.leases.create(id="short", expire=timedelta(hours=1))
    with store.db.lease_context(store.namespace, lease.id):
        digest = store.content.ingest(b"short-lived").digest
    store.gc()
    assert has_content(store, digest)
    stats = collect(store.db, store.root, now=time.time() + 2 * 3600)
    assert stats.removed_leases == 1 and stats.removed_content == 1
    assert not has_content(store, digest)
    assert store.leases.list() == []


def test_lease_expiring_now_is_dropped(store: Store) -> None:
    lease = store.leases.create(id="now", expire=timedelta(0))
    with store.db.lease_context(store.namespace, lease.id):
        digest = store.content.ingest(b"now").digest
    time.sleep(0.01)
    store.gc()
    assert not has_content(store, digest)


def test_lease_keeps_references_of_its_content(store: Store) -> None:
    built = build_image(store, "n:1", [b"a", b"b"], create=False)  # no image record
    lease = store.leases.create(id="m")
    store.leases.add_resource(lease.id, Resource(built.manifest.digest, "content"))
    store.gc()
    assert all(has_content(store, d.digest) for d in built.blobs)
    assert all(has_snapshot(store, "native", c) for c in built.chain)  # via the config's label


def test_flat_lease_does_not_follow_references(store: Store) -> None:
    built = build_image(store, "n:1", [b"a", b"b"], create=False)
    lease = store.leases.create(id="flat", labels={"containerd.io/gc.flat": "yes"})
    store.leases.add_resource(lease.id, Resource(built.manifest.digest, "content"))
    store.leases.add_resource(lease.id, Resource(built.chain[-1], "snapshots/native"))
    store.gc()
    assert has_content(store, built.manifest.digest)
    assert not has_content(store, built.config.digest)
    assert not any(has_content(store, d.digest) for d in built.layers)
    # flat snapshots still keep their parents
    assert all(has_snapshot(store, "native", c) for c in built.chain)


def test_flat_lease_on_image_keeps_only_its_target(store: Store) -> None:
    expired = rfc3339(datetime.now(UTC) - timedelta(hours=1))
    built = build_image(store, "img:1", [b"a"], snapshotter=None,
                        image_labels={"containerd.io/gc.expire": expired,
                                      f"{REF}.extra": blob(store, b"extra")})
    lease = store.leases.create(id="flat", labels={"containerd.io/gc.flat": "1"})
    store.leases.add_resource(lease.id, Resource(built.name, "images"))
    store.gc()
    assert store.images.get(built.name)
    assert has_content(store, built.manifest.digest)
    assert not has_content(store, built.config.digest)
    assert len(list(store.content.walk())) == 1


# -- gc.root, refs and back refs -----------------------------------------------------------------


def test_gc_root_label_keeps_content_and_its_references(store: Store) -> None:
    child = blob(store, b"child")
    root = blob(store, b"root", labels={"containerd.io/gc.root": "2026-01-01T00:00:00Z", REF: child})
    loose = blob(store, b"loose")
    store.gc()
    assert has_content(store, root) and has_content(store, child)
    assert not has_content(store, loose)


def test_gc_root_label_keeps_snapshot(store: Store) -> None:
    snapshot_record(store, "native", "base")
    snapshot_record(store, "native", "top", parent="base", labels={"containerd.io/gc.root": "x"})
    snapshot_record(store, "native", "other")
    stats = store.gc()
    assert has_snapshot(store, "native", "top") and has_snapshot(store, "native", "base")
    assert not has_snapshot(store, "native", "other")
    assert stats.removed_snapshots == 1


@pytest.mark.parametrize(("label", "kept"), [
    (REF, True),
    (f"{REF}.config", True),
    (f"{REF}.m.0", True),
    (f"{REF}/anything", True),
    (f"{REF}bad", False),
    ("containerd.io/gc.ref.contents", False),
])
def test_content_ref_label_forms(store: Store, label: str, kept: bool) -> None:
    child = blob(store, b"child")
    blob(store, b"parent", labels={"containerd.io/gc.root": "1", label: child})
    store.gc()
    assert has_content(store, child) is kept


def test_snapshot_ref_names_its_own_snapshotter(store: Store) -> None:
    # 5.20: gc.ref.snapshot.btrfs on an overlay snapshot references btrfs/sn1
    snapshot_record(store, "btrfs", "sn1")
    snapshot_record(store, "btrfs", "sn2")
    snapshot_record(store, "overlayfs", "top", labels={
        "containerd.io/gc.root": "1", "containerd.io/gc.ref.snapshot.btrfs": "sn1",
        "containerd.io/gc.ref.snapshot.btrfs/second": "missing-is-fine",
    })
    store.gc()
    assert has_snapshot(store, "btrfs", "sn1")
    assert not has_snapshot(store, "btrfs", "sn2")


def test_image_ref_label(store: Store) -> None:
    expired = rfc3339(datetime.now(UTC) - timedelta(hours=1))
    built = build_image(store, "ref:1", [b"r"], snapshotter=None,
                        image_labels={"containerd.io/gc.expire": expired})
    blob(store, b"holder", labels={"containerd.io/gc.root": "1", "containerd.io/gc.ref.image.x": built.name})
    store.gc()
    assert store.images.get(built.name)
    assert all(has_content(store, d.digest) for d in built.blobs)


def test_container_references_snapshot_and_labels(store: Store) -> None:
    # 5.20: a container refs both its snapshot and its labels
    snapshot_record(store, "native", "base")
    snapshot_record(store, "native", "rootfs", parent="base", kind="committed")
    extra = blob(store, b"spec")
    put_record(store, "containers", (store.namespace, "c1"), {
        "image": "", "snapshotter": "native", "snapshot_key": "rootfs",
        "labels": {f"{REF}.spec": extra}, "created_at": 0, "updated_at": 0,
    })
    store.gc()
    assert has_snapshot(store, "native", "rootfs") and has_snapshot(store, "native", "base")
    assert has_content(store, extra)


def test_back_references(store: Store) -> None:
    parent = blob(store, b"parent", labels={"containerd.io/gc.root": "1"})
    by_content = blob(store, b"bref-content", labels={"containerd.io/gc.bref.content": parent})
    by_content_named = blob(store, b"bref-content2", labels={"containerd.io/gc.bref.content.x": parent})
    bad_name = blob(store, b"bref-bad", labels={"containerd.io/gc.bref.contentx": parent})
    orphan = blob(store, b"bref-dead", labels={"containerd.io/gc.bref.content": "sha256:" + "0" * 64})
    snapshot_record(store, "native", "s-bref", labels={"containerd.io/gc.bref.content": parent})
    put_record(store, "containers", (store.namespace, "c1"), {
        "image": "", "snapshotter": "", "snapshot_key": "", "labels": {}, "created_at": 0, "updated_at": 0,
    })
    by_container = blob(store, b"bref-container", labels={"containerd.io/gc.bref.container": "c1"})
    snapshot_record(store, "native", "s-by-snap", labels={"containerd.io/gc.root": "1"})
    by_snapshot = blob(store, b"bref-snap", labels={"containerd.io/gc.bref.snapshot.native/x": "s-by-snap"})
    store.gc()
    for d in (by_content, by_content_named, by_container, by_snapshot):
        assert has_content(store, d)
    assert not has_content(store, bad_name) and not has_content(store, orphan)
    assert has_snapshot(store, "native", "s-bref")


def test_expired_image_back_reference(store: Store) -> None:
    # an expired image is kept while the object it names in gc.bref.* is reachable
    parent = blob(store, b"parent", labels={"containerd.io/gc.root": "1"})
    expired = rfc3339(datetime.now(UTC) - timedelta(hours=1))
    built = build_image(store, "bref:1", [b"z"], snapshotter=None, image_labels={
        "containerd.io/gc.expire": expired, "containerd.io/gc.bref.content": parent,
    })
    store.gc()
    assert store.images.get(built.name)
    assert all(has_content(store, d.digest) for d in built.blobs)


# -- snapshots ------------------------------------------------------------------------------------


def test_active_snapshots_are_roots(store: Store) -> None:
    sn = store.snapshots("native")
    sn.prepare("base-active", "")
    sn.commit("base", "base-active")
    sn.prepare("work", "base")  # a user's prepared snapshot, no lease
    sn.view("a-view", "base")
    store.gc()
    assert sn.stat("work") and sn.stat("base")
    assert not has_snapshot(store, "native", "a-view")


def test_active_snapshot_of_expired_lease_is_collected(store: Store) -> None:
    sn = store.snapshots("native")
    lease = store.leases.create(id="unpack", expire=timedelta(hours=1))
    with store.db.lease_context(store.namespace, lease.id):
        sn.prepare("extract-1 sha256:abc", "")
    store.gc()
    assert has_snapshot(store, "native", "extract-1 sha256:abc")
    collect(store.db, store.root, now=time.time() + 2 * 3600)
    assert not has_snapshot(store, "native", "extract-1 sha256:abc")


def test_snapshot_children_links_removed(store: Store) -> None:
    snapshot_record(store, "native", "p")
    snapshot_record(store, "native", "c", parent="p")
    store.gc()
    with store.db.read() as txn:
        assert txn.keys("snapshot_children") == []


# -- ingests ----------------------------------------------------------------------------------------


def test_ingest_roots_and_expiry(store: Store) -> None:
    with store.content.writer("unleased") as w:  # no lease: expires in 24 h
        w.write(b"partial")
    lease = store.leases.create(id="ing")
    with store.db.lease_context(store.namespace, lease.id), store.content.writer("leased") as w:
        w.write(b"partial2")
    store.gc()
    assert {s.ref for s in store.content.statuses()} == {"unleased", "leased"}
    stats = collect(store.db, store.root, now=time.time() + DAY + 60)
    assert stats.removed_ingests == 1
    assert {s.ref for s in store.content.statuses()} == {"leased"}
    assert len([p for p in (store.root / "content" / "ingest").iterdir() if p.is_dir()]) == 1


def test_ingest_without_expiry_is_not_a_root(store: Store) -> None:
    expected = blob(store, b"expected-elsewhere")
    put_record(store, "ingests", (store.namespace, "r"),
               {"bref": "default/1/r", "expected": "", "expire_at": None})
    put_record(store, "ingests", (store.namespace, "keep"), {
        "bref": "default/1/keep", "expected": expected, "expire_at": to_ns(
            datetime.now(UTC) + timedelta(hours=1)),
    })
    store.content.delete(expected)
    store.gc()
    with store.db.read() as txn:
        assert not txn.has("ingests", key(store.namespace, "r"))
        assert txn.has("ingests", key(store.namespace, "keep"))
    assert blob_exists(store, expected)  # an ingest's expected digest keeps the blob file


def test_locked_ingest_is_never_removed(store: Store) -> None:
    w = store.content.writer("busy")
    w.write(b"in progress")
    with store.db.write() as txn:  # the record vanishes (expired, aborted elsewhere, ...)
        txn.delete("ingests", key(store.namespace, "busy"))
    collect(store.db, store.root, now=time.time() + DAY)
    assert w.status().offset == len(b"in progress")
    digest = w.commit()
    assert store.content.read(digest) == b"in progress"


# -- namespaces and orphans -----------------------------------------------------------------------


def test_blob_shared_by_namespaces(store: Store) -> None:
    other = store.with_namespace("other")
    try:
        d = blob(store, b"shared")
        with other.lease(expire=timedelta(hours=1)):
            assert other.content.ingest(b"shared").digest == d
            other.content.update(d, {"containerd.io/gc.root": "1"})
        stats = store.gc()
        assert not has_content(store, d) and other.content.exists(d)
        assert blob_exists(store, d)
        assert stats.removed_content == 0
    finally:
        other.close()


def test_orphans_are_removed(store: Store) -> None:
    build_image(store, "x:1", [b"keep"])
    orphan_blob = blob_path(store, "sha256:" + "ab" * 32)
    orphan_blob.write_bytes(b"nobody")
    ingest = store.root / "content" / "ingest" / ("cd" * 32)
    ingest.mkdir()
    (ingest / "data").write_bytes(b"12345")
    lockfile = store.root / "content" / "ingest" / f"{'ef' * 32}.lock"
    lockfile.write_text("")
    old = time.time() - 3600
    for p in (ingest, lockfile):
        os.utime(p, (old, old))
    snaps = store.root / "snapshots" / "native"
    (snaps / "999" / "fs").mkdir(parents=True)
    (snaps / "gc-rm-998-abcd").mkdir()
    (snaps / "new-fresh").mkdir()
    stale = snaps / "new-stale"
    stale.mkdir()
    os.utime(stale, (old - 2 * 3600, old - 2 * 3600))
    stats = store.gc()
    assert not orphan_blob.exists() and not ingest.exists() and not lockfile.exists()
    assert not (snaps / "999").exists() and not (snaps / "gc-rm-998-abcd").exists() and not stale.exists()
    assert (snaps / "new-fresh").exists()  # may be a snapshot being built right now
    assert stats.removed_content == 1 and stats.removed_snapshots == 1
    assert stats.bytes_freed >= len(b"nobody") + 5
    report = store.check()
    assert report.ok, report.problems


def test_fresh_or_locked_ingest_dirs_are_kept(store: Store) -> None:
    ingest = store.root / "content" / "ingest"
    fresh = ingest / ("12" * 32)
    fresh.mkdir()
    held = ingest / ("34" * 32)
    held.mkdir()
    old = time.time() - 3600
    os.utime(held, (old, old))
    lock = RefLock(str(ingest / f"{'34' * 32}.lock"), "test").acquire()
    try:
        store.gc()
        assert fresh.exists() and held.exists()
    finally:
        lock.release(remove=True)
    store.gc()
    assert fresh.exists() and not held.exists()


def test_gc_resets_dirty_counter(store: Store) -> None:
    store.db.dirty = 5
    store.gc()
    assert store.db.dirty == 0
