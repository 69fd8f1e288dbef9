"""Which image records a distribution-API repository name means.

A store names its images by full reference (``docker.io/library/debian:gzip``,
``127.0.0.1:5000/debian:gzip``); a registry request names a repository (``library/debian``)
and, when it comes from containerd acting on a mirror configuration, the registry it was
meant for (``?ns=docker.io``). The mapping, in order:

1. ``?ns=<registry>``: the images named ``<registry>/<name>:<tag>`` (normalised, so
   ``ns=docker.io`` + ``debian`` is ``docker.io/library/debian``), and nothing else;
2. a name whose first component is a host (``docker.io/library/debian``,
   ``ghcr.io/org/app``): the images of that full name, when there are any;
3. with a default registry configured: ``<default>/<name>``;
4. otherwise the images whose repository path is ``<name>`` in any registry (``debian``
   also finds Docker Hub's ``library/debian``). When several registries hold the same
   repository path, a tag they all point at the same digest is served, and a tag that
   differs between them is refused as ambiguous (ask with ``?ns=`` or the full name).
"""

from __future__ import annotations

from collections.abc import Iterable

import attrs

from ocistore import errors
from ocistore.metadata.images import Image, ImageStore
from ocistore.oci.descriptor import Descriptor
from ocistore.oci.reference import DEFAULT_DOMAIN, Reference, parse_reference

__all__ = ["Entry", "Repository", "find_repository"]

_OFFICIAL = "library/"


@attrs.frozen
class Entry:
    """One tagged image record of a repository."""

    ref: Reference
    image: Image

    @property
    def tag(self) -> str:
        """The record's tag."""
        return self.ref.tag or ""


@attrs.frozen
class Repository:
    """The tagged images a request's repository name selects (possibly from several registries)."""

    name: str
    entries: tuple[Entry, ...]

    @property
    def exists(self) -> bool:
        """Whether any image record matched."""
        return bool(self.entries)

    def has(self, tag: str) -> bool:
        """Whether any matched record has ``tag``."""
        return any(e.tag == tag for e in self.entries)

    def tags(self) -> list[str]:
        """Every tag, sorted lexically (the distribution spec's order), each once."""
        return sorted({e.tag for e in self.entries})

    def resolve(self, tag: str) -> Descriptor:
        """The target of ``tag``; NotFound when absent or ambiguous (different digests)."""
        found = [e for e in self.entries if e.tag == tag]
        if not found:
            raise errors.NotFound(f"manifest unknown: {self.name}:{tag} is not in this store")
        digests = {e.image.target.digest for e in found}
        if len(digests) > 1:
            names = ", ".join(sorted(e.image.name for e in found))
            raise errors.NotFound(
                f"{self.name}:{tag} is ambiguous in this store ({names}); ask with ?ns=<registry> "
                "or by the full name"
            )
        return found[0].image.target


def _tagged(images: Iterable[Image]) -> list[Entry]:
    out = []
    for img in images:
        try:
            ref = parse_reference(img.name)
        except errors.InvalidArgument:
            continue  # a record created under a free-form name: not addressable as a repository
        if ref.tag and ref.digest is None:
            out.append(Entry(ref, img))
    return out


def _full_name(domain: str, path: str) -> str | None:
    try:
        return parse_reference(f"{domain}/{path}").name
    except errors.InvalidArgument:
        return None


def _looks_like_host(component: str) -> bool:
    return component == "localhost" or "." in component


def find_repository(images: ImageStore, name: str, ns: str | None = None,
                    default_registry: str | None = None) -> Repository:
    """The images the repository ``name`` (already validated) selects; see the module docstring."""
    entries = _tagged(images.list())
    if ns:
        want = _full_name(ns, name)
        return Repository(name, tuple(e for e in entries if e.ref.name == want))
    first = name.partition("/")[0]
    if "/" in name and _looks_like_host(first):
        want = _full_name(first, name.partition("/")[2])
        full = [e for e in entries if e.ref.name == want]
        if full:
            return Repository(name, tuple(full))
    if default_registry:
        want = _full_name(default_registry, name)
        return Repository(name, tuple(e for e in entries if e.ref.name == want))
    return Repository(name, tuple(
        e for e in entries
        if e.ref.path == name or (e.ref.domain == DEFAULT_DOMAIN and e.ref.path == _OFFICIAL + name)
    ))
