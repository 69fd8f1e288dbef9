"""Leases (semantics 2.22-2.26): records, resources, filters and the thread's lease context."""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from ocistore import Store, errors
from ocistore._time import parse_rfc3339
from ocistore.metadata.leases import Lease, LeaseManager, Resource, lease_context, random_id

DIGEST = "sha256:" + "a" * 64


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    with Store(tmp_path / "root") as s:
        yield s


def test_create_get_list_delete(store: Store) -> None:
    lease = store.leases.create(id="one", labels={"a": "1", "empty": ""})
    assert lease == Lease("one", {"a": "1"}, lease.created_at)
    assert lease.created_at is not None and lease.created_at.tzinfo is not None
    assert store.leases.get("one").labels == {"a": "1"}
    assert [x.id for x in store.leases.list()] == ["one"]
    with pytest.raises(errors.AlreadyExists):
        store.leases.create(id="one")
    store.leases.delete("one")
    with pytest.raises(errors.NotFound):
        store.leases.delete("one")
    assert store.leases.list() == []


def test_random_id_form(store: Store) -> None:
    assert re.fullmatch(r"\d{1,9}-[A-Za-z0-9_-]{4}", random_id())
    a, b = store.leases.create(), store.leases.create()
    assert a.id != b.id
    assert re.fullmatch(r"\d{1,9}-[A-Za-z0-9_-]{4}", a.id)


def test_expire_sets_rfc3339_label(store: Store) -> None:
    before = datetime.now(UTC)
    lease = store.leases.create(expire=timedelta(hours=1))
    exp = parse_rfc3339(lease.labels["containerd.io/gc.expire"])
    assert before + timedelta(minutes=59) < exp < before + timedelta(minutes=61)


def test_invalid_ids(store: Store) -> None:
    with pytest.raises(errors.InvalidArgument):
        store.leases.create(id="")


def test_list_filters(store: Store) -> None:
    store.leases.create(id="a", labels={"team": "x"})
    store.leases.create(id="b", labels={"team": "y", "containerd.io/gc.flat": "1"})
    store.leases.create(id="c")
    assert [x.id for x in store.leases.list("id==b")] == ["b"]
    assert [x.id for x in store.leases.list("labels.team==x")] == ["a"]
    assert [x.id for x in store.leases.list(["labels.team==x", "id==c"])] == ["a", "c"]
    assert [x.id for x in store.leases.list('labels."containerd.io/gc.flat"')] == ["b"]
    with pytest.raises(errors.InvalidArgument):
        store.leases.list("labels.==")


def test_namespaces_are_separate(store: Store) -> None:
    store.leases.create(id="mine")
    other = store.with_namespace("other")
    try:
        assert other.leases.list() == []
        other.leases.create(id="mine")
        with pytest.raises(errors.NotFound):
            other.leases.list_resources("nope")
    finally:
        other.close()


def test_resources_validation(store: Store) -> None:
    store.leases.create(id="l")
    with pytest.raises(errors.InvalidArgument):
        store.leases.add_resource("l", Resource("not-a-digest", "content"))
    with pytest.raises(errors.InvalidArgument):
        store.leases.add_resource("l", Resource("x", "content/extra"))
    with pytest.raises(errors.InvalidArgument):
        store.leases.add_resource("l", Resource("x", "snapshots"))
    with pytest.raises(errors.InvalidArgument):
        store.leases.add_resource("l", Resource("x", "snapshots/a/b"))
    with pytest.raises(errors.NotImplementedKind):
        store.leases.add_resource("l", Resource("x", "containers"))
    with pytest.raises(errors.NotFound):
        store.leases.add_resource("missing", Resource(DIGEST, "content"))
    with pytest.raises(errors.NotFound):
        store.leases.list_resources("missing")


def test_resources_order_and_delete(store: Store) -> None:
    store.leases.create(id="l")
    for r in (Resource("snap", "snapshots/overlayfs"), Resource("ref", "ingests"),
              Resource("img", "images"), Resource(DIGEST, "content"), Resource("n", "snapshots/native")):
        store.leases.add_resource("l", r)
    store.leases.add_resource("l", Resource(DIGEST, "content"))  # twice is once
    assert store.leases.list_resources("l") == [
        Resource(DIGEST, "content"), Resource("img", "images"), Resource("ref", "ingests"),
        Resource("n", "snapshots/native"), Resource("snap", "snapshots/overlayfs"),
    ]
    dirty = store.db.dirty
    store.leases.delete_resource("l", Resource("img", "images"))
    store.leases.delete_resource("l", Resource("absent", "images"))  # no-op
    assert store.db.dirty == dirty + 2
    assert Resource("img", "images") not in store.leases.list_resources("l")
    store.leases.delete("l")
    with store.db.read() as txn:
        assert txn.keys("lease_resources") == []


def test_lease_context_joins_and_deletes(store: Store) -> None:
    manager = store.leases
    with lease_context(manager, expire=timedelta(minutes=5), labels={"k": "v"}) as lease:
        assert store.db.current_lease(store.namespace) == lease.id
        assert "containerd.io/gc.expire" in lease.labels
        digest = store.content.ingest(b"joined").digest
        assert Resource(digest, "content") in manager.list_resources(lease.id)
        seen: list[str | None] = []
        t = threading.Thread(target=lambda: seen.append(store.db.current_lease(store.namespace)))
        t.start()
        t.join()
        assert seen == [None]  # other threads do not join
    assert store.db.current_lease(store.namespace) is None
    assert manager.list() == []


def test_store_lease_with_given_id(store: Store) -> None:
    with store.lease(id="mine", expire=timedelta(hours=1)) as lease:
        assert lease.id == "mine"
        store.leases.delete("mine")  # deleting it inside the block is fine
    assert store.leases.list() == []


def test_lease_context_exception_still_deletes(store: Store) -> None:
    with pytest.raises(RuntimeError), store.lease(expire=None):
        raise RuntimeError("boom")
    assert store.leases.list() == []


def test_synchronous_delete_runs_gc(store: Store) -> None:
    lease = store.leases.create(id="s")
    with store.db.lease_context(store.namespace, lease.id):
        digest = store.content.ingest(b"held").digest
    store.leases.delete("s", sync=True)
    assert not store.content.exists(digest)


def test_manager_without_gc_callable_collects_the_root(store: Store) -> None:
    manager = LeaseManager(store.db, store.namespace)
    manager.create(id="s")
    with store.db.lease_context(store.namespace, "s"):
        digest = store.content.ingest(b"held2").digest
    manager.delete("s", sync=True)
    assert not store.content.exists(digest)


def test_operations_in_missing_lease_fail(store: Store) -> None:
    with store.db.lease_context(store.namespace, "ghost"), pytest.raises(errors.NotFound):
        store.content.ingest(b"x")
