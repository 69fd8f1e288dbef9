"""Registry authorization: ``WWW-Authenticate`` challenges, basic auth and bearer tokens.

Follows containerd's ``core/remotes/docker/authorizer.go`` and ``auth/fetch.go``:

* A host starts anonymous. A 401 carries challenges; Bearer is preferred over Basic.
* Basic: sent only when credentials exist for the host.
* Bearer: a token is asked from the challenge's ``realm`` for ``service`` and the
  request's scopes (``repository:<repo>:pull`` or ``...:pull,push``). With credentials
  the OAuth2 ``POST`` (``grant_type=password``, or ``refresh_token`` for an identity
  token) is tried first, then the docker ``GET`` (with basic auth) when the token
  server answers 400/401/404/405. Without credentials the ``GET`` is anonymous.
  Tokens are cached per host and scope set until ``expires_in`` (default 60 s).
* Once a host has answered a challenge, later requests are authorized up front.

The token request goes to the realm, which may be another host: that is the protocol
(the registry names the realm). Redirects of registry requests are handled by the
transport, which never forwards ``Authorization`` to another host.
"""

from __future__ import annotations

import base64
import json
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from urllib.parse import urlencode, urlsplit

import attrs

from ocistore import errors
from ocistore.remotes.credentials import CredentialSource
from ocistore.remotes.hosts import RegistryHost

__all__ = [
    "Authorizer",
    "Challenge",
    "TokenHTTP",
    "TokenResponse",
    "parse_www_authenticate",
    "pull_scope",
    "push_scope",
]

_DEFAULT_EXPIRY = 60.0
_EXPIRY_MARGIN = 5.0
_CLIENT_ID = "ocistore"


@attrs.frozen
class Challenge:
    """One ``WWW-Authenticate`` challenge: lower-case scheme and its parameters."""

    scheme: str
    params: Mapping[str, str] = attrs.field(factory=dict, hash=False)


@attrs.frozen
class TokenResponse:
    """What the transport returns to the authorizer for a token request."""

    status: int
    body: bytes
    headers: Mapping[str, str] = attrs.field(factory=dict)


TokenHTTP = Callable[[RegistryHost, str, str, Mapping[str, str], bytes | None], TokenResponse]
"""``(registry host, method, url, headers, body) -> TokenResponse``, body capped by the transport."""


def pull_scope(repository: str) -> str:
    """``repository:<repo>:pull``."""
    return f"repository:{repository}:pull"


def push_scope(repository: str) -> str:
    """``repository:<repo>:pull,push``."""
    return f"repository:{repository}:pull,push"


def _scan_token(text: str, i: int) -> tuple[str, int]:
    start = i
    while i < len(text) and text[i] not in ' \t,="':
        i += 1
    return text[start:i], i


def _scan_quoted(text: str, i: int) -> tuple[str, int]:
    out: list[str] = []
    i += 1  # opening quote
    while i < len(text) and text[i] != '"':
        if text[i] == "\\" and i + 1 < len(text):
            i += 1
        out.append(text[i])
        i += 1
    return "".join(out), i + 1


def _skip(text: str, i: int, chars: str) -> int:
    while i < len(text) and text[i] in chars:
        i += 1
    return i


def parse_www_authenticate(values: Iterable[str]) -> list[Challenge]:
    """Parse ``WWW-Authenticate`` header values into challenges, Bearer first, then Basic."""
    found: list[Challenge] = []
    for text in values:
        i = 0
        scheme = ""
        params: dict[str, str] = {}
        while i < len(text):
            i = _skip(text, i, " \t,")
            token, j = _scan_token(text, i)
            if not token:
                i = j + 1
                continue
            k = _skip(text, j, " \t")
            if k < len(text) and text[k] == "=" and scheme:
                k = _skip(text, k + 1, " \t")
                if k < len(text) and text[k] == '"':
                    value, i = _scan_quoted(text, k)
                else:
                    value, i = _scan_token(text, k)
                params[token.lower()] = value
                continue
            if scheme:
                found.append(Challenge(scheme, params))
            scheme, params, i = token.lower(), {}, j
        if scheme:
            found.append(Challenge(scheme, params))
    order = {"bearer": 0, "basic": 2}
    return sorted((c for c in found if c.scheme in order), key=lambda c: order[c.scheme])


@attrs.define
class _HostState:
    challenge: Challenge
    credentials: tuple[str, str] | None


class Authorizer:
    """Authorization headers per registry host, with a bearer token cache. Thread-safe."""

    def __init__(self, credentials: CredentialSource, http: TokenHTTP) -> None:
        """``credentials`` answers per host; ``http`` performs token requests."""
        self._credentials = credentials
        self._http = http
        self._lock = threading.Lock()
        self._hosts: dict[str, _HostState] = {}
        self._tokens: dict[tuple[str, str], tuple[str, float]] = {}

    def header(self, host: RegistryHost, scopes: frozenset[str]) -> str | None:
        """The ``Authorization`` value for a request to ``host`` (``None``: go anonymous)."""
        with self._lock:
            state = self._hosts.get(host.host)
        if state is None:
            return None
        if state.challenge.scheme == "basic":
            return _basic(state.credentials) if state.credentials else None
        key = (host.host, " ".join(sorted(scopes)))
        with self._lock:
            cached = self._tokens.get(key)
        if cached is not None and cached[1] > time.monotonic():
            return f"Bearer {cached[0]}"
        token, expires_in = self._fetch_token(host, state, scopes)
        with self._lock:
            self._tokens[key] = (token, time.monotonic() + max(expires_in - _EXPIRY_MARGIN, 1.0))
        return f"Bearer {token}"

    def handle_unauthorized(
        self, host: RegistryHost, scopes: frozenset[str], www_authenticate: list[str], sent: str | None
    ) -> frozenset[str]:
        """Learn from a 401; returns the scopes to ask for on the retry.

        Raises ``Unauthorized`` when retrying cannot help: no supported challenge,
        basic auth without credentials, or credentials already rejected.
        """
        challenges = parse_www_authenticate(www_authenticate)
        if not challenges:
            raise errors.Unauthorized(
                f"registry {host.host} refused the request (401) without a Bearer or Basic challenge"
            )
        challenge = challenges[0]
        creds = self._credentials.get(host.host)
        if challenge.scheme == "basic":
            if not creds or not creds[0] or not creds[1]:
                raise errors.Unauthorized(
                    f"registry {host.host} requires a username and password; "
                    "pass credentials= or log in (docker config.json)"
                )
            if sent is not None and sent.startswith("Basic "):
                raise errors.Unauthorized(f"registry {host.host} rejected the credentials of user {creds[0]!r}")
        elif "realm" not in challenge.params:
            raise errors.Unauthorized(f"registry {host.host} sent a Bearer challenge without a realm")
        extra = challenge.params.get("scope", "")
        new_scopes = scopes | frozenset(s for s in extra.split(" ") if s)
        with self._lock:
            self._hosts[host.host] = _HostState(challenge, creds)
            self._tokens.pop((host.host, " ".join(sorted(new_scopes))), None)
            self._tokens.pop((host.host, " ".join(sorted(scopes))), None)
        return new_scopes

    def _fetch_token(self, host: RegistryHost, state: _HostState, scopes: frozenset[str]) -> tuple[str, float]:
        params = state.challenge.params
        realm = params["realm"]
        if urlsplit(realm).scheme not in ("http", "https"):
            raise errors.Unauthorized(f"registry {host.host} named an invalid token realm {realm!r}")
        service = params.get("service", "")
        creds = state.credentials
        scope_list = sorted(scopes)
        if creds is not None and creds[1]:
            resp = self._post_token(host, realm, service, scope_list, creds)
            if resp.status in (400, 401, 404, 405) and creds[0]:
                resp = self._get_token(host, realm, service, scope_list, creds)
        else:
            resp = self._get_token(host, realm, service, scope_list, None)
        return _parse_token_response(resp, realm, host.host, creds)

    def _post_token(
        self, host: RegistryHost, realm: str, service: str, scopes: list[str], creds: tuple[str, str]
    ) -> TokenResponse:
        form: dict[str, str] = {"client_id": _CLIENT_ID}
        if service:
            form["service"] = service
        if scopes:
            form["scope"] = " ".join(scopes)
        if creds[0]:
            form.update(grant_type="password", username=creds[0], password=creds[1])
        else:
            form.update(grant_type="refresh_token", refresh_token=creds[1])
        headers = {"Content-Type": "application/x-www-form-urlencoded; charset=utf-8"}
        return self._http(host, "POST", realm, headers, urlencode(form).encode())

    def _get_token(
        self, host: RegistryHost, realm: str, service: str, scopes: list[str], creds: tuple[str, str] | None
    ) -> TokenResponse:
        query: list[tuple[str, str]] = []
        if service:
            query.append(("service", service))
        query.extend(("scope", s) for s in scopes)
        url = realm + ("&" if "?" in realm else "?") + urlencode(query) if query else realm
        headers = {"Authorization": _basic(creds)} if creds else {}
        return self._http(host, "GET", url, headers, None)


def _basic(creds: tuple[str, str]) -> str:
    raw = f"{creds[0]}:{creds[1]}".encode()
    return "Basic " + base64.b64encode(raw).decode("ascii")


def _parse_token_response(
    resp: TokenResponse, realm: str, host: str, creds: tuple[str, str] | None
) -> tuple[str, float]:
    if resp.status in (401, 403):
        who = f"user {creds[0]!r}" if creds and creds[0] else "anonymous access"
        raise errors.Unauthorized(f"token server {realm} for registry {host} refused {who} ({resp.status})")
    if resp.status != 200:
        raise errors.RegistryError(
            f"token server {realm} for registry {host} answered {resp.status}", status=resp.status
        )
    try:
        data = json.loads(resp.body)
    except (ValueError, RecursionError) as exc:
        raise errors.RegistryError(f"token server {realm} answered with invalid JSON", status=resp.status) from exc
    if not isinstance(data, dict):
        raise errors.RegistryError(f"token server {realm} answered with a non-object", status=resp.status)
    token = data.get("access_token") or data.get("token")
    if not isinstance(token, str) or not token:
        raise errors.RegistryError(f"token server {realm} returned no token", status=resp.status)
    expires = data.get("expires_in")
    expires_in = float(expires) if isinstance(expires, int | float) and expires > 0 else _DEFAULT_EXPIRY
    return token, expires_in
