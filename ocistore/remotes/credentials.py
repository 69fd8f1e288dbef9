"""Where registry credentials come from: the ``credentials`` option or docker's config.

Lookup order for a registry host ``H`` (``host[:port]``):

1. the ``credentials`` option: a mapping ``{"H": (username, secret)}`` or a callable
   ``H -> (username, secret) | None``;
2. otherwise ``$DOCKER_CONFIG/config.json`` (default ``~/.docker/config.json``):
   ``credHelpers[H]``, then ``auths[H]`` (``auth`` = base64 ``user:password``, or
   ``username``/``password``, or ``identitytoken``), then ``credsStore``.
   Credential helpers are the ``docker-credential-<name>`` executables, asked with
   ``get``. Docker Hub is stored as ``https://index.docker.io/v1/``.

An identity token is returned as ``("", token)``: the bearer flow then uses it as an
OAuth2 refresh token, as containerd does.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import attrs

from ocistore import errors
from ocistore._lazy import lazy_module
from ocistore.remotes.options import CredentialsOption

if TYPE_CHECKING:
    import subprocess
else:
    subprocess = lazy_module("subprocess")  # loaded on first use, not by every fresh process

__all__ = ["CredentialSource", "DockerConfig", "docker_config_path"]

_DOCKER_HUB_KEYS = ("https://index.docker.io/v1/", "index.docker.io", "docker.io", "registry-1.docker.io")
_HELPER_TIMEOUT = 30.0
_MAX_CONFIG_BYTES = 4 << 20


def docker_config_path() -> Path:
    """``$DOCKER_CONFIG/config.json``, else ``~/.docker/config.json``."""
    base = os.environ.get("DOCKER_CONFIG")
    if base:
        return Path(base) / "config.json"
    return Path.home() / ".docker" / "config.json"


def _normalise_key(key: str) -> str:
    """``https://host:5000/v1/`` -> ``host:5000`` (docker keys its auths by URL or host)."""
    if "://" in key:
        return urlsplit(key).netloc
    return key.split("/", 1)[0]


def _is_docker_hub(host: str) -> bool:
    return host in _DOCKER_HUB_KEYS


@attrs.define
class DockerConfig:
    """The parts of a docker ``config.json`` that carry credentials."""

    auths: dict[str, Mapping[str, Any]] = attrs.field(factory=dict)
    cred_helpers: dict[str, str] = attrs.field(factory=dict)
    creds_store: str = ""
    path: str = ""

    @classmethod
    def load(cls, path: Path | None = None) -> DockerConfig:
        """Read ``path`` (default: ``docker_config_path()``); a missing file is an empty config."""
        path = path or docker_config_path()
        try:
            with path.open("rb") as f:
                raw = f.read(_MAX_CONFIG_BYTES + 1)
        except FileNotFoundError:
            return cls(path=str(path))
        except OSError as exc:
            raise errors.InvalidArgument(f"cannot read docker config {path}: {exc}") from exc
        if len(raw) > _MAX_CONFIG_BYTES:
            raise errors.SizeLimitExceeded(f"docker config {path} is larger than {_MAX_CONFIG_BYTES} bytes")
        try:
            data = json.loads(raw)
        except (ValueError, RecursionError) as exc:
            raise errors.InvalidArgument(f"docker config {path} is not valid JSON: {exc}") from exc
        if not isinstance(data, dict):
            raise errors.InvalidArgument(f"docker config {path} must hold a JSON object")
        auths = data.get("auths") or {}
        helpers = data.get("credHelpers") or {}
        store = data.get("credsStore") or ""
        if not isinstance(auths, dict) or not isinstance(helpers, dict) or not isinstance(store, str):
            raise errors.InvalidArgument(f"docker config {path}: malformed auths/credHelpers/credsStore")
        return cls(
            auths={str(k): v for k, v in auths.items() if isinstance(v, Mapping)},
            cred_helpers={str(k): str(v) for k, v in helpers.items()},
            creds_store=store,
            path=str(path),
        )

    def lookup(self, host: str) -> tuple[str, str] | None:
        """Credentials for ``host``, or ``None``."""
        helper = self._helper_for(host)
        if helper:
            return run_credential_helper(helper, _server_url(host))
        entry = self._auth_entry(host)
        if entry is not None:
            found = _decode_auth_entry(entry, host, self.path)
            if found is not None:
                return found
        if self.creds_store:
            return run_credential_helper(self.creds_store, _server_url(host))
        return None

    def _helper_for(self, host: str) -> str:
        for key, helper in self.cred_helpers.items():
            if _normalise_key(key) == host or (_is_docker_hub(host) and _is_docker_hub(_normalise_key(key))):
                return helper
        return ""

    def _auth_entry(self, host: str) -> Mapping[str, Any] | None:
        if host in self.auths:
            return self.auths[host]
        for key, entry in self.auths.items():
            norm = _normalise_key(key)
            if norm == host or (_is_docker_hub(host) and _is_docker_hub(norm)):
                return entry
        return None


def _server_url(host: str) -> str:
    return "https://index.docker.io/v1/" if _is_docker_hub(host) else host


def _decode_auth_entry(entry: Mapping[str, Any], host: str, path: str) -> tuple[str, str] | None:
    token = entry.get("identitytoken")
    if isinstance(token, str) and token:
        return ("", token)
    auth = entry.get("auth")
    if isinstance(auth, str) and auth:
        try:
            text = base64.b64decode(auth, validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError) as exc:
            raise errors.InvalidArgument(f"docker config {path}: auth for {host} is not base64") from exc
        user, sep, secret = text.partition(":")
        if not sep:
            raise errors.InvalidArgument(f"docker config {path}: auth for {host} is not user:password")
        return (user, secret)
    username, password = entry.get("username"), entry.get("password")
    if isinstance(username, str) and isinstance(password, str) and (username or password):
        return (username, password)
    return None


def run_credential_helper(name: str, server: str) -> tuple[str, str] | None:
    """Ask ``docker-credential-<name> get`` for ``server``; ``None`` when it has nothing."""
    exe = f"docker-credential-{name}"
    try:
        proc = subprocess.run(
            [exe, "get"], input=server.encode(), capture_output=True, timeout=_HELPER_TIMEOUT, check=False
        )
    except FileNotFoundError as exc:
        raise errors.NotFound(f"credential helper {exe} (named in the docker config) is not on PATH") from exc
    except subprocess.TimeoutExpired as exc:
        raise errors.Unavailable(f"credential helper {exe} did not answer within {_HELPER_TIMEOUT:.0f}s") from exc
    if proc.returncode != 0:
        message = proc.stdout.decode(errors="replace").strip() or proc.stderr.decode(errors="replace").strip()
        if "credentials not found" in message.lower():
            return None
        raise errors.Unavailable(f"credential helper {exe} failed for {server}: {message[:200]}")
    try:
        data = json.loads(proc.stdout)
        user, secret = data.get("Username", ""), data.get("Secret", "")
    except (ValueError, AttributeError, RecursionError) as exc:
        raise errors.InvalidArgument(f"credential helper {exe} printed no JSON credentials") from exc
    if not isinstance(user, str) or not isinstance(secret, str):
        raise errors.InvalidArgument(f"credential helper {exe} printed malformed credentials")
    if user == "<token>":
        return ("", secret)
    return (user, secret) if (user or secret) else None


class CredentialSource:
    """Credentials per registry host: the ``credentials`` option, else the docker config.

    The docker config is read once, on first use.
    """

    def __init__(self, option: CredentialsOption | None = None, docker_config: DockerConfig | None = None) -> None:
        """Use ``option`` when given; otherwise ``docker_config`` (loaded lazily by default)."""
        self._option = option
        self._docker_config = docker_config

    def get(self, host: str) -> tuple[str, str] | None:
        """``(username, secret)`` for ``host`` (``host[:port]``), or ``None`` (anonymous)."""
        if self._option is not None:
            return _from_option(self._option, host)
        if self._docker_config is None:
            self._docker_config = DockerConfig.load()
        return self._docker_config.lookup(host)


def _from_option(option: CredentialsOption, host: str) -> tuple[str, str] | None:
    if isinstance(option, Mapping):
        found = option.get(host)
        if found is None and _is_docker_hub(host):
            found = next((option[k] for k in _DOCKER_HUB_KEYS if k in option), None)
    else:
        fn: Callable[[str], tuple[str, str] | None] = option
        found = fn(host)
    if found is None:
        return None
    user, secret = found
    return (str(user), str(secret))
