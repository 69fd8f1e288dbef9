"""Creating members on disk: files, directories, links, devices and their metadata.

Every path handed to these functions is ``root/<real parent>/<base>`` where the
real parent is a chain of real directories inside the root (see ``_paths``), so
operating on the final component with no-follow semantics never leaves the root.
"""

from __future__ import annotations

import errno
import os
import shutil
import stat

from ocistore import errors
from ocistore.archive._paths import is_whiteout_device
from ocistore.archive._tarformat import TarEntry, TarReader

__all__ = [
    "FILE_FLAGS",
    "MAX_NS",
    "MetadataPolicy",
    "create_file",
    "remove_path",
    "set_xattrs",
    "times_of",
]

MAX_NS = (1 << 63) - 1  # the latest time a file can carry (ns); later ones become 0
FILE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
_IGNORED_XATTR_ERRNOS = frozenset({errno.ENOTSUP, errno.EOPNOTSUPP})


class MetadataPolicy:
    """What metadata to restore: ownership (``chown``) or not."""

    def __init__(self, chown: bool) -> None:
        self.chown = chown


def times_of(entry: TarEntry) -> tuple[int, int]:
    """(atime, mtime) in ns: atime is max(atime, mtime); out-of-range times become 0."""
    mtime = entry.mtime_ns if 0 <= entry.mtime_ns <= MAX_NS else 0
    atime = entry.atime_ns if entry.atime_ns is not None and 0 <= entry.atime_ns <= MAX_NS else 0
    return (atime if atime > mtime else mtime), mtime


def remove_path(path: str) -> bool:
    """Remove whatever is at ``path`` (``rm -rf``, never following symlinks).

    Returns True when a directory was removed.
    """
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return False
    if stat.S_ISDIR(st.st_mode):
        shutil.rmtree(path)
        return True
    os.unlink(path)
    return False


def create_file(path: str, mode: int, dir_fd: int | None = None) -> int:
    """Open a new file exclusively (never through a symlink); replace a non-directory.

    ``path`` is relative to ``dir_fd`` when given. Raises IsADirectoryError when a
    directory is in the way (the caller decides).
    """
    try:
        return os.open(path, FILE_FLAGS, mode, dir_fd=dir_fd)
    except FileExistsError:
        st = os.stat(path, dir_fd=dir_fd, follow_symlinks=False)
        if stat.S_ISDIR(st.st_mode):
            raise IsADirectoryError(errno.EISDIR, "a directory is in the way", path) from None
        os.unlink(path, dir_fd=dir_fd)
        return os.open(path, FILE_FLAGS, mode, dir_fd=dir_fd)


def write_file_data(fd: int, entry: TarEntry, reader: TarReader) -> None:
    """Copy the member's data into ``fd`` (sparse files: segments at their offsets)."""
    if entry.sparse is None:
        if entry.size:
            reader.copy_to_fd(fd, entry.size)
        return
    for offset, length in entry.sparse:
        if length:
            reader.copy_to_fd(fd, length, offset)
    os.ftruncate(fd, entry.real_size)


def set_xattrs(target: int | str, entry: TarEntry, regular_or_dir: bool) -> None:
    """Set the member's xattrs (``trusted.*`` ignored; unsupported ones skipped, as containerd)."""
    assert entry.xattrs is not None
    for key, value in entry.xattrs.items():
        if key.startswith("trusted."):
            continue
        try:
            if isinstance(target, int):
                os.setxattr(target, key, value)
            else:
                os.setxattr(target, key, value, follow_symlinks=False)
        except OSError as exc:
            if exc.errno in _IGNORED_XATTR_ERRNOS:
                continue
            if exc.errno == errno.EPERM and key.startswith("user.") and not regular_or_dir:
                continue  # user.* xattrs are not allowed on symlinks and devices
            raise errors.InvalidArgument(f"member {entry.name!r}: cannot set xattr {key!r}: {exc.strerror}") from None


def is_overlay_whiteout(path: str) -> bool:
    """Whether ``path`` is an overlay whiteout device (char 0:0)."""
    try:
        return is_whiteout_device(os.lstat(path))
    except FileNotFoundError:
        return False
