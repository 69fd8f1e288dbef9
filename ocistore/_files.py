"""File helpers: atomic writes, fsync of directories, allocated-size accounting."""

from __future__ import annotations

import contextlib
import errno
import os
from pathlib import Path
from typing import TYPE_CHECKING

from ocistore import errors
from ocistore._lazy import lazy_module

if TYPE_CHECKING:
    import shutil
else:
    shutil = lazy_module("shutil")  # (and bz2, lzma): only removing a tree needs it

__all__ = ["allocated_bytes", "atomic_write", "disk_full", "fsync_dir", "make_temp_dir", "remove_tree"]

_DISK_FULL = frozenset({errno.ENOSPC, errno.EDQUOT})


def disk_full(exc: OSError, what: str) -> Exception:
    """``errors.Unavailable`` for a full disk or quota (the caller raises it ``from exc``); else ``exc``."""
    if exc.errno in _DISK_FULL:
        return errors.Unavailable(f"{what}: no space left on device ({exc.strerror}); free space and retry")
    return exc


def fsync_dir(path: str | os.PathLike[str]) -> None:
    """fsync a directory so a rename inside it is durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def make_temp_dir(parent: str | os.PathLike[str], prefix: str) -> Path:
    """A new empty directory ``<parent>/<prefix><random>`` (mode 0700), as ``tempfile.mkdtemp`` makes one."""
    base = os.path.abspath(parent)
    for _ in range(100):
        path = Path(base, f"{prefix}{os.urandom(8).hex()}")
        try:
            os.mkdir(path, 0o700)
        except FileExistsError:
            continue
        return path
    raise FileExistsError(errno.EEXIST, "no free temporary directory name", base)


def atomic_write(path: str | os.PathLike[str], data: bytes, *, sync: bool = True, mode: int = 0o644) -> None:
    """Write ``data`` to a sibling temp file, fsync, and rename over ``path``.

    On failure the temp file is removed and the error re-raised; ``path`` is either the old
    or the new content, never a mix.
    """
    target = Path(path)
    tmp = target.with_name(f".{target.name}.{os.urandom(6).hex()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, mode)
    try:
        try:
            view = memoryview(data)
            while view:
                n = os.write(fd, view)
                view = view[n:]
            if sync:
                os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def remove_tree(path: str | os.PathLike[str]) -> None:
    """``rm -rf``: also removes read-only entries; a missing path is fine."""
    def onerror(func: object, p: str, exc_info: tuple[type[BaseException], BaseException, object]) -> None:
        exc = exc_info[1]
        if isinstance(exc, FileNotFoundError):
            return
        if isinstance(exc, PermissionError):
            with contextlib.suppress(OSError):
                os.chmod(os.path.dirname(p), 0o700)
            if os.path.isdir(p) and not os.path.islink(p):
                with contextlib.suppress(OSError):
                    os.chmod(p, 0o700)
                shutil.rmtree(p, onerror=onerror)
            else:
                os.unlink(p)
            return
        raise exc

    if not os.path.lexists(path):
        return
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path, onerror=onerror)
    else:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)


def allocated_bytes(path: str | os.PathLike[str], seen: set[tuple[int, int]] | None = None) -> int:
    """Bytes allocated on disk under ``path`` (st_blocks*512), directories included,
    each inode counted once (hardlinks), symlinks not followed."""
    seen = set() if seen is None else seen
    total = 0
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return 0
    stack = [os.fspath(path)]
    key = (st.st_dev, st.st_ino)
    if key not in seen:
        seen.add(key)
        total += st.st_blocks * 512
    if not os.path.isdir(path) or os.path.islink(path):
        return total
    while stack:
        d = stack.pop()
        try:
            it = os.scandir(d)
        except (FileNotFoundError, NotADirectoryError):
            continue
        with it:
            for e in it:
                try:
                    s = e.stat(follow_symlinks=False)
                except FileNotFoundError:
                    continue
                k = (s.st_dev, s.st_ino)
                if k in seen:
                    continue
                seen.add(k)
                total += s.st_blocks * 512
                if e.is_dir(follow_symlinks=False):
                    stack.append(e.path)
    return total
