"""The read side of the OCI distribution API over one namespace of a store.

Requests and answers are plain records here (:class:`Request`, :class:`Response`); the
socket side lives in :mod:`ocistore.server.httpd`. Endpoints:

* ``GET|HEAD /v2/`` -- ``200 {}`` (``401`` with a ``Basic`` challenge when credentials
  are configured and the request has none that match);
* ``GET|HEAD /v2/<name>/manifests/<tag|digest>`` -- the stored bytes, with the manifest's
  media type as ``Content-Type``, ``Docker-Content-Digest``, ``Content-Length`` and
  ``ETag``; tags resolve through image records (see :mod:`ocistore.server.names`);
* ``GET|HEAD /v2/<name>/blobs/<digest>`` -- a committed blob, streamed from its file
  (``Range`` gives ``206``; see :mod:`ocistore.server.ranges`);
* ``GET /v2/<name>/tags/list`` -- ``{"name", "tags"}``, sorted, paginated by ``n`` and
  ``last`` with a ``Link`` header;
* anything that writes (``POST``, ``PUT``, ``PATCH``, ``DELETE``) -- ``405 UNSUPPORTED``.

Digests address content: a blob or a manifest asked for by digest is served under any
valid repository name, provided the namespace holds it (as Spegel does). Only committed
blobs exist for the content store (they were verified when committed); manifests are read
whole and verified again on every request. Names, tags, digests and ``?ns=`` are checked
against the distribution grammar before anything is looked up, so no request can name a
path: a digest becomes a file name only inside the store's layout, after validation.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import io
import json
import logging
import os
import re
import threading
from collections import OrderedDict
from collections.abc import Callable, Mapping
from email.message import Message
from typing import Any, BinaryIO
from urllib.parse import parse_qs, quote, urlsplit

import attrs

from ocistore import errors
from ocistore.content.types import Provider
from ocistore.metadata.images import ImageStore
from ocistore.oci.digest import validate_digest
from ocistore.oci.manifest import MAX_MANIFEST_SIZE, detect_media_type
from ocistore.oci.reference import validate_domain, validate_repository, validate_tag
from ocistore.server.names import find_repository
from ocistore.server.pullthrough import PullThrough, UpstreamFailed
from ocistore.server.ranges import ByteRange, RangeNotSatisfiable, parse_ranges
from ocistore.server.uploads import Body, UploadError, Uploads

__all__ = ["API_VERSION", "BadBody", "CredentialsCheck", "RegistryApp", "Request", "Response", "error_response"]

log = logging.getLogger("ocistore.server")

API_VERSION = ("Docker-Distribution-API-Version", "registry/2.0")
MAX_TAGS_PAGE = 10_000
_MEDIA_CACHE = 4096

CredentialsCheck = Mapping[str, str] | Callable[[str, str], bool]
"""``{"user": "password"}`` or ``(user, password) -> bool``."""

_ROUTE = re.compile(
    r"/v2/(?P<name>[^?#]+?)/(?:blobs/uploads/(?P<uploads>[^/]*)|(?P<kind>manifests|blobs)/(?P<ref>[^/]+)"
    r"|(?P<tags>tags/list))\Z"
)
_WRITE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})



class BadBody(Exception):
    """The request body is malformed (a bad chunk header) or ended early: the transport answers 400."""


@attrs.frozen
class Request:
    """One parsed request: the method, the raw request-target and the headers."""

    method: str
    target: str
    headers: Message = attrs.field(factory=Message)
    client: str = ""
    body: Body = attrs.field(factory=lambda: io.BytesIO(b""))


@attrs.define
class Response:
    """An answer: status, headers and either ``body`` or ``length`` bytes of ``file`` from ``offset``.

    The transport closes ``file`` once it is sent (or when the request is a ``HEAD``).
    """

    status: int
    headers: list[tuple[str, str]] = attrs.field(factory=list)
    body: bytes = b""
    file: BinaryIO | None = None
    offset: int = 0
    length: int | None = None

    @property
    def content_length(self) -> int:
        """The ``Content-Length`` of the answer."""
        return len(self.body) if self.length is None else self.length

    def close(self) -> None:
        """Close the file, if any."""
        if self.file is not None:
            self.file.close()
            self.file = None


MAX_MULTIPART_BYTES = 16 << 20
"""Most bytes of a blob one ``multipart/byteranges`` answer holds (it is built in memory)."""


def _multipart(f: BinaryIO, ranges: list[ByteRange], headers: list[tuple[str, str]]) -> Response:
    """``206`` with one part per range (RFC 9110 section 14.6), read from ``f`` (which is closed)."""
    boundary = os.urandom(16).hex()
    parts: list[bytes] = []
    try:
        fd = f.fileno()
        for r in ranges:
            parts.append(f"\r\n--{boundary}\r\nContent-Type: application/octet-stream\r\n"
                         f"Content-Range: {r.content_range}\r\n\r\n".encode())
            data = os.pread(fd, r.length, r.start)
            if len(data) != r.length:
                return error_response(500, "UNKNOWN", "stored content ended early; run ocistore check")
            parts.append(data)
    finally:
        f.close()
    parts.append(f"\r\n--{boundary}--\r\n".encode())
    return Response(206, [("Content-Type", f"multipart/byteranges; boundary={boundary}"), *headers],
                    body=b"".join(parts))


def error_response(status: int, code: str, message: str, detail: Any = None,
                   headers: list[tuple[str, str]] | None = None) -> Response:
    """An OCI error answer: ``{"errors": [{"code", "message", "detail"}]}``."""
    err: dict[str, Any] = {"code": code, "message": message}
    if detail is not None:
        err["detail"] = detail
    body = json.dumps({"errors": [err]}).encode()
    return Response(status, [("Content-Type", "application/json; charset=utf-8"), *(headers or [])], body)


def _json(obj: Any, headers: list[tuple[str, str]] | None = None) -> Response:
    body = json.dumps(obj).encode()
    return Response(200, [("Content-Type", "application/json; charset=utf-8"), *(headers or [])], body)


def _etag_matches(header: str | None, etag: str) -> bool:
    if not header:
        return False
    return any(v.strip() in (etag, "*", f"W/{etag}") for v in header.split(","))


class RegistryApp:
    """Answers distribution-API requests from a content provider and image records."""

    def __init__(self, content: Provider, images: ImageStore, *, credentials: CredentialsCheck | None = None,
                 default_registry: str | None = None, realm: str = "ocistore",
                 pull_through: PullThrough | None = None, uploads: Uploads | None = None) -> None:
        """Serve ``content`` and ``images``; ``credentials`` turns on basic auth for every request.

        With ``pull_through``, misses of requests meant for its upstream are fetched from it
        (and requests without ``?ns=`` mean that registry unless ``default_registry`` says
        otherwise). With ``uploads``, pushes are accepted (see :mod:`ocistore.server.uploads`).
        """
        if default_registry is not None:
            validate_domain(default_registry)
        if default_registry is None and pull_through is not None:
            default_registry = pull_through.domain
        self.content = content
        self.images = images
        self.credentials = credentials
        self.default_registry = default_registry
        self.pull_through = pull_through
        self.uploads = uploads
        self.realm = realm
        self._media: OrderedDict[str, str] = OrderedDict()
        self._media_lock = threading.Lock()

    # -- entry point -----------------------------------------------------------------------------
    def handle(self, req: Request) -> Response:
        """The answer to ``req`` (never raises for a condition a client can cause)."""
        try:
            return self._handle(req)
        except BadBody:
            raise
        except errors.DigestMismatch as exc:
            log.error("%s", exc)
            return error_response(500, "UNKNOWN", "stored content failed verification; run ocistore check")
        except errors.Error as exc:
            log.error("%s %s: %s", req.method, req.target[:200], exc)
            return error_response(500, "UNKNOWN", "internal error")
        except Exception:  # a bug or an I/O error of the store: the client gets a 500, the log the traceback
            log.exception("%s %s", req.method, req.target[:200])
            return error_response(500, "UNKNOWN", "internal error")

    def _handle(self, req: Request) -> Response:
        path, query = _split_target(req.target)
        if path is None:
            return error_response(400, "UNSUPPORTED", "malformed request target")
        if not self._authorized(req):
            challenge = ("WWW-Authenticate", f'Basic realm="{self.realm}"')
            return error_response(401, "UNAUTHORIZED", "authentication required", headers=[challenge])
        if req.method in _WRITE_METHODS and self.uploads is None:
            return error_response(405, "UNSUPPORTED", "this registry is read-only", headers=[("Allow", "GET, HEAD")])
        if req.method not in ("GET", "HEAD") and req.method not in _WRITE_METHODS:
            return error_response(405, "UNSUPPORTED", f"method {req.method} is not supported",
                                  headers=[("Allow", "GET, HEAD")])
        if path in ("/v2", "/v2/"):
            if req.method not in ("GET", "HEAD"):
                return error_response(405, "UNSUPPORTED", f"{req.method} of /v2/", headers=[("Allow", "GET, HEAD")])
            return _json({})
        m = _ROUTE.match(path)
        if m is None:
            return error_response(404, "NOT_FOUND", "no such endpoint")
        try:
            params = parse_qs(query, keep_blank_values=True, max_num_fields=16, strict_parsing=False)
        except ValueError:
            return error_response(400, "UNSUPPORTED", "too many query parameters")
        name = m.group("name")
        try:
            validate_repository(name)
        except errors.InvalidArgument:
            return error_response(400, "NAME_INVALID", "invalid repository name", {"name": name[:300]})
        ns = _first(params, "ns")
        if ns is not None:
            try:
                validate_domain(ns)
            except errors.InvalidArgument:
                return error_response(400, "NAME_INVALID", "invalid ns (registry host)", {"ns": ns[:300]})
        if self.uploads is not None and (m.group("uploads") is not None or req.method in _WRITE_METHODS):
            try:
                return self._write(req, name, m, params)
            except UploadError as exc:
                return error_response(exc.status, exc.code, str(exc), exc.detail)
        if m.group("uploads") is not None:
            return error_response(404, "NOT_FOUND", "no such endpoint")
        if m.group("tags"):
            return self._tags(name, ns, params)
        ref = m.group("ref")
        try:
            if m.group("kind") == "blobs":
                return self._blob(req, name, ref, ns)
            return self._manifest(req, name, ref, ns)
        except UpstreamFailed as exc:
            log.warning("%s", exc)
            return error_response(502, "UNKNOWN", "the upstream registry failed", {"reason": str(exc)[:500]})

    def _authorized(self, req: Request) -> bool:
        if self.credentials is None:
            return True
        header = req.headers.get("Authorization") or ""
        scheme, _, value = header.partition(" ")
        if scheme.lower() != "basic":
            return False
        try:
            user, sep, password = base64.b64decode(value.strip(), validate=True).decode("utf-8").partition(":")
        except (binascii.Error, UnicodeDecodeError, ValueError):
            return False
        if not sep:
            return False
        check = self.credentials
        if callable(check):
            return bool(check(user, password))
        expected = check.get(user)
        ok = hmac.compare_digest(password.encode(), (expected or "\0").encode())
        return ok and expected is not None

    # -- manifests -------------------------------------------------------------------------------
    def _manifest(self, req: Request, name: str, ref: str, ns: str | None) -> Response:
        if ":" in ref:
            try:
                digest = validate_digest(ref)
            except errors.InvalidArgument:
                return error_response(400, "DIGEST_INVALID", "invalid digest", {"digest": ref[:200]})
            found = self._manifest_by_digest(digest)
            pt = self._pulls_through(ns)
            if found is None and pt is not None:
                with pt.lease():
                    if pt.manifest(name, digest):
                        found = self._manifest_by_digest(digest)
            if found is None:
                return error_response(404, "MANIFEST_UNKNOWN", "manifest unknown", {"digest": digest})
            data, media_type = found
        else:
            try:
                validate_tag(ref)
            except errors.InvalidArgument:
                return error_response(400, "TAG_INVALID", "invalid tag", {"tag": ref[:200]})
            repo = find_repository(self.images, name, ns, self.default_registry)
            pt = self._pulls_through(ns)
            if pt is not None and not repo.has(ref):
                with pt.lease():
                    if pt.tag(name, ref):
                        repo = find_repository(self.images, name, ns, self.default_registry)
            if not repo.exists:
                return error_response(404, "NAME_UNKNOWN", "repository name not known to registry",
                                      {"name": name, **({"ns": ns} if ns else {})})
            try:
                target = repo.resolve(ref)
                data = self.content.read(target.digest)
            except errors.NotFound as exc:
                return error_response(404, "MANIFEST_UNKNOWN", "manifest unknown", {"tag": ref, "reason": str(exc)})
            if len(data) != target.size:
                log.error("image %s:%s: the target says %d bytes, the blob has %d", name, ref, target.size, len(data))
                return error_response(500, "UNKNOWN", "image record and content disagree")
            digest, media_type = target.digest, target.media_type
        etag = f'"{digest}"'
        headers = [("Docker-Content-Digest", digest), ("ETag", etag)]
        if _etag_matches(req.headers.get("If-None-Match"), etag):
            return Response(304, headers)
        return Response(200, [("Content-Type", media_type), *headers], data)

    def _pulls_through(self, ns: str | None) -> PullThrough | None:
        pt = self.pull_through
        return pt if pt is not None and pt.covers(ns) else None

    def _manifest_by_digest(self, digest: str) -> tuple[bytes, str] | None:
        try:
            info = self.content.info(digest)
        except errors.NotFound:
            return None
        if info.size > MAX_MANIFEST_SIZE:
            return None
        try:
            data = self.content.read(digest)
        except errors.NotFound:
            return None
        with self._media_lock:
            media_type = self._media.get(digest)
        if media_type is None:
            media_type = detect_media_type(data)
            if media_type is None:
                return None
            with self._media_lock:
                self._media[digest] = media_type
                while len(self._media) > _MEDIA_CACHE:
                    self._media.popitem(last=False)
        return data, media_type

    # -- blobs -----------------------------------------------------------------------------------
    def _blob(self, req: Request, name: str, ref: str, ns: str | None) -> Response:
        try:
            digest = validate_digest(ref)
        except errors.InvalidArgument:
            return error_response(400, "DIGEST_INVALID", "invalid digest", {"digest": ref[:200]})
        pt = self._pulls_through(ns)
        if pt is not None and not self.content.exists(digest):
            with pt.lease():  # held until the file is open: a concurrent gc cannot take the blob first
                pt.blob(name, ns, digest)
                return self._blob_local(req, digest)
        return self._blob_local(req, digest)

    def _blob_local(self, req: Request, digest: str) -> Response:
        unknown = error_response(404, "BLOB_UNKNOWN", "blob unknown to registry", {"digest": digest})
        try:
            info = self.content.info(digest)
            f = self.content.open(digest)
        except errors.NotFound:
            return unknown
        try:
            size = os.fstat(f.fileno()).st_size
            if size != info.size:
                log.error("blob %s: the record says %d bytes, the file has %d", digest, info.size, size)
                f.close()
                return error_response(500, "UNKNOWN", "stored content failed verification; run ocistore check")
            etag = f'"{digest}"'
            headers = [("Docker-Content-Digest", digest), ("ETag", etag), ("Accept-Ranges", "bytes"),
                       ("Cache-Control", "max-age=31536000")]
            if _etag_matches(req.headers.get("If-None-Match"), etag):
                f.close()
                return Response(304, headers)
            ranges = None
            if_range = req.headers.get("If-Range")
            if if_range is None or if_range.strip() == etag:
                try:
                    ranges = parse_ranges(req.headers.get("Range"), size)
                except RangeNotSatisfiable as exc:
                    f.close()
                    return error_response(416, "RANGE_INVALID", str(exc),
                                          headers=[("Content-Range", f"bytes */{size}"), *headers])
            if ranges is not None and len(ranges) > 1 and sum(r.length for r in ranges) <= MAX_MULTIPART_BYTES:
                return _multipart(f, ranges, headers)
            headers.insert(0, ("Content-Type", "application/octet-stream"))
            if ranges is None or len(ranges) > 1:  # no range, or more bytes than one answer holds: all of it
                return Response(200, headers, file=f, offset=0, length=size)
            rng = ranges[0]
            return Response(206, [*headers, ("Content-Range", rng.content_range)], file=f, offset=rng.start,
                            length=rng.length)
        except BaseException:
            f.close()
            raise

    # -- writes (allow_push) ---------------------------------------------------------------------
    def _write(self, req: Request, name: str, m: re.Match[str], params: Mapping[str, list[str]]) -> Response:
        uploads = self.uploads
        assert uploads is not None
        method, sid = req.method, m.group("uploads")
        if sid is None:  # a write to manifests/<ref> or blobs/<digest>
            if method == "PUT" and m.group("kind") == "manifests":
                return self._put_manifest(req, name, m.group("ref"))
            return error_response(405, "UNSUPPORTED", "deleting is not supported", headers=[("Allow", "GET, HEAD")])
        if sid == "":
            if method != "POST":
                return error_response(405, "UNSUPPORTED", f"{method} of the upload endpoint",
                                      headers=[("Allow", "POST")])
            return self._start_upload(req, name, params)
        session = uploads.get(name, sid)
        location = f"/v2/{name}/blobs/uploads/{session.id}"
        if method in ("GET", "HEAD"):
            return _upload_status(204, location, session.id, uploads.offset(session))
        if method == "DELETE":
            uploads.cancel(session)
            return Response(204)
        if method == "PATCH":
            start = _content_range_start(req.headers.get("Content-Range"))
            offset = uploads.append(session, req.body, start)
            return _upload_status(202, location, session.id, offset)
        if method == "PUT":
            digest = self._digest_param(params)
            uploads.finish(session, digest, req.body)
            return _created(f"/v2/{name}/blobs/{digest}", digest)
        return error_response(405, "UNSUPPORTED", f"{method} of an upload", headers=[("Allow", "PATCH, PUT")])

    def _digest_param(self, params: Mapping[str, list[str]], key: str = "digest") -> str:
        value = _first(params, key)
        try:
            return validate_digest(value)
        except errors.InvalidArgument:
            detail = {key: (value or "")[:200]}
            raise UploadError(400, "DIGEST_INVALID", f"invalid or missing ?{key}=", detail) from None

    def _start_upload(self, req: Request, name: str, params: Mapping[str, list[str]]) -> Response:
        uploads = self.uploads
        assert uploads is not None
        if _first(params, "mount") is not None:
            digest = self._digest_param(params, "mount")
            if uploads.mount(digest):
                return _created(f"/v2/{name}/blobs/{digest}", digest)
        if _first(params, "digest") is not None:
            digest = self._digest_param(params)
            uploads.monolithic(name, digest, req.body)
            return _created(f"/v2/{name}/blobs/{digest}", digest)
        session = uploads.start(name)
        return _upload_status(202, f"/v2/{name}/blobs/uploads/{session.id}", session.id, 0)

    def _put_manifest(self, req: Request, name: str, ref: str) -> Response:
        uploads = self.uploads
        assert uploads is not None
        if ":" in ref:
            try:
                validate_digest(ref)
            except errors.InvalidArgument:
                return error_response(400, "DIGEST_INVALID", "invalid digest", {"digest": ref[:200]})
        else:
            try:
                validate_tag(ref)
            except errors.InvalidArgument:
                return error_response(400, "TAG_INVALID", "invalid tag", {"tag": ref[:200]})
        registry = self.default_registry or (req.headers.get("Host") or "").strip()
        try:
            validate_domain(registry)
        except errors.InvalidArgument:
            return error_response(400, "NAME_INVALID", "no registry name for the image: send a Host header")
        desc = uploads.put_manifest(name, ref, req.headers.get("Content-Type") or "", req.body, registry)
        with self._media_lock:
            self._media[desc.digest] = desc.media_type
        return _created(f"/v2/{name}/manifests/{desc.digest}", desc.digest)

    # -- tags --------------------------------------------------------------------------------------
    def _tags(self, name: str, ns: str | None, params: Mapping[str, list[str]]) -> Response:
        repo = find_repository(self.images, name, ns, self.default_registry)
        if not repo.exists:
            return error_response(404, "NAME_UNKNOWN", "repository name not known to registry", {"name": name})
        tags = repo.tags()
        last = _first(params, "last")
        if last:
            tags = [t for t in tags if t > last]
        n_text = _first(params, "n")
        headers: list[tuple[str, str]] = []
        if n_text is not None:
            if not n_text.isdigit() or len(n_text) > 6 or int(n_text) > MAX_TAGS_PAGE:
                return error_response(400, "PAGINATION_NUMBER_INVALID", "invalid number of results requested",
                                      {"n": n_text[:20], "max": MAX_TAGS_PAGE})
            n = int(n_text)
            if len(tags) > n:
                tags = tags[:n]
                if tags:
                    query = f"n={n}&last={quote(tags[-1])}" + (f"&ns={quote(ns)}" if ns else "")
                    headers.append(("Link", f'</v2/{name}/tags/list?{query}>; rel="next"'))
        return _json({"name": name, "tags": tags}, headers)


def _upload_status(status: int, location: str, sid: str, offset: int) -> Response:
    return Response(status, [("Location", location), ("Docker-Upload-UUID", sid),
                             ("Range", f"0-{max(0, offset - 1)}")])


def _created(location: str, digest: str) -> Response:
    return Response(201, [("Location", location), ("Docker-Content-Digest", digest)])


def _content_range_start(header: str | None) -> int | None:
    """The start of a ``Content-Range: <start>-<end>`` (or ``bytes <start>-<end>/*``) of a PATCH."""
    if header is None:
        return None
    m = re.fullmatch(r"\s*(?:bytes[ =])?\s*(\d{1,19})-(\d{1,19})(?:/(?:\d{1,19}|\*))?\s*", header)
    if m is None or int(m.group(2)) < int(m.group(1)):
        raise UploadError(416, "BLOB_UPLOAD_INVALID", "malformed Content-Range", {"range": header[:100]})
    return int(m.group(1))


def _first(params: Mapping[str, list[str]], key: str) -> str | None:
    values = params.get(key)
    return values[0] if values else None


def _split_target(target: str) -> tuple[str | None, str]:
    """``(path, query)`` of an origin-form or absolute-form request-target; path None if malformed."""
    if target.startswith(("http://", "https://")):
        try:
            parts = urlsplit(target)
        except ValueError:
            return None, ""
        return parts.path or "/", parts.query
    if not target.startswith("/"):
        return None, ""
    path, _, query = target.partition("?")
    return path.partition("#")[0], query
