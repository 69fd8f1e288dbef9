"""Which URLs serve a registry: defaults and containerd's ``hosts.toml`` layout.

For a reference host ``H`` (``docker.io``, ``127.0.0.1:5000``, ...) the candidate
hosts are, as in containerd's ``core/remotes/docker/config/hosts.go``:

* with a hosts directory holding ``H_port_/hosts.toml``, ``H/hosts.toml`` or
  ``_default/hosts.toml`` (first found): every ``[host."<url>"]`` table in file order,
  then the top-level ``server`` (the reference host itself when ``server`` is absent);
* otherwise ``H`` alone (``registry-1.docker.io`` for ``docker.io``), over HTTPS,
  except that ``plain_http`` selects HTTP and a loopback host with a port other than
  443 tries TLS first and falls back to HTTP.

A host other than the reference host (a mirror) gets ``?ns=<H>`` on its requests.
Unlike containerd, a malformed ``hosts.toml`` is an error (``InvalidArgument``) rather
than a log line: a typo must not silently send traffic elsewhere.
"""

from __future__ import annotations

import ipaddress
import os
import posixpath
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import attrs

from ocistore import errors
from ocistore._lazy import lazy_module
from ocistore.remotes.options import RegistryOptions

if TYPE_CHECKING:
    import tomllib
else:
    tomllib = lazy_module("tomllib")  # loaded on first use, not by every fresh process

__all__ = [
    "ALL_CAPABILITIES",
    "DOCKER_HUB",
    "DOCKER_HUB_HOST",
    "RegistryHost",
    "TLSConfig",
    "configure_hosts",
    "host_directory",
    "is_localhost",
]

ALL_CAPABILITIES = frozenset({"pull", "resolve", "push", "referrers"})
DOCKER_HUB = "docker.io"
DOCKER_HUB_HOST = "registry-1.docker.io"


@attrs.frozen
class TLSConfig:
    """TLS settings of one host: verification, extra CAs, a client certificate."""

    verify: bool = True
    ca_files: tuple[str, ...] = ()
    client_cert: str | None = None
    client_key: str | None = None

    @property
    def configured(self) -> bool:
        """Whether anything beyond the defaults was set (containerd's "TLS configured")."""
        return not self.verify or bool(self.ca_files) or self.client_cert is not None


@attrs.frozen
class RegistryHost:
    """One endpoint serving a reference host's repositories.

    ``host`` is the URL's ``host[:port]``; ``path`` its API root (normally ``/v2``).
    ``http_fallback`` means: speak TLS, and if the server answers in plain HTTP,
    switch this host to HTTP. ``ns`` is the ``ns`` query parameter sent to mirrors.
    """

    scheme: str
    host: str
    path: str = "/v2"
    capabilities: frozenset[str] = ALL_CAPABILITIES
    tls: TLSConfig = TLSConfig()
    headers: tuple[tuple[str, str], ...] = ()
    http_fallback: bool = False
    ns: str = ""

    def can(self, capability: str) -> bool:
        """Whether this host may be used for ``capability`` (pull, resolve, push)."""
        return capability in self.capabilities

    @property
    def base_url(self) -> str:
        """``scheme://host/v2`` (no trailing slash)."""
        return f"{self.scheme}://{self.host}{self.path}"


def is_localhost(host: str) -> bool:
    """``localhost`` or a loopback IP, with or without a port."""
    name = _split_port(host)[0]
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name.strip("[]")).is_loopback
    except ValueError:
        return False


def _split_port(host: str) -> tuple[str, str]:
    if host.startswith("["):
        end = host.find("]")
        rest = host[end + 1 :]
        return host[: end + 1], rest[1:] if rest.startswith(":") else ""
    name, _, port = host.rpartition(":")
    if not name or not port.isdigit():
        return host, ""
    return name, port


def host_directory(host: str) -> str:
    """containerd's directory name for a host with a port: ``h:5000`` -> ``h_5000_``."""
    name, port = _split_port(host)
    return f"{name}_{port}_" if port else host


def _find_host_dir(hosts_dir: str, host: str) -> Path | None:
    root = Path(hosts_dir)
    for name in (host_directory(host), host, "_default"):
        candidate = root / name
        if candidate.is_dir():
            return candidate
    return None


def configure_hosts(ref_host: str, options: RegistryOptions) -> list[RegistryHost]:
    """The hosts to try, in order, for repositories of ``ref_host``."""
    if not ref_host or "/" in ref_host:
        raise errors.InvalidArgument(f"invalid registry host {ref_host!r}")
    defaults = TLSConfig(verify=not options.skip_verify, ca_files=(options.ca_file,) if options.ca_file else ())
    if options.hosts_dir:
        host_dir = _find_host_dir(options.hosts_dir, ref_host)
        if host_dir is not None:
            toml_path = host_dir / "hosts.toml"
            if toml_path.is_file():
                return _parse_hosts_toml(toml_path, ref_host, options, defaults)
            defaults = _docker_cert_dir(host_dir, defaults)
    return [_default_host(ref_host, options, defaults)]


def _default_host(ref_host: str, options: RegistryOptions, tls: TLSConfig) -> RegistryHost:
    host = DOCKER_HUB_HOST if ref_host == DOCKER_HUB else ref_host
    if options.plain_http:
        return RegistryHost("http", host, tls=tls)
    port = _split_port(host)[1]
    if is_localhost(host) and port not in ("", "443"):
        if port == "80":
            return RegistryHost("http", host, tls=tls)
        # containerd: loopback registries get TLS without verification unless a CA
        # was given, and fall back to HTTP when the port speaks plain HTTP.
        if not tls.ca_files:
            tls = attrs.evolve(tls, verify=False)
        return RegistryHost("https", host, tls=tls, http_fallback=True)
    return RegistryHost("https", host, tls=tls)


def _docker_cert_dir(host_dir: Path, tls: TLSConfig) -> TLSConfig:
    """Docker's ``certs.d`` files: ``*.crt`` CAs and ``*.cert`` + ``*.key`` client pairs."""
    cas = sorted(str(p) for p in host_dir.glob("*.crt"))
    cert = key = None
    for p in sorted(host_dir.glob("*.cert")):
        k = p.with_suffix(".key")
        if k.is_file():
            cert, key = str(p), str(k)
            break
    return attrs.evolve(tls, ca_files=tls.ca_files + tuple(cas), client_cert=cert, client_key=key)


def _parse_hosts_toml(path: Path, ref_host: str, options: RegistryOptions, defaults: TLSConfig) -> list[RegistryHost]:
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise errors.InvalidArgument(f"cannot read {path}: {exc}") from exc
    ctx = _TomlContext(path, ref_host, options, defaults)
    hosts: list[RegistryHost] = []
    tables = data.get("host", {})
    if not isinstance(tables, Mapping):
        raise errors.InvalidArgument(f"{path}: 'host' must be a table of [host.\"<url>\"] tables")
    for url, table in tables.items():
        if not isinstance(table, Mapping):
            raise errors.InvalidArgument(f"{path}: [host.{url!r}] must be a table")
        hosts.append(ctx.host(str(url), table))
    server = data.get("server")
    if server is not None and not isinstance(server, str):
        raise errors.InvalidArgument(f"{path}: 'server' must be a string URL")
    if server:
        hosts.append(ctx.host(server, data))
    else:
        default = _default_host(ref_host, options, defaults)
        hosts.append(ctx.apply_fields(default, data))
    return hosts


@attrs.define
class _TomlContext:
    path: Path
    ref_host: str
    options: RegistryOptions
    defaults: TLSConfig

    def fail(self, what: str) -> errors.InvalidArgument:
        return errors.InvalidArgument(f"{self.path}: {what}")

    def host(self, url: str, table: Mapping[str, Any]) -> RegistryHost:
        if "://" not in url:
            url = "https://" + url
        try:
            parts = urlsplit(url)
            parts.port  # noqa: B018 -- validates the port (ValueError when not a number in 0-65535)
        except ValueError as exc:  # "https://[::1" (unclosed IPv6 bracket), bad port
            raise self.fail(f"invalid host URL {url!r}: {exc}") from None
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise self.fail(f"invalid host URL {url!r} (want http[s]://host[:port][/path])")
        override = table.get("override_path", False)
        if not isinstance(override, bool):
            raise self.fail("override_path must be a boolean")
        path = posixpath.normpath(parts.path) if parts.path not in ("", "/") else ""
        if not override and not path.endswith("/v2"):
            path = path + "/v2"
        host = RegistryHost(parts.scheme, parts.netloc, path=path, tls=self.defaults)
        return self.apply_fields(host, table)

    def apply_fields(self, host: RegistryHost, table: Mapping[str, Any]) -> RegistryHost:
        tls = host.tls
        skip = table.get("skip_verify")
        if skip is not None:
            if not isinstance(skip, bool):
                raise self.fail("skip_verify must be a boolean")
            tls = attrs.evolve(tls, verify=not skip)
        if "ca" in table:
            tls = attrs.evolve(tls, ca_files=tls.ca_files + tuple(self._paths(table["ca"], "ca")))
        if "client" in table:
            tls = self._client(tls, table["client"])
        caps = self._capabilities(table.get("capabilities"))
        scheme, fallback = host.scheme, False
        port = _split_port(host.host)[1]
        if scheme == "http" and tls.configured and port != "80":
            # containerd: an http host with TLS settings is tried over TLS first.
            scheme, fallback = "https", True
        ns = ""
        if host.host != self.ref_host and not (self.ref_host == DOCKER_HUB and host.host == DOCKER_HUB_HOST):
            ns = self.ref_host
        return attrs.evolve(
            host,
            scheme=scheme,
            http_fallback=fallback or host.http_fallback,
            capabilities=caps,
            tls=tls,
            headers=self._headers(table.get("header")),
            ns=ns,
        )

    def _paths(self, value: object, name: str) -> list[str]:
        items = [value] if isinstance(value, str) else value
        if not isinstance(items, list) or not all(isinstance(v, str) for v in items):
            raise self.fail(f"{name} must be a path or a list of paths")
        return [os.path.join(self.path.parent, v) for v in items]

    def _client(self, tls: TLSConfig, value: object) -> TLSConfig:
        pairs: list[tuple[str, str | None]] = []
        items = [value] if isinstance(value, str) else value
        if not isinstance(items, list):
            raise self.fail("client must be a path, a list of paths or a list of [cert, key] pairs")
        for item in items:
            if isinstance(item, str):
                pairs.append((self._paths(item, "client")[0], None))
            elif isinstance(item, list) and len(item) == 2:
                cert, key = self._paths(item, "client")
                pairs.append((cert, key))
            else:
                raise self.fail("client entries must be paths or [cert, key] pairs")
        if not pairs:
            return tls
        # urllib3 presents one certificate per connection pool: the first pair wins.
        return attrs.evolve(tls, client_cert=pairs[0][0], client_key=pairs[0][1])

    def _capabilities(self, value: object) -> frozenset[str]:
        if value is None:
            return ALL_CAPABILITIES
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise self.fail("capabilities must be a list of strings")
        unknown = set(value) - ALL_CAPABILITIES
        if unknown:
            raise self.fail(f"unknown capabilities {sorted(unknown)} (use pull, resolve, push, referrers)")
        return frozenset(value)

    def _headers(self, value: object) -> tuple[tuple[str, str], ...]:
        if value is None:
            return ()
        if not isinstance(value, Mapping):
            raise self.fail("header must be a table")
        out: list[tuple[str, str]] = []
        for name, v in value.items():
            if isinstance(v, str):
                out.append((str(name), v))
            elif isinstance(v, list) and all(isinstance(x, str) for x in v):
                out.append((str(name), ", ".join(v)))
            else:
                raise self.fail(f"header {name!r} must be a string or a list of strings")
        return tuple(out)
