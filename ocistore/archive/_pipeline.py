"""The streaming part of layer apply: read, digest, decompress and diffID in worker threads.

Two worker threads feed the tar parser running in the caller's thread:

* the *inflater* reads the blob, hashes the compressed bytes (blob digest) and
  decompresses them (isal / zstandard release the GIL while they work);
* the *hasher* hashes the uncompressed bytes (diffID) and passes them on.

Chunks travel through bounded channels, so memory does not grow with the layer size.
An error in a worker is handed to the consumer and raised there; :meth:`close`
stops both workers whatever state they are in.

A hand-off between two threads costs a futex wake-up, and the thread woken needs the GIL
back: on a busy 2-vCPU machine that is most of what the workers cost besides their C
calls. So a channel wakes a waiting producer only once its consumer has drained it to
half (one wake-up refills several chunks), wakes a consumer only when it waits, and the
hasher takes every chunk queued at once.
"""

from __future__ import annotations

import collections
import threading
from typing import BinaryIO

from ocistore import errors
from ocistore.archive._compression import GZIP, NONE, UNKNOWN, decode, decode_gzip_members, detect_compression
from ocistore.oci.digest import Hasher, new_hasher

__all__ = ["Pipeline"]

_QUEUE_DEPTH = 6  # chunks of at most 1 MiB each, per channel
_LOW_WATER = _QUEUE_DEPTH // 2  # a producer that waited for room goes on once a channel is down to this
_WAIT = 0.1  # seconds between checks of the stop flag while waiting
_DONE = object()


class _Channel:
    """A bounded FIFO between one producer and one consumer thread, with few wake-ups."""

    def __init__(self, stop: threading.Event) -> None:
        self._items: collections.deque[object] = collections.deque()
        self._cond = threading.Condition(threading.Lock())
        self._stop = stop
        self._producer_waiting = False
        self._consumer_waiting = False

    def put(self, item: object) -> bool:
        """Queue ``item``, waiting while the channel is full; False once the pipeline stops."""
        with self._cond:
            if len(self._items) >= _QUEUE_DEPTH:
                self._producer_waiting = True
                try:
                    while len(self._items) > _LOW_WATER:
                        if self._stop.is_set():
                            return False
                        self._cond.wait(_WAIT)
                finally:
                    self._producer_waiting = False
            if self._stop.is_set():
                return False
            self._items.append(item)
            if self._consumer_waiting:
                self._cond.notify()
            return True

    def get(self, wait: float | None = None) -> object:
        """The oldest item; waits for one (``None`` after ``wait`` seconds with nothing)."""
        with self._cond:
            if not self._items:
                self._consumer_waiting = True
                try:
                    while not self._items:
                        if not self._cond.wait(wait) and wait is not None and not self._items:
                            return None
                finally:
                    self._consumer_waiting = False
            item = self._items.popleft()
            if self._producer_waiting and len(self._items) <= _LOW_WATER:
                self._cond.notify()
            return item

    def get_all(self, wait: float) -> list[object]:
        """Every item queued (at least one), or ``[]`` after ``wait`` seconds with nothing."""
        with self._cond:
            if not self._items:
                self._consumer_waiting = True
                try:
                    if not self._cond.wait_for(lambda: self._items, wait):
                        return []
                finally:
                    self._consumer_waiting = False
            items = list(self._items)
            self._items.clear()
            if self._producer_waiting:
                self._cond.notify()
            return items

    def clear(self) -> None:
        """Drop what is queued and wake whoever waits (the pipeline is stopping)."""
        with self._cond:
            self._items.clear()
            self._cond.notify_all()


class Pipeline:
    """A compressed blob in, uncompressed chunks out (``next_chunk``), digests at the end."""

    def __init__(
        self,
        stream: BinaryIO,
        compression: str,
        *,
        digest_algorithm: str = "sha256",
        diff_id_algorithm: str = "sha256",
        expected_size: int | None = None,
        blob_digest: bool = True,
        member_offsets: frozenset[int] | None = None,
    ) -> None:
        self._stream = stream
        # eStargz: where the gzip members starting at these compressed offsets begin uncompressed
        self._member_offsets = member_offsets
        self.members: dict[int, int] = {}
        self.compression = compression
        self._expected_size = expected_size
        # the compressed digest is optional: a blob verified when it was stored needs no second hash
        self._blob_hasher: Hasher | None = new_hasher(digest_algorithm) if blob_digest else None
        self._diff_hasher: Hasher = new_hasher(diff_id_algorithm)
        self._blob_algorithm = digest_algorithm
        self._diff_algorithm = diff_id_algorithm
        self.compressed_size = 0
        self.uncompressed_size = 0
        self._stop = threading.Event()
        self._compressed_q = _Channel(self._stop)
        self._plain_q = _Channel(self._stop)
        self._finished = False
        self._threads = [
            threading.Thread(target=self._inflate, name="ocistore-inflate", daemon=True),
            threading.Thread(target=self._hash, name="ocistore-diffid", daemon=True),
        ]
        for thread in self._threads:
            thread.start()

    # -- consumer side -----------------------------------------------------------------

    def next_chunk(self) -> bytes:
        """The next uncompressed chunk; ``b""`` once the stream is exhausted."""
        if self._finished:
            return b""
        item = self._plain_q.get()
        if item is _DONE:
            self._finished = True
            return b""
        if isinstance(item, BaseException):
            self._finished = True
            raise item
        assert isinstance(item, bytes)
        return item

    @property
    def digest(self) -> str:
        """Digest of the compressed blob (valid once the stream is exhausted)."""
        if self._blob_hasher is None:
            return ""
        return f"{self._blob_algorithm}:{self._blob_hasher.hexdigest()}"

    @property
    def diff_id(self) -> str:
        """Digest of the uncompressed stream (valid once the stream is exhausted)."""
        return f"{self._diff_algorithm}:{self._diff_hasher.hexdigest()}"

    def close(self) -> None:
        """Stop the workers (they may be blocked on a full queue) and wait for them."""
        self._stop.set()
        stop_reading = getattr(self._stream, "stop_reading", None)
        if stop_reading is not None:  # a stream fed by a download (transfer.tee): do not wait for it
            stop_reading()
        for thread in self._threads:
            while thread.is_alive():
                for q in (self._compressed_q, self._plain_q):
                    q.clear()
                thread.join(0.01)

    # -- workers -------------------------------------------------------------------------

    def _read(self, n: int) -> bytes:
        if self._stop.is_set():
            raise _Stopped
        limit = self._expected_size
        if limit is not None:
            n = min(n, limit - self.compressed_size + 1)
        data = self._stream.read(n)
        if not data:
            return b""
        if not isinstance(data, bytes):
            data = bytes(data)
        self.compressed_size += len(data)
        if limit is not None and self.compressed_size > limit:
            raise errors.DigestMismatch(
                f"layer blob is larger than its expected size of {limit} bytes",
                expected=str(limit),
                actual=f">{limit}",
            )
        if self._blob_hasher is not None:
            self._blob_hasher.update(data)
        return data

    def _inflate(self) -> None:
        q = self._compressed_q
        try:
            compression = self.compression
            if compression == UNKNOWN:
                first = self._read(4096)
                compression = self.compression = detect_compression(first)
                pending = [first]
            else:
                pending = []

            def read(n: int) -> bytes:
                return pending.pop() if pending else self._read(n)

            wanted = self._member_offsets
            if wanted is not None and compression == GZIP:
                members = self.members

                def on_member(compressed: int, uncompressed: int) -> None:
                    if compressed in wanted:
                        members[compressed] = uncompressed

                pieces = decode_gzip_members(read, on_member)
            else:
                pieces = decode(compression, read)
            for piece in pieces:
                if not q.put(piece):
                    return
            q.put(_DONE)
        except _Stopped:
            return
        except BaseException as exc:  # handed to the consumer thread, which raises it
            q.put(exc)

    def _hash(self) -> None:
        src, dst = self._compressed_q, self._plain_q
        update = self._diff_hasher.update
        same = (
            self.compression == NONE and self._blob_hasher is not None
            and self._blob_algorithm == self._diff_algorithm
        )
        while True:
            items = src.get_all(_WAIT)  # what the inflater queued meanwhile: one hand-off for several
            if self._stop.is_set():
                return
            for item in items:
                if isinstance(item, bytes):
                    self.uncompressed_size += len(item)
                    if not same:
                        update(item)
                if not dst.put(item):
                    return
                if not isinstance(item, bytes):
                    if same and item is _DONE:
                        assert self._blob_hasher is not None
                        self._diff_hasher = self._blob_hasher  # the same bytes: hashed once
                    return


class _Stopped(Exception):
    """The consumer closed the pipeline; the worker leaves quietly."""
