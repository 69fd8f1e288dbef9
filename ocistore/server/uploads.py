"""The write side of the distribution API (``serve(allow_push=True)``): blob uploads and manifest PUTs.

* ``POST /v2/<name>/blobs/uploads/`` starts an upload session (``202``, ``Location``,
  ``Docker-Upload-UUID``); with ``?mount=<digest>&from=<repo>`` a blob the namespace holds
  is "mounted" at once (``201``); with ``?digest=<digest>`` the request body is the whole
  blob (monolithic upload);
* ``PATCH <location>`` appends the body (``Content-Range: <start>-<end>`` must start at the
  session's offset, else ``416``); ``PUT <location>?digest=<digest>`` appends the body if any
  and commits: the content store verifies the digest (``400 DIGEST_INVALID`` otherwise, and
  the session is gone); ``GET`` reports the offset (``204``, ``Range``); ``DELETE`` aborts;
* ``PUT /v2/<name>/manifests/<tag|digest>``: at most 4 MiB, parsed as its ``Content-Type``
  says (or as the document says), refused with ``MANIFEST_BLOB_UNKNOWN`` when a blob or
  manifest it names is not in the namespace (non-distributable layers excepted),
  committed with the gc labels a fetch would set, and, for a tag, recorded as the image
  ``<registry>/<name>:<tag>``, where the registry is ``default_registry`` or the request's
  ``Host``.

Each session's bytes go to a content-store ingest (``upload-<uuid>``), so they are hashed on
the way in and only become a blob by the store's verified commit; a session and what it
committed are held by a lease that expires after 24 hours, so a ``gc`` before the manifest
that names them arrives does not take them, and an abandoned upload is collected in the end.
Sessions live in the server's memory: one idle for an hour is forgotten (its ingest aborted),
and a restart forgets them all (their ingests expire).
"""

from __future__ import annotations

import contextlib
import threading
import time
import uuid
from collections.abc import Callable
from datetime import timedelta
from typing import Protocol

import attrs

from ocistore import errors
from ocistore.content.types import ContentWriter
from ocistore.images.graph import child_gc_labels
from ocistore.oci import mediatypes as mt
from ocistore.oci.descriptor import Descriptor
from ocistore.oci.digest import digest_bytes
from ocistore.oci.manifest import MAX_MANIFEST_SIZE, detect_media_type, parse_any
from ocistore.oci.manifest import children as parse_children
from ocistore.oci.reference import parse_reference
from ocistore.transfer.context import OperationContext

__all__ = ["Body", "Session", "Uploads", "UploadError"]

LEASE_EXPIRY = timedelta(hours=24)
MAX_SESSIONS = 1024
SESSION_IDLE = 3600.0  # seconds without a request after which a session is forgotten (its ingest aborted)
_CHUNK = 1 << 20


class Body(Protocol):
    """A request body: ``read(n)`` returns at most ``n`` bytes, ``b""`` at its end."""

    def read(self, n: int = -1, /) -> bytes:
        """At most ``n`` bytes (all that is left for ``n < 0``)."""
        ...


class UploadError(Exception):
    """A refused write: the HTTP status, the OCI error code and a message."""

    def __init__(self, status: int, code: str, message: str, detail: object = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.detail = detail


@attrs.define
class Session:
    """One blob upload in progress."""

    id: str
    name: str
    lease: str
    touched: float

    @property
    def ref(self) -> str:
        """The content-store ingest holding the bytes."""
        return f"upload-{self.id}"


class Uploads:
    """Upload sessions and manifest PUTs into the namespace of ``ctx``."""

    def __init__(self, ctx: OperationContext, clock: Callable[[], float] = time.monotonic) -> None:
        """Write into ``ctx``'s content store and image records."""
        self.ctx = ctx
        self._sessions: dict[str, Session] = {}
        self._lock = threading.Lock()
        self._clock = clock

    # -- leases ------------------------------------------------------------------------------------------
    def _new_lease(self, what: str) -> str:
        lease = self.ctx.leases.create(expire=LEASE_EXPIRY, labels={"io.ocistore.serve.upload": what})
        return lease.id

    def _under(self, lease_id: str) -> contextlib.AbstractContextManager[None]:
        return self.ctx.leases.db.lease_context(self.ctx.namespace, lease_id)

    # -- sessions ----------------------------------------------------------------------------------------
    def _forget_idle(self) -> None:
        cutoff = self._clock() - SESSION_IDLE
        with self._lock:
            idle = [s for s in self._sessions.values() if s.touched < cutoff]
        for session in idle:
            self._end(session, keep_lease=False)

    def start(self, name: str) -> Session:
        """A new session for repository ``name`` (sessions idle for an hour are forgotten first)."""
        self._forget_idle()
        with self._lock:
            if len(self._sessions) >= MAX_SESSIONS:
                raise UploadError(429, "TOOMANYREQUESTS", "too many upload sessions in progress")
        sid = uuid.uuid4().hex
        session = Session(sid, name, self._new_lease(f"blob upload {sid}"), self._clock())
        with self._lock:
            self._sessions[sid] = session
        return session

    def get(self, name: str, sid: str) -> Session:
        """The session ``sid`` of ``name``; BLOB_UPLOAD_UNKNOWN otherwise."""
        with self._lock:
            session = self._sessions.get(sid)
            if session is not None and session.name == name:
                session.touched = self._clock()
                return session
        raise UploadError(404, "BLOB_UPLOAD_UNKNOWN", "blob upload unknown to registry", {"uuid": sid[:64]})

    def offset(self, session: Session) -> int:
        """Bytes received so far."""
        return next((st.offset for st in self.ctx.content.statuses() if st.ref == session.ref), 0)

    def _writer(self, session: Session) -> ContentWriter:
        """The session's ingest writer; 409 while another request writes it."""
        try:
            return self.ctx.content.writer(session.ref)
        except errors.Unavailable:
            raise UploadError(409, "BLOB_UPLOAD_INVALID", "another request is writing this upload") from None

    def append(self, session: Session, body: Body, start: int | None = None) -> int:
        """Append ``body`` (at ``start`` if given: it must be the current offset); returns the new offset."""
        with self._under(session.lease), self._writer(session) as writer:
            offset = writer.status().offset
            if start is not None and start != offset:
                raise UploadError(416, "BLOB_UPLOAD_INVALID", f"the upload is at {offset}, not {start}",
                                  {"offset": offset})
            while chunk := body.read(_CHUNK):
                writer.write(chunk)
            return writer.status().offset

    def finish(self, session: Session, digest: str, body: Body) -> str:
        """Append ``body`` and commit the upload as ``digest`` (verified); the session ends either way."""
        try:
            with self._under(session.lease), self._writer(session) as writer:
                while chunk := body.read(_CHUNK):
                    writer.write(chunk)
                try:
                    writer.commit(expected=digest)
                except errors.AlreadyExists:
                    pass
                except errors.DigestMismatch as exc:
                    raise UploadError(400, "DIGEST_INVALID", "the uploaded content does not match the digest",
                                      {"digest": digest, "actual": exc.actual}) from None
            return digest
        finally:
            self._end(session, keep_lease=True)

    def cancel(self, session: Session) -> None:
        """Abort the upload and drop what it held."""
        self._end(session, keep_lease=False)

    def _end(self, session: Session, keep_lease: bool) -> None:
        with self._lock:
            self._sessions.pop(session.id, None)
        with contextlib.suppress(errors.NotFound, errors.Unavailable):
            self.ctx.content.abort(session.ref)
        if not keep_lease:
            with contextlib.suppress(errors.NotFound):
                self.ctx.leases.delete(session.lease)

    def monolithic(self, name: str, digest: str, body: Body) -> str:
        """``POST ...?digest=``: the body is the whole blob."""
        return self.finish(self.start(name), digest, body)

    def mount(self, digest: str) -> bool:
        """Whether the namespace holds ``digest`` (a cross-repository mount is then free)."""
        return self.ctx.content.exists(digest)

    # -- manifests ---------------------------------------------------------------------------------------
    def put_manifest(self, name: str, reference: str, content_type: str, body: Body, registry: str) -> Descriptor:
        """Store a pushed manifest or index; record ``<registry>/<name>:<tag>`` for a tag."""
        data = body.read(MAX_MANIFEST_SIZE + 1)
        if len(data) > MAX_MANIFEST_SIZE:
            raise UploadError(413, "SIZE_INVALID", f"a manifest may have at most {MAX_MANIFEST_SIZE} bytes")
        media_type = content_type.split(";", 1)[0].strip().lower()
        if not (mt.is_manifest(media_type) or mt.is_index(media_type)):
            detected = detect_media_type(data)
            if detected is None:
                raise UploadError(400, "MANIFEST_INVALID", f"not a manifest or an index ({media_type or 'no type'})")
            media_type = detected
        try:
            parse_any(data, media_type)
            kids = parse_children(media_type, data)
        except errors.InvalidArgument as exc:
            raise UploadError(400, "MANIFEST_INVALID", str(exc)) from None
        digest = digest_bytes(data)
        if ":" in reference and reference != digest:
            raise UploadError(400, "DIGEST_INVALID", "the manifest does not have the digest it is put under",
                              {"digest": reference, "actual": digest})
        for child in kids:
            if not self.ctx.content.exists(child.digest) and not mt.is_non_distributable(child.media_type):
                raise UploadError(400, "MANIFEST_BLOB_UNKNOWN", "the manifest names a blob this registry lacks",
                                  {"digest": child.digest})
        lease = self._new_lease(f"manifest {digest}")
        with self._under(lease):
            self.ctx.content.ingest(data, expected=digest, labels=child_gc_labels(kids), media_type=media_type)
        desc = Descriptor(media_type, digest, len(data))
        if ":" not in reference:
            try:
                image_name = str(parse_reference(f"{registry}/{name}:{reference}"))
            except errors.InvalidArgument as exc:
                raise UploadError(400, "NAME_INVALID", str(exc)) from None
            self.ctx.images.upsert(image_name, desc)
        return desc
