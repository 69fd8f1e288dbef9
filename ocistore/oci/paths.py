"""Member names of layer tars, cleaned as the OCI image spec's changeset rules read them."""

from __future__ import annotations

from ocistore import errors

__all__ = ["WHITEOUT_META_PREFIX", "WHITEOUT_OPAQUE", "WHITEOUT_PREFIX", "clean_member_name", "whiteout_target"]

WHITEOUT_PREFIX = ".wh."
"""A layer member whose base name starts with this hides (or marks) something of the lower layers."""
WHITEOUT_META_PREFIX = ".wh..wh."
"""AUFS bookkeeping names (``.wh..wh.plnk``...), never part of the file system, but for the opaque marker."""
WHITEOUT_OPAQUE = ".wh..wh..opq"
"""The opaque marker: the lower layers' contents of its directory are hidden."""


def clean_member_name(name: str, what: str = "member") -> list[str]:
    """The components of a member name, cleaned; ``[]`` for the root itself.

    A leading ``/`` is dropped (absolute names are re-rooted); ``.`` and empty
    components vanish; ``..`` removes the previous component and raises
    :class:`~ocistore.errors.UnsafeArchive` when it would climb above the root (Go's
    ``path.Clean`` silently drops it; refusing is safer).
    """
    parts = name.split("/")
    if "" not in parts and "." not in parts and ".." not in parts:
        return parts  # the common case: nothing to clean
    out: list[str] = []
    for part in parts:
        if part in ("", "."):
            continue
        if part == "..":
            if not out:
                raise errors.UnsafeArchive(f"{what} {name!r} escapes the root through '..'")
            out.pop()
        else:
            out.append(part)
    return out


def whiteout_target(base: str, member: str) -> str | None:
    """What a base name starting with ``.wh.`` hides, by the OCI layer rules.

    The name of the hidden sibling for ``.wh.<name>``; ``WHITEOUT_OPAQUE`` for the opaque
    marker (every lower entry of the directory); None for other AUFS bookkeeping names,
    which are skipped. UnsafeArchive for a whiteout that names no entry (``.wh.``,
    ``.wh..``, ``.wh...``); ``member`` is the full member name, for the message.
    """
    if base == WHITEOUT_OPAQUE:
        return WHITEOUT_OPAQUE
    if base.startswith(WHITEOUT_META_PREFIX):
        return None
    name = base[len(WHITEOUT_PREFIX):]
    if name in ("", ".", ".."):
        raise errors.UnsafeArchive(f"invalid whiteout {member!r}: it names no entry of its directory")
    return name
