"""A store opened read-only: everything that reads works, everything that writes is refused."""

from __future__ import annotations

import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from test_cli import ok, run

from ocistore import Store, errors
from ocistore.metadata.leases import Resource
from ocistore.testing.layout import write_layout

NAME = "example.com/ro:1"


@pytest.fixture
def root(tmp_path: Path) -> Path:
    layout = tmp_path / "layout"
    write_layout(layout, {NAME: [{"etc/": None, "etc/hello": "hello\n"}], "example.com/other:1": [{"x": "x"}]})
    with Store(tmp_path / "root") as s:
        s.import_archive(layout, snapshotter="native")
        s.images.delete("example.com/other:1")  # leaves garbage that a gc would remove
    return tmp_path / "root"


def _files(root: Path) -> list[str]:
    """Every path with its size and mtime, but LMDB's reader-lock file (readers register there)."""
    find = ["find", str(root), "-printf", "%p %s %T@\n"]
    out = subprocess.run(find, check=True, capture_output=True, text=True).stdout
    return [line for line in out.splitlines() if "/lock.mdb " not in line]


def _everything_that_writes(s: Store, tmp: Path) -> dict[str, Callable[[], Any]]:
    img = s.images.get(NAME)
    return {
        "ingest": lambda: s.content.ingest(b"new"),
        "writer": lambda: s.content.writer("ref"),
        "label": lambda: s.content.update(img.target.digest, {"a": "b"}),
        "image delete": lambda: s.images.delete(NAME),
        "image tag": lambda: s.images.upsert("example.com/tag:1", img.target),
        "prepare": lambda: s.snapshots("native").prepare("k", ""),
        "container": lambda: s.containers.create("c1", NAME, snapshotter="native"),
        "lease": s.leases.create,
        "lease resource": lambda: s.leases.add_resource("x", Resource(img.target.digest, "content")),
        "gc": s.gc,
        "repair": lambda: s.check(repair=True),
        "import": lambda: s.import_archive(tmp / "layout"),
    }


def test_readonly_reads_and_refuses_writes(root: Path, tmp_path: Path) -> None:
    before = _files(root)
    with Store(root, readonly=True) as s:
        assert s.readonly
        img = s.images.get(NAME)
        assert [i.name for i in s.images.list()] == [NAME]
        assert s.content.read(img.target.digest)
        assert s.is_unpacked(NAME, snapshotter="native")
        top = s.inspect(NAME).chain_id
        assert (s.snapshots("native").path(top) / "etc" / "hello").read_text() == "hello\n"
        assert s.disk_usage().total > 0
        assert s.check().ok, s.check().problems
        for what, call in _everything_that_writes(s, tmp_path).items():
            with pytest.raises(errors.FailedPrecondition, match="read-only"):
                call()
            assert what
    assert _files(root) == before  # not a byte, not a timestamp changed


def test_readonly_view_beside_a_writable_store(root: Path) -> None:
    """One process may hold a read-write and a read-only store of one root (one LMDB environment)."""
    with Store(root) as rw, Store(root, readonly=True) as ro:
        rw.content.ingest(b"written through the writable store")
        assert any(i.size == 34 for i in ro.content.walk())
        with pytest.raises(errors.FailedPrecondition, match="read-only"):
            ro.content.ingest(b"no")
    with Store(root, readonly=True), pytest.raises(errors.FailedPrecondition, match="close those stores"):
        Store(root)


def test_readonly_of_a_missing_root(tmp_path: Path) -> None:
    with pytest.raises(errors.NotFound, match="ocistore root"):
        Store(tmp_path / "nothing", readonly=True)
    assert not (tmp_path / "nothing").exists()


@pytest.fixture
def ro_mount(root: Path, tmp_path: Path) -> Iterator[Path]:
    target = tmp_path / "ro"
    target.mkdir()
    res = subprocess.run(["mount", "--bind", str(root), str(target)], check=False, capture_output=True, text=True)
    if res.returncode:
        pytest.skip(f"cannot bind-mount here: {res.stderr.strip()}")
    try:
        subprocess.run(["mount", "-o", "remount,bind,ro", str(target)], check=True)
        yield target
    finally:
        subprocess.run(["umount", str(target)], check=False)


@pytest.mark.root
def test_read_only_media_open_read_only_by_themselves(ro_mount: Path) -> None:
    """On a read-only mount the CLI lists, measures, checks and reads; writes fail in one line."""
    with Store(ro_mount) as s:
        assert s.readonly
    [img] = ok(run(ro_mount, "--json", "images", "ls")).json()
    assert img["name"] == NAME
    assert ok(run(ro_mount, "du", "--json")).json()["total"] > 0
    assert ok(run(ro_mount, "check")).out == "ok\n"
    assert ok(run(ro_mount, "content", "get", img["digest"])).out.startswith("{")
    assert ok(run(ro_mount, "images", "inspect", NAME)).out
    for argv in (["gc"], ["images", "rm", NAME], ["containers", "create", "c", NAME, "--snapshotter", "native"],
                 ["check", "--repair"]):
        res = run(ro_mount, *argv)
        assert res.code == 1 and "read-only" in res.stderr and res.stderr.count("\n") == 1, (argv, res.stderr)


def _last_txn(root: Path) -> int:
    import lmdb

    env = lmdb.open(str(root / "metadata.lmdb"), readonly=True, lock=False, max_dbs=16)
    try:
        return int(env.info()["last_txnid"])
    finally:
        env.close()


def test_opening_a_current_root_writes_nothing(root: Path) -> None:
    before = _last_txn(root)
    for readonly in (False, True, False):
        with Store(root, readonly=readonly) as s:
            assert s.images.get(NAME).name == NAME
    assert _last_txn(root) == before  # no write transaction (and so no fdatasync) on open


def test_an_older_schema_is_migrated_by_a_read_write_open_only(root: Path) -> None:
    import lmdb

    env = lmdb.open(str(root / "metadata.lmdb"), max_dbs=16)
    with env.begin(write=True) as txn:  # what a root from before schema version 1 looks like
        assert txn.delete(b"version", db=env.open_db(b"meta", txn=txn))
    env.close()
    with pytest.raises(errors.FailedPrecondition, match="schema version 0"):
        Store(root, readonly=True)
    with Store(root) as s:
        assert s.images.get(NAME).name == NAME
    with Store(root, readonly=True) as s:  # migrated: read-only opens work again
        assert s.check().ok
