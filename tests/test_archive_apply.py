"""Layer apply: real corpus layers against GNU tar, formats, metadata, digests."""

from __future__ import annotations

import gzip
import io
import os
import stat
import subprocess
import tarfile
import time
from pathlib import Path

import pytest
import zstandard
from archive_helpers import (
    END,
    TarBuilder,
    blob_path,
    diff_snapshots,
    layers_of,
    member,
    snapshot,
    tar_reference,
)

from ocistore import errors
from ocistore.archive import ApplyResult, apply_layer, detect_compression
from ocistore.oci import mediatypes
from ocistore.oci.digest import digest_bytes

IS_ROOT = os.geteuid() == 0


def apply_blob(layer: dict, root: Path, **kw: object) -> ApplyResult:
    with open(blob_path(layer["digest"]), "rb") as f:
        return apply_layer(f, root, media_type=layer["mediaType"], **kw)  # type: ignore[arg-type]


def apply_bytes(data: bytes, root: Path, **kw: object) -> ApplyResult:
    return apply_layer(io.BytesIO(data), root, **kw)  # type: ignore[arg-type]


# -- the corpus -------------------------------------------------------------------------------


@pytest.mark.parametrize("tag", ["debian:gzip", "debian:zstd"])
def test_debian_layer_matches_gnu_tar(tag: str, tmp_path: Path) -> None:
    (layer,) = layers_of(tag)
    ours, ref = tmp_path / "ours", tmp_path / "ref"
    ours.mkdir()
    ref.mkdir()
    start = time.time()
    result = apply_blob(
        layer, ours, expected_diff_id=layer["diff_id"], expected_digest=layer["digest"], expected_size=layer["size"]
    )
    assert result.diff_id == layer["diff_id"]
    assert result.digest == layer["digest"]
    assert result.compressed_size == layer["size"]
    assert result.uncompressed_size == layer["uncompressed_size"]
    assert result.entries == layer["stats"]["entries"]
    assert result.compression == ("gzip" if tag.endswith("gzip") else "zstd")
    tar_reference([layer], ref)
    assert diff_snapshots(snapshot(ours, mtimes_before=start), snapshot(ref, mtimes_before=start)) == []


def test_app_layers_native_match_reference(tmp_path: Path) -> None:
    layers = layers_of("app:layers")
    ours, ref = tmp_path / "ours", tmp_path / "ref"
    ours.mkdir()
    ref.mkdir()
    start = time.time()
    for layer in layers:
        result = apply_blob(layer, ours, expected_diff_id=layer["diff_id"], expected_digest=layer["digest"])
        assert result.diff_id == layer["diff_id"]
        assert result.entries == layer["stats"]["entries"]
    tar_reference(layers, ref)
    assert diff_snapshots(snapshot(ours, mtimes_before=start), snapshot(ref, mtimes_before=start)) == []


@pytest.fixture(scope="module")
def app_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("app")
    for layer in layers_of("app:layers"):
        apply_blob(layer, root, expected_diff_id=layer["diff_id"])
    return root


def test_app_whiteouts_removed_files_and_directory(app_root: Path) -> None:
    assert not (app_root / "usr/share/doc").exists()
    assert (app_root / "usr/share").is_dir()
    lists = app_root / "var/lib/apt/lists"
    assert lists.is_dir()
    assert not any(name.startswith(".wh.") for name in os.listdir(lists))
    for name in ("auxfiles", "lock", "partial"):
        assert not (lists / name).exists()
    assert not list(app_root.rglob(".wh.*"))


def test_app_opaque_dirs_keep_only_this_layers_entries(app_root: Path) -> None:
    assert sorted(os.listdir(app_root / "etc/apt/apt.conf.d")) == ["99ocistore"]
    assert sorted(os.listdir(app_root / "var/log")) == ["ocistore"]
    assert (app_root / "var/log/ocistore/README").is_file()
    assert stat.S_IMODE((app_root / "var/log/ocistore").stat().st_mode) == 0o750


def test_app_tar_edge_cases(app_root: Path) -> None:
    data = app_root / "opt/app/data"
    assert os.path.samefile(data / "file.bin", data / "file.hardlink")
    assert (data / "file.bin").stat().st_nlink == 2
    assert os.readlink(app_root / "opt/app/current") == "releases/1.0"
    assert os.readlink(data / "abs-symlink") == "/opt/app/data/file.bin"
    long_target = os.readlink(data / "long-target-symlink")
    assert len(long_target) > 100 and long_target.endswith("opt/app/data/file.bin")
    (long_name,) = [name for name in os.listdir(data) if len(name) > 100]
    assert long_name.startswith("lll") and (data / long_name).is_file()
    assert (data / "name with spaces-ü.txt").read_bytes() == b"spaces and utf-8\n"
    assert (data / "empty").stat().st_size == 0
    deep = list((app_root / "opt/app/deep").rglob("file.txt"))
    assert len(deep) == 1 and len(str(deep[0].relative_to(app_root))) > 100
    assert os.getxattr(data / "xattr.txt", "user.ocistore.test")
    suid = (app_root / "opt/app/bin/suid-true").stat()
    assert suid.st_mode & stat.S_ISUID and stat.S_IMODE(suid.st_mode) == 0o4755
    assert (app_root / "opt/app/shared").stat().st_mode & stat.S_ISGID
    assert stat.S_IMODE((app_root / "opt/app/tmp").stat().st_mode) == 0o1777


def test_debian_setuid_binaries_and_hardlinks(tmp_path: Path) -> None:
    (layer,) = layers_of("debian:gzip")
    apply_blob(layer, tmp_path)
    setuid = [p for p in (tmp_path / "usr/bin").iterdir() if not p.is_symlink() and p.stat().st_mode & stat.S_ISUID]
    assert len(setuid) >= 5
    assert os.readlink(tmp_path / "bin") == "usr/bin"


def test_mtimes_have_nanoseconds(tmp_path: Path) -> None:
    data = TarBuilder().file("f", b"x", mtime="1700000000.123456789").dir("d", mtime="1600000000.5").bytes()
    apply_bytes(data, tmp_path)
    assert (tmp_path / "f").stat().st_mtime_ns == 1_700_000_000_123_456_789
    assert (tmp_path / "d").stat().st_mtime_ns == 1_600_000_000_500_000_000


def test_directory_times_survive_later_children(tmp_path: Path) -> None:
    data = TarBuilder().dir("d").file("e", b"1").file("d/late", b"2").bytes()
    apply_bytes(data, tmp_path)
    assert (tmp_path / "d").stat().st_mtime == 1_700_000_000


# -- compression, digests, progress --------------------------------------------------------------


def test_detect_compression() -> None:
    assert detect_compression(b"\x1f\x8b\x08\x00") == "gzip"
    assert detect_compression(b"\x28\xb5\x2f\xfd\x00") == "zstd"
    assert detect_compression(b"usr/\x00\x00") == "none"
    assert detect_compression(b"") == "none"


@pytest.mark.parametrize("compress", ["none", "gzip", "zstd"])
def test_docker_uncompressed_type_detects_by_magic(compress: str, tmp_path: Path) -> None:
    tar = TarBuilder().file("a/b", b"hello").bytes()
    blob = {"none": tar, "gzip": gzip.compress(tar), "zstd": zstandard.ZstdCompressor().compress(tar)}[compress]
    result = apply_bytes(blob, tmp_path, media_type=mediatypes.DOCKER_LAYER)
    assert result.compression == compress
    assert result.diff_id == digest_bytes(tar)
    assert result.digest == digest_bytes(blob)
    assert (tmp_path / "a/b").read_bytes() == b"hello"


def test_media_type_none_and_plain_tar(tmp_path: Path) -> None:
    tar = TarBuilder().file("x", b"1").bytes()
    result = apply_bytes(tar, tmp_path, media_type=mediatypes.OCI_LAYER)
    assert result.diff_id == result.digest == digest_bytes(tar)
    assert result.uncompressed_size == result.compressed_size == len(tar)


def test_trailing_bytes_after_archive_end_are_hashed(tmp_path: Path) -> None:
    tar = TarBuilder().file("x", b"1").bytes() + bytes(4096)
    result = apply_bytes(gzip.compress(tar), tmp_path, media_type=mediatypes.OCI_LAYER_GZIP)
    assert result.diff_id == digest_bytes(tar)
    assert result.uncompressed_size == len(tar)


def test_multi_member_gzip_and_multi_frame_zstd(tmp_path: Path) -> None:
    tar = TarBuilder().file("x", os.urandom(70000)).file("y", b"2").bytes()
    half = len(tar) // 2
    gz = gzip.compress(tar[:half]) + gzip.compress(tar[half:])
    assert apply_bytes(gz, tmp_path / "g" if (tmp_path / "g").mkdir() is None else tmp_path).diff_id == digest_bytes(
        tar
    )
    cctx = zstandard.ZstdCompressor(write_checksum=True)
    zst = cctx.compress(tar[:half]) + cctx.compress(tar[half:])
    (tmp_path / "z").mkdir()
    assert apply_bytes(zst, tmp_path / "z", media_type=mediatypes.OCI_LAYER_ZSTD).diff_id == digest_bytes(tar)


def test_progress_reports_compressed_bytes(tmp_path: Path) -> None:
    (layer,) = layers_of("debian:gzip")
    seen: list[int] = []
    apply_blob(layer, tmp_path, progress=seen.append)
    assert seen == sorted(seen)
    assert seen[-1] == layer["size"]
    assert len(seen) > 10


def test_expected_digest_and_size_verified(tmp_path: Path) -> None:
    tar = TarBuilder().file("x", b"1").bytes()
    blob = gzip.compress(tar)
    ok = apply_bytes(
        blob, tmp_path, expected_digest=digest_bytes(blob), expected_size=len(blob), expected_diff_id=digest_bytes(tar)
    )
    assert ok.entries == 1


def test_invalid_expected_digest_is_invalid_argument(tmp_path: Path) -> None:
    with pytest.raises(errors.InvalidArgument):
        apply_bytes(b"", tmp_path, expected_diff_id="sha256:xyz")


def test_missing_root_is_not_found(tmp_path: Path) -> None:
    with pytest.raises(errors.NotFound):
        apply_bytes(TarBuilder().bytes(), tmp_path / "missing")


def test_sha512_expected_digest(tmp_path: Path) -> None:
    tar = TarBuilder().file("x", b"1").bytes()
    expected = digest_bytes(tar, "sha512")
    result = apply_bytes(tar, tmp_path, expected_diff_id=expected)
    assert result.diff_id == expected


def test_empty_stream_is_an_empty_layer(tmp_path: Path) -> None:
    result = apply_bytes(b"", tmp_path)
    assert result.entries == 0 and result.diff_id == digest_bytes(b"")


# -- tar formats --------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["gnu", "pax", "ustar", "v7"])
def test_gnu_tar_formats_round_trip(fmt: str, tmp_path: Path) -> None:
    src = tmp_path / "src"
    width = {"gnu": 90, "pax": 90, "ustar": 60, "v7": 30}[fmt]
    deep = Path("d", "x" * width, "y" * width, "f")
    long = "n" * {"gnu": 200, "pax": 200, "ustar": 99, "v7": 97}[fmt]
    (src / deep.parent).mkdir(parents=True)
    (src / deep).write_bytes(b"deep")
    (src / "d/exec").write_bytes(b"#!/bin/sh\n")
    os.chmod(src / "d/exec", 0o755)
    os.symlink("exec", src / "d/link")
    os.link(src / "d/exec", src / "d/hard")
    (src / long).write_bytes(b"long name")
    blob = subprocess.run(["tar", "-c", f"--format={fmt}", "-C", str(src), "."], check=True, capture_output=True).stdout
    dest = tmp_path / "dest"
    dest.mkdir()
    apply_bytes(blob, dest)
    assert (dest / deep).read_bytes() == b"deep"
    assert os.readlink(dest / "d/link") == "exec"
    assert os.path.samefile(dest / "d/exec", dest / "d/hard")
    assert stat.S_IMODE((dest / "d/exec").stat().st_mode) == 0o755
    assert (dest / long).read_bytes() == b"long name"


def _sparse_source(tmp_path: Path) -> Path:
    src = tmp_path / "src"
    src.mkdir()
    with open(src / "sparse", "wb") as f:
        f.write(b"head")
        f.seek(1 << 20)
        f.write(b"middle")
        f.seek(3 << 20)
        f.write(b"tail")
        f.truncate(4 << 20)
    return src


@pytest.mark.parametrize(
    "args",
    [
        ["--format=gnu"],
        ["--format=pax", "--sparse-version=0.0"],
        ["--format=pax", "--sparse-version=0.1"],
        ["--format=pax", "--sparse-version=1.0"],
    ],
    ids=["gnu-old", "pax-0.0", "pax-0.1", "pax-1.0"],
)
def test_sparse_files(args: list[str], tmp_path: Path) -> None:
    src = _sparse_source(tmp_path)
    blob = subprocess.run(
        ["tar", "-c", "--sparse", *args, "-C", str(src), "sparse"], check=True, capture_output=True
    ).stdout
    dest = tmp_path / "dest"
    dest.mkdir()
    apply_bytes(blob, dest)
    assert (dest / "sparse").read_bytes() == (src / "sparse").read_bytes()
    assert (dest / "sparse").stat().st_blocks * 512 < (1 << 20)


def test_pax_overrides_and_base256(tmp_path: Path) -> None:
    info = tarfile.TarInfo("short")
    info.size = 3
    info.uid = 3_000_000  # too big for octal: tarfile writes PAX uid
    info.pax_headers = {"path": "pax/long/" + "p" * 150}
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        tf.addfile(info, io.BytesIO(b"abc"))
    apply_bytes(buf.getvalue(), tmp_path)
    path = tmp_path / "pax/long" / ("p" * 150)
    assert path.read_bytes() == b"abc"
    if IS_ROOT:
        assert path.stat().st_uid == 3_000_000
    gnu = io.BytesIO()
    with tarfile.open(fileobj=gnu, mode="w", format=tarfile.GNU_FORMAT) as tf:
        info.pax_headers = {}
        info.name = "gnu-big-uid"
        tf.addfile(info, io.BytesIO(b"abc"))  # uid written base-256
    apply_bytes(gnu.getvalue(), tmp_path)
    if IS_ROOT:
        assert (tmp_path / "gnu-big-uid").stat().st_uid == 3_000_000


def test_pax_global_header_is_ignored(tmp_path: Path) -> None:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT, pax_headers={"comment": "x"}) as tf:
        info = tarfile.TarInfo("f")
        tf.addfile(info, io.BytesIO(b""))
    result = apply_bytes(buf.getvalue(), tmp_path)
    assert result.entries == 1 and (tmp_path / "f").exists()


def test_old_style_directory_with_trailing_slash(tmp_path: Path) -> None:
    apply_bytes(member(b"olddir/", typeflag=b"\x00", mode=0o750) + member(b"olddir/f", b"1") + END, tmp_path)
    assert (tmp_path / "olddir").is_dir()
    assert stat.S_IMODE((tmp_path / "olddir").stat().st_mode) == 0o750


def test_signed_checksum_accepted(tmp_path: Path) -> None:
    name = "é".encode()  # bytes > 127: the signed sum differs from the unsigned one
    raw = bytearray(member(name, b"1"))
    signed = sum(raw[:148]) + 8 * 32 + sum(raw[156:512]) - 2 * sum(b for b in raw[:512] if b > 127)
    raw[148:156] = b"%06o\x00 " % signed
    apply_bytes(bytes(raw) + END, tmp_path)
    assert (tmp_path / "é").read_bytes() == b"1"


# -- metadata -----------------------------------------------------------------------------------


def test_modes_with_special_bits_and_umask(tmp_path: Path) -> None:
    old = os.umask(0o077)
    try:
        data = (
            TarBuilder()
            .dir("sticky", 0o1777)
            .dir("sgid", 0o2775)
            .file("suid", b"x", 0o4755)
            .file("sgidfile", b"x", 0o2755)
            .file("open", b"x", 0o666)
            .file("ro", b"x", 0o400)
            .bytes()
        )
        apply_bytes(data, tmp_path)
    finally:
        os.umask(old)
    modes = {name: stat.S_IMODE((tmp_path / name).stat().st_mode) for name in os.listdir(tmp_path)}
    assert modes == {"sticky": 0o1777, "sgid": 0o2775, "suid": 0o4755, "sgidfile": 0o2755, "open": 0o666, "ro": 0o400}


@pytest.mark.skipif(not IS_ROOT, reason="chown needs root")
def test_ownership_restored_as_root_and_optional(tmp_path: Path) -> None:
    b = TarBuilder()
    info = tarfile.TarInfo("owned")
    info.uid, info.gid, info.mtime = 1234, 5678, 1
    b.tf.addfile(info, io.BytesIO(b""))
    sym = tarfile.TarInfo("ownedlink")
    sym.type, sym.linkname, sym.uid, sym.gid = tarfile.SYMTYPE, "owned", 42, 43
    b.tf.addfile(sym)
    data = b.bytes()
    (tmp_path / "a").mkdir()
    apply_bytes(data, tmp_path / "a")
    st = (tmp_path / "a/owned").stat()
    assert (st.st_uid, st.st_gid) == (1234, 5678)
    lst = os.lstat(tmp_path / "a/ownedlink")
    assert (lst.st_uid, lst.st_gid) == (42, 43)
    (tmp_path / "b").mkdir()
    apply_bytes(data, tmp_path / "b", same_owner=False)
    assert (tmp_path / "b/owned").stat().st_uid == os.geteuid()


def test_xattrs_user_security_and_trusted_ignored(tmp_path: Path) -> None:
    data = (
        TarBuilder()
        .file(
            "f",
            b"x",
            **{
                "SCHILY.xattr.user.one": "1",
                "SCHILY.xattr.trusted.evil": "y",
                "SCHILY.xattr.security.capability": "\x01\x00\x00\x02\x00\x20" + "\x00" * 14,
            },
        )
        .bytes()
    )
    apply_bytes(data, tmp_path)
    names = os.listxattr(tmp_path / "f")
    assert os.getxattr(tmp_path / "f", "user.one") == b"1"
    assert "trusted.evil" not in names
    if IS_ROOT:
        assert "security.capability" in names


@pytest.mark.skipif(not IS_ROOT, reason="mknod of devices needs root")
def test_devices_created_when_privileged(tmp_path: Path) -> None:
    data = (
        TarBuilder()
        .device("dev/null", tarfile.CHRTYPE, 1, 3)
        .device("dev/loopx", tarfile.BLKTYPE, 7, 200, 0o660)
        .device("dev/fifo", tarfile.FIFOTYPE, 0, 0, 0o600)
        .bytes()
    )
    result = apply_bytes(data, tmp_path)
    st = (tmp_path / "dev/null").stat()
    assert stat.S_ISCHR(st.st_mode) and (os.major(st.st_rdev), os.minor(st.st_rdev)) == (1, 3)
    assert stat.S_ISBLK((tmp_path / "dev/loopx").stat().st_mode)
    assert stat.S_ISFIFO((tmp_path / "dev/fifo").stat().st_mode)
    assert result.skipped_devices == 0


def test_devices_skipped_when_unprivileged(tmp_path: Path) -> None:
    data = (
        TarBuilder()
        .device("dev/null", tarfile.CHRTYPE, 1, 3)
        .device("dev/sda", tarfile.BLKTYPE, 8, 0)
        .device("dev/fifo", tarfile.FIFOTYPE, 0, 0)
        .file("dev/regular", b"ok")
        .bytes()
    )
    result = apply_bytes(data, tmp_path, privileged=False)
    assert result.skipped_devices == 2
    assert sorted(os.listdir(tmp_path / "dev")) == ["fifo", "regular"]


def test_entry_replaces_existing_file_symlink_and_directory(tmp_path: Path) -> None:
    (tmp_path / "was-dir").mkdir()
    (tmp_path / "was-dir/child").write_text("x")
    (tmp_path / "was-file").write_text("x")
    os.symlink("/nonexistent", tmp_path / "was-link")
    (tmp_path / "hard-a").write_text("shared")
    os.link(tmp_path / "hard-a", tmp_path / "hard-b")
    data = (
        TarBuilder()
        .file("was-dir", b"now a file")
        .dir("was-file")
        .file("was-link", b"now a file")
        .file("hard-b", b"new content")
        .bytes()
    )
    apply_bytes(data, tmp_path)
    assert (tmp_path / "was-dir").read_bytes() == b"now a file"
    assert (tmp_path / "was-file").is_dir()
    assert not (tmp_path / "was-link").is_symlink()
    assert (tmp_path / "hard-a").read_text() == "shared"  # the other link is untouched
    assert (tmp_path / "hard-b").read_bytes() == b"new content"


def test_directory_over_directory_merges(tmp_path: Path) -> None:
    (tmp_path / "d").mkdir()
    (tmp_path / "d/old").write_text("keep")
    apply_bytes(TarBuilder().dir("d", 0o700).file("d/new", b"n").bytes(), tmp_path)
    assert sorted(os.listdir(tmp_path / "d")) == ["new", "old"]
    assert stat.S_IMODE((tmp_path / "d").stat().st_mode) == 0o700


def test_missing_parents_are_created(tmp_path: Path) -> None:
    apply_bytes(TarBuilder().file("a/b/c/d", b"x").dir("/other/noparent-2/2/").bytes(), tmp_path)
    assert (tmp_path / "a/b/c/d").read_bytes() == b"x"
    assert (tmp_path / "other/noparent-2/2").is_dir()


def test_absolute_names_are_rerooted(tmp_path: Path) -> None:
    apply_bytes(TarBuilder().file("/etc/abs", b"x").file("./rel/./x", b"y").bytes(), tmp_path)
    assert (tmp_path / "etc/abs").read_bytes() == b"x"
    assert (tmp_path / "rel/x").read_bytes() == b"y"


def test_native_whiteout_semantics(tmp_path: Path) -> None:
    for rel in ("a/x", "a/y", "b/sub/z", "c/keep", "d/old"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text("lower")
    data = (
        TarBuilder()
        .file("a/.wh.x")
        .file(".wh.b")
        .dir("c")
        .file("c/new", b"n")
        .file("c/.wh..wh..opq")
        .file("d/.wh..wh..opq")
        .dir("d/sub")
        .file("d/sub/f", b"f")
        .file("e/.wh.missing")
        .bytes()
    )
    apply_bytes(data, tmp_path)
    assert sorted(os.listdir(tmp_path / "a")) == ["y"]
    assert not (tmp_path / "b").exists()
    assert sorted(os.listdir(tmp_path / "c")) == ["new"]
    assert sorted(os.listdir(tmp_path / "d")) == ["sub"]
    assert not (tmp_path / "e").exists()


def test_native_whiteout_then_recreate_hides_lower(tmp_path: Path) -> None:
    (tmp_path / "d").mkdir()
    (tmp_path / "d/lower").write_text("old")
    (tmp_path / "e").mkdir()
    (tmp_path / "e/lower").write_text("old")
    data = (
        TarBuilder()
        .file(".wh.d")
        .dir("d")
        .file("d/new", b"n")
        .dir("e")
        .file("e/new", b"n")
        .file(".wh.e")  # after the recreation: still only hides the lower contents (OCI spec)
        .bytes()
    )
    apply_bytes(data, tmp_path)
    assert os.listdir(tmp_path / "d") == ["new"]
    assert os.listdir(tmp_path / "e") == ["new"]


def test_aufs_metadata_whiteouts_ignored(tmp_path: Path) -> None:
    data = TarBuilder().file(".wh..wh.plnk/123.456").file(".wh..wh.aufs").file("f", b"1").bytes()
    apply_bytes(data, tmp_path)
    assert sorted(os.listdir(tmp_path)) == [".wh..wh.plnk", "f"]


def test_blob_digest_can_be_skipped(tmp_path: Path) -> None:
    import hashlib

    from ocistore.testing.layout import build_layer

    blob, tar = build_layer({"etc/": None, "etc/hosts": "127.0.0.1 localhost\n"}, "zstd")
    diff_id = "sha256:" + hashlib.sha256(tar).hexdigest()
    (tmp_path / "a").mkdir()
    result = apply_layer(io.BytesIO(blob), tmp_path / "a", expected_diff_id=diff_id, blob_digest=False)
    assert result.digest == "" and result.diff_id == diff_id
    assert (tmp_path / "a/etc/hosts").read_text() == "127.0.0.1 localhost\n"
    (tmp_path / "b").mkdir()
    wrong = "sha256:" + "0" * 64
    with pytest.raises(errors.DigestMismatch):
        apply_layer(io.BytesIO(blob), tmp_path / "b", expected_diff_id=wrong, blob_digest=False)


@pytest.mark.skipif(not IS_ROOT, reason="chown needs root")
def test_owner_restored_when_a_setgid_parent_gives_another_group(tmp_path: Path) -> None:
    # a new file takes a setgid parent's group: the applier must notice and chown it back,
    # and keep the setuid/setgid bits a chown would clear
    b = TarBuilder()
    for name, kind, mode, gid in (
        ("sg", tarfile.DIRTYPE, 0o2775, 50),
        ("sg/root", tarfile.REGTYPE, 0o644, 0),
        ("sg/group", tarfile.REGTYPE, 0o644, 50),
        ("sg/suid", tarfile.REGTYPE, 0o4755, 0),
        ("sg/sgid", tarfile.REGTYPE, 0o2755, 50),
        ("sg/sub", tarfile.DIRTYPE, 0o755, 0),
        ("sg/sub/f", tarfile.REGTYPE, 0o600, 0),
    ):
        info = tarfile.TarInfo(name)
        info.type, info.mode, info.uid, info.gid, info.mtime = kind, mode, 0, gid, 1
        b.tf.addfile(info, io.BytesIO(b""))
    apply_bytes(b.bytes(), tmp_path)
    got = {}
    for rel in ("sg", "sg/root", "sg/group", "sg/suid", "sg/sgid", "sg/sub", "sg/sub/f"):
        st = os.lstat(tmp_path / rel)
        got[rel] = (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode))
    assert got == {
        "sg": (0, 50, 0o2775),
        "sg/root": (0, 0, 0o644),
        "sg/group": (0, 50, 0o644),
        "sg/suid": (0, 0, 0o4755),
        "sg/sgid": (0, 50, 0o2755),
        "sg/sub": (0, 0, 0o755),
        "sg/sub/f": (0, 0, 0o600),
    }
