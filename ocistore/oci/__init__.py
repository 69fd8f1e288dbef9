"""Pure OCI data: digests, descriptors, media types, platforms, references, manifests."""

from __future__ import annotations

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
