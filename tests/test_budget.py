"""Disk budget for unpacked snapshots: ``Store(snapshot_budget=...)``, ``store.evict``, ``snapshots evict``."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
from test_cli import ok, run

from ocistore import Store, errors
from ocistore._locks import keyed_lock
from ocistore.images import image_parts
from ocistore.mount import mount, unmount
from ocistore.testing.layout import write_layout

BASE = {"etc/": None, "etc/os-release": "ID=budget\n", "usr/lib/libbase.so": "b" * 40000}
APPS = {f"example.com/app{i}:1": [BASE, {f"app{i}.bin": chr(ord("a") + i) * (30000 + 1000 * i)}] for i in range(5)}


@pytest.fixture
def layout(tmp_path: Path) -> Path:
    path = tmp_path / "layout"
    write_layout(path, {**APPS, "example.com/solo:1": [{"solo.bin": "s" * 60000}]})
    return path


def _store(tmp_path: Path, layout: Path, **kw: object) -> Store:
    s = Store(tmp_path / "root", **kw)  # type: ignore[arg-type]
    s.import_archive(layout, fetch_only=True)
    return s


def _chains(store: Store, name: str) -> list[str]:
    return image_parts(store.content, store.images.get(name).target).chain_ids


def _unpack(store: Store, *names: str, sn: str = "native") -> None:
    for name in names:
        store.unpack(name, snapshotter=sn)
        time.sleep(0.002)  # distinct last-used times


def test_evicts_least_recently_used_first_and_keeps_blobs(tmp_path: Path, layout: Path) -> None:
    s = _store(tmp_path, layout)
    _unpack(s, "example.com/app0:1", "example.com/app1:1", "example.com/app2:1")
    # a container create is a use: app0 becomes the most recent
    s.containers.create("c0", "example.com/app0:1", snapshotter="native")
    s.containers.delete("c0")
    sn = s.snapshots("native")
    top1 = _chains(s, "example.com/app1:1")[-1]
    size1 = sn.usage(top1).size
    assert s.evict(s.unpacked_bytes() - size1) == [top1]  # app1: least recently used
    assert not s.is_unpacked("example.com/app1:1", snapshotter="native")
    assert s.is_unpacked("example.com/app0:1", snapshotter="native")
    assert s.is_unpacked("example.com/app2:1", snapshotter="native")
    # records and blobs stay (through a gc too); the base layer stays, others stand on it
    s.gc()
    assert all(b.present for b in s.inspect("example.com/app1:1").blobs)
    assert s.check().ok, s.check().problems
    events: list = []
    s.containers.create("c1", "example.com/app1:1", snapshotter="native", progress=events.append)
    extracted = [e.digest for e in events if e.status == "extracted"]
    assert extracted == [image_parts(s.content, s.images.get("example.com/app1:1").target).layers[1].digest]
    assert (sn.path("c1") / "app1.bin").read_text() == "b" * 31000
    s.close()


def test_evict_to_zero_spares_what_is_in_use(tmp_path: Path, layout: Path) -> None:
    """Containers, views, leases and unpacks in progress keep their chains."""
    s = _store(tmp_path, layout)
    _unpack(s, *APPS)
    sn = s.snapshots("native")
    s.containers.create("c0", "example.com/app0:1", snapshotter="native")
    sn.view("v1", _chains(s, "example.com/app1:1")[-1])
    with s.lease() as lease:
        s.unpack("example.com/app2:1", snapshotter="native")  # already there: nothing joins the lease
        s.leases.add_resource(lease.id, _res(_chains(s, "example.com/app2:1")[-1]))
        top3 = _chains(s, "example.com/app3:1")[-1]
        with keyed_lock(s.layout, f"unpack/default/native/{top3}"):
            gone = s.evict(0)
    kept = {n: s.is_unpacked(n, snapshotter="native") for n in APPS}
    assert kept == {"example.com/app0:1": True, "example.com/app1:1": True, "example.com/app2:1": True,
                    "example.com/app3:1": True, "example.com/app4:1": False}
    assert gone == [_chains(s, "example.com/app4:1")[-1]]  # the shared base has children
    assert s.check().ok
    s.close()


def _res(chain: str) -> object:
    from ocistore import Resource
    return Resource(id=chain, type="snapshots/native")


def test_dry_run_matches_the_real_run(tmp_path: Path, layout: Path) -> None:
    s = _store(tmp_path, layout)
    _unpack(s, *APPS, "example.com/solo:1")
    before = s.unpacked_bytes()
    target = before // 3
    planned = s.evict_layers(target, dry_run=True)
    assert s.unpacked_bytes() == before
    done = s.evict_layers(target)
    assert [(e.chain_id, e.size) for e in planned] == [(e.chain_id, e.size) for e in done]
    assert s.unpacked_bytes() == before - sum(e.size for e in done) <= target
    # LRU: app0 was unpacked first, so it goes first
    assert done[0].images == ("example.com/app0:1",)
    assert s.evict(s.unpacked_bytes()) == []
    with pytest.raises(errors.InvalidArgument, match="target_bytes"):
        s.evict()
    s.close()


def test_shared_top_goes_with_every_name(tmp_path: Path) -> None:
    """Two names for one config share a top: they are evicted together."""
    path = tmp_path / "layout2"
    write_layout(path, {"example.com/x:1": [BASE], "example.com/x-again:1": [BASE]})
    with Store(tmp_path / "root2") as s:
        s.import_archive(path, snapshotter="native")
        [e] = s.evict_layers(0)
        assert e.images == ("example.com/x-again:1", "example.com/x:1")
        assert not s.is_unpacked("example.com/x:1", snapshotter="native")


def test_node_model_stays_under_budget_after_each_create(tmp_path: Path, layout: Path) -> None:
    """A fetch-only node running one-off containers: every create unpacks lazily, evicts the
    least recently used images, and the unpacked bytes fit the budget after each one."""
    with Store(tmp_path / "probe") as probe:
        probe.import_archive(layout, snapshotter="native")
        one = max(probe.image_usage(["native"]), key=lambda u: u.unpacked[0].unpacked).unpacked[0].unpacked
        everything = probe.unpacked_bytes()
    budget = int(one * 2.2)
    assert everything > budget
    s = _store(tmp_path, layout, snapshot_budget=budget)
    order = [*APPS, "example.com/solo:1", "example.com/app0:1", "example.com/app3:1"]
    for i, name in enumerate(order):
        c = s.containers.create(f"c{i}", name, snapshotter="native")
        assert s.unpacked_bytes() <= budget, (name, s.unpacked_bytes(), budget)
        assert s.is_unpacked(name, snapshotter="native")  # never the image just created
        assert (s.snapshots("native").path(c.id) / "etc").exists() or name.endswith("solo:1")
        s.containers.delete(c.id)
    assert s.check().ok, s.check().problems
    s.close()


def test_budget_does_not_evict_the_image_being_created_even_when_too_big(tmp_path: Path, layout: Path) -> None:
    s = _store(tmp_path, layout, snapshot_budget=1)
    s.containers.create("c", "example.com/app0:1", snapshotter="native")
    assert s.is_unpacked("example.com/app0:1", snapshotter="native")
    s.unpack("example.com/app1:1", snapshotter="native")  # app0 is under a container: kept too
    assert s.is_unpacked("example.com/app0:1", snapshotter="native")
    s.containers.delete("c")
    s.unpack("example.com/app2:1", snapshotter="native")
    assert not s.is_unpacked("example.com/app0:1", snapshotter="native")
    assert s.is_unpacked("example.com/app2:1", snapshotter="native")
    s.close()


def test_concurrent_creates_under_a_budget(tmp_path: Path, layout: Path) -> None:
    s = _store(tmp_path, layout, snapshot_budget=1)
    failures: list[BaseException] = []

    def create(i: int, name: str) -> None:
        try:
            with s.with_namespace("default") as view:
                view.containers.create(f"t{i}", name, snapshotter="native")
        except BaseException as exc:  # pragma: no cover - reported below
            failures.append(exc)

    threads = [threading.Thread(target=create, args=(i, n)) for i, n in enumerate(APPS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not failures
    sn = s.snapshots("native")
    for i in range(len(APPS)):  # every container's rootfs is whole
        assert (sn.path(f"t{i}") / f"app{i}.bin").stat().st_size == 30000 + 1000 * i
    assert s.check().ok
    s.close()


@pytest.mark.root
def test_overlayfs_evict_and_recreate_with_real_mounts(tmp_path: Path, layout: Path) -> None:
    s = _store(tmp_path, layout)
    _unpack(s, "example.com/app0:1", "example.com/app1:1", sn="overlayfs")
    top0 = _chains(s, "example.com/app0:1")[-1]
    assert top0 in s.evict(s.unpacked_bytes() - 1)
    c = s.containers.create("c0", "example.com/app0:1")
    target = tmp_path / "rootfs"
    target.mkdir()
    try:
        mount(c.mounts, target)
    except errors.Error as exc:
        pytest.skip(f"cannot mount overlayfs here: {exc}")
    try:
        assert (target / "app0.bin").read_text() == "a" * 30000
        assert (target / "etc/os-release").read_text() == "ID=budget\n"
    finally:
        unmount(target)
    assert s.check().ok
    s.close()


def test_cli_snapshots_evict(tmp_path: Path, layout: Path) -> None:
    s = _store(tmp_path, layout)
    _unpack(s, "example.com/app0:1", "example.com/app1:1")
    top0 = _chains(s, "example.com/app0:1")[-1]
    root = s.root
    s.close()
    res = ok(run(root, "snapshots", "evict", "--target", "0", "--dry-run", "--json")).json()
    assert res["dry_run"] and res["evicted"][0]["chain_id"] == top0 and res["after"] < res["before"]
    out = ok(run(root, "snapshots", "evict", "--target", "0")).out
    assert top0 in out and "freed" in out
    with Store(root) as again:
        assert not again.is_unpacked("example.com/app0:1", snapshotter="native")
    assert run(root, "snapshots", "evict").code == 2


def test_du_shows_evictable_and_what_if(tmp_path: Path, layout: Path) -> None:
    s = _store(tmp_path, layout)
    _unpack(s, "example.com/app0:1", "example.com/app1:1")
    s.containers.create("c1", "example.com/app1:1", snapshotter="native")
    rows = {r.name: next(u for u in r.unpacked if u.snapshotter == "native") for r in s.image_usage(["native"])}
    sn = s.snapshots("native")
    assert rows["example.com/app0:1"].evictable == sn.usage(_chains(s, "example.com/app0:1")[-1]).size
    assert rows["example.com/app1:1"].evictable == 0  # a container stands on it
    root = s.root
    s.close()
    res = ok(run(root, "du", "--what-if", "--json")).json()
    assert res["evictable"] == rows["example.com/app0:1"].evictable and res["target"] == 0
    assert "evict would free" in ok(run(root, "du", "--what-if")).out
    table = ok(run(root, "du", "--images", "--bytes")).out.splitlines()
    assert "(EVICTABLE)" in table[0]
    with Store(root, readonly=True) as ro:  # a read-only store can still tell
        assert ro.evict(0, dry_run=True) == [_chains(ro, "example.com/app0:1")[-1]]


def test_a_base_image_goes_after_the_app_standing_on_it(tmp_path: Path) -> None:
    """An older base image under a newer app: a second pass evicts the base once the app went."""
    path = tmp_path / "layout3"
    write_layout(path, {"example.com/base:1": [BASE], "example.com/app:1": [BASE, {"x": "x" * 9000}]})
    with Store(tmp_path / "root3") as s:
        s.import_archive(path, fetch_only=True)
        _unpack(s, "example.com/base:1", "example.com/app:1")
        planned = s.evict(0, dry_run=True)
        assert planned == [*reversed(_chains(s, "example.com/app:1"))][:1] + _chains(s, "example.com/base:1")
        assert s.evict(0) == planned
        assert s.unpacked_bytes() == 0 and s.check().ok
