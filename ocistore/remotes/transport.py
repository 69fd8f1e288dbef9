"""One registry request, done properly: pools, TLS, retries, redirects, authorization.

``Transport.request`` sends a request to a ``RegistryHost`` and returns the urllib3
response (body not read) once it is neither a retryable failure, nor a redirect, nor a
401 that authorization can answer. It owns:

* one urllib3 ``PoolManager`` per TLS configuration (connections are reused);
* the retry policy (``Retry``, an immutable value, incremented per failure) for
  connection errors and the statuses it names, with exponential backoff;
* redirects (at most 10), followed by hand so that ``Authorization`` and the host's
  configured headers never reach another host (registries redirect blob GETs to
  object storage with signed URLs);
* the TLS -> HTTP fallback of loopback registries (as containerd's, see ``hosts``);
* the ``Authorizer`` (basic / bearer with token cache), fed with every 401.

Error answers are turned into ocistore errors by ``raise_for_status``.
"""

from __future__ import annotations

import functools
import json
import logging
import socket
import ssl
import threading
import time
from collections.abc import Mapping
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import urljoin, urlsplit

import urllib3
from urllib3.connection import HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.exceptions import HTTPError as Urllib3HTTPError
from urllib3.exceptions import SSLError as Urllib3SSLError

from ocistore import errors
from ocistore.remotes.auth import Authorizer, TokenResponse
from ocistore.remotes.credentials import CredentialSource
from ocistore.remotes.hosts import RegistryHost, TLSConfig
from ocistore.remotes.options import RegistryOptions, Retry

__all__ = [
    "MAX_ERROR_BODY",
    "Transport",
    "error_codes",
    "raise_for_status",
    "read_capped",
]

log = logging.getLogger(__name__)

MAX_ERROR_BODY = 64 * 1024
_MAX_TOKEN_BODY = 1 << 20
_MAX_REDIRECTS = 10
_MAX_AUTH_ROUNDS = 2
_REDIRECTS = frozenset({301, 302, 303, 307, 308})


class _TrustedInsecureConnection(HTTPSConnection):
    """An HTTPS connection whose missing verification was asked for (skip_verify).

    urllib3 warns about every unverified request; the user chose it explicitly here,
    so the connection reports itself verified instead of silencing warnings globally.
    """

    def connect(self) -> None:
        super().connect()
        self.is_verified = True


class _InsecurePool(HTTPSConnectionPool):
    ConnectionCls = _TrustedInsecureConnection


@functools.lru_cache(maxsize=32)
def _ssl_context(tls: TLSConfig) -> ssl.SSLContext:
    """One context per TLS configuration and process: loading the system CAs costs ~0.1-0.8 s."""
    if not tls.verify and not tls.ca_files:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # nothing to verify: skip loading system CAs
    else:
        ctx = ssl.create_default_context()
    try:
        for ca in tls.ca_files:
            ctx.load_verify_locations(cafile=ca)
        if tls.client_cert:
            ctx.load_cert_chain(tls.client_cert, tls.client_key)
    except (OSError, ssl.SSLError) as exc:
        raise errors.InvalidArgument(f"cannot load TLS files {tls.ca_files or tls.client_cert}: {exc}") from exc
    if not tls.verify:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    return ctx


def read_capped(resp: urllib3.BaseHTTPResponse, limit: int, what: str) -> bytes:
    """The whole body of ``resp``, refusing more than ``limit`` bytes (SizeLimitExceeded)."""
    try:
        data = resp.read(limit + 1, decode_content=True)
    except Urllib3HTTPError as exc:
        resp.close()
        raise errors.Unavailable(f"{what}: connection failed while reading the answer: {exc}") from exc
    if len(data) > limit:
        resp.close()
        raise errors.SizeLimitExceeded(f"{what}: the registry sent more than {limit} bytes")
    resp.release_conn()
    return data


def error_codes(body: bytes) -> tuple[tuple[str, ...], str]:
    """The ``code``s and a readable message of a registry JSON error body."""
    try:
        data = json.loads(body)
    except (ValueError, RecursionError):
        return (), body[:200].decode("utf-8", errors="replace").strip()
    entries = data.get("errors") if isinstance(data, dict) else None
    if not isinstance(entries, list):
        return (), ""
    codes: list[str] = []
    messages: list[str] = []
    for entry in entries:
        if isinstance(entry, dict):
            code, message = entry.get("code"), entry.get("message")
            if isinstance(code, str):
                codes.append(code)
            if isinstance(message, str) or isinstance(code, str):
                messages.append(f"{code}: {message}" if message else str(code))
    return tuple(codes), "; ".join(messages)


def raise_for_status(resp: urllib3.BaseHTTPResponse, what: str, body: bytes | None = None) -> None:
    """Raise the ocistore error for an answer that is not 2xx; read a capped error body."""
    if 200 <= resp.status < 300:
        return
    if body is None:
        try:
            body = read_capped(resp, MAX_ERROR_BODY, what)
        except errors.SizeLimitExceeded:
            body = b""
    codes, message = error_codes(body)
    detail = f": {message}" if message else ""
    if resp.status == 404:
        raise errors.NotFound(f"{what}: not found{detail}")
    if resp.status in (401, 403):
        raise errors.Unauthorized(f"{what}: access denied ({resp.status}){detail}")
    raise errors.RegistryError(
        f"{what}: registry answered {resp.status} {resp.reason or ''}{detail}".rstrip(),
        status=resp.status,
        codes=codes,
    )


def _retry_after(resp: urllib3.BaseHTTPResponse) -> float | None:
    value = resp.headers.get("Retry-After")
    if not value:
        return None
    if value.strip().isdigit():
        return float(value.strip())
    try:
        return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError):
        return None


def _origin(url: str) -> tuple[str, str]:
    parts = urlsplit(url)
    return parts.scheme, parts.netloc.lower()


class Transport:
    """Sends registry requests for one ``RegistryClient``. Thread-safe."""

    def __init__(self, options: RegistryOptions, credentials: CredentialSource | None = None) -> None:
        """Pools and authorizer for ``options``."""
        self.options = options
        self._timeout = urllib3.Timeout(connect=options.timeout.connect, read=options.timeout.read)
        self._lock = threading.Lock()
        self._pools: dict[TLSConfig, urllib3.PoolManager] = {}
        self._plain: set[str] = set()  # hosts that answered plain HTTP on their TLS attempt
        self.authorizer = Authorizer(credentials or CredentialSource(options.credentials), self._token_http)

    def close(self) -> None:
        """Close every pooled connection."""
        with self._lock:
            pools, self._pools = list(self._pools.values()), {}
        for pool in pools:
            pool.clear()

    def _pool(self, tls: TLSConfig, url: str = "https:") -> urllib3.PoolManager:
        """The pool manager of a TLS configuration; its SSL context is built on the first
        https request only (plain-HTTP registries never pay for loading CA certificates)."""
        with self._lock:
            pool = self._pools.get(tls)
            if pool is None:
                pool = urllib3.PoolManager(num_pools=32, maxsize=max(1, self.options.max_concurrent_downloads))
                if not tls.verify:
                    pool.pool_classes_by_scheme = {"http": HTTPConnectionPool, "https": _InsecurePool}
                self._pools[tls] = pool
            if url.startswith("https:") and "ssl_context" not in pool.connection_pool_kw:
                pool.connection_pool_kw["ssl_context"] = _ssl_context(tls)
            return pool

    def url(self, host: RegistryHost, path: str) -> str:
        """The URL of ``path`` (below ``/v2``) on ``host``, with the mirror's ``ns`` query."""
        scheme = "http" if host.scheme == "http" or host.host in self._plain else "https"
        url = f"{scheme}://{host.host}{host.path}/{path.lstrip('/')}"
        if host.ns:
            url += ("&" if "?" in url else "?") + "ns=" + host.ns
        return url

    def request(
        self,
        host: RegistryHost,
        method: str,
        url: str,
        *,
        scopes: frozenset[str],
        headers: Mapping[str, str] | None = None,
        body: Any = None,
        retry: Retry | None = None,
        follow_redirects: bool = True,
    ) -> urllib3.BaseHTTPResponse:
        """Send ``method url`` to ``host`` and return the final response, body unread.

        ``url`` comes from ``self.url()`` (or an upload ``Location``). Bodies other than
        ``bytes``/``None`` are sent once: such requests are not retried.
        """
        retry = self.options.retry if retry is None else retry
        replayable = body is None or isinstance(body, bytes | bytearray)
        auth_rounds = redirects = 0
        same_origin = True
        while True:
            req_headers = self._headers(host, headers, scopes if same_origin else None)
            try:
                resp = self._pool(host.tls, url).urlopen(
                    method,
                    url,
                    body=body,
                    headers=req_headers,
                    redirect=False,
                    retries=False,
                    preload_content=False,
                    timeout=self._timeout,
                    assert_same_host=False,
                )
            except Urllib3HTTPError as exc:
                new_url = self._maybe_fall_back(host, url, exc) if same_origin else None
                if new_url is not None:
                    url = new_url
                    continue
                if not replayable:
                    raise errors.Unavailable(f"{method} {url}: {_describe(exc)}") from exc
                retry = retry.increment(method, url, error=exc)
                if retry.is_exhausted():
                    raise errors.Unavailable(
                        f"{method} {url} failed after {len(retry.history)} attempts: {_describe(exc)}"
                    ) from exc
                self._sleep(retry, None, method, url, repr(exc))
                continue
            if resp.status == 401 and same_origin and replayable and auth_rounds < _MAX_AUTH_ROUNDS:
                auth_rounds += 1
                read_capped_quietly(resp)
                sent = req_headers.get("Authorization")
                challenges = resp.headers.getlist("WWW-Authenticate")
                scopes = self.authorizer.handle_unauthorized(host, scopes, challenges, sent)
                continue
            if resp.status in _REDIRECTS and follow_redirects and resp.headers.get("Location"):
                redirects += 1
                if redirects > _MAX_REDIRECTS:
                    resp.close()
                    raise errors.RegistryError(
                        f"{method} {url}: more than {_MAX_REDIRECTS} redirects", status=resp.status
                    )
                read_capped_quietly(resp)
                url = urljoin(url, resp.headers["Location"])
                same_origin = _origin(url) == _origin(self.url(host, ""))
                if resp.status == 303:
                    method, body = "GET", None
                continue
            if retry.is_retryable_status(resp.status) and replayable:
                body_bytes = read_capped_quietly(resp)
                retry = retry.increment(method, url, status=resp.status)
                if retry.is_exhausted():
                    raise_for_status(resp, f"{method} {url} (after {len(retry.history)} attempts)", body_bytes)
                self._sleep(retry, _retry_after(resp), method, url, str(resp.status))
                continue
            return resp

    def _headers(
        self, host: RegistryHost, extra: Mapping[str, str] | None, scopes: frozenset[str] | None
    ) -> dict[str, str]:
        headers = {"User-Agent": self.options.user_agent}
        if scopes is not None:
            # Configured headers and credentials belong to the configured host only.
            headers.update(host.headers)
            auth = self.authorizer.header(host, scopes)
            if auth:
                headers["Authorization"] = auth
        if extra:
            headers.update(extra)
        return headers

    def _maybe_fall_back(self, host: RegistryHost, url: str, exc: Urllib3HTTPError) -> str | None:
        """containerd's HTTP fallback: a TLS handshake answered in plain HTTP switches the host."""
        if not host.http_fallback or not url.startswith("https://") or not isinstance(exc, Urllib3SSLError):
            return None
        if "CERTIFICATE_VERIFY_FAILED" in str(exc):
            return None
        log.debug("%s does not speak TLS (%s); falling back to plain HTTP", host.host, exc)
        with self._lock:
            self._plain.add(host.host)
        return "http://" + url.removeprefix("https://")

    def _sleep(self, retry: Retry, retry_after: float | None, method: str, url: str, why: str) -> None:
        delay = retry.backoff_time(retry_after)
        log.debug("retrying %s %s in %.2fs after %s", method, url, delay, why)
        if delay > 0:
            time.sleep(delay)

    def _token_http(
        self, host: RegistryHost, method: str, url: str, headers: Mapping[str, str], body: bytes | None
    ) -> TokenResponse:
        """A token request to a realm: the host's TLS settings, retries, no registry auth."""
        retry = self.options.retry
        all_headers = {"User-Agent": self.options.user_agent, **headers}
        while True:
            try:
                resp = self._pool(host.tls, url).urlopen(
                    method,
                    url,
                    body=body,
                    headers=all_headers,
                    redirect=False,
                    retries=False,
                    preload_content=False,
                    timeout=self._timeout,
                )
            except Urllib3HTTPError as exc:
                retry = retry.increment(method, url, error=exc)
                if retry.is_exhausted():
                    raise errors.Unavailable(f"token server {url}: {_describe(exc)}") from exc
                self._sleep(retry, None, method, url, repr(exc))
                continue
            if retry.is_retryable_status(resp.status):
                read_capped_quietly(resp)
                retry = retry.increment(method, url, status=resp.status)
                if not retry.is_exhausted():
                    self._sleep(retry, _retry_after(resp), method, url, str(resp.status))
                    continue
            data = read_capped(resp, _MAX_TOKEN_BODY, f"token server {urlsplit(url).netloc}")
            return TokenResponse(resp.status, data, dict(resp.headers))


def read_capped_quietly(resp: urllib3.BaseHTTPResponse) -> bytes:
    """Read an answer we are about to discard (error, redirect); drop oversized ones."""
    try:
        return read_capped(resp, MAX_ERROR_BODY, "registry answer")
    except (errors.SizeLimitExceeded, errors.Unavailable):
        return b""


def _describe(exc: BaseException) -> str:
    """What went wrong on the wire, in words (not urllib3's class and connection reprs)."""
    reason = getattr(exc, "reason", None) or exc
    cause = reason.__cause__ or reason.__context__
    if isinstance(reason, urllib3.exceptions.NewConnectionError):
        if isinstance(cause, ConnectionRefusedError):
            return "connection refused (is the registry running on that host and port?)"
        if isinstance(cause, socket.gaierror):
            return f"cannot resolve the host name ({cause.strerror})"
        if isinstance(cause, OSError) and cause.strerror:
            return f"cannot connect ({cause.strerror})"
        return "cannot connect"
    if isinstance(reason, urllib3.exceptions.ConnectTimeoutError):
        return "connection timed out"
    if isinstance(reason, urllib3.exceptions.ReadTimeoutError):
        return "the registry stopped answering (read timed out)"
    if isinstance(reason, urllib3.exceptions.LocationParseError):
        return "the registry address cannot be parsed"
    if isinstance(reason, urllib3.exceptions.ProtocolError):
        return f"the connection broke ({cause or reason})"
    return str(reason)
