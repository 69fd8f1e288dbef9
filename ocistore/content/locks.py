"""Ref locks that hold across threads and processes (``flock`` on a per-ref lock file).

Each lock is a file ``<dir>/<name>.lock``; holding it means holding an exclusive ``flock``
on the file that is *currently* at that path (the inode is re-checked after locking, so a
lock file removed by its previous owner cannot be locked twice). The lock file records
the owner's pid and start time so a busy error can say since when the ref is held.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import time
from datetime import UTC, datetime

from ocistore import errors

__all__ = ["RefLock"]


class RefLock:
    """An exclusive, non-blocking lock on ``path``; ``release(remove=True)`` deletes the file."""

    def __init__(self, path: str, what: str) -> None:
        self.path = path
        self.what = what
        self._fd: int | None = None

    def acquire(self) -> RefLock:
        """Take the lock without waiting and return ``self``.

        Unavailable if another ``RefLock`` (in this or another process) holds it; the
        message names the holder's pid and since when, if the lock file records them.
        """
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                since = _read_since(fd)
                os.close(fd)
                raise errors.Unavailable(
                    f"{self.what} is locked by another writer{since}; retry later or abort it"
                ) from None
            try:
                same = os.fstat(fd).st_ino == os.stat(self.path).st_ino
            except FileNotFoundError:
                same = False
            if same:
                os.ftruncate(fd, 0)
                os.write(fd, f"{os.getpid()} {time.time():.6f}\n".encode())
                self._fd = fd
                return self
            os.close(fd)  # the file was unlinked by its last owner between open and flock

    @property
    def held(self) -> bool:
        """Whether this object currently holds the lock."""
        return self._fd is not None

    def release(self, remove: bool = False) -> None:
        """Drop the lock (a no-op if not held); ``remove`` also deletes the lock file first."""
        fd, self._fd = self._fd, None
        if fd is None:
            return
        if remove:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.path)
        os.close(fd)

    def __del__(self) -> None:
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._fd)
            self._fd = None


def _read_since(fd: int) -> str:
    try:
        text = os.pread(fd, 64, 0).decode()
        pid, ts = text.split()
        started = datetime.fromtimestamp(float(ts), UTC)
        age = time.time() - float(ts)
    except (OSError, ValueError):
        return ""
    return f" (pid {pid}, for {age:.1f}s since {started:%Y-%m-%dT%H:%M:%SZ})"
