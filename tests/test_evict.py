"""Removing an image's snapshots while keeping its blobs (``store.remove_unpacked``, ``images unpack --rm``)."""

from __future__ import annotations

from pathlib import Path

import pytest
from test_cli import ok, run

from ocistore import Store, errors
from ocistore.images import image_parts
from ocistore.testing.layout import write_layout

BASE = {"etc/": None, "etc/os-release": "ID=evict\n", "usr/lib/libbase.so": "b" * 20000}


@pytest.fixture
def store(tmp_path: Path) -> Store:
    layout = tmp_path / "layout"
    write_layout(layout, {
        "example.com/a:1": [BASE, {"a.txt": "a" * 5000}],
        "example.com/b:1": [BASE, {"b.txt": "b" * 5000}],
        "example.com/b-again:1": [BASE, {"b.txt": "b" * 5000}],  # the same chain as b
    })
    s = Store(tmp_path / "root")
    s.import_archive(layout, fetch_only=True)
    for name in ("example.com/a:1", "example.com/b:1"):
        s.unpack(name, snapshotter="native")
    return s


def _chains(store: Store, name: str) -> list[str]:
    return image_parts(store.content, store.images.get(name).target).chain_ids


def test_removes_only_what_the_image_alone_uses(store: Store) -> None:
    a, b = _chains(store, "example.com/a:1"), _chains(store, "example.com/b:1")
    assert a[0] == b[0] and a[1] != b[1]
    assert store.remove_unpacked("example.com/a:1", snapshotter="native") == [a[1]]
    sn = store.snapshots("native")
    with pytest.raises(errors.NotFound):
        sn.stat(a[1])
    assert sn.stat(a[0]).kind.value == "committed"  # b stands on the shared base
    assert not store.is_unpacked("example.com/a:1", snapshotter="native")
    assert store.is_unpacked("example.com/b:1", snapshotter="native")
    config = image_parts(store.content, store.images.get("example.com/a:1").target).manifest.config.digest
    assert "containerd.io/gc.ref.snapshot.native" not in store.content.info(config).labels
    # blobs stay, through a gc too, and the next create unpacks only the missing layer
    store.gc()
    info = store.inspect("example.com/a:1")
    assert all(blob.present for blob in info.blobs)
    assert store.check().ok, store.check().problems
    events = []
    store.containers.create("c-a", "example.com/a:1", snapshotter="native", progress=events.append)
    extracted = {e.digest for e in events if e.status == "extracted"}
    assert extracted == {store.inspect("example.com/a:1").blobs[3].digest}
    assert (sn.path("c-a") / "a.txt").read_text() == "a" * 5000


def test_an_identical_chain_of_another_image_is_kept(tmp_path: Path) -> None:
    """Another image whose top is one of this image's layers keeps that layer and those below."""
    layout = tmp_path / "layout2"
    write_layout(layout, {"example.com/base:1": [BASE], "example.com/app:1": [BASE, {"x": "x"}]})
    with Store(tmp_path / "root2") as s:
        s.import_archive(layout, snapshotter="native")
        app = _chains(s, "example.com/app:1")
        assert s.remove_unpacked("example.com/app:1", snapshotter="native") == [app[1]]
        assert s.is_unpacked("example.com/base:1", snapshotter="native")


def test_a_container_on_the_image_blocks_removal(store: Store) -> None:
    store.containers.create("c-a", "example.com/a:1", snapshotter="native")
    with pytest.raises(errors.FailedPrecondition, match="c-a"):
        store.remove_unpacked("example.com/a:1", snapshotter="native")
    assert store.is_unpacked("example.com/a:1", snapshotter="native")
    store.containers.delete("c-a")
    assert len(store.remove_unpacked("example.com/a:1", snapshotter="native")) == 1  # the base: b uses it


def test_images_sharing_a_config_share_their_snapshots(store: Store) -> None:
    """b and b-again have the same layers, hence the same config blob: removing one keeps both."""
    assert store.is_unpacked("example.com/b-again:1", snapshotter="native")
    assert store.remove_unpacked("example.com/b:1", snapshotter="native") == []


def test_discarded_layers_refuse_removal(store: Store) -> None:
    layer = image_parts(store.content, store.images.get("example.com/b:1").target).layers[1]
    store.content.delete(layer.digest)
    with pytest.raises(errors.FailedPrecondition, match="fetch it again"):
        store.remove_unpacked("example.com/b:1", snapshotter="native")
    assert store.is_unpacked("example.com/b:1", snapshotter="native")


def test_cli_unpack_rm(store: Store) -> None:
    root = store.root
    top = _chains(store, "example.com/a:1")[-1]
    store.close()
    res = ok(run(root, "images", "unpack", "--rm", "--snapshotter", "native", "--json", "example.com/a:1")).json()
    assert res == {"name": "example.com/a:1", "snapshotter": "native", "removed": [top]}
    [row] = ok(run(root, "images", "check", "--snapshotter", "native", "--json", "example.com/a:1")).json()
    assert row["complete"] and row["unpacked"] is False
    assert ok(run(root, "images", "unpack", "--rm", "--snapshotter", "native", "example.com/a:1")).out == ""


def test_image_usage_splits_own_and_shared_bytes(store: Store) -> None:
    """``image_usage`` / ``du --images``: what each image costs and how much only it uses."""
    rows = {r.name: r for r in store.image_usage()}
    a, b, b2 = rows["example.com/a:1"], rows["example.com/b:1"], rows["example.com/b-again:1"]
    a_parts = image_parts(store.content, store.images.get("example.com/a:1").target)
    assert a.compressed == a_parts.size
    base = a_parts.layers[0].size
    assert a.compressed_exclusive == a.compressed - base  # the base layer is shared with b
    assert b.compressed_exclusive == 0 and b2.compressed == b.compressed  # b and b-again are one image
    na = next(u for u in a.unpacked if u.snapshotter == "native")
    nb = next(u for u in b.unpacked if u.snapshotter == "native")
    sn = store.snapshots("native")
    chains = _chains(store, "example.com/a:1")
    assert na.layers == 2 and na.unpacked == sum(sn.usage(c).size for c in chains)
    assert na.exclusive == sn.usage(chains[1]).size and nb.exclusive == 0
    assert all(u.layers == 0 for u in a.unpacked if u.snapshotter == "overlayfs")
    root = store.root
    store.close()
    table = ok(run(root, "du", "--images", "--bytes")).out.splitlines()
    assert table[0].split()[:3] == ["IMAGE", "COMPRESSED", "(OWN)"]
    row = next(line.split() for line in table if line.startswith("example.com/a:1"))
    assert row[1:3] == [str(a.compressed), str(a.compressed_exclusive)]
    [first, *_] = ok(run(root, "du", "--images", "--json")).json()
    assert set(first) == {"name", "compressed", "compressed_exclusive", "unpacked"}
