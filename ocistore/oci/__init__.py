"""Pure OCI data: digests, descriptors, media types, platforms, references, manifests."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ocistore.oci.descriptor import Descriptor
    from ocistore.oci.digest import EMPTY_DIGEST, digest_bytes, validate_digest
    from ocistore.oci.identity import chain_id, chain_ids
    from ocistore.oci.manifest import (
        MAX_CONFIG_SIZE,
        MAX_MANIFEST_SIZE,
        History,
        ImageConfig,
        Index,
        Manifest,
        children,
        parse_any,
        parse_config,
        parse_index,
        parse_manifest,
    )
    from ocistore.oci.platform import (
        Platform,
        PlatformMatcher,
        all_platforms,
        any_of,
        matcher_for,
        normalize_arch,
        only,
        only_strict,
        ordered,
        preference_key,
    )
    from ocistore.oci.reference import Reference, parse_reference, registry_host

__all__ = [
    # digests and descriptors
    "EMPTY_DIGEST",
    "Descriptor",
    "digest_bytes",
    "validate_digest",
    # layer identity
    "chain_id",
    "chain_ids",
    # platforms
    "Platform",
    "PlatformMatcher",
    "all_platforms",
    "any_of",
    "matcher_for",
    "normalize_arch",
    "only",
    "only_strict",
    "ordered",
    "preference_key",
    # references
    "Reference",
    "parse_reference",
    "registry_host",
    # manifests
    "MAX_CONFIG_SIZE",
    "MAX_MANIFEST_SIZE",
    "History",
    "ImageConfig",
    "Index",
    "Manifest",
    "children",
    "parse_any",
    "parse_config",
    "parse_index",
    "parse_manifest",
]

# The submodules load on first access of one of their names: importing one of them
# (``ocistore.oci.descriptor``) does not create the records of all the others (manifests,
# references, matchers), which a short-lived CLI call would pay for.
_LAZY = {
    "Descriptor": "ocistore.oci.descriptor",
    "EMPTY_DIGEST": "ocistore.oci.digest",
    "digest_bytes": "ocistore.oci.digest",
    "validate_digest": "ocistore.oci.digest",
    "chain_id": "ocistore.oci.identity",
    "chain_ids": "ocistore.oci.identity",
    "MAX_CONFIG_SIZE": "ocistore.oci.manifest",
    "MAX_MANIFEST_SIZE": "ocistore.oci.manifest",
    "History": "ocistore.oci.manifest",
    "ImageConfig": "ocistore.oci.manifest",
    "Index": "ocistore.oci.manifest",
    "Manifest": "ocistore.oci.manifest",
    "children": "ocistore.oci.manifest",
    "parse_any": "ocistore.oci.manifest",
    "parse_config": "ocistore.oci.manifest",
    "parse_index": "ocistore.oci.manifest",
    "parse_manifest": "ocistore.oci.manifest",
    "Platform": "ocistore.oci.platform",
    "PlatformMatcher": "ocistore.oci.platform",
    "all_platforms": "ocistore.oci.platform",
    "any_of": "ocistore.oci.platform",
    "matcher_for": "ocistore.oci.platform",
    "normalize_arch": "ocistore.oci.platform",
    "only": "ocistore.oci.platform",
    "only_strict": "ocistore.oci.platform",
    "ordered": "ocistore.oci.platform",
    "preference_key": "ocistore.oci.platform",
    "Reference": "ocistore.oci.reference",
    "parse_reference": "ocistore.oci.reference",
    "registry_host": "ocistore.oci.reference",
}


_SUBMODULES = frozenset(("descriptor", "digest", "identity", "imagelayout", "manifest", "mediatypes", "paths",
                         "platform", "reference"))


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is not None:
        value = getattr(importlib.import_module(module), name)
    elif name in _SUBMODULES:  # ``ocistore.oci.mediatypes`` after a bare ``import ocistore.oci``
        value = importlib.import_module(f"{__name__}.{name}")
    else:
        raise AttributeError(f"module 'ocistore.oci' has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(__all__) | set(globals()))
