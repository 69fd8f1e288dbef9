"""Content descriptors (OCI ``application/vnd.oci.descriptor.v1+json``)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import attrs

from ocistore import errors
from ocistore.oci.digest import validate_digest
from ocistore.oci.platform import Platform

__all__ = ["Descriptor"]


def _frozen_map(value: Mapping[str, str] | None) -> dict[str, str]:
    return dict(value or {})


def _tuple(value: Iterable[str]) -> tuple[str, ...]:
    # not ``converter=tuple``: attrs reads a converter's signature, and a builtin's costs
    # inspect's tokenizer (its regexes compile in each fresh process)
    return tuple(value)


@attrs.frozen
class Descriptor:
    """A typed pointer to content: media type, digest and size (and optional extras)."""

    media_type: str
    digest: str = attrs.field(validator=lambda _i, _a, v: validate_digest(v))
    size: int
    annotations: dict[str, str] = attrs.field(factory=dict, converter=_frozen_map, hash=False)
    platform: Platform | None = None
    urls: tuple[str, ...] = attrs.field(default=(), converter=_tuple)
    artifact_type: str | None = None

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Descriptor:
        """From OCI JSON (camelCase keys); malformed input raises InvalidArgument."""
        if not isinstance(data, Mapping):
            raise errors.InvalidArgument("descriptor must be a JSON object")
        media_type = data.get("mediaType")
        digest = data.get("digest")
        size = data.get("size")
        if not isinstance(media_type, str) or not media_type:
            raise errors.InvalidArgument(f"descriptor {digest!r} has no mediaType")
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise errors.InvalidArgument(f"descriptor {digest!r} has an invalid size {size!r}")
        validate_digest(digest)
        annotations = data.get("annotations") or {}
        if not isinstance(annotations, Mapping) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in annotations.items()
        ):
            raise errors.InvalidArgument(f"descriptor {digest}: annotations must map strings to strings")
        urls = data.get("urls") or ()
        if not isinstance(urls, list | tuple) or not all(isinstance(u, str) for u in urls):
            raise errors.InvalidArgument(f"descriptor {digest}: urls must be a list of strings")
        plat = data.get("platform")
        artifact_type = data.get("artifactType")
        return cls(
            media_type=media_type,
            digest=str(digest),
            size=size,
            annotations=dict(annotations),
            platform=Platform.from_json(plat) if plat is not None else None,
            urls=tuple(urls),
            artifact_type=artifact_type if isinstance(artifact_type, str) else None,
        )

    def to_json(self) -> dict[str, Any]:
        """The OCI JSON form: ``mediaType``, ``digest``, ``size``, plus the optional fields that are set."""
        out: dict[str, Any] = {"mediaType": self.media_type, "digest": self.digest, "size": self.size}
        if self.urls:
            out["urls"] = list(self.urls)
        if self.annotations:
            out["annotations"] = dict(self.annotations)
        if self.platform is not None:
            out["platform"] = self.platform.to_json()
        if self.artifact_type:
            out["artifactType"] = self.artifact_type
        return out
