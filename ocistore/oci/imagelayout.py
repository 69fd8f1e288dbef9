"""Names inside an OCI image layout (image-spec ``image-layout.md``) and a docker-archive.

Pure names, no I/O: the importer, the exporter and the layout sources build every path
inside an archive from these.
"""

from __future__ import annotations

from ocistore.oci.digest import algorithm_of, encoded

__all__ = [
    "BLOBS",
    "DOCKER_MANIFEST",
    "INDEX",
    "LAYOUT_FILE",
    "LAYOUT_VERSION",
    "NAME_ANNOTATION",
    "REF_NAME_ANNOTATION",
    "blob_dir",
    "blob_name",
]

LAYOUT_FILE = "oci-layout"
"""The file that marks a directory as an OCI image layout."""
LAYOUT_VERSION = b'{"imageLayoutVersion":"1.0.0"}'
"""The content of :data:`LAYOUT_FILE` that ocistore writes."""
INDEX = "index.json"
"""The layout's entry point: an image index naming its images."""
DOCKER_MANIFEST = "manifest.json"
"""A docker-archive's list of images (``Config``, ``RepoTags``, ``Layers``)."""
BLOBS = "blobs"
"""The directory of content-addressed blobs."""
NAME_ANNOTATION = "io.containerd.image.name"
"""containerd's annotation naming an image in ``index.json``."""
REF_NAME_ANNOTATION = "org.opencontainers.image.ref.name"
"""The OCI annotation naming an image (a tag, or a full reference) in ``index.json``."""


def blob_dir(algorithm: str) -> str:
    """``blobs/<alg>``."""
    return f"{BLOBS}/{algorithm}"


def blob_name(digest: str) -> str:
    """``blobs/<alg>/<hex>``: where a layout keeps the blob ``digest``."""
    return f"{blob_dir(algorithm_of(digest))}/{encoded(digest)}"
