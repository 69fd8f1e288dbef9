"""A full disk gives a clear error, loses nothing committed, and the store stays consistent."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from ocistore import Store, errors
from ocistore.testing.layout import write_layout

pytestmark = pytest.mark.root


@pytest.fixture
def small_fs(tmp_path: Path) -> Iterator[Path]:
    if os.geteuid() != 0:
        pytest.skip("needs root to mount a small tmpfs")
    mnt = tmp_path / "small"
    mnt.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=6m", "tmpfs", str(mnt)], check=True)
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def test_full_disk_while_ingesting_and_unpacking(small_fs: Path, tmp_path: Path) -> None:
    with Store(small_fs / "root") as s:
        keep = s.content.ingest(b"committed before the disk filled", labels={"containerd.io/gc.root": "x"})
        with pytest.raises(errors.Unavailable, match="no space left"):
            s.content.ingest(os.urandom(8 << 20))
        assert s.content.read(keep.digest) == b"committed before the disk filled"
        # an image whose blobs fit but whose unpacked layer does not
        layout = tmp_path / "layout"
        big = {f"f{i}": bytes(1 << 20) for i in range(8)}  # 8 MiB of zeros: tiny compressed
        write_layout(layout, {"example.com/big:1": [big]})
        s.import_archive(layout, fetch_only=True)
        with pytest.raises(errors.Unavailable, match="no space left"):
            s.containers.create("c", "example.com/big:1", snapshotter="native")
        assert not s.is_unpacked("example.com/big:1", "native")
        with pytest.raises(errors.NotFound):
            s.containers.get("c")
        s.gc()
        report = s.check()
        assert report.ok, report.problems
        assert s.content.read(keep.digest) == b"committed before the disk filled"
