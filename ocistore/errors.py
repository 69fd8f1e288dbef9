"""Error kinds of ocistore.

Every public error is one of a small, fixed set of kinds, modelled on containerd's
``errdefs``: callers branch on the kind (``except errors.NotFound``), never on the
message. Each kind also subclasses the builtin whose meaning it shares, so code that
catches ``LookupError`` or ``ValueError`` keeps working.
"""

from __future__ import annotations

__all__ = [
    "AlreadyExists",
    "Cancelled",
    "DigestMismatch",
    "Error",
    "FailedPrecondition",
    "InvalidEStargz",
    "InvalidArgument",
    "NotFound",
    "NotImplementedKind",
    "PartialContent",
    "RangeNotSupported",
    "RegistryError",
    "SizeLimitExceeded",
    "Unauthorized",
    "Unavailable",
    "UnsafeArchive",
]


class Error(Exception):
    """Root of every error ocistore raises on purpose."""


class NotFound(Error, LookupError):
    """The named object does not exist (in this namespace)."""


class AlreadyExists(Error):
    """An object with this name or digest already exists."""


class FailedPrecondition(Error):
    """The object is in a state that does not allow the operation."""


class Unavailable(Error):
    """The resource is busy (for example an ingest ref locked by another writer)."""


class Cancelled(Error):
    """The operation was cancelled by its caller (``cancel=`` event); what it downloaded is kept
    as resumable ingests, and nothing half-done is committed."""


class InvalidArgument(Error, ValueError):
    """An argument, a record or some input data is malformed."""


class NotImplementedKind(Error, NotImplementedError):
    """The operation is not supported (an unknown lease resource type, ...)."""


class DigestMismatch(FailedPrecondition):
    """Bytes do not hash to the digest they were announced with."""

    def __init__(self, message: str, expected: str = "", actual: str = "") -> None:
        super().__init__(message)
        self.expected = expected
        self.actual = actual

    def __reduce__(self) -> tuple[type[DigestMismatch], tuple[str, str, str]]:
        return (type(self), (str(self), self.expected, self.actual))


class Unauthorized(Error, PermissionError):
    """A registry refused the credentials (or asked for some and none were given)."""


class RegistryError(Error):
    """A registry answered with an error status.

    ``status`` is the HTTP status code and ``codes`` the error codes of the registry's
    JSON error body (``MANIFEST_UNKNOWN``, ``DENIED``, ...), possibly empty.
    """

    def __init__(self, message: str, status: int = 0, codes: tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.status = status
        self.codes = tuple(codes)

    def __reduce__(self) -> tuple[type[RegistryError], tuple[str, int, tuple[str, ...]]]:
        return (type(self), (str(self), self.status, self.codes))


class UnsafeArchive(InvalidArgument):
    """A layer or archive tries to escape its root (``..``, link escapes, bad whiteouts)."""


class SizeLimitExceeded(InvalidArgument):
    """Input is larger than the limit allowed for it (manifest size, header size, ...)."""


class InvalidEStargz(InvalidArgument):
    """An eStargz layer's footer or table of contents is malformed or does not describe the layer.

    Raised when a layer whose descriptor carries ``containerd.io/snapshot/stargz/toc.digest``
    is applied: offsets outside the blob, overlapping chunks, a TOC that disagrees with the
    tar stream. A digest that lies (TOC, chunk, uncompressed size) is a ``DigestMismatch``.
    """


class PartialContent(FailedPrecondition):
    """A blob is only partially in the store: a lazily fetched eStargz layer (``fetch(ref,
    lazy=True)``) of which only the footer, the TOC and the chunks read so far are here.

    Its bytes cannot be read as a whole; ``fetch`` or ``pull`` the image again (without
    ``lazy``) to complete it. ``digest`` names the blob.
    """

    def __init__(self, message: str, digest: str = "") -> None:
        super().__init__(message)
        self.digest = digest

    def __reduce__(self) -> tuple[type[PartialContent], tuple[str, str]]:
        return (type(self), (str(self), self.digest))


class RangeNotSupported(NotImplementedKind):
    """A registry answered a ranged ``GET`` with the whole blob (``200``) or refused ranges.

    Lazy fetches fall back to downloading the whole blob when they see it.
    """
