"""Image references (``[host[:port]/]path[:tag][@digest]``) with Docker's normalisation.

``nginx`` becomes ``docker.io/library/nginx:latest``, ``user/app`` becomes
``docker.io/user/app:latest`` and ``index.docker.io`` is spelled ``docker.io``, as
``docker pull`` and containerd's CRI do. The grammar is that of the distribution project's
``reference`` package; digests must be sha256 or sha512 (what ocistore can verify).
"""

from __future__ import annotations

import re

import attrs

from ocistore import errors
from ocistore.oci.digest import validate_digest

__all__ = [
    "DEFAULT_DOMAIN",
    "DEFAULT_TAG",
    "MAX_NAME_LENGTH",
    "Reference",
    "normalize_name",
    "parse_reference",
    "registry_host",
    "validate_domain",
    "validate_repository",
    "validate_tag",
]

DEFAULT_DOMAIN = "docker.io"
DEFAULT_TAG = "latest"
MAX_NAME_LENGTH = 255  # characters in the repository path (distribution's limit)

_LEGACY_DOMAIN = "index.docker.io"
_DOCKER_REGISTRY = "registry-1.docker.io"
_OFFICIAL_PREFIX = "library/"

_ALNUM = r"[a-z0-9]+"
_SEPARATOR = r"(?:[._]|__|-+)"
_PATH_COMPONENT = f"{_ALNUM}(?:{_SEPARATOR}{_ALNUM})*"
_PATH = re.compile(f"{_PATH_COMPONENT}(?:/{_PATH_COMPONENT})*\\Z")
_DOMAIN_COMPONENT = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_DOMAIN = re.compile(f"(?:{_DOMAIN_COMPONENT}(?:\\.{_DOMAIN_COMPONENT})*|\\[[a-fA-F0-9:]+\\])(?::[0-9]+)?\\Z")
_TAG = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}\Z")
_HEX64 = re.compile(r"[a-f0-9]{64}\Z")


def _bad(ref: str, why: str) -> errors.InvalidArgument:
    return errors.InvalidArgument(f"invalid image reference {ref!r}: {why}")


@attrs.frozen
class Reference:
    """A normalised image reference.

    ``str(ref)`` gives ``domain/path[:tag][@digest]``; a reference that had neither a tag
    nor a digest gets the tag ``latest``.
    """

    domain: str
    path: str
    tag: str | None = None
    digest: str | None = None

    @property
    def repository(self) -> str:
        """The repository path within the registry (``library/nginx``)."""
        return self.path

    @property
    def name(self) -> str:
        """``domain/path`` without tag or digest (``docker.io/library/nginx``)."""
        return f"{self.domain}/{self.path}"

    @property
    def locator(self) -> str:
        """containerd's locator: ``domain/path`` (same as :attr:`name`)."""
        return self.name

    @property
    def object(self) -> str:
        """What to ask the registry for: the digest if there is one, else the tag."""
        return self.digest or self.tag or ""

    @property
    def registry_host(self) -> str:
        """The host to contact for this reference (``docker.io`` -> ``registry-1.docker.io``)."""
        return registry_host(self.domain)

    @property
    def familiar_name(self) -> str:
        """The short form Docker prints (``nginx:latest``, ``user/app@sha256:...``)."""
        path = self.path
        if self.domain == DEFAULT_DOMAIN:
            short = path.removeprefix(_OFFICIAL_PREFIX)
            if short != path and "/" not in short:
                path = short
            return self._with_object(path)
        return self._with_object(self.name)

    def _with_object(self, name: str) -> str:
        out = name
        if self.tag:
            out += f":{self.tag}"
        if self.digest:
            out += f"@{self.digest}"
        return out

    def __str__(self) -> str:
        return self._with_object(self.name)


def registry_host(domain: str) -> str:
    """The host serving a reference domain: Docker Hub's ``docker.io`` is ``registry-1.docker.io``."""
    return _DOCKER_REGISTRY if domain in (DEFAULT_DOMAIN, _LEGACY_DOMAIN) else domain


def _split_domain(ref: str, name: str) -> tuple[str, str]:
    """Docker's rule: the first component is a host if it looks like one."""
    first, slash, rest = name.partition("/")
    if not slash:
        return DEFAULT_DOMAIN, _OFFICIAL_PREFIX + name
    if first == _LEGACY_DOMAIN:
        first = DEFAULT_DOMAIN
    elif first != "localhost" and not any(c in first for c in ".:") and first == first.lower():
        return DEFAULT_DOMAIN, name
    if not rest:
        raise _bad(ref, "repository path is empty")
    if first == DEFAULT_DOMAIN and "/" not in rest:
        rest = _OFFICIAL_PREFIX + rest
    return first, rest


def _split_object(ref: str) -> tuple[str, str | None, str | None]:
    """``name``, tag and digest of a reference string (not validated yet)."""
    name, at, digest = ref.partition("@")
    if at:
        try:
            validate_digest(digest)
        except errors.InvalidArgument as exc:
            raise _bad(ref, f"bad digest {digest!r} (expected sha256:<64 hex> or sha512:<128 hex>)") from exc
    colon = name.rfind(":")
    tag: str | None = None
    if colon > name.rfind("/"):
        name, tag = name[:colon], name[colon + 1 :]
        if not _TAG.match(tag):
            raise _bad(
                ref,
                f"bad tag {tag!r} (up to 128 characters of letters, digits, '_', '.', '-', "
                "not starting with '.' or '-')",
            )
    return name, tag, digest if at else None


def parse_reference(ref: str) -> Reference:
    """Parse and normalise an image reference; malformed ones raise InvalidArgument.

    Accepted: ``nginx``, ``user/app:1.0``, ``ghcr.io/o/r@sha256:<hex>``,
    ``localhost:5000/a/b:tag@sha256:<hex>``, ``127.0.0.1:5000/debian:gzip``.
    """
    if not isinstance(ref, str):
        raise errors.InvalidArgument(f"image reference must be a string, got {type(ref).__name__}")
    if not ref:
        raise _bad(ref, "reference is empty")
    if ref != ref.strip():
        raise _bad(ref, "leading or trailing whitespace")
    if "://" in ref:
        raise _bad(ref, "a reference has no URL scheme; write 'host/path:tag'")
    if _HEX64.match(ref):
        raise _bad(ref, "a 64-character hex string is an image ID, not a repository name")
    name, tag, digest = _split_object(ref)
    if not name:
        raise _bad(ref, "repository name is empty")
    domain, path = _split_domain(ref, name)
    if not _DOMAIN.match(domain):
        raise _bad(ref, f"bad registry host {domain!r}")
    port = domain.rpartition(":")[2] if not domain.endswith("]") and ":" in domain else ""
    if port and not 0 < int(port) < 65536:
        raise _bad(ref, f"bad registry host {domain!r}: port {port} is not between 1 and 65535")
    if path != path.lower():
        raise _bad(ref, f"repository name {name!r} must be lowercase")
    if not _PATH.match(path):
        raise _bad(
            ref,
            f"bad repository name {path!r} (lowercase letters and digits, separated by '/', "
            "'.', '_', '__' or '-')",
        )
    if len(path) > MAX_NAME_LENGTH:
        raise _bad(ref, f"repository name is {len(path)} characters long, the limit is {MAX_NAME_LENGTH}")
    if tag is None and digest is None:
        tag = DEFAULT_TAG
    return Reference(domain=domain, path=path, tag=tag, digest=digest)


def validate_repository(path: str) -> str:
    """``path`` if it is a valid repository path (``library/debian``), else InvalidArgument.

    The distribution spec's ``<name>`` grammar: lowercase alphanumeric components separated
    by ``.``, ``_``, ``__`` or dashes, joined by ``/``, at most 255 characters; no ``..``
    component, no percent-escapes, no empty component can pass.
    """
    if not isinstance(path, str) or not path or len(path) > MAX_NAME_LENGTH or not _PATH.match(path):
        raise errors.InvalidArgument(
            f"invalid repository name {str(path)[:300]!r}: lowercase letters and digits, separated by '/', "
            f"'.', '_', '__' or '-', at most {MAX_NAME_LENGTH} characters"
        )
    return path


def validate_tag(tag: str) -> str:
    """``tag`` if it is a valid tag (``[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}``), else InvalidArgument."""
    if not isinstance(tag, str) or not _TAG.match(tag):
        raise errors.InvalidArgument(
            f"invalid tag {str(tag)[:300]!r}: up to 128 letters, digits, '_', '.', '-', "
            "not starting with '.' or '-'"
        )
    return tag


def validate_domain(domain: str) -> str:
    """``domain`` if it is a valid registry host (``docker.io``, ``127.0.0.1:5000``), else InvalidArgument."""
    if not isinstance(domain, str) or len(domain) > 255 or not _DOMAIN.match(domain):
        raise errors.InvalidArgument(f"invalid registry host {str(domain)[:300]!r}")
    return domain


def normalize_name(name: str) -> str | None:
    """The stored image name for a reference (``nginx`` -> ``docker.io/library/nginx:latest``),
    or None when ``name`` is not a valid reference. A fully qualified name is unchanged."""
    try:
        return str(parse_reference(name))
    except errors.InvalidArgument:
        return None
