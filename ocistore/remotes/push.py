"""Pushing blobs and manifests (distribution spec "push"), used by ``RegistryClient``.

Blob: ``HEAD /blobs/<digest>`` (present: done), then a cross-repository mount
``POST /blobs/uploads/?mount=<digest>&from=<repo>`` for each candidate source repository
(``201``: done), else an upload session (``POST /blobs/uploads/``, ``202`` + ``Location``)
completed either by one streamed ``PUT <location>?digest=<digest>`` or by ``PATCH``
chunks followed by an empty ``PUT``. The bytes sent are counted and hashed: a reader
that yields other content than the descriptor's is an error before the registry's.
"""

from __future__ import annotations

import logging
from typing import BinaryIO
from urllib.parse import quote, urljoin

from urllib3 import BaseHTTPResponse

from ocistore import errors
from ocistore.oci.descriptor import Descriptor
from ocistore.oci.digest import Hasher, algorithm_of, digest_bytes, new_hasher
from ocistore.oci.reference import Reference
from ocistore.remotes.auth import pull_scope, push_scope
from ocistore.remotes.hosts import RegistryHost
from ocistore.remotes.options import Retry
from ocistore.remotes.transport import Transport, raise_for_status, read_capped_quietly

__all__ = ["DISTRIBUTION_SOURCE_PREFIX", "push_blob", "push_manifest"]

log = logging.getLogger(__name__)

DISTRIBUTION_SOURCE_PREFIX = "containerd.io/distribution.source."
_BLOCK = 1 << 20


class _CountingReader:
    """Hands out exactly ``size`` bytes of ``source`` (and hashes them) for a streamed PUT."""

    def __init__(self, source: BinaryIO, size: int, algorithm: str, what: str) -> None:
        self._source = source
        self._left = size
        self.hasher: Hasher = new_hasher(algorithm)
        self._what = what

    def read(self, amount: int = -1) -> bytes:
        if self._left <= 0:
            return b""
        want = self._left if amount is None or amount < 0 else min(amount, self._left)
        data = self._source.read(min(want, _BLOCK))
        if not data:
            raise errors.InvalidArgument(f"{self._what}: the reader ended {self._left} bytes before the blob size")
        self._left -= len(data)
        self.hasher.update(data)
        return data


def _mount_sources(r: Reference, desc: Descriptor, mount_from: tuple[str, ...]) -> list[str]:
    sources = list(mount_from)
    annotated = desc.annotations.get(DISTRIBUTION_SOURCE_PREFIX + r.domain, "")
    sources += [s for s in annotated.split(",") if s]
    seen: list[str] = []
    for s in sources:
        if s != r.repository and s not in seen:
            seen.append(s)
    return seen


def _location(base_url: str, resp_location: str | None, what: str) -> str:
    if not resp_location:
        raise errors.RegistryError(f"{what}: the registry started an upload without a Location", status=202)
    return urljoin(base_url, resp_location)


def _with_query(url: str, key: str, value: str) -> str:
    return url + ("&" if "?" in url else "?") + f"{key}={quote(value, safe=':')}"


def push_blob(
    transport: Transport,
    *,
    r: Reference,
    host: RegistryHost,
    desc: Descriptor,
    reader: BinaryIO,
    mount_from: tuple[str, ...] = (),
    chunk_size: int | None = None,
) -> None:
    """Upload one blob unless the repository has it (see the module docstring)."""
    what = f"push {desc.digest} to {host.host}/{r.repository}"
    sources = _mount_sources(r, desc, mount_from)
    scopes = frozenset({push_scope(r.repository), *(pull_scope(s) for s in sources)})
    blob_url = transport.url(host, f"{r.repository}/blobs/{desc.digest}")
    resp = transport.request(host, "HEAD", blob_url, scopes=scopes)
    read_capped_quietly(resp)
    if resp.status == 200:
        log.debug("%s: already present", what)
        return
    if resp.status != 404:
        raise_for_status(resp, what, b"")
    uploads = transport.url(host, f"{r.repository}/blobs/uploads/")
    location = None
    for source in sources:
        url = _with_query(_with_query(uploads, "mount", desc.digest), "from", source)
        resp = transport.request(host, "POST", url, scopes=scopes, body=b"")
        read_capped_quietly(resp)
        if resp.status == 201:
            log.debug("%s: mounted from %s", what, source)
            return
        if resp.status == 202:
            location = _location(url, resp.headers.get("Location"), what)
            break
        raise_for_status(resp, what, b"")
    if location is None:
        resp = transport.request(host, "POST", uploads, scopes=scopes, body=b"")
        body = read_capped_quietly(resp)
        if resp.status != 202:
            raise_for_status(resp, what, body)
        location = _location(uploads, resp.headers.get("Location"), what)
    if chunk_size is None:
        _put_monolithic(transport, host=host, scopes=scopes, location=location, desc=desc, reader=reader, what=what)
    else:
        _put_chunked(
            transport,
            host=host,
            scopes=scopes,
            location=location,
            desc=desc,
            reader=reader,
            chunk_size=chunk_size,
            what=what,
        )


def _put_monolithic(
    transport: Transport,
    *,
    host: RegistryHost,
    scopes: frozenset[str],
    location: str,
    desc: Descriptor,
    reader: BinaryIO,
    what: str,
) -> None:
    body = _CountingReader(reader, desc.size, algorithm_of(desc.digest), what)
    headers = {"Content-Type": "application/octet-stream", "Content-Length": str(desc.size)}
    resp = transport.request(
        host,
        "PUT",
        _with_query(location, "digest", desc.digest),
        scopes=scopes,
        headers=headers,
        body=body,
        retry=Retry.never(),
    )
    _finish_upload(resp, desc, body.hasher, what)


def _put_chunked(
    transport: Transport,
    *,
    host: RegistryHost,
    scopes: frozenset[str],
    location: str,
    desc: Descriptor,
    reader: BinaryIO,
    chunk_size: int,
    what: str,
) -> None:
    if chunk_size <= 0:
        raise errors.InvalidArgument(f"chunk_size must be positive, got {chunk_size}")
    hasher = new_hasher(algorithm_of(desc.digest))
    offset = 0
    while offset < desc.size:
        want = min(chunk_size, desc.size - offset)
        chunk = _read_exactly(reader, want, what)
        hasher.update(chunk)
        headers = {
            "Content-Type": "application/octet-stream",
            "Content-Range": f"{offset}-{offset + len(chunk) - 1}",
            "Content-Length": str(len(chunk)),
        }
        resp = transport.request(
            host, "PATCH", location, scopes=scopes, headers=headers, body=chunk, retry=Retry.never()
        )
        body = read_capped_quietly(resp)
        if resp.status != 202:
            raise_for_status(resp, what, body)
        location = _location(location, resp.headers.get("Location"), what)
        offset += len(chunk)
    resp = transport.request(
        host,
        "PUT",
        _with_query(location, "digest", desc.digest),
        scopes=scopes,
        headers={"Content-Length": "0"},
        body=b"",
    )
    _finish_upload(resp, desc, hasher, what)


def _read_exactly(reader: BinaryIO, size: int, what: str) -> bytes:
    parts: list[bytes] = []
    left = size
    while left > 0:
        data = reader.read(left)
        if not data:
            raise errors.InvalidArgument(f"{what}: the reader ended before the blob size")
        parts.append(data)
        left -= len(data)
    return b"".join(parts)


def _finish_upload(resp: BaseHTTPResponse, desc: Descriptor, hasher: Hasher, what: str) -> None:
    body = read_capped_quietly(resp)
    actual = f"{algorithm_of(desc.digest)}:{hasher.hexdigest()}"
    if actual != desc.digest:
        raise errors.DigestMismatch(
            f"{what}: the reader's content has digest {actual}", expected=desc.digest, actual=actual
        )
    if resp.status != 201:
        raise_for_status(resp, what, body)


def push_manifest(transport: Transport, r: Reference, host: RegistryHost, desc: Descriptor, data: bytes) -> None:
    """``PUT /manifests/<tag or digest>`` with the manifest's media type."""
    what = f"push manifest {desc.digest} to {host.host}/{r.repository}"
    actual = digest_bytes(data, algorithm_of(desc.digest))
    if actual != desc.digest or len(data) != desc.size:
        raise errors.DigestMismatch(
            f"{what}: the data has digest {actual} and {len(data)} bytes, the descriptor says {desc.size}",
            expected=desc.digest,
            actual=actual,
        )
    target = r.tag or desc.digest
    url = transport.url(host, f"{r.repository}/manifests/{target}")
    resp = transport.request(
        host,
        "PUT",
        url,
        scopes=frozenset({push_scope(r.repository)}),
        headers={"Content-Type": desc.media_type},
        body=data,
    )
    body = read_capped_quietly(resp)
    if resp.status not in (200, 201):
        raise_for_status(resp, what, body)
    sent = resp.headers.get("Docker-Content-Digest")
    if sent and sent != desc.digest:
        raise errors.DigestMismatch(f"{what}: the registry stored it as {sent}", expected=desc.digest, actual=sent)
