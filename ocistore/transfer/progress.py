"""Structured progress events, delivered to a user callback from any thread."""

from __future__ import annotations

import threading
from collections.abc import Callable

import attrs

__all__ = ["STATUSES", "Progress", "ProgressEvent"]

STATUSES = (
    "resolving", "resolved", "waiting", "downloading", "complete", "exists", "extracting", "extracted", "uploading",
)


@attrs.frozen
class ProgressEvent:
    """One step of an operation on one object.

    ``ref`` names the object (``layer-sha256:...``, or the image reference while
    resolving), ``kind`` is ``index``/``manifest``/``config``/``layer``/``image``.
    A ``complete`` event has ``offset == total == size``. A push reports ``waiting``,
    ``uploading`` (``offset`` = bytes sent so far), then ``complete``, or ``exists`` when the
    registry already had the blob (or mounted it from another repository).
    """

    ref: str
    digest: str
    kind: str
    status: str
    offset: int = 0
    total: int = 0


class Progress:
    """Serialises calls into the user's callback (callbacks need not be thread-safe)."""

    def __init__(self, callback: Callable[[ProgressEvent], None] | None) -> None:
        self._cb = callback
        self._lock = threading.Lock()

    def __bool__(self) -> bool:
        return self._cb is not None

    def emit(self, ref: str, digest: str, kind: str, status: str, offset: int = 0, total: int = 0) -> None:
        """Build a :class:`ProgressEvent` and pass it to the callback under the lock (nothing without one)."""
        if self._cb is None:
            return
        event = ProgressEvent(ref=ref, digest=digest, kind=kind, status=status, offset=offset, total=total)
        with self._lock:
            self._cb(event)


def ref_key(kind: str, digest: str) -> str:
    """containerd's ``MakeRefKey``: ``layer-sha256:...``."""
    return f"{kind}-{digest}"
