"""The streaming part of layer apply: read, digest, decompress and diffID in worker threads.

Two worker threads feed the tar parser running in the caller's thread:

* the *inflater* reads the blob, hashes the compressed bytes (blob digest) and
  decompresses them (isal / zstandard release the GIL while they work);
* the *hasher* hashes the uncompressed bytes (diffID) and passes them on.

Chunks travel through bounded queues, so memory does not grow with the layer size.
An error in a worker is handed to the consumer and raised there; :meth:`close`
stops both workers whatever state they are in.
"""

from __future__ import annotations

import queue
import threading
from typing import BinaryIO

from ocistore import errors
from ocistore.archive._compression import GZIP, NONE, UNKNOWN, decode, decode_gzip_members, detect_compression
from ocistore.oci.digest import Hasher, new_hasher

__all__ = ["Pipeline"]

_QUEUE_DEPTH = 6  # chunks of at most 1 MiB each, per queue
_DONE = object()


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
        self._compressed_q: queue.Queue[object] = queue.Queue(_QUEUE_DEPTH)
        self._plain_q: queue.Queue[object] = queue.Queue(_QUEUE_DEPTH)
        self._stop = threading.Event()
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
                    try:
                        while True:
                            q.get_nowait()
                    except queue.Empty:
                        pass
                thread.join(0.01)

    # -- workers -------------------------------------------------------------------------

    def _put(self, q: queue.Queue[object], item: object) -> bool:
        while not self._stop.is_set():
            try:
                q.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

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
                if not self._put(q, piece):
                    return
            self._put(q, _DONE)
        except _Stopped:
            return
        except BaseException as exc:  # handed to the consumer thread, which raises it
            self._put(q, exc)

    def _hash(self) -> None:
        src, dst = self._compressed_q, self._plain_q
        update = self._diff_hasher.update
        same = (
            self.compression == NONE and self._blob_hasher is not None
            and self._blob_algorithm == self._diff_algorithm
        )
        while True:
            try:
                item = src.get(timeout=0.1)
            except queue.Empty:
                if self._stop.is_set():
                    return
                continue
            if self._stop.is_set():
                return
            if isinstance(item, bytes):
                self.uncompressed_size += len(item)
                if not same:
                    update(item)
            if not self._put(dst, item):
                return
            if not isinstance(item, bytes):
                if same and item is _DONE:
                    assert self._blob_hasher is not None
                    self._diff_hasher = self._blob_hasher  # the same bytes: hashed once
                return


class _Stopped(Exception):
    """The consumer closed the pipeline; the worker leaves quietly."""
