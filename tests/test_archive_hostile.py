"""Hostile layers: each must raise a typed error or give the safe result, and never touch
anything outside the root (a sentinel directory next to the root is checked after each case).

The first group carries the names of containerd's ``TestBreakouts`` (pkg/archive/tar_test.go).
Where ocistore's contract is stricter than containerd (``..`` escaping the root, hard links
whose target escapes), the case expects ``UnsafeArchive`` instead of containerd's clamping.
"""

from __future__ import annotations

import contextlib
import gzip
import io
import os
import stat
import subprocess
import sys
import tarfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import attrs
import pytest
import zstandard
from archive_helpers import END, TarBuilder, header, member, snapshot

from ocistore import errors
from ocistore.archive import apply_layer
from ocistore.oci import mediatypes
from ocistore.oci.digest import digest_bytes

Setup = Callable[[Path, Path], None]
Check = Callable[[Path, Path], None]


@attrs.define
class Case:
    name: str
    build: Callable[[str], bytes]  # gets the absolute path of the sentinel dir
    error: type[Exception] | None = None
    setup: Setup | None = None
    check: Check | None = None
    kwargs: dict[str, Any] = attrs.Factory(dict)


def read(root: Path, rel: str) -> bytes:
    return (root / rel).read_bytes()


def same_in_root(root: Path, a: str, b: str) -> bool:
    """Like containerd's sameFile: both resolved inside the root (symlinks followed, clamped)."""
    return _in_root(root, a).samefile(_in_root(root, b))


def _in_root(root: Path, rel: str) -> Path:
    current = root
    parts = [p for p in rel.split("/") if p not in ("", ".")]
    hops = 0
    while parts:
        part = parts.pop(0)
        if part == "..":
            current = current.parent if current != root else root
            continue
        nxt = current / part
        if nxt.is_symlink():
            hops += 1
            assert hops < 40
            target = os.readlink(nxt)
            if target.startswith("/"):
                current = root
            parts = [p for p in target.split("/") if p not in ("", ".")] + parts
            continue
        current = nxt
    return current


def base_etc(root: Path, _out: Path) -> None:
    (root / "etc").mkdir()
    (root / "etc/passwd").write_text("inside")


def unbroken(root: Path, _out: Path) -> None:
    assert read(root, "etc/unbroken") == b"unbroken"


def tb() -> TarBuilder:
    return TarBuilder()


def gz(data: bytes) -> bytes:
    return gzip.compress(data, mtime=0)


def zst(data: bytes) -> bytes:
    return zstandard.ZstdCompressor(write_checksum=True).compress(data)


def flip(data: bytes, at: int) -> bytes:
    return data[:at] + bytes([data[at] ^ 0xFF]) + data[at + 1 :]


def pax_member(records: bytes, typeflag: bytes = b"x") -> bytes:
    return member(b"PaxHeaders/x", records, typeflag=typeflag)


def pax_record(key: bytes, value: bytes) -> bytes:
    body = b" " + key + b"=" + value + b"\n"
    n = len(body) + 1
    while len(str(n).encode()) + len(body) != n:
        n += 1
    return str(n).encode() + body


SOME_TAR = TarBuilder().file("a", os.urandom(3000)).file("b", b"x" * 5000).bytes()

CASES = [
    # ---- containerd TestBreakouts --------------------------------------------------------
    Case(
        "SymlinkAbsolute",
        lambda out: tb().dir("etc").symlink("localetc", "/etc").file("/localetc/unbroken", b"unbroken").bytes(),
        check=unbroken,
    ),
    Case(
        "SymlinkUpAndOut",
        lambda out: (
            tb()
            .dir("etc")
            .dir("dummy")
            .symlink("localetc", "/dummy/../etc")
            .file("/localetc/unbroken", b"unbroken")
            .bytes()
        ),
        check=unbroken,
    ),
    Case(
        "SymlinkMultipleAbsolute",
        lambda out: (
            tb()
            .dir("etc")
            .dir("dummy")
            .symlink("/dummy/etc", "/etc")
            .symlink("localetc", "/dummy/etc")
            .file("/dummy/etc/unbroken", b"unbroken")
            .bytes()
        ),
        check=unbroken,
    ),
    Case(
        "SymlinkMultipleRelative",
        lambda out: (
            tb()
            .dir("etc")
            .dir("dummy")
            .symlink("/dummy/etc", "/etc")
            .symlink("localetc", "./dummy/etc")
            .file("/dummy/etc/unbroken", b"unbroken")
            .bytes()
        ),
        check=unbroken,
    ),
    Case(
        "SymlinkEmptyFile",
        lambda out: (
            tb()
            .dir("etc")
            .file("etc/emptied", b"notempty")
            .symlink("localetc", "/etc")
            .file("/localetc/emptied", b"")
            .bytes()
        ),
        check=lambda root, out: None if read(root, "etc/emptied") == b"" else pytest.fail("etc/emptied not emptied"),
    ),
    Case(
        "HardlinkRelative",
        lambda out: (
            tb()
            .dir("etc", 0o770)
            .file("/etc/passwd", b"inside")
            .dir("breakouts")
            .symlink("breakouts/d1", "../../etc")
            .link("breakouts/mypasswd", "/breakouts/d1/passwd")
            .bytes()
        ),
        check=lambda root, out: assert_same(root, "breakouts/mypasswd", "etc/passwd"),
    ),
    Case(
        "HardlinkDownAndOut",
        lambda out: (
            tb()
            .dir("etc", 0o770)
            .file("/etc/passwd", b"inside")
            .dir("breakouts")
            .dir("downandout")
            .symlink("breakouts/d1", "../downandout/../../etc")
            .link("breakouts/mypasswd", "/breakouts/d1/passwd")
            .bytes()
        ),
        check=lambda root, out: assert_same(root, "breakouts/mypasswd", "etc/passwd"),
    ),
    Case(
        "HardlinkAbsolute",
        lambda out: (
            tb()
            .dir("etc", 0o770)
            .file("/etc/passwd", b"inside")
            .symlink("localetc", "/etc")
            .link("localpasswd", "/localetc/passwd")
            .bytes()
        ),
        check=lambda root, out: assert_same(root, "localpasswd", "etc/passwd"),
    ),
    Case(
        "HardlinkRelativeLong",
        lambda out: (
            tb()
            .dir("etc", 0o770)
            .file("/etc/passwd", b"inside")
            .symlink("localetc", "../../../../../../../etc")
            .link("localpasswd", "/localetc/passwd")
            .bytes()
        ),
        check=lambda root, out: assert_same(root, "localpasswd", "etc/passwd"),
    ),
    Case(
        "HardlinkRelativeUpAndOut",
        lambda out: (
            tb()
            .dir("etc", 0o770)
            .file("/etc/passwd", b"inside")
            .symlink("localetc", "upandout/../../../etc")
            .link("localpasswd", "/localetc/passwd")
            .bytes()
        ),
        check=lambda root, out: assert_same(root, "localpasswd", "etc/passwd"),
    ),
    Case(  # containerd clamps the target; ocistore refuses a link target escaping through '..'
        "HardlinkDirectRelative",
        lambda out: (
            tb()
            .dir("etc", 0o770)
            .file("/etc/passwd", b"inside")
            .link("localpasswd", "../../../../../etc/passwd")
            .bytes()
        ),
        error=errors.UnsafeArchive,
    ),
    Case(
        "HardlinkDirectAbsolute",
        lambda out: tb().dir("etc", 0o770).file("/etc/passwd", b"inside").link("localpasswd", "/etc/passwd").bytes(),
        check=lambda root, out: assert_same(root, "localpasswd", "etc/passwd"),
    ),
    Case(  # a member named '..' escapes the root: refused
        "SymlinkParentDirectory",
        lambda out: (
            tb()
            .dir("etc", 0o770)
            .file("/etc/passwd", b"inside")
            .symlink("..", "/etc/")
            .link("localpasswd", "/etc/passwd")
            .bytes()
        ),
        error=errors.UnsafeArchive,
    ),
    Case(
        "SymlinkEmptyFilename",
        lambda out: (
            tb()
            .dir("etc", 0o770)
            .file("/etc/passwd", b"inside")
            .symlink("", "/etc/")
            .link("localpasswd", "/etc/passwd")
            .bytes()
        ),
        check=lambda root, out: assert_same(root, "localpasswd", "etc/passwd"),
    ),
    Case(
        "SymlinkParentRelative",
        lambda out: (
            tb()
            .dir("etc", 0o770)
            .file("/etc/passwd", b"inside")
            .symlink("localetc/sub/..", "/etc/")
            .link("/localetc/localpasswd", "/etc/passwd")
            .bytes()
        ),
        check=lambda root, out: assert_same(root, "localetc/localpasswd", "etc/passwd"),
    ),
    Case(
        "SymlinkSlashEnded",
        lambda out: (
            tb()
            .dir("etc", 0o770)
            .file("/etc/passwd", b"inside")
            .dir("localetc/", 0o770)
            .link("/localetc/localpasswd", "/etc/passwd")
            .bytes()
        ),
        check=lambda root, out: assert_same(root, "localetc/localpasswd", "etc/passwd"),
    ),
    Case(
        "SymlinkOverrideDirectory",
        lambda out: tb().symlink("localetc", "/etc").link("/localetc/localpasswd", "/etc/passwd").bytes(),
        setup=lambda root, out: (base_etc(root, out), (root / "localetc").mkdir()),  # type: ignore[func-returns-value]
        check=lambda root, out: assert_same(root, "localetc/localpasswd", "etc/passwd"),
    ),
    Case(
        "SymlinkOverrideDirectoryRelative",
        lambda out: tb().symlink("localetc", "../../etc").link("/localetc/localpasswd", "/etc/passwd").bytes(),
        setup=lambda root, out: (base_etc(root, out), (root / "localetc").mkdir()),  # type: ignore[func-returns-value]
        check=lambda root, out: assert_same(root, "localetc/localpasswd", "etc/passwd"),
    ),
    Case(
        "DirectoryOverrideSymlink",
        lambda out: tb().dir("/localetc/").link("/localetc/localpasswd", "/etc/passwd").bytes(),
        setup=lambda root, out: (base_etc(root, out), os.symlink("/etc", root / "localetc")),  # type: ignore[func-returns-value]
        check=lambda root, out: (
            assert_same(root, "localetc/localpasswd", "etc/passwd"),
            _assert(not (root / "localetc").is_symlink()),
        ),
    ),
    Case(
        "DirectoryOverrideSymlinkAndHardlink",
        lambda out: tb().dir("/localetc/").file("/localetc/localpasswd", b"different").bytes(),
        setup=lambda root, out: (
            base_etc(root, out),
            os.symlink("etc", root / "localetc"),
            os.link(root / "etc/passwd", root / "etc/localpasswd"),
        ),  # type: ignore[func-returns-value]
        check=lambda root, out: (
            _assert(not same_in_root(root, "localetc/localpasswd", "etc/passwd")),
            _assert(read(root, "etc/passwd") == b"inside"),
        ),
    ),
    Case("WhiteoutRootParent", lambda out: tb().file(".wh...").bytes(), errors.UnsafeArchive, base_etc),
    Case("WhiteoutParent", lambda out: tb().file("etc/.wh...").bytes(), errors.UnsafeArchive, base_etc),
    Case("WhiteoutRoot", lambda out: tb().file(".wh..").bytes(), errors.UnsafeArchive, base_etc),
    Case("WhiteoutCurrentDirectory", lambda out: tb().file("etc/.wh..").bytes(), errors.UnsafeArchive, base_etc),
    Case(
        "WhiteoutSymlink",
        lambda out: tb().file(".wh.localetc").bytes(),
        setup=lambda root, out: (base_etc(root, out), os.symlink("/etc", root / "localetc")),  # type: ignore[func-returns-value]
        check=lambda root, out: (
            _assert(read(root, "etc/passwd") == b"inside"),
            _assert(not os.path.lexists(root / "localetc")),
        ),
    ),
    Case(
        "WhiteoutSymlinkPath",
        lambda out: tb().file("localetc/.wh.whitedout").bytes(),
        setup=lambda root, out: (
            base_etc(root, out),
            (root / "etc/whitedout").write_text("x"),
            os.symlink("/etc", root / "localetc"),
        ),  # type: ignore[func-returns-value]
        check=lambda root, out: (
            _assert(read(root, "etc/passwd") == b"inside"),
            _assert(not (root / "etc/whitedout").exists()),
        ),
    ),
    Case(
        "WhiteoutDirectoryName",
        lambda out: tb().file(".wh.etc/somefile", b"non-empty").bytes(),
        setup=base_etc,
        check=lambda root, out: (
            _assert(read(root, "etc/passwd") == b"inside"),
            _assert(read(root, ".wh.etc/somefile") == b"non-empty"),
        ),
    ),
    Case(
        "WhiteoutDeadSymlinkParent",
        lambda out: tb().file("localetc/.wh.etc").bytes(),
        setup=lambda root, out: (base_etc(root, out), os.symlink("/dne", root / "localetc")),  # type: ignore[func-returns-value]
        check=lambda root, out: _assert(read(root, "etc/passwd") == b"inside"),
    ),
    Case(
        "WhiteoutRelativePath",
        lambda out: tb().file("dne/../.wh.etc").bytes(),
        setup=lambda root, out: (base_etc(root, out), os.symlink("/dne", root / "localetc")),  # type: ignore[func-returns-value]
        check=lambda root, out: _assert(not (root / "etc").exists()),
    ),
    Case(  # a symlink replaces a directory, later members go through it: still inside the root
        "SymlinkOverridePath",
        lambda out: tb().dir("a").file("a/f", b"1").symlink("a", out).file("a/f2", b"2").bytes(),
        check=lambda root, out: _assert(read(root, out.lstrip("/") + "/f2") == b"2"),
    ),
    Case(
        "HardlinkSymlinkBeforeCreateTarget",
        lambda out: (
            tb()
            .dir("etc", 0o770)
            .symlink("localpasswd", "/etc/passwd")
            .link("localpasswd-dup", "localpasswd")
            .file("/etc/passwd", b"after")
            .bytes()
        ),
        check=lambda root, out: assert_same(root, "localpasswd-dup", "etc/passwd"),
    ),
    Case(
        "HardlinkSymlinkRelative",
        lambda out: (
            tb()
            .dir("etc", 0o770)
            .file("/etc/passwd", b"inside")
            .symlink("passwdlink", "../../../../../etc/passwd")
            .link("localpasswd", "/passwdlink")
            .bytes()
        ),
        check=lambda root, out: (
            _assert(os.readlink(root / "localpasswd") == os.readlink(root / "passwdlink")),
            assert_same(root, "localpasswd", "etc/passwd"),
        ),
    ),
    Case(
        "HardlinkSymlinkAbsolute",
        lambda out: (
            tb()
            .dir("etc", 0o770)
            .file("/etc/passwd", b"inside")
            .symlink("passwdlink", "/etc/passwd")
            .link("localpasswd", "/passwdlink")
            .bytes()
        ),
        check=lambda root, out: (
            _assert(os.readlink(root / "localpasswd") == "/etc/passwd"),
            assert_same(root, "localpasswd", "etc/passwd"),
        ),
    ),
    Case(
        "HardlinkSymlinkChmod",
        lambda out: (
            tb()
            .symlink(f"{out}/also-exists-outside-root", f"{out}/perm400")
            .link("sketchylink", f"{out}/also-exists-outside-root")
            .bytes()
        ),
        check=lambda root, out: _assert(stat.S_IMODE(os.lstat(f"{out}/perm400").st_mode) == 0o400),
    ),
    # ---- traversal and absolute names ---------------------------------------------------------
    Case("TraversalDotDot", lambda out: tb().file("../escape", b"x").bytes(), errors.UnsafeArchive),
    Case("TraversalDeep", lambda out: tb().file("a/b/../../../escape", b"x").bytes(), errors.UnsafeArchive),
    Case("TraversalToSentinel", lambda out: tb().file("../outside/etc/passwd", b"pwned").bytes(), errors.UnsafeArchive),
    Case(
        "AbsoluteNameRerooted",
        lambda out: tb().file(f"{out}/etc/passwd", b"pwned").bytes(),
        check=lambda root, out: _assert(read(root, out.lstrip("/") + "/etc/passwd") == b"pwned"),
    ),
    Case(
        "DotNamesAreTheRoot",
        lambda out: tb().dir(".", 0o777).dir("./").symlink(".", out).file("./x", b"1").bytes(),
        check=lambda root, out: _assert(read(root, "x") == b"1" and not (root / ".").is_symlink()),
    ),
    # ---- symlink escapes ------------------------------------------------------------------------
    Case(
        "SymlinkEscapeAbsolute",
        lambda out: tb().symlink("evil", out).file("evil/etc/passwd", b"pwned").bytes(),
        check=lambda root, out: _assert(read(root, out.lstrip("/") + "/etc/passwd") == b"pwned"),
    ),
    Case(
        "SymlinkEscapeRelative",
        lambda out: tb().symlink("evil", "../outside").file("evil/etc/passwd", b"pwned").bytes(),
        check=lambda root, out: _assert(read(root, "outside/etc/passwd") == b"pwned"),
    ),
    Case(
        "SymlinkEscapeChain",
        lambda out: tb().dir("d").symlink("d/b", "../../..").symlink("a", "d/b/../../x").file("a/y", b"1").bytes(),
        check=lambda root, out: _assert(read(root, "x/y") == b"1"),
    ),
    Case(
        "SymlinkLoop",
        lambda out: tb().symlink("a", "b").symlink("b", "a").file("a/x", b"1").bytes(),
        error=errors.UnsafeArchive,
    ),
    Case(
        "SymlinkEscapeOnDirectoryEntry",
        lambda out: tb().symlink("evil", out).dir("evil/etc", 0o777).bytes(),
        check=lambda root, out: _assert((root / out.lstrip("/") / "etc").is_dir()),
    ),
    Case(
        "FileOverSymlinkToOutside",
        lambda out: tb().symlink("f", f"{out}/etc/passwd").file("f", b"pwned").bytes(),
        check=lambda root, out: _assert(read(root, "f") == b"pwned" and not (root / "f").is_symlink()),
    ),
    Case(
        "DirectoryOverSymlinkToOutside",
        lambda out: tb().dir("d", 0o777).bytes(),
        setup=lambda root, out: os.symlink(out, root / "d"),
        check=lambda root, out: _assert((root / "d").is_dir() and not (root / "d").is_symlink()),
    ),
    Case(
        "PreexistingSymlinkParentToOutside",
        lambda out: tb().file("evil/etc/passwd", b"pwned").bytes(),
        setup=lambda root, out: os.symlink(out, root / "evil"),
        check=lambda root, out: _assert(read(root, out.lstrip("/") + "/etc/passwd") == b"pwned"),
    ),
    # ---- hard link escapes --------------------------------------------------------------------
    Case("HardlinkEscapeDotDot", lambda out: tb().link("h", "../outside/etc/passwd").bytes(), errors.UnsafeArchive),
    Case("HardlinkAbsoluteOutside", lambda out: tb().link("h", f"{out}/etc/passwd").bytes(), errors.UnsafeArchive),
    Case(
        "HardlinkViaSymlinkToOutside",
        lambda out: tb().symlink("evil", out).link("h", "evil/etc/passwd").bytes(),
        error=errors.UnsafeArchive,
    ),
    Case(
        "HardlinkNotYetExtracted", lambda out: tb().link("h", "later").file("later", b"1").bytes(), errors.UnsafeArchive
    ),
    Case("HardlinkToDirectory", lambda out: tb().dir("d").link("h", "d").bytes(), errors.UnsafeArchive),
    Case("HardlinkToRoot", lambda out: tb().link("h", "/").bytes(), errors.UnsafeArchive),
    Case(
        "HardlinkThenOverwrite",
        lambda out: tb().link("h", "etc/passwd").file("h", b"replaced").bytes(),
        setup=base_etc,
        check=lambda root, out: _assert(read(root, "etc/passwd") == b"inside" and read(root, "h") == b"replaced"),
    ),
    # ---- whiteout escapes -----------------------------------------------------------------------
    Case("WhiteoutTraversal", lambda out: tb().file("../.wh.outside").bytes(), errors.UnsafeArchive),
    Case("WhiteoutEmptyName", lambda out: tb().file("etc/.wh.").bytes(), errors.UnsafeArchive, base_etc),
    Case(
        "WhiteoutThroughSymlinkToOutside",
        lambda out: tb().symlink("evil", out).file("evil/.wh.etc").bytes(),
        check=lambda root, out: None,
    ),
    Case(
        "WhiteoutThroughRelativeSymlink",
        lambda out: tb().symlink("evil", "../outside").file("evil/.wh.etc").bytes(),
    ),
    Case(
        "OpaqueThroughSymlinkToOutside",
        lambda out: tb().symlink("evil", out).file("evil/.wh..wh..opq").bytes(),
    ),
    Case(
        "OpaqueThroughPreexistingSymlink",
        lambda out: tb().file("evil/etc/.wh..wh..opq").bytes(),
        setup=lambda root, out: os.symlink(out, root / "evil"),
    ),
    # ---- devices -------------------------------------------------------------------------------
    Case(
        "DeviceUnprivilegedSkipped",
        lambda out: tb().device("dev/mem", tarfile.CHRTYPE, 1, 1).device("dev/sda", tarfile.BLKTYPE, 8, 0).bytes(),
        check=lambda root, out: _assert(os.listdir(root / "dev") == []),
        kwargs={"privileged": False},
    ),
    Case(
        "DeviceNumberOutOfRange",
        lambda out: _device_header(b"dev/x", major=b"\x80" + (1 << 40).to_bytes(7, "big")) + END,
        error=errors.InvalidArgument,
        kwargs={"privileged": True},
    ),
    # ---- oversized headers ---------------------------------------------------------------------
    Case(
        "OversizedPaxHeader",
        lambda out: pax_member(pax_record(b"comment", b"x" * (1 << 20))) + member(b"f") + END,
        error=errors.SizeLimitExceeded,
    ),
    Case(
        "OversizedPaxPath",
        lambda out: pax_member(pax_record(b"path", b"p" * 5000)) + member(b"f") + END,
        error=errors.SizeLimitExceeded,
    ),
    Case(
        "OversizedGnuLongName",
        lambda out: member(b"././@LongLink", b"n" * 5000 + b"\x00", typeflag=b"L") + member(b"f") + END,
        error=errors.SizeLimitExceeded,
    ),
    Case(
        "OversizedGnuLongLink",
        lambda out: member(b"././@LongLink", b"n" * (2 << 20), typeflag=b"K") + member(b"f", typeflag=b"2") + END,
        error=errors.SizeLimitExceeded,
    ),
    Case(
        "OversizedGlobalPaxHeader",
        lambda out: pax_member(pax_record(b"comment", b"x" * (1 << 20)), typeflag=b"g") + member(b"f") + END,
        error=errors.SizeLimitExceeded,
    ),
    Case(
        "PaxPathWithNul",
        lambda out: pax_member(pax_record(b"path", b"etc/x\x00/../../escape")) + member(b"f") + END,
        error=errors.InvalidArgument,
    ),
    Case(
        "PaxLinkpathWithNul",
        lambda out: pax_member(pax_record(b"linkpath", b"a\x00b")) + member(b"l", typeflag=b"2") + END,
        error=errors.InvalidArgument,
    ),
    Case(
        "PaxXattrNameWithNul",
        lambda out: pax_member(pax_record(b"SCHILY.xattr.user.a\x00b", b"v")) + member(b"f") + END,
        error=errors.InvalidArgument,
    ),
    Case(
        "OversizedComponent",
        lambda out: tb().file("d/" + "c" * 300, b"x").bytes(),
        error=errors.InvalidArgument,
    ),
    # ---- malformed and truncated streams ------------------------------------------------------
    Case("TruncatedInData", lambda out: SOME_TAR[:1200], errors.InvalidArgument),
    Case("TruncatedInHeader", lambda out: SOME_TAR[:700], errors.InvalidArgument),
    Case("TruncatedGzip", lambda out: gz(SOME_TAR)[:-20], errors.InvalidArgument),
    Case("TruncatedGzipAtTarBoundary", lambda out: gz(SOME_TAR)[:-6], errors.InvalidArgument),
    Case("CorruptGzipData", lambda out: flip(gz(SOME_TAR), 200), errors.InvalidArgument),
    Case("CorruptGzipCrc", lambda out: flip(gz(SOME_TAR), -6), errors.InvalidArgument),
    Case("GzipTrailingGarbage", lambda out: gz(SOME_TAR) + b"garbage", errors.InvalidArgument),
    Case(
        "TruncatedZstd",
        lambda out: zst(SOME_TAR)[:-10],
        errors.InvalidArgument,
        kwargs={"media_type": mediatypes.OCI_LAYER_ZSTD},
    ),
    Case(
        "TruncatedZstdAfterTarEnd",
        lambda out: zst(SOME_TAR + bytes(8192))[:-4],
        errors.InvalidArgument,
        kwargs={"media_type": mediatypes.OCI_LAYER_ZSTD},
    ),
    Case(
        "CorruptZstd",
        lambda out: flip(zst(SOME_TAR), 40),
        errors.InvalidArgument,
        kwargs={"media_type": mediatypes.OCI_LAYER_ZSTD},
    ),
    Case(
        "GzipTypeButNotGzip",
        lambda out: SOME_TAR,
        errors.InvalidArgument,
        kwargs={"media_type": mediatypes.OCI_LAYER_GZIP},
    ),
    Case("BadChecksum", lambda out: header(b"f", checksum_delta=1) + END, errors.InvalidArgument),
    Case("NonOctalSize", lambda out: header(b"f", size_field=b"12x45678901\x00") + END, errors.InvalidArgument),
    Case(
        "NegativeBase256Size",
        lambda out: header(b"f", size_field=b"\xff" * 12) + END,
        errors.InvalidArgument,
    ),
    Case("UnknownTypeflag", lambda out: member(b"vol", typeflag=b"V") + END, errors.InvalidArgument),
    Case("ZeroBlockThenGarbage", lambda out: bytes(512) + member(b"f") + END, errors.InvalidArgument),
    Case(
        "MalformedPaxRecord",
        lambda out: pax_member(b"99999 path=x\n") + member(b"f") + END,
        errors.InvalidArgument,
    ),
    Case(
        "SparseMapBeyondData",
        lambda out: (
            pax_member(
                pax_record(b"GNU.sparse.major", b"0")
                + pax_record(b"GNU.sparse.minor", b"1")
                + pax_record(b"GNU.sparse.size", b"100")
                + pax_record(b"GNU.sparse.map", b"0,50,60,30")
            )
            + member(b"sparse", b"x" * 10)
            + END
        ),
        errors.InvalidArgument,
    ),
    Case(
        "UnsupportedSparseVersion",
        lambda out: (
            pax_member(
                pax_record(b"GNU.sparse.major", b"2")
                + pax_record(b"GNU.sparse.minor", b"0")
                + pax_record(b"GNU.sparse.realsize", b"10")
            )
            + member(b"sparse", b"x" * 10)
            + END
        ),
        errors.InvalidArgument,
    ),
    Case(
        "MemberBelowRegularFile",
        lambda out: tb().file("f", b"1").file("f/x", b"2").bytes(),
        errors.InvalidArgument,
    ),
    Case(
        "TrustedXattrIgnored",
        lambda out: tb().dir("d", **{"SCHILY.xattr.trusted.overlay.opaque": "y"}).bytes(),
        check=lambda root, out: _assert("trusted.overlay.opaque" not in os.listxattr(root / "d")),
    ),
    # ---- digests -------------------------------------------------------------------------------
    Case(
        "DiffIdMismatch",
        lambda out: SOME_TAR,
        errors.DigestMismatch,
        kwargs={"expected_diff_id": digest_bytes(b"something else")},
    ),
    Case(
        "DigestMismatch",
        lambda out: gz(SOME_TAR),
        errors.DigestMismatch,
        kwargs={"expected_digest": digest_bytes(b"something else")},
    ),
    Case("BlobLargerThanExpected", lambda out: gz(SOME_TAR), errors.DigestMismatch, kwargs={"expected_size": 100}),
    Case(
        "BlobSmallerThanExpected",
        lambda out: gz(SOME_TAR),
        errors.DigestMismatch,
        kwargs={"expected_size": 1 << 20},
    ),
]


def _device_header(name: bytes, major: bytes) -> bytes:
    block = bytearray(header(name, typeflag=b"3"))
    block[329:337] = major
    block[148:156] = b"        "
    block[148:156] = b"%06o\x00 " % sum(block)
    return bytes(block)


def _assert(condition: bool) -> None:
    assert condition


def assert_same(root: Path, a: str, b: str) -> None:
    assert same_in_root(root, a, b), f"{a} and {b} are not the same file"


def test_at_least_forty_cases() -> None:
    assert len(CASES) >= 40
    assert len({case.name for case in CASES}) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_hostile(case: Case, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    (outside / "etc").mkdir(parents=True)
    (outside / "etc/passwd").write_text("outside")
    (outside / "perm400").write_text("...")
    os.chmod(outside / "perm400", 0o400)
    root = tmp_path / "root"
    root.mkdir()
    if case.setup is not None:
        case.setup(root, outside)
    before = snapshot(outside)
    neighbours = sorted(os.listdir(tmp_path))
    data = case.build(str(outside))
    if case.error is not None:
        with pytest.raises(case.error) as info:
            apply_layer(io.BytesIO(data), root, **case.kwargs)
        assert str(info.value)  # a message naming what was wrong
    else:
        apply_layer(io.BytesIO(data), root, **case.kwargs)
        if case.check is not None:
            case.check(root, str(outside))  # type: ignore[arg-type]
    assert snapshot(outside) == before, "something outside the root changed"
    assert sorted(os.listdir(tmp_path)) == neighbours


def test_errors_are_never_bare_os_errors(tmp_path: Path) -> None:
    for case in CASES:
        root = tmp_path / case.name
        root.mkdir()
        with contextlib.suppress(errors.Error):
            apply_layer(io.BytesIO(case.build(str(tmp_path / "nowhere"))), root, **case.kwargs)


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to switch to nobody")
def test_devices_as_unprivileged_user_are_skipped() -> None:
    import shutil
    import tempfile

    base = Path(tempfile.mkdtemp(prefix="ocistore-nobody-"))  # pytest's tmp dirs are 0700 root
    try:
        os.chmod(base, 0o755)
        root = base / "root"
        root.mkdir()
        os.chown(root, 65534, 65534)
        data = tb().device("dev/null", tarfile.CHRTYPE, 1, 3).file("dev/ok", b"1").bytes()
        code = (
            "import os, sys;"
            "from ocistore.archive import apply_layer;"  # imported first: nobody may not read /root
            "os.setgroups([]); os.setgid(65534); os.setuid(65534);"
            "r = apply_layer(sys.stdin.buffer, sys.argv[1]);"
            "print(r.skipped_devices)"
        )
        env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[1]))
        proc = subprocess.run(
            [sys.executable, "-c", code, str(root)], input=data, capture_output=True, env=env, check=False
        )
        assert proc.returncode == 0, proc.stderr.decode()
        assert proc.stdout.decode().strip() == "1"
        assert os.listdir(root / "dev") == ["ok"]
    finally:
        shutil.rmtree(base)
