"""Helpers for the archive tests: corpus access, reference extraction, tree snapshots, tar builders."""

from __future__ import annotations

import hashlib
import io
import json
import os
import stat
import subprocess
import tarfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

CORPUS = Path(os.environ.get("OCISTORE_CORPUS", Path(__file__).resolve().parents[2] / "shared/fixtures/corpus"))
if not CORPUS.exists():
    CORPUS = Path("/work/shared/fixtures/corpus")


def corpus_json() -> dict[str, Any]:
    return json.loads((CORPUS / "corpus.json").read_text())  # type: ignore[no-any-return]


def layers_of(tag: str) -> list[dict[str, Any]]:
    return corpus_json()["images"][tag]["layers"]  # type: ignore[no-any-return]


def blob_path(digest: str) -> Path:
    alg, _, hexpart = digest.partition(":")
    return CORPUS / "blobs" / alg / hexpart


def tar_reference(layers: Iterable[dict[str, Any]], dest: Path) -> None:
    """Extract layers with GNU tar, processing whiteouts against the lower layers (OCI spec)."""
    for layer in layers:
        blob = blob_path(layer["digest"])
        listing = subprocess.run(
            ["tar", "--quoting-style=literal", "-tf", str(blob)], check=True, capture_output=True
        ).stdout
        names = os.fsdecode(listing).splitlines()
        for name in names:
            parent, _, base = name.rstrip("/").rpartition("/")
            directory = dest / parent
            if base == ".wh..wh..opq":
                if directory.is_dir() and not directory.is_symlink():
                    for child in directory.iterdir():
                        _rm(child)
            elif base.startswith(".wh."):
                _rm(directory / base[4:])
        subprocess.run(
            [
                "tar",
                "-x",
                "-p",
                "--same-owner",
                "--numeric-owner",
                "--xattrs",
                "--xattrs-include=*",
                "--exclude=.wh.*",
                "-f",
                str(blob),
                "-C",
                str(dest),
            ],
            check=True,
        )


def _rm(path: Path) -> None:
    if path.is_symlink() or (path.exists() and not path.is_dir()):
        path.unlink()
    elif path.is_dir():
        subprocess.run(["rm", "-rf", "--", str(path)], check=True)


def snapshot(root: Path, *, mtimes_before: float | None = None) -> dict[str, tuple[Any, ...]]:
    """Everything a layer apply should reproduce, per relative path.

    Directory mtimes newer than ``mtimes_before`` are left out (both sides touch them).
    """
    out: dict[str, tuple[Any, ...]] = {}
    inodes: dict[tuple[int, int], str] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in sorted(dirnames + filenames):
            path = os.path.join(dirpath, name)
            rel = os.path.relpath(path, root)
            st = os.lstat(path)
            kind = stat.S_IFMT(st.st_mode)
            extra: Any = None
            if stat.S_ISREG(kind):
                extra = hashlib.sha256(Path(path).read_bytes()).hexdigest()
                if st.st_nlink > 1:
                    first = inodes.setdefault((st.st_dev, st.st_ino), rel)
                    extra = (extra, "links-with", first)
            elif stat.S_ISLNK(kind):
                extra = os.readlink(path)
            elif stat.S_ISCHR(kind) or stat.S_ISBLK(kind):
                extra = (os.major(st.st_rdev), os.minor(st.st_rdev))
            mtime: int | None = st.st_mtime_ns
            if stat.S_ISDIR(kind) and mtimes_before is not None and st.st_mtime > mtimes_before:
                mtime = None
            xattrs = {}
            if not stat.S_ISLNK(kind):
                for key in os.listxattr(path, follow_symlinks=False):
                    xattrs[key] = os.getxattr(path, key, follow_symlinks=False)
            perm = None if stat.S_ISLNK(kind) else stat.S_IMODE(st.st_mode)
            out[rel] = (kind, perm, st.st_uid, st.st_gid, mtime, extra, tuple(sorted(xattrs.items())))
    return out


def diff_snapshots(a: dict[str, tuple[Any, ...]], b: dict[str, tuple[Any, ...]]) -> list[str]:
    problems = []
    for rel in sorted(set(a) | set(b)):
        if rel not in a:
            problems.append(f"missing in ours: {rel}")
        elif rel not in b:
            problems.append(f"extra in ours: {rel}")
        elif _comparable(a[rel], b[rel]) != _comparable(b[rel], a[rel]):
            problems.append(f"differs: {rel}: ours={a[rel]} ref={b[rel]}")
    return problems


def _comparable(mine: tuple[Any, ...], other: tuple[Any, ...]) -> tuple[Any, ...]:
    # a directory mtime one side left to "now" is not compared: GNU tar sets a directory's
    # times as soon as it sees a member outside it, and later members inside it touch them again
    if mine[4] is None or other[4] is None:
        return (*mine[:4], None, *mine[5:])
    return mine


class TarBuilder:
    """Builds tar streams member by member, including hostile ones tarfile would not write."""

    def __init__(self, fmt: int = tarfile.PAX_FORMAT) -> None:
        self.buf = io.BytesIO()
        self.tf = tarfile.open(fileobj=self.buf, mode="w", format=fmt)  # noqa: SIM115 (closed by bytes())
        self.mtime = 1_700_000_000

    def _info(self, name: str, kind: bytes, mode: int) -> tarfile.TarInfo:
        info = tarfile.TarInfo(name)
        info.type = kind
        info.mode = mode
        info.mtime = self.mtime
        info.uid = info.gid = 0
        return info

    def dir(self, name: str, mode: int = 0o755, **pax: str) -> TarBuilder:
        info = self._info(name, tarfile.DIRTYPE, mode)
        if pax:
            info.pax_headers = dict(pax)
        self.tf.addfile(info)
        return self

    def file(self, name: str, data: bytes = b"", mode: int = 0o644, **pax: str) -> TarBuilder:
        info = self._info(name, tarfile.REGTYPE, mode)
        info.size = len(data)
        if pax:
            info.pax_headers = dict(pax)
        self.tf.addfile(info, io.BytesIO(data))
        return self

    def symlink(self, name: str, target: str) -> TarBuilder:
        info = self._info(name, tarfile.SYMTYPE, 0o777)
        info.linkname = target
        self.tf.addfile(info)
        return self

    def link(self, name: str, target: str) -> TarBuilder:
        info = self._info(name, tarfile.LNKTYPE, 0o644)
        info.linkname = target
        self.tf.addfile(info)
        return self

    def device(self, name: str, kind: bytes, major: int = 1, minor: int = 3, mode: int = 0o666) -> TarBuilder:
        info = self._info(name, kind, mode)
        info.devmajor, info.devminor = major, minor
        self.tf.addfile(info)
        return self

    def raw(self, data: bytes) -> TarBuilder:
        """Append raw bytes (a hand-made header); tarfile's offset is kept in step."""
        self.tf.fileobj.write(data)  # type: ignore[union-attr]
        self.tf.offset += len(data)
        return self

    def bytes(self) -> bytes:
        self.tf.close()
        return self.buf.getvalue()


def header(
    name: bytes,
    *,
    size: int = 0,
    typeflag: bytes = b"0",
    linkname: bytes = b"",
    mode: int = 0o644,
    magic: bytes = b"ustar\x0000",
    prefix: bytes = b"",
    size_field: bytes | None = None,
    checksum_delta: int = 0,
) -> bytes:
    """A raw 512-byte ustar header (with a correct checksum unless ``checksum_delta``)."""
    block = bytearray(512)
    block[0 : len(name[:100])] = name[:100]
    block[100:108] = b"%07o\x00" % mode
    block[108:116] = b"0000000\x00"
    block[116:124] = b"0000000\x00"
    block[124:136] = size_field if size_field is not None else b"%011o\x00" % size
    block[136:148] = b"%011o\x00" % 1_700_000_000
    block[156:157] = typeflag
    block[157 : 157 + len(linkname[:100])] = linkname[:100]
    block[257:265] = magic
    block[345 : 345 + len(prefix)] = prefix
    block[148:156] = b"        "
    checksum = sum(block) + checksum_delta
    block[148:156] = b"%06o\x00 " % checksum
    return bytes(block)


def member(name: bytes, data: bytes = b"", **kw: Any) -> bytes:
    """A raw header plus its padded data."""
    pad = -len(data) % 512
    return header(name, size=len(data), **kw) + data + bytes(pad)


END = bytes(1024)
