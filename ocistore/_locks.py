"""Blocking keyed locks across threads and processes (flock on files under ``ROOT/tmp/locks``)."""

from __future__ import annotations

import contextlib
import fcntl
import os
import time
from collections.abc import Iterator

from ocistore import errors
from ocistore.layout import RootLayout

__all__ = ["keyed_lock"]


@contextlib.contextmanager
def keyed_lock(layout: RootLayout, name: str, timeout: float = 3600.0) -> Iterator[None]:
    """Hold the lock ``name`` of the store laid out as ``layout`` (e.g. ``unpack/<ns>/<sn>/<chainID>``).

    Lock files are never deleted (they are tiny and keyed by a hash), which keeps the
    protocol free of unlink races.
    """
    path = layout.lock_path(name)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        deadline = time.monotonic() + timeout
        delay = 0.005
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise errors.Unavailable(f"timed out waiting for lock {name!r}") from None
                time.sleep(delay)
                delay = min(delay * 2, 0.2)
        try:
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)



