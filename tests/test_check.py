"""store.check(): blob integrity, image graphs, snapshot chains, orphans and repair."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from test_gc_support import blob_path, build_image, put_record, snapshot_dir, snapshot_record

from ocistore import Store
from ocistore.metadata.db import key
from ocistore.transfer.check import check


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    with Store(tmp_path / "root") as s:
        yield s


def _rewrite(path: Path, data: bytes) -> None:
    os.chmod(path, 0o644)
    path.write_bytes(data)


def test_clean_store_is_ok(store: Store) -> None:
    build_image(store, "a:1", [b"one", b"two"])
    report = store.check()
    assert report.ok and report.problems == [] and report.repaired == []


def test_corrupt_blob_is_reported(store: Store) -> None:
    built = build_image(store, "a:1", [b"one", b"two"], snapshotter=None)
    layer = built.layers[0]
    _rewrite(blob_path(store, layer.digest), b"ONE")  # same size, other bytes
    report = store.check()
    assert not report.ok
    assert len(report.problems) == 1
    assert layer.digest in report.problems[0] and "hashes to" in report.problems[0]
    assert check(store.db, store.root, verify=False).ok  # size still matches


def test_size_mismatch_and_missing_blob(store: Store) -> None:
    built = build_image(store, "a:1", [b"one", b"two"], snapshotter=None)
    _rewrite(blob_path(store, built.layers[0].digest), b"longer")
    os.unlink(blob_path(store, built.layers[1].digest))
    problems = store.check().problems
    assert any("recorded size 3" in p for p in problems)
    assert any("is missing" in p and built.layers[1].digest in p for p in problems)


def test_missing_image_children(store: Store) -> None:
    built = build_image(store, "a:1", [b"one", b"two"], snapshotter=None)
    store.content.delete(built.layers[1].digest)
    store.gc()  # the manifest's label still names the layer: gc leaves the rest alone
    problems = store.check().problems
    assert len(problems) == 1 and "layer" in problems[0] and "a:1" in problems[0]
    store.content.delete(built.config.digest)
    assert any("config" in p for p in store.check().problems)
    store.content.delete(built.manifest.digest)
    assert any("target" in p for p in store.check().problems)


def test_unpacked_image_may_lack_layers(store: Store) -> None:
    built = build_image(store, "a:1", [b"one", b"two"])  # unpacked: config has gc.ref.snapshot
    for layer in built.layers:
        store.content.delete(layer.digest)
    store.gc()
    report = store.check()
    assert report.ok, report.problems


def test_snapshot_chain_problems(store: Store) -> None:
    sid = snapshot_record(store, "native", "base")
    snapshot_record(store, "native", "child", parent="base")
    snapshot_record(store, "native", "lost", parent="gone", labels={"containerd.io/gc.root": "1"})
    snapshot_record(store, "native", "act", kind="active")
    snapshot_record(store, "native", "on-active", parent="act", labels={"containerd.io/gc.root": "1"})
    put_record(store, "snapshots", (store.namespace, "native", "base"),
               {"id": sid, "kind": "committed", "parent": "", "labels": {"containerd.io/gc.root": "1"}})
    os.rename(snapshot_dir(store, "native", sid), store.root / "moved")
    problems = store.check().problems
    assert any("lost" in p and "parent 'gone' does not exist" in p for p in problems)
    assert any("on-active" in p and "not committed" in p for p in problems)
    assert any("base" in p and "directory" in p and "missing" in p for p in problems)
    assert any("child link" in p and "gone" in p for p in problems)


def test_orphans_reported_and_repaired(store: Store) -> None:
    built = build_image(store, "a:1", [b"one"])
    orphan = blob_path(store, "sha256:" + "ab" * 32)
    orphan.write_bytes(b"x")
    sdir = store.root / "snapshots" / "native" / "4242"
    sdir.mkdir()
    ingest = store.root / "content" / "ingest" / ("cd" * 32)
    ingest.mkdir()
    old = time.time() - 3600
    os.utime(ingest, (old, old))
    report = store.check()
    assert not report.ok and len(report.problems) == 3
    assert all(p.startswith("orphan ") for p in report.problems)
    repaired = store.check(repair=True)
    assert repaired.ok and len(repaired.repaired) == 3
    assert not orphan.exists() and not sdir.exists() and not ingest.exists()
    assert all(blob_path(store, d.digest).exists() for d in built.blobs)  # referenced: untouched
    assert all(snapshot_dir(store, "native", i).is_dir() for i in built.snapshot_ids)


def test_repair_never_removes_referenced_damage(store: Store) -> None:
    built = build_image(store, "a:1", [b"one"], snapshotter=None)
    _rewrite(blob_path(store, built.layers[0].digest), b"bad")
    report = store.check(repair=True)
    assert not report.ok and report.repaired == []
    assert blob_path(store, built.layers[0].digest).exists()
    with store.db.read() as txn:
        assert txn.has("content", key(store.namespace, built.layers[0].digest))


def test_unparsable_manifest(store: Store) -> None:
    built = build_image(store, "a:1", [b"one"], snapshotter=None)
    path = blob_path(store, built.manifest.digest)
    os.chmod(path, 0o644)
    path.write_bytes(b"{" + b" " * (built.manifest.size - 1))
    problems = check(store.db, store.root, verify=False).problems
    assert len(problems) == 1 and "cannot be parsed" in problems[0]


def _chain(store: Store, snapshotter: str, n: int) -> list[str]:
    """``n`` committed layers l0 <- l1 <- ... and an active snapshot ``ctr`` on top."""
    sn = store.snapshots(snapshotter)
    parent = ""
    names = []
    for i in range(n):
        sn.prepare(f"extract-{i}", parent)
        (sn.path(f"extract-{i}") / f"file{i}").write_bytes(b"x" * 10)
        sn.commit(f"l{i}", f"extract-{i}", labels={"containerd.io/gc.root": "1"})
        parent = f"l{i}"
        names.append(parent)
    sn.prepare("ctr", parent)
    return names


@pytest.mark.parametrize("snapshotter", ["overlayfs", "native"])
def test_lost_snapshot_directories_are_reported(store: Store, snapshotter: str) -> None:
    import shutil

    sn = store.snapshots(snapshotter)
    names = _chain(store, snapshotter, 3)
    assert store.check().ok, store.check().problems
    shutil.rmtree(sn.path(names[0]))  # the fs/ of a committed layer the active snapshot stacks on
    shutil.rmtree(sn.path(names[1]).parent)  # the whole directory of another one
    problems = store.check().problems
    assert any(f"{snapshotter}/{names[0]}" in p and "fs" in p and "missing" in p for p in problems), problems
    assert any(f"{snapshotter}/{names[1]}" in p and "directory" in p and "missing" in p for p in problems)
    assert len(problems) == 2, problems
    stray = store.root / "snapshots" / snapshotter / "4242"
    stray.mkdir()
    (stray / "fs").mkdir()
    report = store.check()
    assert len(report.problems) == 3 and any("orphan" in p and "4242" in p for p in report.problems)
    repaired = store.check(repair=True)
    assert len(repaired.repaired) == 1 and "4242" in repaired.repaired[0]
    assert not stray.exists()
    assert len(repaired.problems) == 2  # the records' damage is reported, never touched
    assert sn.stat(names[0]).kind.value == "committed" and sn.stat("ctr").kind.value == "active"
