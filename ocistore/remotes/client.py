"""``RegistryClient``: resolve references, fetch and push blobs and manifests.

Resolution follows containerd's ``core/remotes/docker/resolver.go``: ``HEAD
/v2/<repo>/manifests/<tag|digest>`` with the OCI + Docker ``Accept`` list on each host
that may resolve (for digest references, each host that may pull), a ``GET`` when the
digest, size or media type is not known from the headers, and for digest references
a last try at ``/blobs/<digest>``. A body read is hashed and checked against
``Docker-Content-Digest`` and the reference's digest; manifests larger than
``MAX_MANIFEST_SIZE`` and schema 1 manifests are refused.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Sequence
from typing import Any, BinaryIO, Self

import urllib3

from ocistore import errors
from ocistore.content.types import ContentWriter
from ocistore.oci import mediatypes
from ocistore.oci.descriptor import Descriptor
from ocistore.oci.digest import algorithm_of, digest_bytes, validate_digest
from ocistore.oci.reference import Reference, parse_reference
from ocistore.remotes import byteranges
from ocistore.remotes import push as _push
from ocistore.remotes.auth import pull_scope
from ocistore.remotes.fetch import (
    BlobReader,
    ProgressFn,
    check_bounded_range,
    check_ranges_answer,
    copy_into,
    open_range,
    read_bounded,
)
from ocistore.remotes.hosts import RegistryHost, configure_hosts
from ocistore.remotes.options import RegistryOptions
from ocistore.remotes.transport import Transport, raise_for_status, read_capped, read_capped_quietly

__all__ = ["MANIFEST_ACCEPT", "MAX_BLOB_BYTES", "MAX_MANIFEST_SIZE", "MAX_RANGES_PER_REQUEST", "RegistryClient"]

MAX_MANIFEST_SIZE = 4 * 1048 * 1048
"""containerd's ``MaxManifestSize`` (4,393,216 bytes)."""

MAX_RANGES_PER_REQUEST = 100
"""Most ranges ``read_ranges`` puts in one request (about 2 KB of ``Range`` header)."""

MAX_BLOB_BYTES = 32 << 20
"""Default cap of ``fetch_bytes`` for non-manifest blobs (image configs)."""

MANIFEST_ACCEPT = ", ".join(
    (
        mediatypes.DOCKER_MANIFEST,
        mediatypes.DOCKER_MANIFEST_LIST,
        mediatypes.OCI_MANIFEST,
        mediatypes.OCI_INDEX,
        "*/*",
    )
)

_SCHEMA1 = frozenset(
    {
        "application/vnd.docker.distribution.manifest.v1+json",
        "application/vnd.docker.distribution.manifest.v1+prettyjws",
    }
)
_KNOWN_MANIFEST_TYPES = frozenset(
    {
        mediatypes.DOCKER_MANIFEST,
        mediatypes.DOCKER_MANIFEST_LIST,
        mediatypes.OCI_MANIFEST,
        mediatypes.OCI_INDEX,
    }
)


class RegistryClient:
    """A registry client for one set of ``RegistryOptions``; share it between threads.

    Holds the connection pools and the token cache; ``close()`` (or ``with``) releases
    the connections. Keyword arguments build the options when ``options`` is omitted:
    ``RegistryClient(plain_http=True)``.
    """

    def __init__(self, options: RegistryOptions | None = None, **kwargs: Any) -> None:
        """Use ``options``, or ``RegistryOptions(**kwargs)``; not both."""
        if options is not None and kwargs:
            raise errors.InvalidArgument("pass either RegistryOptions or keyword options, not both")
        self.options = options if options is not None else RegistryOptions(**kwargs)
        self.transport = Transport(self.options)
        self._hosts: dict[str, list[RegistryHost]] = {}
        self._lock = threading.Lock()
        self._single_range_hosts: set[str] = set()  # domains whose registry answers one range per request

    def close(self) -> None:
        """Close pooled connections; the client may still be used (it reconnects)."""
        self.transport.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def hosts(self, domain: str) -> list[RegistryHost]:
        """The configured hosts of a reference domain, in the order they are tried."""
        with self._lock:
            found = self._hosts.get(domain)
        if found is None:
            found = configure_hosts(domain, self.options)
            with self._lock:
                self._hosts[domain] = found
        return found

    def _hosts_for(self, ref: Reference, capability: str) -> list[RegistryHost]:
        hosts = [h for h in self.hosts(ref.domain) if h.can(capability)]
        if not hosts:
            raise errors.NotFound(f"{ref}: no host of {ref.domain} is configured to {capability}")
        return hosts

    # -- resolve -------------------------------------------------------------------------

    def resolve(self, ref: str) -> tuple[str, Descriptor]:
        """Resolve ``ref`` to ``(normalised name, descriptor of its manifest or index)``."""
        r = parse_reference(ref)
        if r.digest:
            hosts = self._hosts_for(r, "pull")
            paths = [f"manifests/{r.digest}", f"blobs/{r.digest}"]
        else:
            hosts = [h for h in self._hosts_for(r, "pull") if h.can("resolve")]
            if not hosts:
                raise errors.NotFound(f"{r}: no host of {r.domain} is configured to resolve tags")
            paths = [f"manifests/{r.tag}"]
        best: tuple[int, Exception] | None = None
        for path in paths:
            for host in hosts:
                try:
                    return str(r), self._resolve_at(host, r, path)
                except (errors.SizeLimitExceeded, errors.NotImplementedKind, errors.DigestMismatch):
                    raise
                except (
                    errors.NotFound,
                    errors.RegistryError,
                    errors.Unauthorized,
                    errors.Unavailable,
                ) as exc:
                    rank = _error_rank(exc)
                    if best is None or rank > best[0]:
                        best = (rank, exc)
            if best is not None and not isinstance(best[1], errors.NotFound | errors.Unavailable):
                break
        assert best is not None
        raise best[1]

    def _resolve_at(self, host: RegistryHost, r: Reference, path: str) -> Descriptor:
        what = f"resolve {r} at {host.host}"
        url = self.transport.url(host, f"{r.repository}/{path}")
        scopes = frozenset({pull_scope(r.repository)})
        accept = {"Accept": MANIFEST_ACCEPT}
        resp = self.transport.request(host, "HEAD", url, scopes=scopes, headers=accept)
        if resp.status >= 400 and resp.status != 404:  # 405: no HEAD; other errors: GET has the body
            read_capped_quietly(resp)
            return self._resolve_get(host, r, url, scopes, what)
        if resp.status == 404:
            read_capped_quietly(resp)
            raise errors.NotFound(f"{r}: not found at {host.host}")
        raise_for_status(resp, what, b"" if resp.status >= 300 else None)
        read_capped_quietly(resp)
        header_digest = resp.headers.get("Docker-Content-Digest", "")
        length = resp.headers.get("Content-Length", "")
        media_type = _base_type(resp.headers.get("Content-Type", ""))
        _reject_schema1(media_type, r)
        if length.isdigit() and int(length) > MAX_MANIFEST_SIZE:
            raise _too_big(r, int(length))
        digest = r.digest or header_digest
        known_type = media_type in _KNOWN_MANIFEST_TYPES
        if digest and length.isdigit() and known_type and (not r.digest or header_digest in ("", r.digest)):
            return Descriptor(media_type=media_type, digest=validate_digest(digest), size=int(length))
        return self._resolve_get(host, r, url, scopes, what)

    def _resolve_get(self, host: RegistryHost, r: Reference, url: str, scopes: frozenset[str], what: str) -> Descriptor:
        resp = self.transport.request(host, "GET", url, scopes=scopes, headers={"Accept": MANIFEST_ACCEPT})
        if resp.status == 404:
            read_capped_quietly(resp)
            raise errors.NotFound(f"{r}: not found at {host.host}")
        raise_for_status(resp, what)
        length = resp.headers.get("Content-Length", "")
        if length.isdigit() and int(length) > MAX_MANIFEST_SIZE:
            resp.close()
            raise _too_big(r, int(length))
        try:
            body = read_capped(resp, MAX_MANIFEST_SIZE, what)
        except errors.SizeLimitExceeded:
            raise _too_big(r, None) from None
        header_digest = resp.headers.get("Docker-Content-Digest", "")
        expected = r.digest or header_digest
        algorithm = algorithm_of(expected) if expected else "sha256"
        actual = digest_bytes(body, algorithm)
        if expected and actual != expected:
            source = "the reference" if r.digest else "Docker-Content-Digest"
            raise errors.DigestMismatch(
                f"{r}: {host.host} sent a manifest with digest {actual}, {source} says {expected}",
                expected=expected,
                actual=actual,
            )
        media_type = _sniff_media_type(_base_type(resp.headers.get("Content-Type", "")), body, r)
        return Descriptor(media_type=media_type, digest=actual, size=len(body))

    # -- fetch ---------------------------------------------------------------------------

    def fetch(self, ref: str, desc: Descriptor, offset: int = 0, verify: bool = True) -> BlobReader:
        """A reader of ``desc``'s bytes from ``offset``: capped, verified from 0, resuming."""
        r = parse_reference(ref)
        return BlobReader(
            desc, self._opener(r, desc), self.options.retry, offset, f"{r.name}@{desc.digest}", verify=verify
        )

    def fetch_into(self, ref: str, desc: Descriptor, writer: ContentWriter, progress: ProgressFn | None = None) -> str:
        """Download ``desc`` into ``writer`` continuing at its offset; verify; commit.

        Returns the digest. ``AlreadyExists`` on commit counts as success. On a digest
        mismatch the ingest is truncated and ``DigestMismatch`` raised; on other
        failures the ingest keeps what was written, for a later resume.
        """
        # the writer hashes every byte and the digest is checked before commit: no second hash here
        r = parse_reference(ref)
        what = f"{r.name}@{desc.digest}"
        liars: set[str] = set()
        while True:
            used: list[RegistryHost] = []
            opener = self._opener(r, desc, skip=liars, preferred=used)
            try:
                return copy_into(
                    desc, writer,
                    lambda offset, opener=opener: BlobReader(  # type: ignore[misc]
                        desc, opener, self.options.retry, offset, what, verify=False),
                    progress,
                )
            except errors.DigestMismatch:
                # a mirror (peer) that sends wrong bytes: the ingest was truncated; start again
                # from the next host of hosts.toml, the server last, as containerd tries them
                if not used or len(liars) + 1 >= len(self._hosts_for(r, "pull")):
                    raise
                liars.add(used[0].host)

    def fetch_bytes(self, ref: str, desc: Descriptor, max_size: int | None = None) -> bytes:
        """The whole (small) blob ``desc``, verified; larger than ``max_size`` is refused.

        ``max_size`` defaults to ``MAX_MANIFEST_SIZE`` for manifests and indexes and to
        ``MAX_BLOB_BYTES`` otherwise.
        """
        if max_size is None:
            is_manifest = mediatypes.is_manifest(desc.media_type) or mediatypes.is_index(desc.media_type)
            max_size = MAX_MANIFEST_SIZE if is_manifest else MAX_BLOB_BYTES
        if desc.size > max_size:
            raise errors.SizeLimitExceeded(
                f"{desc.digest} is {desc.size} bytes, more than the {max_size} allowed for {desc.media_type}"
            )
        with self.fetch(ref, desc) as reader:
            data = reader.read()
            if not reader.verified:
                raise errors.Unavailable(f"{desc.digest}: the download ended before the descriptor's size")
            return data

    def read_range(self, ref: str, desc: Descriptor, start: int, end: int) -> bytes:
        """Bytes ``[start, end)`` of the blob ``desc``, by a ranged ``GET`` (hosts, auth, mirrors
        and redirects as for whole blobs; a body cut short is resumed).

        The bytes are NOT verified (only a whole blob can be): the caller checks them (a TOC
        digest, chunk digests). ``RangeNotSupported`` when the registry ignores the range and
        sends the whole blob: download the blob whole instead (``fetch_into``).
        """
        if not 0 <= start < end <= desc.size:
            raise errors.InvalidArgument(f"range {start}-{end} is outside blob {desc.digest} of {desc.size} bytes")
        r = parse_reference(ref)
        what = f"{r.name}@{desc.digest} bytes {start}-{end - 1}"
        return read_bounded(self._opener(r, desc, end=end), start, end, self.options.retry, what)

    def read_ranges(self, ref: str, desc: Descriptor, ranges: Sequence[tuple[int, int]]) -> list[bytes]:
        """The bytes of each of ``ranges`` (half-open, in ascending order, not overlapping) of
        the blob ``desc``, asked for in one request (``Range: bytes=a-b,c-d,...``).

        A registry that answers with ``multipart/byteranges`` (distribution does) or with one
        range covering them all serves them in one round trip; ranges its answer leaves out
        (a registry that sends the first range only), or all of them when it answers with the
        whole blob (which is not read), are read one by one, and such a registry is asked for
        single ranges from then on. As :meth:`read_range`: NOT verified, ``RangeNotSupported``
        when the registry ignores single ranges too.
        """
        if not ranges:
            return []
        for (s, e), nxt in zip(ranges, [*ranges[1:], None], strict=True):
            if not 0 <= s < e <= desc.size or (nxt is not None and nxt[0] < e):
                raise errors.InvalidArgument(f"ranges of blob {desc.digest} must be ascending, disjoint and inside "
                                             f"its {desc.size} bytes: {list(ranges)[:4]}...")
        r = parse_reference(ref)
        if len(ranges) == 1 or r.domain in self._single_range_hosts:
            return [self.read_range(ref, desc, s, e) for s, e in ranges]
        if len(ranges) > MAX_RANGES_PER_REQUEST:  # keep the Range header short (servers cap header sizes)
            return [data for i in range(0, len(ranges), MAX_RANGES_PER_REQUEST)
                    for data in self.read_ranges(ref, desc, ranges[i:i + MAX_RANGES_PER_REQUEST])]
        what = f"{r.name}@{desc.digest} ({len(ranges)} ranges)"
        try:
            resp = self._opener(r, desc, spec=byteranges.range_header(ranges))(ranges[0][0])
        except errors.RangeNotSupported:
            # the whole blob for several ranges (the connection is dropped unread): a registry
            # may still serve them one at a time (ocistore serve, S3 behind a redirect)
            with self._lock:
                self._single_range_hosts.add(r.domain)
            return [self.read_range(ref, desc, s, e) for s, e in ranges]
        try:
            body = read_capped(resp, byteranges.expected_body_limit(ranges), what)
        except errors.Unavailable:  # cut short: single ranges resume where a body stops
            return [self.read_range(ref, desc, s, e) for s, e in ranges]
        try:
            datas = byteranges.split_answer(body, resp.headers.get("Content-Type", ""),
                                            resp.headers.get("Content-Range"), ranges, desc.size, what)
        except errors.RegistryError:  # an answer we cannot split: ask this registry for single ranges
            datas = [None] * len(ranges)
        if any(d is None for d in datas):
            with self._lock:
                self._single_range_hosts.add(r.domain)
        return [d if d is not None else self.read_range(ref, desc, s, e)
                for d, (s, e) in zip(datas, ranges, strict=True)]

    def _opener(
        self, r: Reference, desc: Descriptor, skip: set[str] | frozenset[str] = frozenset(),
        preferred: list[RegistryHost] | None = None, end: int | None = None, spec: str | None = None,
    ) -> Callable[[int], urllib3.BaseHTTPResponse]:
        """Open ``desc`` at an offset from the first host that answers (``skip``: hosts not to
        ask); the host that answered is kept first in ``preferred`` for the next ranges.
        With ``end``, ask for ``[offset, end)`` only (see ``check_bounded_range``); with
        ``spec``, send that ``Range`` value and accept only ``206``."""
        hosts = [h for h in self._hosts_for(r, "pull") if h.host not in skip]
        is_manifest = mediatypes.is_manifest(desc.media_type) or mediatypes.is_index(desc.media_type)
        kind = "manifests" if is_manifest else "blobs"
        scopes = frozenset({pull_scope(r.repository)})
        headers = {"Accept": f"{desc.media_type}, */*", "Accept-Encoding": "identity"}
        preferred = [] if preferred is None else preferred

        def open_at(offset: int) -> urllib3.BaseHTTPResponse:
            first_error: Exception | None = None
            for host in preferred + [h for h in hosts if h not in preferred]:
                what = f"fetch {r.name}@{desc.digest} from {host.host}"
                url = self.transport.url(host, f"{r.repository}/{kind}/{desc.digest}")
                if spec is not None:
                    req_headers = dict(headers, Range=spec)
                elif end is not None:
                    req_headers = dict(headers, Range=f"bytes={offset}-{end - 1}")
                else:
                    req_headers = dict(headers, Range=f"bytes={offset}-") if offset > 0 else headers
                try:
                    resp = self.transport.request(host, "GET", url, scopes=scopes, headers=req_headers)
                    if spec is not None:
                        resp = check_ranges_answer(resp, what)
                    elif end is not None:
                        resp = check_bounded_range(resp, offset, end, desc.size, what)
                    else:
                        resp = open_range(resp, offset, desc.size, what)
                except (
                    errors.NotFound,
                    errors.RegistryError,
                    errors.Unauthorized,
                    errors.Unavailable,
                ) as exc:
                    if first_error is None or isinstance(first_error, errors.NotFound):
                        first_error = exc
                    continue
                preferred[:] = [host]
                return resp
            assert first_error is not None
            raise first_error

        return open_at

    # -- push ----------------------------------------------------------------------------

    def push_blob(
        self,
        ref: str,
        desc: Descriptor,
        reader: BinaryIO,
        *,
        mount_from: tuple[str, ...] = (),
        chunk_size: int | None = None,
    ) -> None:
        """Upload ``desc`` (read from ``reader``) to ``ref``'s repository unless it is there.

        Tries a cross-repository mount from ``mount_from`` repositories (and those named
        by a ``containerd.io/distribution.source.<host>`` annotation) first. Uploads in
        one streamed ``PUT``, or in ``PATCH`` chunks of ``chunk_size`` bytes.
        """
        r = parse_reference(ref)
        host = self._hosts_for(r, "push")[0]
        _push.push_blob(
            self.transport,
            r=r,
            host=host,
            desc=desc,
            reader=reader,
            mount_from=tuple(mount_from),
            chunk_size=chunk_size,
        )

    def push_manifest(self, ref: str, desc: Descriptor, data: bytes) -> None:
        """``PUT`` a manifest or index under ``ref``'s tag (or its digest when untagged)."""
        r = parse_reference(ref)
        _push.push_manifest(self.transport, r, self._hosts_for(r, "push")[0], desc, data)


def _error_rank(exc: Exception) -> int:
    """containerd's resolve error priority: 4xx/5xx > 404 > transport."""
    if isinstance(exc, errors.NotFound):
        return 2
    if isinstance(exc, errors.Unavailable):
        return 1
    return 3


def _base_type(content_type: str) -> str:
    return content_type.split(";", 1)[0].strip().lower()


def _reject_schema1(media_type: str, r: Reference) -> None:
    if media_type in _SCHEMA1:
        raise errors.NotImplementedKind(
            f"{r}: the registry serves a Docker schema 1 manifest ({media_type}), which is not supported"
        )


def _too_big(r: Reference, size: int | None) -> errors.SizeLimitExceeded:
    got = f"{size} bytes" if size is not None else "more"
    return errors.SizeLimitExceeded(f"{r}: manifest is {got}, the limit is {MAX_MANIFEST_SIZE} bytes")


def _sniff_media_type(content_type: str, body: bytes, r: Reference) -> str:
    """The manifest's media type: a known Content-Type, else what the JSON says."""
    _reject_schema1(content_type, r)
    try:
        doc = json.loads(body)
    except (ValueError, RecursionError) as exc:
        raise errors.InvalidArgument(f"{r}: the registry sent a manifest that is not JSON") from exc
    if not isinstance(doc, dict):
        raise errors.InvalidArgument(f"{r}: the registry sent a manifest that is not a JSON object")
    if doc.get("schemaVersion") == 1:
        raise errors.NotImplementedKind(f"{r}: Docker schema 1 manifests are not supported")
    if content_type in _KNOWN_MANIFEST_TYPES:
        return content_type
    declared = doc.get("mediaType")
    if isinstance(declared, str) and declared:
        _reject_schema1(declared, r)
        return declared
    if isinstance(doc.get("manifests"), list):
        return mediatypes.OCI_INDEX
    if "config" in doc and "layers" in doc:
        return mediatypes.OCI_MANIFEST
    raise errors.InvalidArgument(f"{r}: cannot tell the media type of the manifest ({content_type or 'none'})")
