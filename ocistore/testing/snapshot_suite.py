"""The snapshotter conformance suite (containerd ``core/snapshots/testsuite``), for pytest.

Mix :class:`SnapshotterSuite` into a test class and give it a factory::

    class TestMySnapshotter(SnapshotterSuite):
        factory = staticmethod(lambda root: make_my_snapshotter(root))

The factory receives an empty directory and returns a snapshotter (or a pair of the
snapshotter and a cleanup callable). Each of the 21 cases of containerd's suite is one test
method. Layers are written through the mounts the snapshotter returns, really mounted when
the process may mount; a snapshotter that does not need mounts (``supports_mount`` false, as
native) is written through its bind source directly when it may not. Each snapshot is checked
by mounting a view of it and comparing it with a flat directory the same changes went into.
"""

from __future__ import annotations

import contextlib
import errno
import itertools
import os
import shutil
import stat
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import ClassVar, Protocol

import attrs
import pytest

from ocistore import errors
from ocistore.mount import mount, mounted, unmount
from ocistore.snapshots.types import Kind, Mount, SnapshotInfo, Snapshotter

__all__ = [
    "Applier",
    "SnapshotterFactory",
    "SnapshotterSuite",
    "apply",
    "check_directory_equal",
    "chown",
    "create_dir",
    "create_file",
    "link",
    "remove_all",
    "rename",
]

Applier = Callable[[Path], None]


class SnapshotterFactory(Protocol):
    """Builds the snapshotter under test in an empty directory; may also return a cleanup."""

    def __call__(self, root: Path, /) -> Snapshotter | tuple[Snapshotter, Callable[[], None]]:
        """The snapshotter (or it and its cleanup callable) rooted at ``root``."""
        ...


# -- filesystem changes (continuity's fstest, in small functions) -------------------------------
def _at(root: Path, name: str) -> Path:
    return root / name.lstrip("/")


def apply(*appliers: Applier) -> Applier:
    """One applier running ``appliers`` in order."""

    def run(root: Path) -> None:
        for a in appliers:
            a(root)

    return run


def create_file(name: str, data: bytes, mode: int) -> Applier:
    """Write ``name`` with ``data`` (replacing it) and set its permission bits to ``mode``."""

    def run(root: Path) -> None:
        path = _at(root, name)
        path.write_bytes(data)
        os.chmod(path, mode)

    return run


def create_dir(name: str, mode: int) -> Applier:
    """Create the directory ``name`` with permission bits ``mode``."""

    def run(root: Path) -> None:
        path = _at(root, name)
        path.mkdir()
        os.chmod(path, mode)

    return run


def remove_all(name: str) -> Applier:
    """``rm -rf name``."""

    def run(root: Path) -> None:
        path = _at(root, name)
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        elif os.path.lexists(path):
            path.unlink()

    return run


def chown(name: str, uid: int, gid: int) -> Applier:
    """``chown -h uid:gid name``."""
    return lambda root: os.lchown(_at(root, name), uid, gid)


def link(old: str, new: str) -> Applier:
    """Hardlink ``new`` to ``old``."""
    return lambda root: os.link(_at(root, old), _at(root, new))


def rename(old: str, new: str) -> Applier:
    """Rename ``old`` to ``new``."""
    return lambda root: os.rename(_at(root, old), _at(root, new))


_HIDDEN_XATTRS = ("trusted.overlay.", "user.overlay.", "security.selinux")


def _describe(path: Path) -> tuple[object, ...]:
    st = os.lstat(path)
    kind = stat.S_IFMT(st.st_mode)
    if stat.S_ISREG(kind):
        body: object = path.read_bytes()
    elif stat.S_ISLNK(kind):
        body = os.readlink(path)
    elif stat.S_ISCHR(kind) or stat.S_ISBLK(kind):
        body = st.st_rdev
    else:
        body = None
    try:
        names = os.listxattr(path, follow_symlinks=False)
    except OSError:
        names = []
    xattrs = sorted(
        (n, os.getxattr(path, n, follow_symlinks=False)) for n in names if not n.startswith(_HIDDEN_XATTRS)
    )
    return (oct(kind), oct(stat.S_IMODE(st.st_mode)), st.st_uid, st.st_gid, body, xattrs)


def _tree(root: Path) -> dict[str, tuple[object, ...]]:
    out: dict[str, tuple[object, ...]] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in itertools.chain(dirnames, filenames):
            path = Path(dirpath) / name
            out["/" + str(path.relative_to(root))] = _describe(path)
    return out


def check_directory_equal(expected: Path, actual: Path) -> None:
    """Assert both trees hold the same entries: type, mode, owner, content, xattrs (not times)."""
    want, got = _tree(expected), _tree(actual)
    problems = [f"missing {p}" for p in sorted(want.keys() - got.keys())]
    problems += [f"unexpected {p}" for p in sorted(got.keys() - want.keys())]
    problems += [
        f"differs {p}: expected {want[p]!r}, got {got[p]!r}"
        for p in sorted(want.keys() & got.keys())
        if want[p] != got[p]
    ]
    assert not problems, f"{actual} differs from {expected}:\n  " + "\n  ".join(problems[:20])


# -- mounting -----------------------------------------------------------------------------------
_probe: list[str] = []  # [] not probed; [""] can mount; [reason] cannot


def mount_failure_reason(scratch: Path) -> str:
    """"" when this process can bind-mount, else why not (probed once per process)."""
    if not _probe:
        src, dst = scratch / "probe-src", scratch / "probe-dst"
        src.mkdir(exist_ok=True)
        dst.mkdir(exist_ok=True)
        try:
            mount([Mount("bind", str(src), ["rbind"])], dst)
            unmount(dst)
            _probe.append("")
        except errors.Error as e:
            _probe.append(str(e))
    return _probe[0]


GC_ROOT = {"containerd.io/gc.root": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")}


class SnapshotterSuite:
    """The 21 cases of containerd's snapshotter suite as pytest methods."""

    factory: ClassVar[SnapshotterFactory]
    use_mounts: ClassVar[bool] = True
    """False: never mount, write and read through bind sources (what an unprivileged user gets)."""
    sn: Snapshotter
    work: Path
    real_mounts: bool
    _targets: Iterator[int]

    @pytest.fixture(autouse=True)
    def _setup(self, tmp_path: Path) -> Iterator[None]:
        root, self.work = tmp_path / "root", tmp_path / "work"
        root.mkdir()
        self.work.mkdir()
        reason = mount_failure_reason(tmp_path)
        made = type(self).factory(root)
        self.sn, cleanup = made if isinstance(made, tuple) else (made, made.close)
        self.real_mounts = self.use_mounts and not reason
        self._targets = itertools.count()
        if self.sn.supports_mount and not self.real_mounts:
            cleanup()
            pytest.skip(f"the {self.sn.name} snapshotter needs mounts and mounting failed: {reason}")
        old_umask = os.umask(0)
        try:
            yield
        finally:
            os.umask(old_umask)
            cleanup()

    # -- helpers ------------------------------------------------------------------------------
    @contextlib.contextmanager
    def attached(self, mounts: list[Mount], target: Path) -> Iterator[Path]:
        """The snapshot's tree: mounted on ``target``, or the bind source when not mounting."""
        if self.real_mounts:
            target.mkdir(parents=True, exist_ok=True)
            with mounted(mounts, target) as path:
                yield path
            return
        if len(mounts) != 1 or mounts[0].type != "bind":
            pytest.skip(f"mounts {mounts} need a real mount")
        yield Path(mounts[0].source)

    def mount_point(self) -> Path:
        """A fresh directory to mount on."""
        return self.work / f"mnt-{next(self._targets)}"

    def prepare_and_apply(self, key: str, parent: str, applier: Applier) -> None:
        """Prepare the active snapshot ``key`` on ``parent`` (gc root labels) and run ``applier`` on its tree."""
        with self.attached(self.sn.prepare(key, parent, GC_ROOT), self.mount_point()) as root:
            applier(root)

    def check_view(self, name: str, flat: Path) -> None:
        """Assert that a view of snapshot ``name`` equals the directory ``flat``; the view is removed after."""
        view = f"{name}-view"
        with self.attached(self.sn.view(view, name, GC_ROOT), self.mount_point()) as root:
            check_directory_equal(flat, root)
        self.sn.remove(view)

    def check_snapshots(self, *appliers: Applier) -> None:
        """Chain a snapshot per applier; after each, a view must equal a flat directory."""
        flat = self.work / f"flat-{time.monotonic_ns()}"
        flat.mkdir()
        parent = ""
        for i, applier in enumerate(appliers):
            name = f"{flat.name}-{i}"
            self.prepare_and_apply(f"{name}-prepare", parent, applier)
            self.sn.commit(name, f"{name}-prepare", GC_ROOT)
            applier(flat)
            self.check_view(name, flat)
            parent = name

    def commit_empty(self, key: str, name: str, parent: str = "") -> None:
        """Prepare ``key`` on ``parent`` and commit it unchanged as ``name``."""
        self.sn.prepare(key, parent, GC_ROOT)
        self.sn.commit(name, key, GC_ROOT)

    # -- 1-8: metadata behaviour ----------------------------------------------------------------
    def test_basic(self) -> None:
        """Prepare, write, commit, stack, walk, view, and removal order."""
        initial = apply(create_file("/foo", b"foo\n", 0o777), create_dir("/a", 0o755),
                        create_dir("/a/b", 0o755), create_dir("/a/b/c", 0o755))
        diff = apply(create_file("/bar", b"bar\n", 0o777), create_file("/foo", b"bar\n", 0o777),
                     remove_all("/a/b"))
        preparing, committed = str(self.work / "preparing"), str(self.work / "committed")
        self.prepare_and_apply(preparing, "", initial)
        self.sn.commit(committed, preparing, GC_ROOT)
        si = self.sn.stat(committed)
        assert (si.parent, si.kind) == ("", Kind.COMMITTED)
        with pytest.raises(errors.NotFound):
            self.sn.stat(preparing)

        nxt, next_committed = str(self.work / "nextlayer"), str(self.work / "committed-next")
        flat = self.work / "flat"
        flat.mkdir()
        initial(flat)
        with self.attached(self.sn.prepare(nxt, committed, GC_ROOT), self.work / "mnt-next") as root:
            check_directory_equal(flat, root)
            diff(root)
        ni = self.sn.stat(nxt)
        assert (ni.parent, ni.kind) == (committed, Kind.ACTIVE)
        self.sn.commit(next_committed, nxt, GC_ROOT)
        si2 = self.sn.stat(next_committed)
        assert (si2.parent, si2.kind) == (committed, Kind.COMMITTED)
        with pytest.raises(errors.NotFound):
            self.sn.stat(nxt)
        walked = {info.name: info for info in self.sn.walk()}
        assert walked[committed] == si
        assert walked[next_committed] == si2

        diff(flat)
        view = str(self.work / "nextnextlayer")
        with self.attached(self.sn.view(view, next_committed, GC_ROOT), self.work / "mnt-view") as root:
            check_directory_equal(flat, root)
        self.sn.remove(view)
        with pytest.raises(errors.FailedPrecondition, match="remove"):
            self.sn.remove(committed)
        self.sn.remove(next_committed)
        self.sn.remove(committed)

    def test_stat_active(self) -> None:
        """A prepared snapshot stats as active with its key as name and no parent."""
        preparing = str(self.work / "preparing")
        self.prepare_and_apply(preparing, "", create_file("/foo", b"foo\n", 0o777))
        si = self.sn.stat(preparing)
        assert (si.name, si.kind, si.parent) == (preparing, Kind.ACTIVE, "")

    def test_stat_committed(self) -> None:
        """A committed snapshot stats as committed under its name."""
        preparing, committed = str(self.work / "preparing"), str(self.work / "committed")
        self.prepare_and_apply(preparing, "", create_file("/foo", b"foo\n", 0o777))
        self.sn.commit(committed, preparing, GC_ROOT)
        si = self.sn.stat(committed)
        assert (si.name, si.kind, si.parent) == (committed, Kind.COMMITTED, "")

    def test_transitivity(self) -> None:
        """Parents chain: A <- B, the parent of B's parent is empty."""
        snap_a, snap_b = str(self.work / "snapA"), str(self.work / "snapB")
        self.prepare_and_apply("preparing", "", create_file("/foo", b"foo\n", 0o777))
        self.sn.commit(snap_a, "preparing", GC_ROOT)
        self.prepare_and_apply("next", snap_a, create_file("/foo", b"foo bar\n", 0o777))
        self.sn.commit(snap_b, "next", GC_ROOT)
        si_b = self.sn.stat(snap_b)
        assert self.sn.stat(snap_a).parent == ""
        assert si_b.parent == snap_a
        assert self.sn.stat(si_b.parent).parent == ""

    def test_prepare_view_failing(self) -> None:
        """A key can be created once, whether by prepare or view."""
        self.commit_empty("preparing", "snapA")
        creators = [(self.sn.prepare, self.sn.view), (self.sn.prepare, self.sn.prepare),
                    (self.sn.view, self.sn.view)]
        for i, (first, second) in enumerate(creators):
            first(f"layer-{i}", "snapA", GC_ROOT)
            with pytest.raises(errors.AlreadyExists):
                second(f"layer-{i}", "snapA", GC_ROOT)

    def _base_snapshots(self) -> None:
        self.commit_empty("c1-a", "c1")
        self.commit_empty("c2-a", "c2", "c1")
        self.sn.prepare("a1", "c2", GC_ROOT)
        self.sn.prepare("a2", "", GC_ROOT)
        self.sn.view("v1", "c2", GC_ROOT)
        self.sn.view("v2", "", GC_ROOT)

    def test_update(self) -> None:
        """Only labels change; created stays, updated moves; other fields are refused."""
        t1 = datetime.now(UTC)
        self._base_snapshots()
        t2 = datetime.now(UTC)
        cases = [("c1", Kind.COMMITTED, ""), ("c2", Kind.COMMITTED, "c1"), ("a1", Kind.ACTIVE, "c2"),
                 ("a2", Kind.ACTIVE, ""), ("v1", Kind.VIEW, "c2"), ("v2", Kind.VIEW, "")]
        for name, kind, parent in cases:
            st = self.sn.stat(name)
            assert st.created_at is not None and t1 <= st.created_at <= t2
            assert (st.updated_at, st.kind, st.parent, st.name) == (st.created_at, kind, parent, name)
            root = {"containerd.io/gc.root": datetime.now(UTC).isoformat()}
            expected = {"l1": "v1", "l2": "v2", "l3": "v3", **root}
            u1 = datetime.now(UTC)
            new = self.sn.update(attrs.evolve(st, parent="doesnotexist", labels=expected))
            u2 = datetime.now(UTC)
            assert new.created_at == st.created_at
            assert new.updated_at is not None and u1 <= new.updated_at <= u2
            assert (new.kind, new.parent, new.name, new.labels) == (kind, parent, name, expected)

            new = self.sn.update(attrs.evolve(new, labels={"l1": "updated", "l4": "v4"}),
                                 ["labels.l1", "labels.l2"])
            assert new.labels == {"l1": "updated", "l3": "v3", **root}
            new = self.sn.update(attrs.evolve(new, labels={"l4": "v4", **root}), ["labels"])
            assert new.labels == {"l4": "v4", **root}
            with pytest.raises(errors.InvalidArgument):
                self.sn.update(attrs.evolve(new, parent="doesnotexist"), ["parent"])

    def test_remove(self) -> None:
        """Removed keys and names can be reused at once, with other kinds and parents."""
        self.commit_empty("committed-a", "committed-1")
        self.sn.prepare("reuse-1", "committed-1", GC_ROOT)
        self.sn.remove("reuse-1")
        self.sn.view("reuse-1", "committed-1", GC_ROOT)
        self.sn.remove("reuse-1")
        self.sn.prepare("reuse-1", "", GC_ROOT)
        self.sn.remove("committed-1")
        self.sn.commit("committed-1", "reuse-1", GC_ROOT)

    def test_walk(self) -> None:
        """Filters on kind, name, parent and labels; several filters are alternatives."""
        root = {"containerd.io/gc.root": "check-walk"}
        self.sn.prepare("a-np", "", root)
        self.sn.prepare("p-tmp", "", root)
        self.sn.commit("p", "p-tmp", root)
        self.sn.prepare("a", "p", root)
        self.sn.view("v", "p", root)
        self.sn.prepare("p-wl-tmp", "", root)
        self.sn.commit("p-wl", "p-wl-tmp", {"l": "1", **root})
        self.sn.prepare("a-wl", "p-wl", {"l": "2", **root})
        self.sn.view("v-wl", "p-wl", {"l": "3", **root})
        self.sn.prepare("a-np-wl", "", {"l": "2", **root})
        gc_root = 'labels."containerd.io/gc.root"==check-walk'
        cases: list[tuple[list[str], set[str]]] = [
            ([gc_root], {"a-np", "p", "a", "v", "p-wl", "a-wl", "v-wl", "a-np-wl"}),
            ([f"kind==active,{gc_root}"], {"a-np", "a", "a-wl", "a-np-wl"}),
            ([f"kind==view,{gc_root}"], {"v", "v-wl"}),
            ([f"kind==committed,{gc_root}"], {"p", "p-wl"}),
            (["name==p", "name==a-np-wl"], {"p", "a-np-wl"}),
            (["name==a-wl,labels.l"], {"a-wl"}),
            (["parent==p"], {"a", "v"}),
            ([f'parent!="",{gc_root}'], {"a", "v", "a-wl", "v-wl"}),
            (["labels.l"], {"p-wl", "a-wl", "v-wl", "a-np-wl"}),
            (["labels.l==2"], {"a-wl", "a-np-wl"}),
        ]
        for filters, expected in cases:
            assert {info.name for info in self.sn.walk(filters)} == expected, filters

    # -- 9-15: layers (containerd issues.go) --------------------------------------------------------
    def test_layer_file_update(self) -> None:
        """Content and mode updates of lower files show, across second boundaries."""
        l1 = apply(create_dir("/etc", 0o700), create_file("/etc/hosts", b"mydomain 10.0.0.1", 0o644),
                   create_file("/etc/profile", b"PATH=/usr/bin", 0o644))
        l2 = apply(create_file("/etc/hosts", b"mydomain 10.0.0.2", 0o644),
                   create_file("/etc/profile", b"PATH=/usr/bin", 0o666), create_dir("/root", 0o700),
                   create_file("/root/.bashrc", b"PATH=/usr/sbin:/usr/bin", 0o644))
        for _ in range(5):
            self.check_snapshots(l1, l2)
            time.sleep(1 - time.time() % 1)  # to the next second boundary

    def test_remove_directory_in_lower_layer(self) -> None:
        """A directory removed and recreated hides the lower contents."""
        self.check_snapshots(
            apply(create_dir("/lib", 0o700), create_file("/lib/hidden", b"", 0o644)),
            apply(remove_all("/lib"), create_dir("/lib", 0o700), create_file("/lib/not-hidden", b"", 0o644)),
            create_file("/lib/newfile", b"", 0o644),
        )

    def _need_chown(self) -> None:
        if os.geteuid() != 0:
            pytest.skip("changing owners to 1:1 needs root")

    def test_chown(self) -> None:
        """Owner changes of lower directories and files show in the upper layer."""
        self._need_chown()
        self.check_snapshots(
            apply(create_dir("/opt", 0o700), create_dir("/opt/a", 0o700), create_dir("/opt/a/b", 0o700),
                  create_file("/opt/a/b/file.txt", b"hello", 0o644)),
            apply(chown("/opt", 1, 1), chown("/opt/a", 1, 1), chown("/opt/a/b", 1, 1),
                  chown("/opt/a/b/file.txt", 1, 1)),
        )

    def test_directory_permission_on_commit(self) -> None:
        """Owners survive commits through removals and re-creations of directories."""
        self._need_chown()
        l1 = apply(*(create_dir(f"/dir{i}", 0o700) for i in range(1, 6)),
                   create_file("/dir4/f1", b"...", 0o644), create_file("/dir5/f1", b"...", 0o644),
                   chown("/dir1", 1, 1), chown("/dir2", 1, 1), chown("/dir3", 1, 1), chown("/dir5", 1, 1),
                   chown("/dir5/f1", 1, 1))
        l2 = apply(chown("/dir2", 0, 0), remove_all("/dir3"), chown("/dir4", 1, 1), chown("/dir4/f1", 1, 1))
        l3 = apply(create_dir("/dir3", 0o700), chown("/dir3", 1, 1), remove_all("/dir5"),
                   create_dir("/dir5", 0o700), chown("/dir5", 1, 1))
        self.check_snapshots(l1, l2, l3)

    def test_remove_intermediate_snapshot(self) -> None:
        """A snapshot with children cannot be removed; top-down removal works."""
        base, inter, top = (str(self.work / n) for n in ("committed-base", "committed-inter", "toplayer"))
        self.prepare_and_apply(str(self.work / "base"), "", apply())
        self.sn.commit(base, str(self.work / "base"), GC_ROOT)
        self.commit_empty(str(self.work / "intermediate"), inter, base)
        self.sn.prepare(top, inter, GC_ROOT)
        with pytest.raises(errors.FailedPrecondition):
            self.sn.remove(inter)
        for key in (top, inter, base):
            self.sn.remove(key)

    def test_deleted_files_in_child_snapshot(self) -> None:
        """A file deleted in a layer stays deleted in it and in an empty layer above."""
        self.check_snapshots(
            apply(create_file("/foo", b"foo\n", 0o777), create_file("/foobar", b"foobar\n", 0o777)),
            remove_all("/foobar"),
            apply(),
        )

    def test_move_file_from_lower_layer(self) -> None:
        """Removing a lower directory and moving a lower file by link+unlink."""
        self.check_snapshots(
            apply(create_dir("/dir1", 0o700), create_file("/dir1/f1", b"Hello", 0o644),
                  create_dir("dir2", 0o700), create_file("dir2/f2", b"...", 0o644)),
            apply(create_dir("/dir3", 0o700), create_file("/dir3/f1", b"Hello", 0o644),
                  remove_all("/dir1"), link("dir2/f2", "dir3/f2"), remove_all("dir2/f2")),
        )

    # -- 16-21 --------------------------------------------------------------------------------------
    def test_view_readonly(self) -> None:
        """A mounted view refuses writes (EROFS expected): checked with a real mount."""
        if not self.real_mounts:
            pytest.skip("read-only views can only be checked with a real mount")
        preparing, committed = str(self.work / "preparing"), str(self.work / "committed")
        self.sn.prepare(preparing, "", GC_ROOT)
        self.sn.commit(committed, preparing, GC_ROOT)
        view = str(self.work / "view")
        with self.attached(self.sn.view(view, committed, GC_ROOT), self.work / "view-mount") as root:
            with pytest.raises(OSError) as caught:
                (root / "testfile").write_bytes(b"testcontent")
            assert caught.value.errno in (errno.EROFS, errno.EACCES, errno.EPERM)
        self.sn.remove(view)
        self.sn.remove(committed)

    def test_stat_in_walk(self) -> None:
        """stat() while walking returns the same info as the walk."""
        pfx = "stats-in-walk-"
        self.commit_empty(f"{pfx}c1-a", f"{pfx}c1")
        self.commit_empty(f"{pfx}c2-a", f"{pfx}c2", f"{pfx}c1")
        self.sn.prepare(f"{pfx}a1", f"{pfx}c2", GC_ROOT)
        self.sn.view(f"{pfx}v1", f"{pfx}c2", GC_ROOT)
        seen: list[SnapshotInfo] = []
        for info in self.sn.walk():
            if info.name.startswith(pfx):
                assert self.sn.stat(info.name) == info
                seen.append(info)
        assert len(seen) == 4

    def test_close_twice(self) -> None:
        """close() may be called twice."""
        name = f"closeTwice-{time.monotonic_ns()}"
        self.commit_empty(f"{name}-prepare", name)
        self.sn.remove(name)
        self.sn.close()
        self.sn.close()

    def test_root_permission(self) -> None:
        """The root of a fresh snapshot is mode 0755."""
        with self.attached(self.sn.prepare("preparing", "", GC_ROOT), self.work / "preparing") as root:
            assert stat.S_IMODE(os.stat(root).st_mode) == 0o755

    def test_rename(self) -> None:
        """Renames of lower files (and of directories, except on overlayfs)."""
        l1 = apply(create_dir("/dir1", 0o700), create_dir("/somefiles", 0o700),
                   create_file("/somefiles/f1", b"was here first!", 0o644),
                   create_file("/somefiles/f2", b"nothing interesting", 0o644))
        changes: list[Applier] = [] if self.sn.name == "overlayfs" else [rename("/dir1", "/dir2")]
        changes += [create_file("/somefiles/f1-overwrite", b"new content 1", 0o644),
                    rename("/somefiles/f1-overwrite", "/somefiles/f1"),
                    rename("/somefiles/f2", "/somefiles/f3")]
        self.check_snapshots(l1, apply(*changes))

    def test_128_layers_mount(self) -> None:
        """128 stacked layers (mount options beyond a page) equal the flat directory."""
        layers: list[Applier] = [apply(
            create_file("/bottom", b"way at the bottom\n", 0o777),
            create_file("/overwriteme", b"FIRST!\n", 0o777), create_dir("/addhere", 0o755),
            create_dir("/onlyme", 0o755), create_file("/onlyme/bottom", b"bye!\n", 0o777))]
        layers += [apply(
            create_file("/overwriteme", f"{i} WAS HERE!\n".encode(), 0o777),
            create_file(f"/addhere/file-{i}", b"same\n", 0o755), remove_all("/onlyme"),
            create_dir("/onlyme", 0o755), create_file(f"/onlyme/file-{i}", b"only me!\n", 0o777),
        ) for i in range(1, 128)]
        flat = self.work / "flat"
        flat.mkdir()
        parent = ""
        for i, layer in enumerate(layers):
            preparing = str(self.work / f"prepare-layer-{i}")
            with self.attached(self.sn.prepare(preparing, parent, GC_ROOT), Path(preparing)) as root:
                check_directory_equal(flat, root)
                layer(flat)
                layer(root)
                check_directory_equal(flat, root)
            parent = str(self.work / f"committed-{i}")
            self.sn.commit(parent, preparing, GC_ROOT)
        view = self.work / "fullview"
        with self.attached(self.sn.view(str(view), parent, GC_ROOT), view) as root:
            check_directory_equal(flat, root)
