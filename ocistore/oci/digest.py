"""Digests: ``"<algorithm>:<hex>"`` strings, validated before they are ever used as paths."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Protocol

from ocistore import errors
from ocistore._lazy import lazy_module

if TYPE_CHECKING:
    import hashlib
else:
    hashlib = lazy_module("hashlib")  # OpenSSL loads when something is hashed, not on validating a digest

__all__ = [
    "ALGORITHMS",
    "EMPTY_DIGEST",
    "Hasher",
    "algorithm_of",
    "digest_bytes",
    "encoded",
    "new_hasher",
    "validate_digest",
]

# algorithm -> length of the hex encoding
ALGORITHMS: dict[str, int] = {"sha256": 64, "sha512": 128}
EMPTY_DIGEST = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"

_HEX = re.compile(r"[a-f0-9]+\Z")


class Hasher(Protocol):
    """The part of ``hashlib`` hash objects ocistore uses."""

    def update(self, data: bytes, /) -> None:
        """Hash more bytes."""
    def hexdigest(self) -> str:
        """The hex digest of the bytes so far (the hasher stays usable)."""
    def copy(self) -> Hasher:
        """An independent hasher in the same state."""


def validate_digest(digest: object) -> str:
    """Return ``digest`` if it is a well-formed sha256/sha512 digest, else raise InvalidArgument."""
    if not isinstance(digest, str):
        raise errors.InvalidArgument(f"digest must be a string, got {type(digest).__name__}")
    alg, sep, hexpart = digest.partition(":")
    if not sep:
        raise errors.InvalidArgument(f"invalid digest {digest!r}: expected '<algorithm>:<hex>'")
    size = ALGORITHMS.get(alg)
    if size is None:
        raise errors.InvalidArgument(
            f"invalid digest {digest!r}: unsupported algorithm {alg!r} (use sha256 or sha512)"
        )
    if len(hexpart) != size or not _HEX.match(hexpart):
        raise errors.InvalidArgument(
            f"invalid digest {digest!r}: {alg} needs {size} lowercase hex characters"
        )
    return digest


def algorithm_of(digest: str) -> str:
    """The algorithm part of a valid digest."""
    return validate_digest(digest).partition(":")[0]


def encoded(digest: str) -> str:
    """The hex part of a valid digest."""
    return validate_digest(digest).partition(":")[2]


def new_hasher(algorithm: str = "sha256") -> Hasher:
    """A fresh hashlib object for ``algorithm``."""
    if algorithm not in ALGORITHMS:
        raise errors.InvalidArgument(f"unsupported digest algorithm {algorithm!r}")
    return hashlib.new(algorithm)


def digest_bytes(data: bytes, algorithm: str = "sha256") -> str:
    """Digest of ``data``."""
    h = new_hasher(algorithm)
    h.update(data)
    return f"{algorithm}:{h.hexdigest()}"
