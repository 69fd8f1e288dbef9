"""Snapshotters: the conformance suite on both, plus overlay- and metadata-specific checks."""

from __future__ import annotations

import os
import stat
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from ocistore import errors
from ocistore.metadata.db import DB, key
from ocistore.mount import mounted
from ocistore.snapshots import (
    Kind,
    Mount,
    NativeSnapshotter,
    OverlaySnapshotter,
    SnapshotterBase,
    Usage,
    open_snapshotter,
)
from ocistore.testing.snapshot_suite import SnapshotterSuite, check_directory_equal, mount_failure_reason

INDEX_OFF = ["index=off"] if Path("/sys/module/overlay/parameters/index").exists() else []


def _factory(cls: type[SnapshotterBase]) -> Callable[[Path], tuple[SnapshotterBase, Callable[[], None]]]:
    def make(root: Path) -> tuple[SnapshotterBase, Callable[[], None]]:
        db = DB.open(str(root / "metadata.lmdb"))
        sn = cls(db, "testsuite", root)

        def cleanup() -> None:
            sn.close()
            db.release()

        return sn, cleanup

    return make


@pytest.mark.root
class TestOverlaySuite(SnapshotterSuite):
    factory = staticmethod(_factory(OverlaySnapshotter))


class TestNativeSuite(SnapshotterSuite):
    factory = staticmethod(_factory(NativeSnapshotter))


class TestNativeSuiteWithoutMounts(SnapshotterSuite):
    """What an unprivileged user gets: the snapshot trees are used through their paths."""

    factory = staticmethod(_factory(NativeSnapshotter))
    use_mounts = False


def test_check_directory_equal_sees_differences(tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    for d in (a, b):
        d.mkdir()
        (d / "f").write_text("same")
    check_directory_equal(a, b)
    os.chmod(b / "f", 0o600)
    os.chmod(a / "f", 0o644)
    with pytest.raises(AssertionError, match="differs /f"):
        check_directory_equal(a, b)
    (a / "only").mkdir()
    with pytest.raises(AssertionError, match="missing /only"):
        check_directory_equal(a, b)


# -- fixtures -------------------------------------------------------------------------------------
@pytest.fixture
def db(tmp_path: Path) -> Iterator[DB]:
    handle = DB.open(str(tmp_path / "metadata.lmdb"))
    yield handle
    handle.release()


@pytest.fixture
def overlay(db: DB, tmp_path: Path) -> OverlaySnapshotter:
    return OverlaySnapshotter(db, "default", tmp_path)


@pytest.fixture
def native(db: DB, tmp_path: Path) -> NativeSnapshotter:
    return NativeSnapshotter(db, "default", tmp_path)


@pytest.fixture
def can_mount(tmp_path: Path) -> None:
    reason = mount_failure_reason(tmp_path)
    if reason:
        pytest.skip(f"mounting failed: {reason}")


def _fs(root: Path, sid: int) -> str:
    return str(root / "snapshots" / "overlayfs" / str(sid) / "fs")


# -- overlay mounts (containerd overlay_test.go) --------------------------------------------------
def test_overlay_mounts_first_prepare_is_rw_bind(overlay: OverlaySnapshotter, tmp_path: Path) -> None:
    mounts = overlay.prepare("/tmp/test", "")
    assert mounts == [Mount("bind", _fs(tmp_path, 1), ["rw", "rbind"])]
    assert overlay.mounts("/tmp/test") == mounts
    assert (tmp_path / "snapshots/overlayfs/1/work").is_dir()


def test_overlay_mount_of_second_layer(overlay: OverlaySnapshotter, tmp_path: Path) -> None:
    overlay.prepare("/tmp/test", "")
    overlay.commit("base", "/tmp/test")
    (m,) = overlay.prepare("/tmp/layer2", "base")
    base = tmp_path / "snapshots/overlayfs/2"
    assert (m.type, m.source) == ("overlay", "overlay")
    assert m.options == [f"workdir={base}/work", f"upperdir={base}/fs", f"lowerdir={_fs(tmp_path, 1)}",
                         *INDEX_OFF]


def test_overlay_view_shapes(db: DB, tmp_path: Path) -> None:
    sn = OverlaySnapshotter(db, "default", tmp_path, options=["volatile"])
    sn.prepare("/tmp/base", "")
    sn.commit("base", "/tmp/base")
    assert sn.view("/tmp/view1", "base") == [Mount("bind", _fs(tmp_path, 1), ["ro", "rbind"])]
    sn.prepare("/tmp/top", "base")
    sn.commit("top", "/tmp/top")
    (m,) = sn.view("/tmp/view2", "top")
    assert (m.type, m.source) == ("overlay", "overlay")
    assert m.options == [f"lowerdir={_fs(tmp_path, 3)}:{_fs(tmp_path, 1)}", "volatile", *INDEX_OFF]
    assert sn.view("/tmp/view0", "") == [Mount("bind", _fs(tmp_path, 5), ["ro", "rbind"])]
    assert not (tmp_path / "snapshots/overlayfs/5/work").exists()


def test_configured_index_option_wins(db: DB, tmp_path: Path) -> None:
    sn = OverlaySnapshotter(db, "default", tmp_path, options=["index=on"])
    assert sn.options == ["index=on"]


@pytest.mark.parametrize(
    ("created_on", "rebase_to", "error"),
    [("", "", None), ("", "base", None), ("base", "base", None), ("base", "", None),
     ("base", "new", errors.InvalidArgument), ("", "active-parent", errors.FailedPrecondition),
     ("", "missing", errors.NotFound)],
)
def test_overlay_commit_rebase_matrix(
    overlay: OverlaySnapshotter, created_on: str, rebase_to: str, error: type[Exception] | None
) -> None:
    for name in ("base", "new"):
        overlay.prepare(f"{name}-a", "")
        overlay.commit(name, f"{name}-a")
    overlay.prepare("active-parent", "")
    overlay.prepare("key", created_on)
    if error is not None:
        with pytest.raises(error):
            overlay.commit("name", "key", parent=rebase_to)
        assert overlay.stat("key").kind is Kind.ACTIVE
        return
    overlay.commit("name", "key", parent=rebase_to)
    assert overlay.stat("name").parent == (created_on or rebase_to)
    overlay.prepare("child", "name")
    assert overlay.parents_paths("child")[0] == overlay.path("name")


def test_new_upper_dir_takes_parent_owner(overlay: OverlaySnapshotter) -> None:
    if os.geteuid() != 0:
        pytest.skip("chown needs root")
    overlay.prepare("a", "")
    os.chown(overlay.path("a"), 1000, 1001)
    overlay.commit("A", "a")
    overlay.prepare("b", "A")
    st = os.stat(overlay.path("b"))
    assert (st.st_uid, st.st_gid) == (1000, 1001)


# -- real overlay behaviour -------------------------------------------------------------------------
@pytest.mark.root
@pytest.mark.usefixtures("can_mount")
class TestOverlayMounted:
    def _layer(self, sn: OverlaySnapshotter, name: str, parent: str,
               fill: Callable[[Path], object]) -> None:
        sn.prepare(f"{name}-a", parent)
        fill(sn.path(f"{name}-a"))
        sn.commit(name, f"{name}-a")

    def test_read_through_lower(self, overlay: OverlaySnapshotter, tmp_path: Path) -> None:
        self._layer(overlay, "base", "", lambda p: (p / "foo").write_text("from base"))
        target = tmp_path / "mnt"
        target.mkdir()
        with mounted(overlay.prepare("top", "base"), target) as root:
            assert (root / "foo").read_text() == "from base"
            (root / "bar").write_text("from top")
        assert sorted(os.listdir(overlay.path("top"))) == ["bar"]

    def test_whiteout_and_opaque_dir_hide_lower(self, overlay: OverlaySnapshotter, tmp_path: Path) -> None:
        def lower(p: Path) -> None:
            (p / "gone").write_text("x")
            (p / "kept").write_text("k")
            (p / "dir").mkdir()
            (p / "dir/old").write_text("o")

        def upper(p: Path) -> None:
            os.mknod(p / "gone", stat.S_IFCHR | 0o600, os.makedev(0, 0))
            (p / "dir").mkdir()
            os.setxattr(p / "dir", "trusted.overlay.opaque", b"y")
            (p / "dir/new").write_text("n")

        self._layer(overlay, "l1", "", lower)
        self._layer(overlay, "l2", "l1", upper)
        target = tmp_path / "mnt"
        target.mkdir()
        with mounted(overlay.view("v", "l2"), target) as root:
            assert sorted(os.listdir(root)) == ["dir", "kept"]
            assert os.listdir(root / "dir") == ["new"]

    def test_merged_view_is_read_only(self, overlay: OverlaySnapshotter, tmp_path: Path) -> None:
        self._layer(overlay, "l1", "", lambda p: (p / "a").write_text("1"))
        self._layer(overlay, "l2", "l1", lambda p: (p / "b").write_text("2"))
        target = tmp_path / "mnt"
        target.mkdir()
        with mounted(overlay.view("v", "l2"), target) as root:
            assert sorted(os.listdir(root)) == ["a", "b"]
            with pytest.raises(OSError, match="Read-only"):
                (root / "c").write_text("3")

    def test_namespaces_are_isolated(self, db: DB, tmp_path: Path) -> None:
        one = OverlaySnapshotter(db, "one", tmp_path)
        two = OverlaySnapshotter(db, "two", tmp_path)
        self._layer(one, "same", "", lambda p: (p / "f").write_text("one"))
        with pytest.raises(errors.NotFound):
            two.stat("same")
        self._layer(two, "same", "", lambda p: (p / "f").write_text("two"))
        assert (one.path("same") / "f").read_text() == "one"
        assert (two.path("same") / "f").read_text() == "two"
        two.remove("same")
        assert one.stat("same").kind is Kind.COMMITTED
        assert [i.name for i in two.walk()] == []


# -- metadata rules shared by both snapshotters -----------------------------------------------------
@pytest.fixture(params=["overlayfs", "native"])
def sn(request: pytest.FixtureRequest, db: DB, tmp_path: Path) -> SnapshotterBase:
    made = open_snapshotter(request.param, db, "default", tmp_path)
    assert isinstance(made, SnapshotterBase)
    return made


def test_parent_rules(sn: SnapshotterBase) -> None:
    with pytest.raises(errors.NotFound, match="missing"):
        sn.prepare("a", "missing")
    sn.prepare("active", "")
    with pytest.raises(errors.InvalidArgument, match="not committed"):
        sn.prepare("b", "active")
    with pytest.raises(errors.InvalidArgument):
        sn.prepare("", "")
    assert sorted(os.listdir(sn.dir)) == ["1"]  # failed creates leave no directory


def test_commit_rules(sn: SnapshotterBase) -> None:
    sn.prepare("a", "")
    sn.view("v", "")
    with pytest.raises(errors.NotFound):
        sn.commit("x", "missing")
    with pytest.raises(errors.FailedPrecondition, match="not active"):
        sn.commit("x", "v")
    with pytest.raises(errors.AlreadyExists):
        sn.commit("v", "a")
    sn.prepare("b", "", labels={"old": "1"})
    sn.commit("B", "b", labels={"new": "2"})
    assert sn.stat("B").labels == {"new": "2"}
    with pytest.raises(errors.FailedPrecondition, match="committed"):
        sn.mounts("B")


def test_label_limits_and_update_rules(sn: SnapshotterBase) -> None:
    with pytest.raises(errors.InvalidArgument, match="4096"):
        sn.prepare("a", "", labels={"k": "v" * 4096})
    sn.prepare("a", "", labels={"k": "v" * 4095, "empty": ""})
    info = sn.stat("a")
    assert info.labels == {"k": "v" * 4095}
    with pytest.raises(errors.InvalidArgument):
        sn.update(info, ["kind"])
    with pytest.raises(errors.InvalidArgument):
        sn.update(type(info)(name=""))
    with pytest.raises(errors.NotFound):
        sn.update(type(info)(name="missing"))


def test_usage(sn: SnapshotterBase) -> None:
    sn.prepare("a", "")
    (sn.path("a") / "data").write_bytes(b"x" * 100_000)
    live = sn.usage("a")
    assert live.inodes == 2 and live.size >= 100_000
    sn.commit("A", "a")
    assert sn.usage("A") == live
    sn.view("v", "A")
    assert sn.usage("v") == Usage(0, 0)


def test_remove_deletes_directory_and_walk_filters(sn: SnapshotterBase) -> None:
    sn.prepare("a", "")
    path = sn.path("a").parent
    assert path.is_dir()
    sn.remove("a")
    assert not path.exists()
    with pytest.raises(errors.NotFound):
        sn.remove("a")
    with pytest.raises(errors.InvalidArgument):
        sn.walk("kind==")


def test_record_format(sn: SnapshotterBase, db: DB) -> None:
    sn.prepare("a", "", labels={"l": "1"})
    sn.commit("A", "a")
    sn.view("v", "A")
    with db.read() as txn:
        rec = txn.get("snapshots", key("default", sn.name, "v"))
        committed = txn.get("snapshots", key("default", sn.name, "A"))
        assert txn.has("snapshot_children", key("default", sn.name, "A", "v"))
    assert rec["kind"] == "view" and rec["parent"] == "A" and rec["id"] == 2
    assert set(rec) == {"id", "kind", "parent", "labels", "created_at", "updated_at", "size", "inodes"}
    assert committed["id"] == 1 and committed["kind"] == "committed"


def test_orphan_directories_do_not_break_creation(sn: SnapshotterBase) -> None:
    (sn.dir / "new-leftover").mkdir()
    (sn.dir / "1" / "fs").mkdir(parents=True)  # renamed before a crash, never committed
    (sn.dir / "1" / "fs" / "junk").write_text("x")
    sn.prepare("a", "")
    assert os.listdir(sn.path("a")) == []


def _with_lease(db: DB, lease: str) -> None:
    with db.write() as txn:
        txn.put("leases", key("default", lease), {"labels": {}, "created_at": 0})


def _leased(db: DB, lease: str, rtype: str) -> list[str]:
    with db.read() as txn:
        pfx = key("default", lease, rtype) + b"\x00"
        return sorted(k[len(pfx):].decode() for k in txn.keys("lease_resources", pfx))


def test_lease_membership_and_snapshot_ref_target(sn: SnapshotterBase, db: DB) -> None:
    _with_lease(db, "l1")
    rtype = f"snapshots/{sn.name}"
    with db.lease_context("default", "l1"):
        sn.prepare("a", "")
        assert _leased(db, "l1", rtype) == ["a"]
        sn.commit("A", "a")
        assert _leased(db, "l1", rtype) == ["A"]
        sn.view("v", "A")
        sn.remove("v")
        assert _leased(db, "l1", rtype) == ["A"]
    _with_lease(db, "l2")
    with db.lease_context("default", "l2"):
        with pytest.raises(errors.AlreadyExists, match="target snapshot 'A'"):
            sn.prepare("extract-1 A", "", labels={"containerd.io/snapshot.ref": "A"})
        assert _leased(db, "l2", rtype) == ["A"]
        with pytest.raises(errors.AlreadyExists):
            sn.prepare("A", "")
    with pytest.raises(errors.NotFound):
        sn.stat("extract-1 A")


def test_unknown_snapshotter_and_close(db: DB, tmp_path: Path) -> None:
    with pytest.raises(errors.NotFound, match="native, overlayfs"):
        open_snapshotter("zfs", db, "default", tmp_path)
    sn = open_snapshotter("native", db, "default", tmp_path)
    sn.close()
    sn.close()
    with pytest.raises(errors.FailedPrecondition):
        sn.prepare("a")


# -- native specifics --------------------------------------------------------------------------------
def test_native_copy_preserves_metadata(native: NativeSnapshotter) -> None:
    native.prepare("a", "")
    root = native.path("a")
    (root / "dir").mkdir(mode=0o750)
    (root / "dir/file").write_text("content")
    os.chmod(root / "dir/file", 0o4711)
    os.link(root / "dir/file", root / "hard")
    os.symlink("dir/file", root / "sym")
    os.mkfifo(root / "fifo")
    os.setxattr(root / "dir/file", "user.test", b"value")
    os.utime(root / "dir/file", ns=(1_000_000_123, 2_000_000_456))
    if os.geteuid() == 0:
        os.lchown(root / "dir", 12, 34)
        os.mknod(root / "null", stat.S_IFCHR | 0o666, os.makedev(1, 3))
    native.commit("A", "a")
    native.prepare("b", "A")
    copy = native.path("b")
    assert (copy / "dir/file").read_text() == "content"
    st = os.stat(copy / "dir/file")
    assert stat.S_IMODE(st.st_mode) == 0o4711 and st.st_mtime_ns == 2_000_000_456
    assert os.stat(copy / "hard").st_ino == st.st_ino
    assert os.readlink(copy / "sym") == "dir/file"
    assert stat.S_ISFIFO(os.lstat(copy / "fifo").st_mode)
    assert os.getxattr(copy / "dir/file", "user.test") == b"value"
    assert stat.S_IMODE(os.stat(copy / "dir").st_mode) == 0o750
    if os.geteuid() == 0:
        assert (os.stat(copy / "dir").st_uid, os.stat(copy / "dir").st_gid) == (12, 34)
        assert os.stat(copy / "null").st_rdev == os.makedev(1, 3)
    (copy / "dir/file").write_text("changed")
    assert (native.path("A") / "dir/file").read_text() == "content"


def test_native_mounts_and_no_rebase(native: NativeSnapshotter, tmp_path: Path) -> None:
    native.prepare("base-a", "")
    native.commit("base", "base-a")
    assert native.view("v", "base") == [Mount("bind", str(native.path("v")), ["ro", "rbind"])]
    native.prepare("loose", "")
    with pytest.raises(errors.InvalidArgument, match="rebase"):
        native.commit("x", "loose", parent="base")
    assert not native.supports_mount
