"""A parallel overlayfs unpack gives the same rootfs as a sequential (native) one.

Layers above the first are applied concurrently into parentless upper dirs. A member whose
parent directories are not in its own layer then has nothing to copy them from, and a
parent that is a symlink in a lower layer cannot be followed. containerd applies each
layer over its parents: implicit parents take the lower directory's mode, owner, xattrs
and times, and a member below a lower symlink lands where the symlink points.
"""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import pytest
from archive_helpers import TarBuilder, diff_snapshots, snapshot
from lazy_helpers import store_plain_image

from ocistore import Store
from ocistore.mount import mounted

pytestmark = pytest.mark.root


def _base() -> bytes:
    b = TarBuilder()
    b.mtime = 1_600_000_000
    return (b.dir("usr", 0o750).dir("usr/lib", 0o711, **{"SCHILY.xattr.user.origin": "base"})
            .file("usr/lib/a", b"a").symlink("lib", "usr/lib").dir("opt").dir("opt/app", 0o700)
            .file("opt/app/v1", b"1").dir("etc").bytes())


def _implicit() -> bytes:
    # no entries for usr/, usr/lib/, opt/, opt/app/: they come from the base layer
    return TarBuilder().file("usr/lib/b", b"b").file("opt/app/v2", b"2").bytes()


def _through_symlink() -> bytes:
    # lib is a symlink to usr/lib in the base layer: these land in usr/lib
    return TarBuilder().file("lib/c", b"c").dir("lib/sub").file("lib/sub/d", b"d").bytes()


def _other() -> bytes:
    return TarBuilder().file("etc/hostname", b"box\n").bytes()


def _rootfs(store: Store, name: str, snapshotter: str, target: Path) -> dict[str, tuple[object, ...]]:
    start = time.time() - 1
    top = store.unpack(name, snapshotter=snapshotter)
    sn = store.snapshots(snapshotter)
    target.mkdir()
    with mounted(sn.view(f"view-{snapshotter}", top), target) as root:
        # a directory that gets a new entry has the unpack's mtime on either side: not compared
        return snapshot(root, mtimes_before=start)


@pytest.mark.parametrize("layers", [
    [_base(), _implicit(), _other()],
    [_base(), _through_symlink(), _other()],
    [_base(), _other(), _implicit(), _through_symlink()],
])
def test_parallel_overlay_unpack_equals_native(tmp_path: Path, layers: list[bytes]) -> None:
    if os.geteuid() != 0:
        pytest.skip("mounting overlayfs needs root")
    probe = subprocess.run(["grep", "-qw", "overlay", "/proc/filesystems"], check=False)
    if probe.returncode != 0:
        pytest.skip("this kernel has no overlayfs")
    with Store(tmp_path / "s") as store:
        store_plain_image(store, "example.com/parents:1", layers)
        native = _rootfs(store, "example.com/parents:1", "native", tmp_path / "native")
        overlay = _rootfs(store, "example.com/parents:1", "overlayfs", tmp_path / "overlay")
        assert diff_snapshots(overlay, native) == []
        assert store.check().ok
