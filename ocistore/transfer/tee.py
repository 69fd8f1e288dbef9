"""A layer blob read while it downloads: the pipelined pull's hand-off from download to apply.

A pull used to apply a layer only once its blob was downloaded and committed, so the
download and the apply of the largest layer ran one after the other. A :class:`BlobTee`
joins them: the download (``fetch_blob(..., tap=tee)``) hands each chunk it writes into the
ingest to the tee as well, and the apply reads the same bytes from :meth:`BlobTee.reader`
as they arrive. Nothing is trusted early: the apply's diffID check covers the bytes it
read, and its snapshot is committed only after the blob itself was verified and committed
(``layer_ready``), so a lying or failing download never leaves a snapshot behind.

Memory stays flat: the tee holds at most :data:`BUFFER` bytes. While an apply reads from
it, a download that gets ahead waits for room (the two run at the slower one's pace, which
is all a pull needs). A tee nobody reads yet stops buffering past :data:`BUFFER` and
*detaches* -- at once when its apply waits for earlier layers, after at most
:data:`ATTACH_WAIT` when the apply is about to start (``expect_reader``); so does one whose download resumes a partial
ingest (the bytes already on disk never pass through it) or restarts. A detached tee's
reader goes on from the committed blob in the content store, at the offset it reached.
"""

from __future__ import annotations

import collections
import threading
import time
from collections.abc import Callable
from typing import BinaryIO

from ocistore.transfer.workers import check_cancelled

__all__ = ["ATTACH_WAIT", "BUFFER", "LOW_WATER", "BlobTee", "TeeReader"]

BUFFER = 8 << 20
LOW_WATER = BUFFER // 2  # a download that waited for room goes on once the buffer is down to this
ATTACH_WAIT = 2.0  # seconds a download waits for an expected reader before detaching
_WAIT = 0.1  # seconds between cancellation checks while waiting


class BlobTee:
    """Chunks of one blob, from its download to one reader (see the module docstring)."""

    def __init__(self, size: int, expect_reader: bool = False) -> None:
        """A tee for a blob of ``size`` bytes; ``expect_reader``: an apply will attach soon."""
        self.size = size
        # a full buffer waits up to ATTACH_WAIT for the expected reader before detaching
        self._attach_deadline = 0.0 if not expect_reader else -1.0
        self._cond = threading.Condition()
        self._chunks: collections.deque[bytes] = collections.deque()
        self._buffered = 0
        self._received = 0  # bytes of the blob fed in order (the download's offset)
        self._queued = 0  # offset up to which chunks were queued
        self._attached = False
        self._detached = False  # the reader must continue from the committed blob
        self._closed = False  # the reader is gone: drop everything
        self._failed: BaseException | None = None
        self._done = False  # the download ended (committed or not)
        # who sleeps on the condition: a chunk wakes the reader, a drained buffer the download,
        # and only then (a wake-up is a futex call under the GIL, costly on a busy 2-vCPU VM)
        self._reader_waiting = False
        self._writer_waiting = False

    # -- download side -------------------------------------------------------------------

    def start(self, offset: int) -> None:
        """The download begins at ``offset`` (a resumed ingest): bytes before it never come."""
        with self._cond:
            self._received = offset
            if offset != self._queued:
                self._detach()

    def feed(self, data: bytes) -> None:
        """A chunk the download just wrote; may wait for the reader to make room."""
        with self._cond:
            start = self._received
            self._received += len(data)
            if self._detached or self._closed:
                return
            if start != self._queued:  # not the next bytes (restarted at another offset)
                self._detach()
                return
            if self._buffered >= BUFFER:
                # full: wait until the reader has drained it to LOW_WATER, so that one wake-up
                # refills several chunks instead of one per chunk read
                self._writer_waiting = True
                try:
                    while self._buffered > LOW_WATER and not (self._closed or self._detached) and self._may_wait():
                        self._cond.wait(_WAIT)
                        check_cancelled()
                finally:
                    self._writer_waiting = False
            if self._detached or self._closed:
                return
            if not self._attached and self._buffered >= BUFFER:
                self._detach()  # nobody reads yet: let the download run at full speed
                return
            self._chunks.append(data)
            self._buffered += len(data)
            self._queued += len(data)
            if self._reader_waiting:
                self._cond.notify_all()

    def _may_wait(self) -> bool:
        """Whether a full buffer makes the download wait (else it detaches)."""
        if self._attached:
            return True
        if self._attach_deadline == 0.0:
            return False
        now = time.monotonic()
        if self._attach_deadline < 0:
            self._attach_deadline = now + ATTACH_WAIT
        return now < self._attach_deadline

    def truncate(self) -> None:
        """The download restarts from byte 0."""
        with self._cond:
            self._received = 0
            if self._queued:
                self._detach()

    def finish(self, exc: BaseException | None = None) -> None:
        """The download ended: committed (``exc`` None) or failed with ``exc``."""
        with self._cond:
            self._done = True
            self._failed = exc
            if exc is None and self._queued < self.size:
                self._detach()
            self._cond.notify_all()

    def _detach(self) -> None:
        self._detached = True
        self._cond.notify_all()

    # -- reader side --------------------------------------------------------------------

    def reader(self, open_blob: Callable[[], BinaryIO]) -> TeeReader:
        """The blob's bytes in order; ``open_blob`` opens the committed blob (after a detach)."""
        with self._cond:
            self._attached = True
        return TeeReader(self, open_blob)

    def _next(self) -> bytes | None:
        """The next queued chunk; ``b""`` at the end; None when the rest is in the blob."""
        with self._cond:
            while True:
                if self._chunks:
                    data = self._chunks.popleft()
                    self._buffered -= len(data)
                    if self._writer_waiting and self._buffered <= LOW_WATER:
                        self._cond.notify_all()
                    return data
                if self._failed is not None:
                    raise self._failed
                if self._closed:
                    return b""
                if self._queued >= self.size and not self._detached:
                    return b""  # every byte came through; the commit is awaited before the snapshot's
                if self._detached and self._done:
                    return None
                self._reader_waiting = True
                try:
                    self._cond.wait(_WAIT)
                finally:
                    self._reader_waiting = False
                check_cancelled()

    def close(self) -> None:
        """The reader is done (or gone): the download no longer waits for it."""
        with self._cond:
            self._closed = True
            self._chunks.clear()
            self._buffered = 0
            self._cond.notify_all()


class TeeReader:
    """A read-only stream over a :class:`BlobTee` (what ``apply_layer`` reads)."""

    def __init__(self, tee: BlobTee, open_blob: Callable[[], BinaryIO]) -> None:
        self._tee = tee
        self._open_blob = open_blob
        self._chunk = b""
        self._pos = 0
        self._offset = 0
        self._file: BinaryIO | None = None

    def readable(self) -> bool:
        """Always true."""
        return True

    def seekable(self) -> bool:
        """A tee is read once, in order."""
        return False

    def read(self, n: int = -1) -> bytes:
        """Up to ``n`` bytes (``b""`` at the end of the blob)."""
        chunk, pos = self._chunk, self._pos
        if pos >= len(chunk):
            if self._file is not None:
                return self._read_file(n)
            data = self._tee._next()
            if data is None:
                self._file = self._open_blob()
                self._file.seek(self._offset)
                return self._read_file(n)
            chunk, pos = self._chunk, self._pos = data, 0
        end = len(chunk) if n < 0 else min(len(chunk), pos + n)
        out = chunk if pos == 0 and end == len(chunk) else chunk[pos:end]
        self._pos = end
        self._offset += end - pos
        return out

    def stop_reading(self) -> None:
        """Unblock a read waiting for the download (the apply is being torn down)."""
        self._tee.close()

    def _read_file(self, n: int) -> bytes:
        assert self._file is not None
        data = self._file.read(n)
        self._offset += len(data)
        return data

    def close(self) -> None:
        """Release the tee and the blob file, if one was opened."""
        self._tee.close()
        if self._file is not None:
            self._file.close()
            self._file = None

    def __enter__(self) -> TeeReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
