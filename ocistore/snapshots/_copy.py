"""Copying a directory tree with everything a root filesystem carries.

Modes, owners, times (nanoseconds), extended attributes, symlinks, hardlinks within the
tree, fifos, sockets and (when privileged) device nodes. File data is cloned with the
``FICLONE`` ioctl where the filesystem supports reflinks (btrfs, xfs, ...), else copied with
``copy_file_range``. Without privileges, owners and xattrs that cannot be set are kept as
far as allowed and device nodes are skipped (with a warning), so a copy never fails only
because the process is not root.
"""

from __future__ import annotations

import errno
import fcntl
import logging
import os
import stat
from pathlib import Path

from ocistore import errors

__all__ = ["copy_tree"]

log = logging.getLogger(__name__)

FICLONE = 0x40049409
_NO_REFLINK = {errno.EOPNOTSUPP, errno.ENOTTY, errno.EXDEV, errno.EINVAL, errno.ENOSYS, errno.EBADF}
_IGNORED_XATTR_ERRORS = {errno.EPERM, errno.EACCES, errno.ENOTSUP, errno.EOPNOTSUPP}
_CHUNK = 1 << 30


class _Copier:
    """State of one tree copy: hardlinks seen and whether reflinks work here."""

    def __init__(self) -> None:
        self.links: dict[tuple[int, int], str] = {}
        self.reflink = True
        self.privileged = os.geteuid() == 0

    def copy_dir(self, src: str, dst: str, st: os.stat_result) -> None:
        with os.scandir(src) as it:
            entries = list(it)
        for entry in entries:
            self.copy_entry(entry.path, os.path.join(dst, entry.name))
        self.apply_metadata(src, dst, st)

    def copy_entry(self, src: str, dst: str) -> None:
        st = os.lstat(src)
        mode = st.st_mode
        if stat.S_ISDIR(mode):
            os.mkdir(dst, 0o700)
            self.copy_dir(src, dst, st)
            return
        if st.st_nlink > 1:
            first = self.links.get((st.st_dev, st.st_ino))
            if first is not None:
                os.link(first, dst, follow_symlinks=False)
                return
            self.links[(st.st_dev, st.st_ino)] = dst
        if stat.S_ISREG(mode):
            self.copy_file(src, dst)
        elif stat.S_ISLNK(mode):
            os.symlink(os.readlink(src), dst)
        elif not self.make_node(dst, st):
            return
        self.apply_metadata(src, dst, st)

    def make_node(self, dst: str, st: os.stat_result) -> bool:
        """Create a fifo, socket or device node; False when skipped for lack of privilege."""
        try:
            os.mknod(dst, stat.S_IFMT(st.st_mode) | 0o600, st.st_rdev)
        except PermissionError:
            if self.privileged:
                raise
            log.warning("skipping device node %s: creating it needs CAP_MKNOD", dst)
            return False
        return True

    def copy_file(self, src: str, dst: str) -> None:
        sfd = os.open(src, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
        try:
            dfd = os.open(dst, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
            try:
                if not self.try_reflink(sfd, dfd):
                    _copy_data(sfd, dfd)
            finally:
                os.close(dfd)
        finally:
            os.close(sfd)

    def try_reflink(self, sfd: int, dfd: int) -> bool:
        if not self.reflink:
            return False
        try:
            fcntl.ioctl(dfd, FICLONE, sfd)
        except OSError as e:
            if e.errno not in _NO_REFLINK:
                raise
            self.reflink = False
            return False
        return True

    def apply_metadata(self, src: str, dst: str, st: os.stat_result) -> None:
        """Owner, then mode (chown clears set-id bits), xattrs, and times last."""
        try:
            os.lchown(dst, st.st_uid, st.st_gid)
        except PermissionError:
            if self.privileged:
                raise
        if not stat.S_ISLNK(st.st_mode):
            os.chmod(dst, stat.S_IMODE(st.st_mode))
        _copy_xattrs(src, dst)
        os.utime(dst, ns=(st.st_atime_ns, st.st_mtime_ns), follow_symlinks=False)


def _copy_data(sfd: int, dfd: int) -> None:
    """Copy a whole file with copy_file_range, falling back to sendfile across filesystems."""
    use_range = True
    while True:
        try:
            n = os.copy_file_range(sfd, dfd, _CHUNK) if use_range else os.sendfile(dfd, sfd, None, _CHUNK)
        except OSError as e:
            if not use_range or e.errno not in (errno.EXDEV, errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP):
                raise
            use_range = False
            continue
        if n == 0:
            return


def _copy_xattrs(src: str, dst: str) -> None:
    try:
        names = os.listxattr(src, follow_symlinks=False)
    except OSError as e:
        if e.errno in _IGNORED_XATTR_ERRORS:
            return
        raise
    for name in names:
        try:
            value = os.getxattr(src, name, follow_symlinks=False)
            os.setxattr(dst, name, value, follow_symlinks=False)
        except OSError as e:
            if e.errno not in _IGNORED_XATTR_ERRORS:
                raise


def copy_tree(src: Path, dst: Path) -> None:
    """Copy the tree ``src`` to ``dst`` (which must not exist), metadata included.

    Raises:
        NotFound: ``src`` does not exist.
        FailedPrecondition: the copy failed (disk full, permissions, ...).
    """
    copier = _Copier()
    try:
        st = os.lstat(src)
        os.mkdir(dst, 0o700)
        copier.copy_dir(os.fspath(src), os.fspath(dst), st)
    except FileNotFoundError as e:
        raise errors.NotFound(f"cannot copy {src} to {dst}: {e.filename} does not exist") from e
    except OSError as e:
        raise errors.FailedPrecondition(
            f"cannot copy snapshot tree {src} to {dst}: {e.strerror} ({e.filename})"
        ) from e
