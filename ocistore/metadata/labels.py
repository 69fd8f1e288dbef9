"""Label rules shared by every record kind (containerd ``pkg/labels``)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from ocistore import errors

__all__ = ["MAX_LABEL_SIZE", "apply_fieldpaths", "validate_labels"]

MAX_LABEL_SIZE = 4096


def validate_labels(labels: Mapping[str, str] | None, what: str = "") -> dict[str, str]:
    """Check types and the 4096-byte key+value limit; drop empty values (they mean delete)."""
    out: dict[str, str] = {}
    for k, v in (labels or {}).items():
        if not isinstance(k, str) or not isinstance(v, str):
            raise errors.InvalidArgument(f"{what}label {k!r}: keys and values must be strings")
        if not k:
            raise errors.InvalidArgument(f"{what}label key must not be empty")
        size = len(k.encode()) + len(v.encode())
        if size > MAX_LABEL_SIZE:
            raise errors.InvalidArgument(
                f"{what}label {k!r}: label key and value length ({size} bytes) greater than "
                f"maximum size ({MAX_LABEL_SIZE} bytes)"
            )
        if v != "":
            out[k] = v
    return out


def apply_fieldpaths(
    current: Mapping[str, str], new: Mapping[str, str], fieldpaths: Sequence[str] | None, what: str,
    allowed: tuple[str, ...] = ("labels",),
) -> tuple[dict[str, str], list[str]]:
    """Merge labels the containerd way.

    No fieldpaths or ``labels``: replace all labels; ``labels.<k>``: set or delete one key.
    Returns the new labels and the fieldpaths that were not about labels (for the caller),
    raising InvalidArgument for paths outside ``allowed``.
    """
    if not fieldpaths:
        return validate_labels(new, what), []
    labels = dict(current)
    rest: list[str] = []
    for path in fieldpaths:
        if path == "labels":
            labels = dict(new)
        elif path.startswith("labels."):
            k = path[len("labels."):]
            v = new.get(k, "")
            if v:
                labels[k] = v
            else:
                labels.pop(k, None)
        elif path.split(".", 1)[0] in allowed:
            rest.append(path)
        else:
            raise errors.InvalidArgument(f"{what}cannot update field {path!r}")
    return validate_labels(labels, what), rest
