"""Lazy container rootfs: a real FUSE mount of the merged eStargz TOCs under a real overlay.

Each lazy container's tree is compared, file by file, with the ordinary container of the same
image; writes land in the overlay's upper dir; the background fill commits the image's
snapshots; delete unmounts and stops the helper; a killed helper is started again by the
next mounts (or is an error, never a hang).
"""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from archive_helpers import CORPUS
from lazy_helpers import dir_tree, record_ranged_reads, store_plain_image, tar_layer

from ocistore import Store, errors
from ocistore.mount import is_mounted, mounted
from ocistore.transfer import lazyrootfs

pytestmark = pytest.mark.skipif(not os.path.exists("/dev/fuse"), reason="/dev/fuse is missing: no FUSE mounts")

TAGS = ("debian:gzip", "app:layers")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Any:
    root = tmp_path_factory.mktemp("lazyfs")
    store = Store(root)
    store.import_archive(CORPUS, fetch_only=True)
    prioritized = {"app:layers": ["usr/bin/bash", "usr/lib/os-release"]}
    names = {tag: store.convert(tag, dst=f"example.com/esgz/{tag.replace(':', '-')}:esgz", compression_level=1,
                                prioritized_files=prioritized.get(tag)).name for tag in TAGS}
    yield store, names, root
    for c in store.containers.list():
        store.containers.delete(c.id)
    store.close()


def _fresh(store: Store, name: str) -> None:
    """Drop the image's snapshots so that the next lazy create is lazy again."""
    store.remove_unpacked(name)
    store.gc()


def _pid(container: Any) -> int:
    return int((Path(container.labels[lazyrootfs.LAZY_LABEL]) / "pid").read_text())


def _lazy_debian(store: Store, names: dict[str, str], cid: str) -> tuple[Any, Path]:
    """A new lazy container of debian:gzip (its snapshots dropped first) and its helper's directory."""
    name = names["debian:gzip"]
    _fresh(store, name)
    c = store.containers.create(cid, name, lazy=True)
    return c, Path(c.labels[lazyrootfs.LAZY_LABEL])


def _gone(directory: Path) -> bool:
    """The helper's directory is removed and nothing is mounted there any more."""
    return not directory.exists() and str(directory) not in Path("/proc/self/mounts").read_text()


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_bytes().rpartition(b")")[2].split()[0]
    except (OSError, IndexError):
        return False
    return state not in (b"Z", b"X")


@pytest.mark.parametrize("tag", TAGS)
def test_lazy_rootfs_equals_the_ordinary_rootfs(corpus: Any, tag: str, tmp_path: Path) -> None:
    store, names, _root = corpus
    name = names[tag]
    _fresh(store, name)
    lazy = store.containers.create(f"lazy-{tag.replace(':', '-')}", name, lazy=True)
    assert lazy.lazy and lazy.mounts[0].type == "overlay"
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    with mounted(lazy.mounts, tmp_path / "a") as root:
        ours = dir_tree(root)
    # the ordinary container of the same image (unpacked now, if the fill has not done it yet)
    store.unpack(name)
    plain = store.containers.create(f"plain-{tag.replace(':', '-')}", name)
    assert not plain.lazy
    with mounted(plain.mounts, tmp_path / "b") as root:
        expected = dir_tree(root)
    assert ours == expected
    assert len(ours) > 1000
    store.containers.delete(lazy.id)
    store.containers.delete(plain.id)
    assert store.check().ok


def test_writes_stay_in_the_container(corpus: Any, tmp_path: Path) -> None:
    store, names, _root = corpus
    name = names["debian:gzip"]
    _fresh(store, name)
    c = store.containers.create("writer", name, lazy=True)
    before = store.read_file(name, "etc/os-release")
    with mounted(c.mounts, tmp_path) as root:
        (root / "etc/os-release").write_text("changed\n")
        (root / "new-file").write_bytes(b"new")
        os.unlink(root / "etc/hostname")
        out = subprocess.run(["chroot", str(root), "/bin/sh", "-c", "cat /etc/os-release; ls /new-file"],
                             capture_output=True, text=True, check=True).stdout
        assert out == "changed\n/new-file\n"
        lower = Path(c.labels[lazyrootfs.LAZY_LABEL]) / "mnt"
        assert (lower / "etc/os-release").read_bytes() == before  # the FUSE lower is untouched
        assert (lower / "etc/hostname").exists()
        with pytest.raises(OSError) as exc:
            (lower / "x").write_bytes(b"x")
        assert exc.value.errno == errno.EROFS
    assert store.read_file(name, "etc/os-release") == before
    with pytest.raises(errors.NotFound):
        store.read_file(name, "new-file")
    upper = store.snapshots("overlayfs").path(c.snapshot_key)
    assert (upper / "new-file").read_bytes() == b"new"
    store.containers.delete("writer")
    assert store.check().ok


def test_background_fill_commits_the_image(corpus: Any) -> None:
    store, names, _root = corpus
    name = names["app:layers"]
    _fresh(store, name)
    assert not store.is_unpacked(name)
    c = store.containers.create("filled", name, lazy=True)
    log = Path(c.labels[lazyrootfs.LAZY_LABEL]) / "log"
    deadline = time.monotonic() + 300
    # the helper commits the chain and only then logs "filled": wait for both
    while time.monotonic() < deadline and not (
        store.is_unpacked(name) and "filled" in log.read_text()
    ):
        time.sleep(0.2)
    assert store.is_unpacked(name), log.read_text()
    assert "prefetched" in log.read_text() and "filled" in log.read_text()
    assert store.check().ok
    again = store.containers.create("after-fill", name, lazy=True)
    assert not again.lazy  # the chain is committed: an ordinary container
    assert c.mounts  # the lazy one keeps working
    store.containers.delete("after-fill")
    store.containers.delete("filled")
    assert store.check().ok


def test_delete_unmounts_and_stops_the_helper(corpus: Any) -> None:
    store, names, _root = corpus
    c, directory = _lazy_debian(store, names, "short")
    pid = _pid(c)
    assert _alive(pid) and is_mounted(directory / "mnt")
    assert "ocistore-lazy" in Path("/proc/self/mounts").read_text()
    store.containers.delete("short")
    assert not _alive(pid)
    assert _gone(directory)
    with pytest.raises(errors.NotFound):
        store.containers.get("short")
    assert store.check().ok


def _kill(pid: int) -> None:
    os.kill(pid, signal.SIGKILL)
    while _alive(pid):
        time.sleep(0.05)


@pytest.mark.parametrize("reboot", [False, True])
def test_a_killed_helper_is_restarted_by_the_next_mounts(corpus: Any, tmp_path: Path, reboot: bool) -> None:
    store, names, _root = corpus
    c, directory = _lazy_debian(store, names, "killed")
    (tmp_path / "m").mkdir()
    with mounted(c.mounts, tmp_path / "m") as root:
        (root / "etc/written").write_text("kept in the upper dir\n")
    pid = _pid(c)
    _kill(pid)
    probe = subprocess.run([sys.executable, "-c", f"import os; os.listdir({str(directory / 'mnt/etc')!r})"],
                           capture_output=True, text=True, timeout=30, check=False)
    assert probe.returncode != 0 and "Transport endpoint is not connected" in probe.stderr
    if reboot:  # after a reboot nothing is mounted any more
        subprocess.run(["umount", "-l", str(directory / "mnt")], check=True)
    again = store.containers.get("killed")
    mounts = again.mounts  # starts the helper again
    new_pid = _pid(again)
    assert new_pid != pid and _alive(new_pid) and is_mounted(directory / "mnt")
    with mounted(mounts, tmp_path / "m") as root:
        assert (root / "etc/written").read_text() == "kept in the upper dir\n"
        assert (root / "etc/os-release").read_bytes() == store.read_file(c.image, "etc/os-release")
    assert again.mounts == mounts  # serving: nothing restarted
    assert _pid(store.containers.get("killed")) == new_pid
    store.containers.delete("killed")
    assert not _alive(new_pid)
    assert _gone(directory)
    assert store.check().ok


def test_a_helper_that_cannot_be_restarted_is_an_error_not_a_hang(corpus: Any) -> None:
    store, names, _root = corpus
    c, directory = _lazy_debian(store, names, "broken")
    _kill(_pid(c))
    (directory / "helper.json").write_text("{not json")
    with pytest.raises(errors.Unavailable, match="cannot be restarted"):
        store.containers.get("broken").mounts  # noqa: B018 - the property raises
    store.containers.delete("broken")
    assert _gone(directory)
    assert store.check().ok


def test_the_cli_leaves_a_working_mount(corpus: Any) -> None:
    store, names, root = corpus
    name = names["debian:gzip"]
    _fresh(store, name)
    cli = [sys.executable, "-m", "ocistore", "--root", str(root)]
    subprocess.run([*cli, "containers", "create", "--lazy", "from-cli", name], check=True, timeout=120,
                   capture_output=True)
    c = store.containers.get("from-cli")
    assert c.lazy
    lower = Path(c.labels[lazyrootfs.LAZY_LABEL]) / "mnt"
    assert (lower / "etc/os-release").read_bytes() == store.read_file(name, "etc/os-release")
    subprocess.run([*cli, "containers", "rm", "from-cli"], check=True, timeout=60, capture_output=True)
    assert not lower.exists()


def test_lazy_needs_an_estargz_image(tmp_path: Path) -> None:
    with Store(tmp_path / "root") as store:
        store_plain_image(store, "example.com/plain:1", [tar_layer([("f", b"data")])])
        with pytest.raises(errors.FailedPrecondition, match="convert"):
            store.containers.create("c", "example.com/plain:1", lazy=True)
        assert store.containers.list() == []
        assert list(store.snapshots("overlayfs").walk()) == []
        with pytest.raises(errors.InvalidArgument):
            store.containers.create("c", "example.com/plain:1", lazy=True, labels={lazyrootfs.LAZY_LABEL: "/"})
        image = store.convert("example.com/plain:1", dst="example.com/e:1")
        with pytest.raises(errors.InvalidArgument, match="overlay"):
            store.containers.create("c", image.name, lazy=True, snapshotter="native")
        assert store.check().ok


def test_fuse_missing_names_what_is_missing() -> None:
    assert lazyrootfs.fuse_missing() is None  # this machine has /dev/fuse, mfusepy and libfuse3


def test_no_fill_and_reads_at_offsets_of_a_many_chunk_file(tmp_path: Path) -> None:
    """``fill=False`` leaves the image unpacked-less; preads at any offset of a file of hundreds
    of small chunks (the FUSE read bisects its chunk list) give the file's bytes."""
    with Store(tmp_path / "root") as store:
        store.import_archive(CORPUS, fetch_only=True)
        name = store.convert("debian:gzip", dst="example.com/esgz/small-chunks:esgz", chunk_size=4096,
                             compression_level=1).name
        want = store.read_file(name, "usr/bin/bash")
        assert len(want) > 100 * 4096
        c = store.containers.create("nofill", name, lazy=True, fill=False)
        try:
            (tmp_path / "mnt").mkdir()
            with mounted(c.mounts, tmp_path / "mnt") as root:
                fd = os.open(root / "usr/bin/bash", os.O_RDONLY)
                try:
                    for offset, n in ((0, 10), (4095, 2), (123_457, 70_000), (len(want) - 5, 100),
                                      (len(want) // 2, 3 * 4096 + 1), (len(want) + 10, 10)):
                        assert os.pread(fd, n, offset) == want[offset:offset + n]
                finally:
                    os.close(fd)
            time.sleep(1.0)
            log = (Path(c.labels[lazyrootfs.LAZY_LABEL]) / "log").read_text()
            assert not store.is_unpacked(name), log
            assert "filled" not in log
        finally:
            store.containers.delete("nofill")
        assert store.check().ok


@pytest.mark.registry
def test_a_recorded_profile_prefetches_the_next_start(corpus: Any, tmp_path: Path, registry_plain: Any,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """``Container.read_profile`` gives the byte ranges the lazy rootfs served; ``store.prefetch``
    of it in another store makes the same reads there cost no request."""

    store, names, _root = corpus
    name = names["debian:gzip"]
    ref = registry_plain.ref("lazyfs/debian:esgz")
    store.push(name, ref, **registry_plain.client_options())
    bash = store.read_file(name, "usr/bin/bash")
    with Store(tmp_path / "first", **registry_plain.client_options()) as first:
        image = first.fetch(ref, lazy=True)
        c = first.containers.create("rec", image.name, lazy=True, fill=False)
        try:
            (tmp_path / "mnt").mkdir()
            with mounted(c.mounts, tmp_path / "mnt") as root:
                assert (root / "etc/os-release").read_bytes()
                fd = os.open(root / "usr/bin/bash", os.O_RDONLY)
                try:
                    assert os.pread(fd, 5000, 300_000) == bash[300_000:305_000]
                finally:
                    os.close(fd)
                profile = c.read_profile()
                assert c.read_profile() == profile  # nothing read in between
        finally:
            first.containers.delete("rec")
        assert first.check().ok
    release = profile["usr/lib/os-release"]  # etc/os-release is a symlink: the file read is its target
    assert release[0][0] == 0
    assert any(s <= 300_000 and e >= 305_000 for s, e in profile["usr/bin/bash"])
    assert "usr/bin/ls" not in profile
    with pytest.raises(errors.FailedPrecondition):
        store.containers.create("plain", name).read_profile()
    store.containers.delete("plain")

    with Store(tmp_path / "second", **registry_plain.client_options()) as second:
        image = second.fetch(ref, lazy=True)
        result = second.prefetch(image.name, profile)
        assert result.files == len(profile) and not result.skipped and result.requests >= 1
        asked = record_ranged_reads(monkeypatch)
        with second.open_file(image.name, "usr/bin/bash") as f:
            f.seek(300_000)
            assert f.read(5000) == bash[300_000:305_000]
        assert second.read_file(image.name, "etc/os-release") == store.read_file(name, "etc/os-release")
        assert asked == []
        assert second.check().ok


def test_recorded_reads_of_a_long_lived_rootfs_stay_merged() -> None:
    from ocistore.transfer import fuseserver

    assert fuseserver._merged([(10, 20), (0, 5), (5, 8), (15, 30), (40, 41)]) == [(0, 8), (10, 30), (40, 41)]
    # the FUSE read path merges a file's list in place once it passes _MERGE_AT entries
    reads = [(i * 10, i * 10 + 10) for i in range(fuseserver._MERGE_AT + 1)]  # adjacent: one range
    assert fuseserver._merged(reads) == [(0, 10 * (fuseserver._MERGE_AT + 1))]
