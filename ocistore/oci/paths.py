"""Member names of layer tars, cleaned as the OCI image spec's changeset rules read them."""

from __future__ import annotations

from ocistore import errors

__all__ = ["clean_member_name"]


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
