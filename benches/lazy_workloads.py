#!/usr/bin/env python3
"""Derive the start workloads of benches/lazy.py: the files a start opens (strace) and the
byte ranges of them it reads (mincore).

Usage (as root, from the project root):

    python benches/lazy_workloads.py [--corpus ../shared/fixtures/corpus] [--big-layout DIR]
                                     [--readahead-kb 0] [--work /var/tmp/ocistore-derive]

For ``debian:gzip`` and ``app:layers`` the image is unpacked normally and the command runs
in a chroot of it (``sh -c true`` and ``python3 -c pass``); for ``ml:big`` (debian has no
python) the host's python3.11 imports torch from the unpacked image's site-packages. Every
regular file the command opened or executed (``strace -f -e trace=openat,execve``) is
written, relative to the image root, to benches/lazy_workloads/<tag>.txt.

Then the byte ranges a start reads: the store root is a fresh loop-mounted ext4 whose
device readahead is set to ``--readahead-kb`` (``blockdev --setra``; 0 by default, so a page
fault or a read brings in only the pages it touches, not a 128 KiB read-around), the files'
pages are dropped from the page cache (``fsync`` + ``posix_fadvise(DONTNEED)``, checked with
``mincore``), the command runs once more without strace, and the resident pages of each
listed file (``mincore(2)`` on a ``PROT_READ`` mapping, which faults nothing in) are written
as merged, page-aligned ``[start, end)`` ranges (the last one clipped to the file's size) to
benches/lazy_workloads/<tag>.ranges.json. A file the dynamic loader maps (``libtorch_cpu.so``)
shows only the pages the relocations, init code and symbol lookups touched; a ``.py`` file
read with ``read()`` shows in full.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import mmap
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

import common as C  # noqa: E402

from ocistore import Store  # noqa: E402
from ocistore.mount import mounted  # noqa: E402

OUT = HERE / "lazy_workloads"
SITE = "opt/venv/lib/python3.11/site-packages"
COMMANDS = {"debian:gzip": ["/bin/sh", "-c", "true"], "app:layers": ["/usr/bin/python3", "-c", "pass"]}
_CALL = re.compile(r'(?:openat\(AT_FDCWD|openat\(\d+|execve\()[^"]*"([^"]+)".*= (\d+|0)\s*$')


def _opened(trace: str, after_chroot: bool = False) -> list[str]:
    seen: list[str] = []
    lines = trace.splitlines()
    if after_chroot:  # what chroot(8) itself opened is the host's
        lines = lines[next(i for i, line in enumerate(lines) if "chroot(" in line) + 1:]
    for line in lines:
        m = _CALL.search(line)
        if m and "ENOENT" not in line and m.group(1) not in seen:
            seen.append(m.group(1))
    return seen


def _regular(root: Path, paths: list[str], prefix: str = "/") -> list[str]:
    out = []
    for p in paths:
        if not p.startswith(prefix):
            continue
        rel = p[len(prefix):].lstrip("/") if prefix != "/" else p.lstrip("/")
        full = root / (rel if prefix == "/" else f"{SITE}/{rel}")
        if full.is_file() or full.is_symlink():  # a link is resolved in the chroot afterwards
            out.append(rel if prefix == "/" else f"{SITE}/{rel}")
    return out


# -- resident pages: mincore(2) --------------------------------------------------------------------

_libc = ctypes.CDLL(None, use_errno=True)
_libc.mmap.restype = ctypes.c_void_p
_libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_long]
_libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
_libc.mincore.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.POINTER(ctypes.c_ubyte)]
PAGE = mmap.PAGESIZE
_MAP_FAILED = ctypes.c_void_p(-1).value


def resident_ranges(path: Path) -> list[list[int]]:
    """The merged ``[start, end)`` byte ranges of ``path`` whose pages are in the page cache."""
    size = path.stat().st_size
    if size == 0:
        return []
    fd = os.open(path, os.O_RDONLY)
    try:
        addr = _libc.mmap(None, size, mmap.PROT_READ, mmap.MAP_SHARED, fd, 0)
        if addr in (None, _MAP_FAILED):
            raise OSError(ctypes.get_errno(), f"mmap {path}")
        try:
            pages = (size + PAGE - 1) // PAGE
            vec = (ctypes.c_ubyte * pages)()
            if _libc.mincore(addr, size, vec) != 0:
                raise OSError(ctypes.get_errno(), f"mincore {path}")
        finally:
            _libc.munmap(addr, size)
    finally:
        os.close(fd)
    ranges: list[list[int]] = []
    for i, v in enumerate(vec):
        if not v & 1:
            continue
        if ranges and ranges[-1][1] == i * PAGE:
            ranges[-1][1] = (i + 1) * PAGE
        else:
            ranges.append([i * PAGE, (i + 1) * PAGE])
    if ranges:
        ranges[-1][1] = min(ranges[-1][1], size)
    return ranges


def drop_cached(paths: list[Path]) -> None:
    """Write back and drop the page-cache pages of ``paths``; RuntimeError if some stay resident."""
    os.sync()
    for p in paths:
        fd = os.open(p, os.O_RDONLY)
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)
    left = [str(p) for p in paths if resident_ranges(p)]
    if left:
        raise RuntimeError(f"{len(left)} files still have cached pages after DONTNEED, e.g. {left[:3]}")


def derive(store: Store, tag: str, tmp: Path) -> tuple[list[str], dict[str, dict[str, Any]]]:
    top = store.unpack(f"docker.io/library/{tag}")
    sn = store.snapshots("overlayfs")
    key = f"derive-{tag.replace(':', '-')}"
    target = tmp / key
    target.mkdir()
    try:
        with mounted(sn.view(key, top), target) as root:
            log = tmp / f"{key}.trace"
            if tag in COMMANDS:
                cmd = ["strace", "-f", "-qq", "-o", str(log), "-e", "trace=openat,execve,chroot",
                       "chroot", str(root), *COMMANDS[tag]]
                subprocess.run(cmd, check=True, env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin"})
                files = _regular(root, _opened(log.read_text(), after_chroot=True))
                # the names the layers hold (convert's prioritized_files): symlinks resolved in the chroot
                # (and the program interpreter, which the kernel opens without an openat)
                files = [subprocess.run(["chroot", str(root), "readlink", "-f", f"/{f}"], check=True,
                                        capture_output=True, text=True).stdout.strip().lstrip("/")
                         for f in [*files, "lib64/ld-linux-x86-64.so.2"]]
                again = ["chroot", str(root), *COMMANDS[tag]]
                env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin"}
            else:
                site = root / SITE
                code = f"import sys; sys.path.insert(0, {str(site)!r}); import torch"
                # torch's own dependencies (typing_extensions, sympy, ...) come from the host
                subprocess.run(["strace", "-f", "-qq", "-o", str(log), "-e", "trace=openat",
                                sys.executable, "-c", code], check=True)
                files = _regular(root, _opened(log.read_text()), prefix=str(site))
                again = [sys.executable, "-c", code]
                env = dict(os.environ)
            # the chroot's own executable (execve of chroot's target) is listed by the trace
            files = [f for f in files if not f.startswith(("proc/", "sys/", "dev/"))]
            drop_cached([root / f for f in files])
            subprocess.run(again, check=True, env=env)
            return files, {f: {"size": (root / f).stat().st_size, "ranges": resident_ranges(root / f)}
                           for f in files}
    finally:
        sn.remove(key)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--corpus", default=str(HERE.parent.parent / "shared/fixtures/corpus"))
    ap.add_argument("--big-layout", default=os.environ.get("OCISTORE_FIXTURES", "/var/tmp/obench/images"))
    ap.add_argument("--readahead-kb", type=int, default=0,
                    help="readahead of the loop device holding the unpacked image (the kernel's default: 128)")
    ap.add_argument("--work", default="/var/tmp/ocistore-derive")
    ap.add_argument("--out", default=str(OUT), help="where the lists and ranges go")
    ap.add_argument("--images", nargs="+", default=["debian:gzip", "app:layers", "ml:big"])
    a = ap.parse_args()
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    with C.loop_ext4(4, a.work, "derive") as fs:
        device = subprocess.run(["findmnt", "-n", "-o", "SOURCE", str(fs)], check=True, capture_output=True,
                                text=True).stdout.strip()
        subprocess.run(["blockdev", "--setra", str(a.readahead_kb * 2), device], check=True)  # 512-byte sectors
        tmp = Path(tempfile.mkdtemp(prefix="ocistore-derive-", dir=fs))
        try:
            jobs = [(a.corpus, t) for t in ("debian:gzip", "app:layers") if t in a.images]
            if "ml:big" in a.images and a.big_layout and (Path(a.big_layout) / "index.json").exists():
                jobs.append((a.big_layout, "ml:big"))  # another build: its own store
            for i, (layout, tag) in enumerate(jobs):
                with Store(tmp / f"root{i}") as store:
                    store.import_archive(layout, fetch_only=True)
                    files, ranges = derive(store, tag, tmp)
                stem = tag.replace(':', '-')
                (out / f"{stem}.txt").write_text("".join(f"{f}\n" for f in files))
                read = sum(e - s for r in ranges.values() for s, e in r["ranges"])
                total = sum(r["size"] for r in ranges.values())
                doc = {"tag": tag, "command": COMMANDS.get(tag, ["python3.11", "-c", "import torch"]),
                       "page_size": PAGE, "readahead_kb": a.readahead_kb, "bytes_resident": read,
                       "bytes_of_files": total,
                       "note": "[start, end) byte ranges of each opened file resident after one start from a "
                               "dropped page cache (mincore); see benches/lazy_workloads.py",
                       "files": ranges}
                (out / f"{stem}.ranges.json").write_text(json.dumps(doc, indent=0) + "\n")
                print(f"{tag}: {len(files)} files of {total / 1e6:.1f} MB, {read / 1e6:.1f} MB resident after the "
                      "start", file=sys.stderr)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
