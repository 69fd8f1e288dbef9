"""A containerd ``hosts.toml`` that names an ``ocistore serve`` as a mirror of an upstream registry.

containerd (1.5+, ``config_path``; ``ctr --hosts-dir``) looks for
``<config_path>/<registry host>/hosts.toml``. The ``[host."<mirror>"]`` entries are tried in
order before ``server``; a mirror answering 404 makes containerd go on to the next host, so
images that are not in the store still come from the upstream. containerd adds
``?ns=<registry host>`` to every request it sends to a mirror, which the server uses to
find the image record (``docker.io/library/debian:12``).
"""

from __future__ import annotations

import ipaddress

from ocistore import errors
from ocistore.oci.reference import DEFAULT_DOMAIN, registry_host, validate_domain

__all__ = ["hosts_toml", "upstream_server"]


def _split_port(host: str) -> tuple[str, str]:
    """``("127.0.0.1", "5000")`` of ``127.0.0.1:5000``; ``("::1", "")`` of ``[::1]``."""
    if host.startswith("["):
        name, _, rest = host[1:].partition("]")
        return name, rest.removeprefix(":")
    name, sep, port = host.rpartition(":")
    return (name, port) if sep else (host, "")


def _is_loopback(name: str) -> bool:
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def upstream_server(upstream: str) -> tuple[str, str]:
    """``(registry host, server URL)`` of an upstream given as a host or as a URL.

    ``docker.io`` is served by ``https://registry-1.docker.io``; a loopback host with a port
    other than 443 is spoken to over plain HTTP (containerd's default for such hosts); every
    other host over HTTPS. A URL (``http://10.0.0.5:5000``) is used as given.
    """
    if "://" in upstream:
        scheme, _, rest = upstream.partition("://")
        if scheme not in ("http", "https") or not rest:
            raise errors.InvalidArgument(f"invalid upstream {upstream!r}: use a host or an http(s):// URL")
        host = rest.split("/", 1)[0]
        validate_domain(host)
        return host, upstream.rstrip("/")
    validate_domain(upstream)
    if upstream in (DEFAULT_DOMAIN, "index.docker.io"):
        return DEFAULT_DOMAIN, f"https://{registry_host(DEFAULT_DOMAIN)}"
    name, port = _split_port(upstream)
    scheme = "http" if _is_loopback(name) and port not in ("", "443") else "https"
    return upstream, f"{scheme}://{upstream}"


def hosts_toml(mirror_url: str, upstream: str = DEFAULT_DOMAIN, *, capabilities: tuple[str, ...] = ("pull", "resolve"),
               ca: str | None = None, skip_verify: bool = False) -> str:
    """The ``hosts.toml`` text naming ``mirror_url`` a mirror of ``upstream`` (a host or a URL)."""
    host, server = upstream_server(upstream)
    lines = [
        f"# containerd: save as <config_path>/{host}/hosts.toml (ctr: --hosts-dir <config_path>)",
        f'server = "{server}"',
        "",
        f'[host."{mirror_url}"]',
        "  capabilities = [" + ", ".join(f'"{c}"' for c in capabilities) + "]",
    ]
    if ca:
        lines.append(f'  ca = "{ca}"')
    elif mirror_url.startswith("https://"):
        lines.append('  # ca = "/path/to/ca.pem"  (when the certificate is not signed by a CA containerd trusts)')
    if skip_verify:
        lines.append("  skip_verify = true")
    return "\n".join(lines) + "\n"
