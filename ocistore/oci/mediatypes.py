"""Media types of OCI and Docker schema2 images, and the questions asked about them."""

from __future__ import annotations

__all__ = [
    "DOCKER_CONFIG",
    "DOCKER_FOREIGN_LAYER",
    "DOCKER_LAYER",
    "DOCKER_LAYER_GZIP",
    "DOCKER_LAYER_ZSTD",
    "DOCKER_MANIFEST",
    "DOCKER_MANIFEST_LIST",
    "OCI_CONFIG",
    "OCI_EMPTY",
    "OCI_INDEX",
    "OCI_LAYER",
    "OCI_LAYER_GZIP",
    "OCI_LAYER_NONDIST",
    "OCI_LAYER_NONDIST_GZIP",
    "OCI_LAYER_NONDIST_ZSTD",
    "OCI_LAYER_ZSTD",
    "OCI_MANIFEST",
    "compression_of",
    "is_config",
    "is_index",
    "is_layer",
    "is_manifest",
    "is_non_distributable",
    "kind_of",
]

OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_EMPTY = "application/vnd.oci.empty.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar"
OCI_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
OCI_LAYER_ZSTD = "application/vnd.oci.image.layer.v1.tar+zstd"
OCI_LAYER_NONDIST = "application/vnd.oci.image.layer.nondistributable.v1.tar"
OCI_LAYER_NONDIST_GZIP = "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip"
OCI_LAYER_NONDIST_ZSTD = "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd"

DOCKER_MANIFEST_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
DOCKER_LAYER = "application/vnd.docker.image.rootfs.diff.tar"
DOCKER_LAYER_GZIP = "application/vnd.docker.image.rootfs.diff.tar.gzip"
DOCKER_LAYER_ZSTD = "application/vnd.docker.image.rootfs.diff.tar.zstd"
DOCKER_FOREIGN_LAYER = "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip"

_INDEXES = frozenset({OCI_INDEX, DOCKER_MANIFEST_LIST})
_MANIFESTS = frozenset({OCI_MANIFEST, DOCKER_MANIFEST})
_CONFIGS = frozenset({OCI_CONFIG, DOCKER_CONFIG})
_LAYERS = frozenset(
    {
        OCI_LAYER,
        OCI_LAYER_GZIP,
        OCI_LAYER_ZSTD,
        OCI_LAYER_NONDIST,
        OCI_LAYER_NONDIST_GZIP,
        OCI_LAYER_NONDIST_ZSTD,
        DOCKER_LAYER,
        DOCKER_LAYER_GZIP,
        DOCKER_LAYER_ZSTD,
        DOCKER_FOREIGN_LAYER,
    }
)


def _base(media_type: str) -> str:
    return media_type.split(";", 1)[0].strip()


def is_index(media_type: str) -> bool:
    """An OCI index or a Docker manifest list."""
    return _base(media_type) in _INDEXES


def is_manifest(media_type: str) -> bool:
    """An OCI or Docker schema2 image manifest."""
    return _base(media_type) in _MANIFESTS


def is_config(media_type: str) -> bool:
    """An OCI or Docker image config."""
    return _base(media_type) in _CONFIGS


def is_layer(media_type: str) -> bool:
    """A layer media type containerd would unpack (``IsLayerType``)."""
    return _base(media_type) in _LAYERS


def is_non_distributable(media_type: str) -> bool:
    """A foreign / non-distributable layer (may be absent from registries)."""
    base = _base(media_type)
    return "nondistributable" in base or "foreign" in base


def compression_of(media_type: str) -> str:
    """``"gzip"``, ``"zstd"``, ``"none"`` or ``"unknown"`` (detect by magic) for a layer type."""
    base = _base(media_type)
    if base.endswith(("+gzip", ".tar.gzip")) or base == DOCKER_FOREIGN_LAYER:
        return "gzip"
    if base.endswith(("+zstd", ".tar.zstd")):
        return "zstd"
    if base == DOCKER_LAYER:
        return "unknown"  # docker's uncompressed type is auto-detected by magic, as containerd does
    if base.endswith(".tar"):
        return "none"
    return "unknown"


def kind_of(media_type: str) -> str:
    """The object kind a progress event or ingest ref names (containerd's ``MakeRefKey`` prefixes).

    ``"index"``, ``"manifest"``, ``"layer"``, ``"config"``, ``"attestation"`` or ``"unknown"``.
    """
    if is_index(media_type):
        return "index"
    if is_manifest(media_type):
        return "manifest"
    if is_layer(media_type):
        return "layer"
    if is_config(media_type):
        return "config"
    if "attestation" in media_type or "in-toto" in media_type:
        return "attestation"
    return "unknown"
