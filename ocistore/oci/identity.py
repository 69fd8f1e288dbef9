"""Layer identity: diffIDs of uncompressed layers folded into chain IDs.

The chain ID of layer ``i`` names the filesystem obtained by applying layers ``0..i`` in
order; snapshotters key committed layers by it (OCI image-spec ``identity/chainid.go``).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

from ocistore.oci.digest import validate_digest

__all__ = ["chain_id", "chain_ids"]


def chain_ids(diff_ids: Iterable[str]) -> list[str]:
    """The chain ID of every prefix of ``diff_ids``.

    ``chain[0] = diff[0]`` and ``chain[i] = "sha256:" + sha256(chain[i-1] + " " + diff[i])``.
    A malformed diffID raises InvalidArgument.
    """
    out: list[str] = []
    for diff_id in diff_ids:
        validate_digest(diff_id)
        if not out:
            out.append(diff_id)
            continue
        joined = f"{out[-1]} {diff_id}".encode()
        out.append("sha256:" + hashlib.sha256(joined).hexdigest())
    return out


def chain_id(diff_ids: Iterable[str]) -> str:
    """The chain ID of the whole stack (the image's top snapshot); ``""`` for no layers."""
    ids = chain_ids(diff_ids)
    return ids[-1] if ids else ""
