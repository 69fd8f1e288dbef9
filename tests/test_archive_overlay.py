"""Overlay mode for real: layers applied into upper dirs, mounted with overlayfs, merged view checked."""

from __future__ import annotations

import io
import os
import stat
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from archive_helpers import TarBuilder, blob_path, diff_snapshots, layers_of, snapshot

from ocistore import errors
from ocistore.archive import apply_layer

pytestmark = pytest.mark.root


def _mount_overlay(lowers: list[Path], target: Path) -> None:
    """Read-only overlay of ``lowers`` (top first); skips the test if the kernel refuses."""
    if os.geteuid() != 0:
        pytest.skip("mounting overlayfs needs root")
    opts = "lowerdir=" + ":".join(str(p) for p in lowers)
    proc = subprocess.run(
        ["mount", "-t", "overlay", "overlay", "-o", opts, str(target)], capture_output=True, text=True, check=False
    )
    if proc.returncode != 0:
        pytest.skip(f"cannot mount overlayfs here: {proc.stderr.strip()}")


@pytest.fixture
def merged(tmp_path: Path) -> Iterator[Path]:
    target = tmp_path / "merged"
    target.mkdir()
    yield target
    subprocess.run(["umount", str(target)], capture_output=True, check=False)


def apply_tar(data: bytes, upper: Path, lowers: list[Path]) -> None:
    apply_layer(io.BytesIO(data), upper, overlay=True, lower_dirs=lowers)


LAYER1 = (
    TarBuilder()
    .dir("a")
    .file("a/keep", b"keep")
    .file("a/gone", b"gone")
    .dir("a/sub", 0o750)
    .file("a/sub/x", b"x")
    .dir("b")
    .file("b/old1", b"1")
    .file("b/old2", b"2")
    .dir("c")
    .file("c/f", b"f")
    .dir("c/deep")
    .file("c/deep/g", b"g")
    .symlink("lnk", "a")
    .file("top", b"top")
    .dir("e")
    .file("e/lower", b"l")
    .bytes()
)

LAYER2 = (
    TarBuilder()
    .file("a/.wh.gone")
    .dir("b")
    .file("b/.wh..wh..opq")
    .file("b/new", b"new")
    .file(".wh.c")
    .dir("c")
    .file("c/new", b"new")
    .file("lnk/viasym", b"through the lower symlink")
    .file("d/e/f", b"new parents")
    .file("a/sub/y", b"y")
    .file(".wh.top")
    .dir("e")
    .file("e/upper", b"u")
    .file(".wh.e")  # after e was written by this layer: e stays, its lower contents hide
    .bytes()
)


def test_overlay_upper_dirs_hold_whiteout_devices_and_opaque_xattrs(tmp_path: Path) -> None:
    up1, up2 = tmp_path / "up1", tmp_path / "up2"
    up1.mkdir()
    up2.mkdir()
    apply_tar(LAYER1, up1, [])
    apply_tar(LAYER2, up2, [up1])
    for rel in ("a/gone", "top"):
        st = os.lstat(up2 / rel)
        assert stat.S_ISCHR(st.st_mode) and st.st_rdev == 0, rel
    for rel in ("b", "c", "e"):
        assert os.getxattr(up2 / rel, "trusted.overlay.opaque") == b"y", rel
    assert "trusted.overlay.opaque" not in os.listxattr(up2 / "a")
    assert (up2 / "a/viasym").read_bytes() == b"through the lower symlink"
    assert not (up2 / "lnk").exists()
    # a/sub exists only in the lower: created in the upper with the lower's attributes
    assert stat.S_IMODE((up2 / "a/sub").stat().st_mode) == 0o750
    assert (up2 / "a/sub").stat().st_mtime == (up1 / "a/sub").stat().st_mtime
    assert sorted(os.listdir(up2)) == ["a", "b", "c", "d", "e", "top"]


def test_overlay_merged_view(tmp_path: Path, merged: Path) -> None:
    up1, up2 = tmp_path / "up1", tmp_path / "up2"
    up1.mkdir()
    up2.mkdir()
    apply_tar(LAYER1, up1, [])
    apply_tar(LAYER2, up2, [up1])
    _mount_overlay([up2, up1], merged)
    assert sorted(os.listdir(merged / "a")) == ["keep", "sub", "viasym"]
    assert sorted(os.listdir(merged / "a/sub")) == ["x", "y"]
    assert sorted(os.listdir(merged / "b")) == ["new"]
    assert sorted(os.listdir(merged / "c")) == ["new"]
    assert sorted(os.listdir(merged / "e")) == ["upper"]
    assert not (merged / "top").exists()
    assert (merged / "lnk/viasym").read_bytes() == b"through the lower symlink"
    assert (merged / "d/e/f").read_bytes() == b"new parents"


def test_corpus_app_layers_overlay_matches_native(tmp_path: Path, merged: Path) -> None:
    layers = layers_of("app:layers")
    native = tmp_path / "native"
    native.mkdir()
    start = time.time()
    uppers: list[Path] = []
    for i, layer in enumerate(layers):
        with open(blob_path(layer["digest"]), "rb") as f:
            apply_layer(f, native, media_type=layer["mediaType"])
        upper = tmp_path / f"up{i}"
        upper.mkdir()
        with open(blob_path(layer["digest"]), "rb") as f:
            result = apply_layer(
                f,
                upper,
                media_type=layer["mediaType"],
                overlay=True,
                lower_dirs=list(reversed(uppers)),
                expected_diff_id=layer["diff_id"],
            )
        assert result.diff_id == layer["diff_id"]
        uppers.append(upper)
    # the whiteout layer holds devices, the opaque layer holds xattrs
    assert stat.S_ISCHR(os.lstat(uppers[2] / "usr/share/doc").st_mode)
    assert os.getxattr(uppers[3] / "var/log", "trusted.overlay.opaque") == b"y"
    _mount_overlay(list(reversed(uppers)), merged)
    problems = diff_snapshots(snapshot(merged, mtimes_before=start), snapshot(native, mtimes_before=start))
    assert problems == []


def test_lower_dirs_need_overlay_mode(tmp_path: Path) -> None:
    with pytest.raises(errors.InvalidArgument):
        apply_layer(io.BytesIO(b""), tmp_path, lower_dirs=[tmp_path])


def test_overlay_hostile_lower_symlink_stays_inside(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    up1, up2 = tmp_path / "up1", tmp_path / "up2"
    up1.mkdir()
    up2.mkdir()
    apply_tar(TarBuilder().symlink("evil", str(outside)).symlink("rel", "../../outside").bytes(), up1, [])
    apply_tar(TarBuilder().file("evil/pwned", b"x").file("rel/pwned", b"y").file("evil/.wh.z").bytes(), up2, [up1])
    assert os.listdir(outside) == []
    assert (up2 / str(outside).lstrip("/") / "pwned").read_bytes() == b"x"
    assert (up2 / "outside/pwned").read_bytes() == b"y"
    with pytest.raises(errors.UnsafeArchive):
        apply_tar(TarBuilder().file("a/.wh..").bytes(), up2, [up1])
