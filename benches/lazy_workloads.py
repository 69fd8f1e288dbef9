#!/usr/bin/env python3
"""Derive the start workloads of benches/lazy.py: the files a start opens, by strace.

Usage (as root, from the project root):

    python benches/lazy_workloads.py [--corpus ../shared/fixtures/corpus] [--big-layout DIR]

For ``debian:gzip`` and ``app:layers`` the image is unpacked normally and the command runs
in a chroot of it (``sh -c true`` and ``python3 -c pass``); for ``ml:big`` (debian has no
python) the host's python3.11 imports torch from the unpacked image's site-packages. Every
regular file the command opened or executed (``strace -f -e trace=openat,execve``) is
written, relative to the image root, to benches/lazy_workloads/<tag>.txt.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

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


def derive(store: Store, tag: str, tmp: Path) -> list[str]:
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
            else:
                site = root / SITE
                code = f"import sys; sys.path.insert(0, {str(site)!r}); import torch"
                # torch's own dependencies (typing_extensions, sympy, ...) come from the host
                subprocess.run(["strace", "-f", "-qq", "-o", str(log), "-e", "trace=openat",
                                sys.executable, "-c", code], check=True)
                files = _regular(root, _opened(log.read_text()), prefix=str(site))
            # the chroot's own executable (execve of chroot's target) is listed by the trace
            return [f for f in files if not f.startswith(("proc/", "sys/", "dev/"))]
    finally:
        sn.remove(key)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--corpus", default=str(HERE.parent.parent / "shared/fixtures/corpus"))
    ap.add_argument("--big-layout", default=os.environ.get("OCISTORE_FIXTURES", "/var/tmp/obench/images"))
    a = ap.parse_args()
    OUT.mkdir(exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix="ocistore-derive-"))
    try:
        jobs = [(a.corpus, "debian:gzip"), (a.corpus, "app:layers")]
        if a.big_layout and (Path(a.big_layout) / "index.json").exists():
            jobs.append((a.big_layout, "ml:big"))  # another build: its own store
        for i, (layout, tag) in enumerate(jobs):
            with Store(tmp / f"root{i}") as store:
                store.import_archive(layout, fetch_only=True)
                files = derive(store, tag, tmp)
            (OUT / f"{tag.replace(':', '-')}.txt").write_text("".join(f"{f}\n" for f in files))
            print(f"{tag}: {len(files)} files", file=sys.stderr)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
