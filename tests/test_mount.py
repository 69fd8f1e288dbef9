"""ocistore.mount: option handling, real bind/overlay mounts, long lower-dir lists, errors."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

import ocistore.mount as m
from ocistore import errors
from ocistore.snapshots import Mount
from ocistore.testing.snapshot_suite import check_directory_equal, mount_failure_reason


@pytest.fixture
def can_mount(tmp_path: Path) -> None:
    reason = mount_failure_reason(tmp_path)
    if reason:
        pytest.skip(f"mounting failed: {reason}")


def test_options_split_into_flags_and_data() -> None:
    parsed = m._parse(["ro", "rbind", "nosuid", "lowerdir=/a:/b", "index=off", "rw", "ro"])
    assert parsed.flags == m.MS_RDONLY | m.MS_BIND | m.MS_REC | m.MS_NOSUID
    assert parsed.data == ["lowerdir=/a:/b", "index=off"]


def test_compact_lowerdir_uses_common_parent() -> None:
    base = "/var/lib/ocistore/snapshots/overlayfs"
    opts = [f"workdir={base}/9/work", f"upperdir={base}/9/fs", f"lowerdir={base}/10/fs:{base}/1/fs",
            "index=off"]
    chdir, new = m._compact_lowerdir(opts)
    assert chdir == base
    assert new == [opts[0], opts[1], "index=off", "lowerdir=10/fs:1/fs"]
    assert m._compact_lowerdir([f"lowerdir={base}/1/fs"]) == ("", [f"lowerdir={base}/1/fs"])
    assert m._compact_lowerdir(["lowerdir=/a:/b"]) == ("", ["lowerdir=/a:/b"])


def test_is_mounted_unescapes() -> None:
    assert m._unescape(r"/a\040b\134c") == "/a b\\c"
    assert m.is_mounted("/")


@pytest.mark.root
@pytest.mark.usefixtures("can_mount")
class TestRealMounts:
    def test_bind_rw_and_ro(self, tmp_path: Path) -> None:
        src, dst = tmp_path / "src", tmp_path / "dst"
        src.mkdir()
        dst.mkdir()
        (src / "f").write_text("x")
        with m.mounted([Mount("bind", str(src), ["rw", "rbind"])], dst):
            assert m.is_mounted(dst)
            (dst / "g").write_text("y")
        assert not m.is_mounted(dst)
        assert (src / "g").read_text() == "y"
        with m.mounted([Mount("bind", str(src), ["ro", "rbind"])], dst):
            assert (dst / "f").read_text() == "x"
            with pytest.raises(OSError) as caught:
                (dst / "h").write_text("z")
            assert caught.value.errno == errno.EROFS
        assert (src / "f").stat().st_mode  # source still writable and intact

    def test_unmount_without_mount_is_noop_and_removes_stacks(self, tmp_path: Path) -> None:
        a, b, dst = tmp_path / "a", tmp_path / "b", tmp_path / "dst"
        for d in (a, b, dst):
            d.mkdir()
        m.unmount(dst)
        m.mount([Mount("bind", str(a), ["rbind"]), Mount("bind", str(b), ["rbind"])], dst)
        m.unmount(dst)
        assert not m.is_mounted(dst)

    def test_overlay_with_lowerdirs_beyond_a_page(self, tmp_path: Path) -> None:
        base = tmp_path / ("deep-" + "x" * 60) / "snapshots" / "overlayfs"
        layers = []
        for i in range(130):
            fs = base / str(i) / "fs"
            fs.mkdir(parents=True)
            (fs / f"file-{i}").write_text(str(i))
            (fs / "shared").write_text(str(i))
            layers.append(str(fs))
        nearest_first = list(reversed(layers))
        options = ["lowerdir=" + ":".join(nearest_first)]
        assert len(options[0]) > os.sysconf("SC_PAGE_SIZE")
        target = tmp_path / "mnt"
        target.mkdir()
        cwd = os.getcwd()
        with m.mounted([Mount("overlay", "overlay", options)], target) as root:
            assert os.getcwd() == cwd
            assert len(os.listdir(root)) == 131
            assert (root / "shared").read_text() == "129"
            assert (root / "file-0").read_text() == "0"

    def test_overlay_read_write(self, tmp_path: Path) -> None:
        lower, upper, work, target, flat = (tmp_path / n for n in ("lower", "upper", "work", "mnt", "flat"))
        for d in (lower, upper, work, target, flat):
            d.mkdir()
        (lower / "a").write_text("a")
        (flat / "a").write_text("a")
        (flat / "b").write_text("b")
        opts = [f"workdir={work}", f"upperdir={upper}", f"lowerdir={lower}"]
        with m.mounted([Mount("overlay", "overlay", opts)], target) as root:
            (root / "b").write_text("b")
            check_directory_equal(flat, root)
        assert sorted(os.listdir(upper)) == ["b"]

    def test_missing_target_and_bad_type(self, tmp_path: Path) -> None:
        with pytest.raises(errors.NotFound):
            m.mount([Mount("bind", str(tmp_path), ["rbind"])], tmp_path / "missing")
        with pytest.raises(errors.Error):
            m.mount([Mount("nosuchfs", "none", [])], tmp_path)

    def test_unprivileged_mount_is_failed_precondition(self, tmp_path: Path) -> None:
        """A process without CAP_SYS_ADMIN gets FailedPrecondition naming the fix, no OSError."""
        if os.geteuid() != 0:
            pytest.skip("needs root to switch to an unprivileged user")
        read_end, write_end = os.pipe()
        pid = os.fork()
        if pid == 0:  # child: drop to nobody (losing every capability) and try to mount
            os.close(read_end)
            try:
                os.setgid(65534)
                os.setuid(65534)
                m.mount([Mount("bind", "/", ["rbind"])], str(tmp_path))
                result = "mounted"
            except BaseException as e:
                result = f"{type(e).__name__}: {e}"
            os.write(write_end, result.encode())
            os._exit(0)
        os.close(write_end)
        with os.fdopen(read_end, "rb") as pipe:
            result = pipe.read().decode()
        os.waitpid(pid, 0)
        assert result.startswith("FailedPrecondition"), result
        assert "root" in result
