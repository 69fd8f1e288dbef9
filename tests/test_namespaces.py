"""store.namespaces: list, labels and delete, as containerd's core/metadata/namespaces.go.

A namespace can be deleted only when it holds no images, blobs, containers, leases or
snapshots of any snapshotter (FailedPrecondition naming what is left); deleting drops its
labels and leftover ingest records. Labels follow containerd: an empty value deletes one.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from test_gc_support import build_image

from ocistore import Store, errors


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    with Store(tmp_path / "root") as s:
        yield s


def test_list_labels_and_set_label(store: Store) -> None:
    ns = store.namespaces
    assert ns.list() == []
    with store.with_namespace("b") as b:
        b.content.ingest(b"x")
    ns.create("a", {"team": "x"})
    assert ns.list() == ["a", "b"]
    assert ns.labels("a") == {"team": "x"} and ns.labels("b") == {}
    ns.set_label("a", "containerd.io/namespace.shareable", "true")
    ns.set_label("a", "team", "")  # an empty value deletes, as containerd's SetLabel
    assert ns.labels("a") == {"containerd.io/namespace.shareable": "true"}
    ns.set_labels("b", {"k": "v"})
    with store.with_namespace("b") as b:
        assert b.labels == {"k": "v"}
    assert ns.labels("never-used") == {}  # containerd: no labels, no error
    with pytest.raises(errors.AlreadyExists):
        ns.create("a")
    for bad in ("", "a/b", "-x", "version", "x" * 77):
        with pytest.raises(errors.InvalidArgument):
            ns.labels(bad)
    with pytest.raises(errors.InvalidArgument):
        ns.set_label("a", "k" * 4097, "v")


def test_delete_an_empty_namespace(store: Store) -> None:
    ns = store.namespaces
    ns.create("empty", {"a": "b"})
    ns.delete("empty")
    assert "empty" not in ns.list() and ns.labels("empty") == {}
    with pytest.raises(errors.NotFound) as exc:
        ns.delete("empty")
    assert "empty" in str(exc.value)
    with pytest.raises(errors.InvalidArgument):
        ns.delete("bad/name")


def test_delete_refuses_a_namespace_that_holds_anything(store: Store) -> None:
    ns = store.namespaces
    with store.with_namespace("busy") as busy:
        built = build_image(busy, "example.com/a:1", [b"layer"], snapshotter="native")  # image, blobs, snapshots
        busy.snapshots("overlayfs").prepare("work", "")
        busy.containers.create("c", "example.com/a:1", snapshotter="native")
        busy.leases.create(id="held")
        with pytest.raises(errors.FailedPrecondition) as exc:
            ns.delete("busy")
        message = str(exc.value)
        assert message.startswith("namespace 'busy' must be empty, but it still has ")
        for kind in ("images", "blobs", "containers", "leases", 'snapshots on "native" snapshotter',
                     'snapshots on "overlayfs" snapshotter'):
            assert kind in message, message
        # take it apart kind by kind: each step still refuses until the last
        busy.containers.delete("c")
        busy.images.delete("example.com/a:1")
        busy.leases.delete("held")
        busy.snapshots("overlayfs").remove("work")
        for chain in reversed(built.chain):
            busy.snapshots("native").remove(chain)
        with pytest.raises(errors.FailedPrecondition) as exc:
            ns.delete("busy")
        assert "still has blobs; delete them first" in str(exc.value)
        for d in built.blobs:
            busy.content.delete(d.digest)
        w = busy.content.writer("left-over")  # an ingest does not count (containerd drops them)
        w.write(b"partial")
        w.close()
        ns.delete("busy")
        assert busy.content.statuses() == []
    assert "busy" not in ns.list()
    store.gc()
    assert store.check().ok, store.check().problems


def test_other_namespaces_are_untouched(store: Store) -> None:
    build_image(store, "example.com/keep:1", [b"keep"])
    with store.with_namespace("gone") as gone:
        gone.content.ingest(b"shared?")
        gone.content.delete(gone.content.walk().__next__().digest)
    store.namespaces.delete("gone")
    assert store.namespaces.list() == ["default"]
    assert [i.name for i in store.images.list()] == ["example.com/keep:1"]
