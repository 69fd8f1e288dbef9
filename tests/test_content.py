"""The content conformance suite on the namespaced store and the bare blob store, plus store-specific behaviour."""

from __future__ import annotations

import hashlib
import multiprocessing as mp
import os
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from ocistore import Store, errors
from ocistore.content import local
from ocistore.content.local import LocalStore
from ocistore.testing.content_suite import ContentStoreSuite, IsolatedContentSuite, MakeStore


class TestStoreContent(ContentStoreSuite):
    @pytest.fixture
    def make_store(self, tmp_path: Path) -> Iterator[MakeStore]:
        opened: list[Store] = []

        def make(ns: str) -> object:
            s = Store(tmp_path / "root", namespace=ns)
            opened.append(s)
            return s.content

        yield make
        for s in opened:
            s.close()


class TestBareLocalStore(ContentStoreSuite):
    """The same cases on the bare blob store, as containerd runs its suite on plugins/content/local.

    containerd's store_test.go gives its local store an in-memory label store; this one has
    none, so the labels cases assert FailedPrecondition (rule 1.20) instead.
    """

    supports_labels = False
    supports_namespaces = False
    missing_is_not_found = False

    @pytest.fixture
    def make_store(self, tmp_path: Path) -> MakeStore:
        store = LocalStore(tmp_path / "content")
        return lambda ns: store


class _IsolatedView:
    """The content store of an isolated-policy Store, plus namespace labels (suite cases 15-16)."""

    def __init__(self, store: Store) -> None:
        self._store = store

    def __getattr__(self, name: str) -> object:
        return getattr(self._store.content, name)

    def set_namespace_labels(self, labels: dict[str, str]) -> None:
        self._store.set_labels(labels)


class TestIsolatedContent(IsolatedContentSuite):
    @pytest.fixture
    def make_store(self, tmp_path: Path) -> Iterator[MakeStore]:
        opened: list[Store] = []

        def make(ns: str) -> object:
            s = Store(tmp_path / "root", namespace=ns, content_sharing="isolated")
            opened.append(s)
            return _IsolatedView(s)

        yield make
        for s in opened:
            s.close()


def _digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def test_corrupt_blob_on_disk_is_detected(tmp_path: Path) -> None:
    with Store(tmp_path) as s:
        d = s.content.ingest(b"precious data").digest
        path = LocalStore(tmp_path / "content").blob_path(d)
        os.chmod(path, 0o644)
        path.write_bytes(b"precious dat4")
        with pytest.raises(errors.DigestMismatch):
            s.content.read(d)


def test_bare_read_checks_digest_and_size(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cs = LocalStore(tmp_path)
    w = cs.writer("r")
    w.write(b"precious data")
    d = w.commit()
    assert cs.read(d) == b"precious data"
    monkeypatch.setattr(local, "MAX_READ", 4)
    with pytest.raises(errors.SizeLimitExceeded):
        cs.read(d)
    monkeypatch.undo()
    path = cs.blob_path(d)
    os.chmod(path, 0o644)
    path.write_bytes(b"precious dat4")
    with pytest.raises(errors.DigestMismatch):
        cs.read(d)
    path.write_bytes(b"precious data and more")
    with pytest.raises(errors.DigestMismatch):
        cs.read(d)


def test_bare_info_times_are_the_commit_time(tmp_path: Path) -> None:
    """A resumed ingest written long ago: the blob's created_at/updated_at are its commit, not its writes."""
    cs = LocalStore(tmp_path)
    w = cs.writer("old", total=5)
    w.write(b"hello")
    w.close()
    long_ago = time.time_ns() - 3600 * 10**9
    os.utime(cs.ingest_path("old") / "data", ns=(long_ago, long_ago))
    before = datetime.now(UTC)
    d = cs.writer("old", total=5).commit(5)
    after = datetime.now(UTC)
    info = cs.info(d)
    assert info.created_at == info.updated_at
    assert info.created_at is not None
    assert before - timedelta(seconds=1) <= info.created_at <= after + timedelta(seconds=1)


def test_blobs_are_read_only_and_atomic(tmp_path: Path) -> None:
    with Store(tmp_path) as s:
        d = s.content.ingest(b"abc").digest
        path = LocalStore(tmp_path / "content").blob_path(d)
        assert path.stat().st_mode & 0o222 == 0
        assert not any((tmp_path / "content" / "ingest").iterdir())


def test_namespace_validation(tmp_path: Path) -> None:
    for bad in ("", "a/b", "-x", "x" * 77, "version"):
        with pytest.raises(errors.InvalidArgument):
            Store(tmp_path, namespace=bad)


def test_reopen_sees_committed_data(tmp_path: Path) -> None:
    with Store(tmp_path) as s:
        d = s.content.ingest(b"persist").digest
    with Store(tmp_path) as s:
        assert s.content.read(d) == b"persist"


def _hold_writer(root: str, ref: str, ready: mp.synchronize.Event, done: mp.synchronize.Event) -> None:
    with Store(root) as s:
        w = s.content.writer(ref)
        w.write(b"partial")
        ready.set()
        done.wait(30)
        w.close()


def test_second_process_on_same_ref_is_unavailable(tmp_path: Path) -> None:
    ctx = mp.get_context("spawn")
    ready, done = ctx.Event(), ctx.Event()
    p = ctx.Process(target=_hold_writer, args=(str(tmp_path), "shared-ref", ready, done))
    p.start()
    try:
        assert ready.wait(60)
        with Store(tmp_path) as s, pytest.raises(errors.Unavailable, match="locked"):
            s.content.writer("shared-ref")
    finally:
        done.set()
        p.join(30)
    with Store(tmp_path) as s:
        w = s.content.writer("shared-ref")
        assert w.status().offset == len(b"partial")
        w.close()


def _commit_images(root: str, worker: int, n: int) -> None:
    from ocistore import Descriptor, Image

    with Store(root) as s:
        for i in range(n):
            data = f"manifest {worker}-{i}".encode()
            desc = s.content.ingest(data, labels={"containerd.io/gc.root": "x"})
            s.images.create(Image(
                name=f"example.com/w{worker}:{i}",
                target=Descriptor("application/vnd.oci.image.manifest.v1+json", desc.digest, desc.size),
            ))


def test_four_processes_commit_images_concurrently(tmp_path: Path) -> None:
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_commit_images, args=(str(tmp_path), w, 20)) for w in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
        assert p.exitcode == 0
    with Store(tmp_path) as s:
        images = s.images.list()
        assert len(images) == 80
        for img in images:
            assert s.content.read(img.target.digest).startswith(b"manifest ")


def _child_after_fork(root: str, q: mp.Queue[str]) -> None:
    with Store(root) as s:
        q.put(s.content.ingest(b"written by a forked child").digest)


def test_store_usable_in_a_forked_child(tmp_path: Path) -> None:
    ctx = mp.get_context("fork")
    with Store(tmp_path) as s:
        s.content.ingest(b"parent data")
        q: mp.Queue[str] = ctx.Queue()
        p = ctx.Process(target=_child_after_fork, args=(str(tmp_path), q))
        p.start()
        digest = q.get(timeout=60)
        p.join(60)
        assert p.exitcode == 0
        assert s.content.read(digest) == b"written by a forked child"
        s.content.ingest(b"parent still works")
