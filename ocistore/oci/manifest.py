"""Parsing and validation of indexes, manifests and image configs (OCI and Docker schema2).

All input is untrusted bytes from a registry or an archive: sizes are capped before
parsing, JSON must be an object, ``schemaVersion`` must be 2, and a document must be of the
kind its media type announces (containerd rejects a "manifest" holding ``manifests`` and an
"index" holding ``config``/``layers``; schema1 ``fsLayers`` documents are refused).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import attrs

from ocistore import errors
from ocistore.oci import mediatypes
from ocistore.oci.descriptor import Descriptor
from ocistore.oci.digest import digest_bytes, validate_digest
from ocistore.oci.platform import Platform

__all__ = [
    "MAX_CONFIG_SIZE",
    "MAX_MANIFEST_SIZE",
    "History",
    "ImageConfig",
    "Index",
    "Manifest",
    "children",
    "detect_media_type",
    "parse_any",
    "parse_config",
    "parse_index",
    "parse_manifest",
]

MAX_MANIFEST_SIZE = 4 * 1048 * 1048
"""containerd's ``MaxManifestSize`` (4,393,216 bytes; sic, not 4 MiB)."""

MAX_CONFIG_SIZE = 8 * 1024 * 1024
"""Largest image config accepted (8 MiB)."""


@attrs.frozen
class Index:
    """An OCI image index or a Docker manifest list."""

    media_type: str
    manifests: tuple[Descriptor, ...]
    schema_version: int = 2
    annotations: dict[str, str] = attrs.field(factory=dict, hash=False)
    subject: Descriptor | None = None
    artifact_type: str | None = None
    raw: dict[str, Any] = attrs.field(factory=dict, hash=False, repr=False)


@attrs.frozen
class Manifest:
    """An OCI image manifest or a Docker schema2 manifest."""

    media_type: str
    config: Descriptor
    layers: tuple[Descriptor, ...]
    schema_version: int = 2
    annotations: dict[str, str] = attrs.field(factory=dict, hash=False)
    subject: Descriptor | None = None
    artifact_type: str | None = None
    raw: dict[str, Any] = attrs.field(factory=dict, hash=False, repr=False)

    @property
    def children(self) -> list[Descriptor]:
        """``[config] + layers``, the order containerd walks them in."""
        return [self.config, *self.layers]


@attrs.frozen
class History:
    """One entry of an image config's ``history``."""

    created: str | None = None
    created_by: str | None = None
    author: str | None = None
    comment: str | None = None
    empty_layer: bool = False


@attrs.frozen
class ImageConfig:
    """The parts of an image config ocistore uses, plus the whole document in ``raw``."""

    platform: Platform
    rootfs_type: str
    rootfs_diff_ids: tuple[str, ...]
    history: tuple[History, ...] = ()
    created: str | None = None
    author: str | None = None
    config: dict[str, Any] = attrs.field(factory=dict, hash=False, repr=False)
    raw: dict[str, Any] = attrs.field(factory=dict, hash=False, repr=False)

    @property
    def os(self) -> str:
        """The config's ``os``."""
        return self.platform.os

    @property
    def architecture(self) -> str:
        """The config's ``architecture``."""
        return self.platform.architecture

    @property
    def variant(self) -> str | None:
        """The config's ``variant``."""
        return self.platform.variant

    @property
    def os_version(self) -> str | None:
        """The config's ``os.version``."""
        return self.platform.os_version

    @property
    def os_features(self) -> tuple[str, ...]:
        """The config's ``os.features``."""
        return self.platform.os_features


# --------------------------------------------------------------------------------------------
# Decoding helpers
# --------------------------------------------------------------------------------------------


def _what(kind: str, data: bytes) -> str:
    """``"manifest sha256:…"``: names the document in error messages."""
    return f"{kind} {digest_bytes(bytes(data))}"


def _load(data: bytes, kind: str, limit: int) -> dict[str, Any]:
    """Size-check, decode and JSON-parse ``data`` into an object."""
    if not isinstance(data, bytes | bytearray | memoryview):
        raise errors.InvalidArgument(f"{kind} must be bytes, got {type(data).__name__}")
    if len(data) > limit:
        raise errors.SizeLimitExceeded(
            f"{kind} of {len(data)} bytes is larger than the {limit} bytes allowed"
        )
    try:
        text = bytes(data).decode("utf-8")
    except UnicodeDecodeError as exc:
        raise errors.InvalidArgument(f"{_what(kind, data)} is not UTF-8 ({exc.reason})") from None
    try:
        doc = json.loads(text)
    except (json.JSONDecodeError, RecursionError) as exc:
        raise errors.InvalidArgument(f"{_what(kind, data)} is not valid JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise errors.InvalidArgument(f"{_what(kind, data)} must be a JSON object, got {type(doc).__name__}")
    return doc


def _kind_of(media_type: str) -> str | None:
    if mediatypes.is_index(media_type):
        return "index"
    if mediatypes.is_manifest(media_type):
        return "manifest"
    return None


def _check_document(doc: Mapping[str, Any], media_type: str, what: str) -> None:
    """containerd's ``validateMediaType`` plus ``schemaVersion`` and ``mediaType`` checks."""
    if "fsLayers" in doc:
        raise errors.InvalidArgument(
            f"{what}: Docker schema 1 manifests are not supported (deprecated since 2017); "
            "push the image again with a current Docker or buildkit"
        )
    version = doc.get("schemaVersion")
    if version != 2 or isinstance(version, bool):
        raise errors.InvalidArgument(f"{what}: schemaVersion must be 2, got {version!r}")
    kind = _kind_of(media_type)
    declared = doc.get("mediaType")
    if declared is not None:
        if not isinstance(declared, str):
            raise errors.InvalidArgument(f"{what}: mediaType must be a string, got {declared!r}")
        if _kind_of(declared) != kind:
            raise errors.InvalidArgument(
                f"{what}: its mediaType {declared!r} does not agree with {media_type!r}"
            )
    if kind == "manifest" and "manifests" in doc:
        raise errors.InvalidArgument(f"{what}: expected a manifest but found an index ({media_type})")
    if kind == "index" and ("config" in doc or "layers" in doc):
        raise errors.InvalidArgument(f"{what}: expected an index but found a manifest ({media_type})")


def _descriptor(value: Any, what: str, field: str) -> Descriptor:
    try:
        return Descriptor.from_json(value)
    except errors.InvalidArgument as exc:
        raise errors.InvalidArgument(f"{what}: {field}: {exc}") from None


def _descriptors(doc: Mapping[str, Any], key: str, what: str) -> tuple[Descriptor, ...]:
    items = doc.get(key)
    if items is None:
        return ()
    if not isinstance(items, list):
        raise errors.InvalidArgument(f"{what}: {key} must be a list of descriptors")
    return tuple(_descriptor(item, what, f"{key}[{i}]") for i, item in enumerate(items))


def _optional_descriptor(doc: Mapping[str, Any], key: str, what: str) -> Descriptor | None:
    value = doc.get(key)
    return None if value is None else _descriptor(value, what, key)


def _string_map(value: Any, what: str, field: str) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in value.items()
    ):
        raise errors.InvalidArgument(f"{what}: {field} must map strings to strings")
    return dict(value)


def _optional_str(doc: Mapping[str, Any], key: str, what: str) -> str | None:
    value = doc.get(key)
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise errors.InvalidArgument(f"{what}: {key} must be a string, got {value!r}")
    return value


def _resolve_type(doc: Mapping[str, Any], media_type: str | None, default: str) -> str:
    if media_type:
        return media_type
    declared = doc.get("mediaType")
    return declared if isinstance(declared, str) and declared else default


# --------------------------------------------------------------------------------------------
# Public parsers
# --------------------------------------------------------------------------------------------


def parse_index(data: bytes, media_type: str | None = None) -> Index:
    """Parse an index / manifest list; ``media_type`` defaults to the document's own (or OCI's).

    Raises SizeLimitExceeded above :data:`MAX_MANIFEST_SIZE` and InvalidArgument for
    anything malformed or not an index.
    """
    doc = _load(data, "index", MAX_MANIFEST_SIZE)
    mt = _resolve_type(doc, media_type, mediatypes.OCI_INDEX)
    what = _what("index", data)
    if not mediatypes.is_index(mt):
        raise errors.InvalidArgument(f"{what}: media type {mt!r} is not an index or manifest list")
    _check_document(doc, mt, what)
    if not isinstance(doc.get("manifests"), list):
        raise errors.InvalidArgument(f"{what}: manifests must be a list of descriptors")
    return Index(
        media_type=mt,
        manifests=_descriptors(doc, "manifests", what),
        annotations=_string_map(doc.get("annotations"), what, "annotations"),
        subject=_optional_descriptor(doc, "subject", what),
        artifact_type=_optional_str(doc, "artifactType", what),
        raw=doc,
    )


def parse_manifest(data: bytes, media_type: str | None = None) -> Manifest:
    """Parse an image manifest; ``media_type`` defaults to the document's own (or OCI's).

    Raises SizeLimitExceeded above :data:`MAX_MANIFEST_SIZE` and InvalidArgument for
    anything malformed or not a manifest (a missing ``config`` included).
    """
    doc = _load(data, "manifest", MAX_MANIFEST_SIZE)
    mt = _resolve_type(doc, media_type, mediatypes.OCI_MANIFEST)
    what = _what("manifest", data)
    if not mediatypes.is_manifest(mt):
        raise errors.InvalidArgument(f"{what}: media type {mt!r} is not an image manifest")
    _check_document(doc, mt, what)
    if "config" not in doc:
        raise errors.InvalidArgument(f"{what}: has no config descriptor")
    return Manifest(
        media_type=mt,
        config=_descriptor(doc["config"], what, "config"),
        layers=_descriptors(doc, "layers", what),
        annotations=_string_map(doc.get("annotations"), what, "annotations"),
        subject=_optional_descriptor(doc, "subject", what),
        artifact_type=_optional_str(doc, "artifactType", what),
        raw=doc,
    )


def parse_any(data: bytes, media_type: str) -> Index | Manifest:
    """Parse ``data`` as the index or manifest ``media_type`` names; other types are InvalidArgument."""
    if mediatypes.is_index(media_type):
        return parse_index(data, media_type)
    if mediatypes.is_manifest(media_type):
        return parse_manifest(data, media_type)
    raise errors.InvalidArgument(f"media type {media_type!r} is neither an image index nor an image manifest")


def detect_media_type(data: bytes) -> str | None:
    """The media type of a manifest or index document, or None when ``data`` is neither.

    The document's own ``mediaType`` when it names an index or a manifest; otherwise, for a
    ``schemaVersion: 2`` document without one (OCI allows leaving it out), an OCI index when
    it has ``manifests`` and an OCI manifest when it has ``config`` and ``layers``. Anything
    larger than :data:`MAX_MANIFEST_SIZE`, not JSON, or a schema 1 manifest is None.
    """
    try:
        doc = _load(data, "manifest", MAX_MANIFEST_SIZE)
    except errors.InvalidArgument:
        return None
    if doc.get("schemaVersion") != 2:
        return None
    declared = doc.get("mediaType")
    if isinstance(declared, str) and declared:
        return declared if mediatypes.is_index(declared) or mediatypes.is_manifest(declared) else None
    if isinstance(doc.get("manifests"), list):
        return mediatypes.OCI_INDEX
    if isinstance(doc.get("config"), dict) and isinstance(doc.get("layers"), list):
        return mediatypes.OCI_MANIFEST
    return None


def children(media_type: str, data: bytes) -> list[Descriptor]:
    """The descriptors a blob points at (containerd's ``images.Children``).

    Manifest: ``[config] + layers``; index: ``manifests``; any other type: ``[]``.
    """
    if mediatypes.is_manifest(media_type):
        return parse_manifest(data, media_type).children
    if mediatypes.is_index(media_type):
        return list(parse_index(data, media_type).manifests)
    return []


def _history(value: Any, what: str) -> tuple[History, ...]:
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(h, dict) for h in value):
        raise errors.InvalidArgument(f"{what}: history must be a list of objects")
    out = []
    for i, item in enumerate(value):
        where = f"{what}: history[{i}]"
        empty = item.get("empty_layer", False)
        if not isinstance(empty, bool):
            raise errors.InvalidArgument(f"{where}: empty_layer must be a boolean, got {empty!r}")
        out.append(
            History(
                created=_optional_str(item, "created", where),
                created_by=_optional_str(item, "created_by", where),
                author=_optional_str(item, "author", where),
                comment=_optional_str(item, "comment", where),
                empty_layer=empty,
            )
        )
    return tuple(out)


def _rootfs(doc: Mapping[str, Any], what: str) -> tuple[str, tuple[str, ...]]:
    rootfs = doc.get("rootfs")
    if rootfs is None:
        return "", ()
    if not isinstance(rootfs, dict):
        raise errors.InvalidArgument(f"{what}: rootfs must be an object")
    rtype = rootfs.get("type", "")
    if not isinstance(rtype, str):
        raise errors.InvalidArgument(f"{what}: rootfs.type must be a string, got {rtype!r}")
    diff_ids = rootfs.get("diff_ids") or []
    if not isinstance(diff_ids, list):
        raise errors.InvalidArgument(f"{what}: rootfs.diff_ids must be a list of digests")
    for i, d in enumerate(diff_ids):
        try:
            validate_digest(d)
        except errors.InvalidArgument as exc:
            raise errors.InvalidArgument(f"{what}: rootfs.diff_ids[{i}]: {exc}") from None
    return rtype, tuple(diff_ids)


def parse_config(data: bytes) -> ImageConfig:
    """Parse an image config (OCI or Docker): platform, rootfs diffIDs, history.

    Raises SizeLimitExceeded above :data:`MAX_CONFIG_SIZE` and InvalidArgument for
    malformed input. ``rootfs`` may be absent (no layers); whether ``rootfs.type`` is
    ``"layers"`` is for the unpacker to judge.
    """
    doc = _load(data, "image config", MAX_CONFIG_SIZE)
    what = _what("image config", data)
    for key in ("variant", "os.version"):
        if doc.get(key) is not None and not isinstance(doc[key], str):
            raise errors.InvalidArgument(f"{what}: {key} must be a string, got {doc[key]!r}")
    try:
        platform = Platform.from_json(
            {k: doc[k] for k in ("os", "architecture", "variant", "os.version", "os.features") if k in doc}
        )
    except errors.InvalidArgument as exc:
        raise errors.InvalidArgument(f"{what}: {exc}") from None
    rtype, diff_ids = _rootfs(doc, what)
    config = doc.get("config")
    if config is not None and not isinstance(config, dict):
        raise errors.InvalidArgument(f"{what}: config must be an object")
    return ImageConfig(
        platform=platform,
        rootfs_type=rtype,
        rootfs_diff_ids=diff_ids,
        history=_history(doc.get("history"), what),
        created=_optional_str(doc, "created", what),
        author=_optional_str(doc, "author", what),
        config=dict(config or {}),
        raw=doc,
    )
