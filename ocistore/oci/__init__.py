"""Pure OCI data: digests, descriptors, media types, platforms, references, manifests."""

from __future__ import annotations

from ocistore.oci.descriptor import Descriptor
from ocistore.oci.digest import EMPTY_DIGEST, digest_bytes, validate_digest
from ocistore.oci.platform import Platform

__all__ = ["EMPTY_DIGEST", "Descriptor", "Platform", "digest_bytes", "validate_digest"]
