"""The eStargz layer format (stargz-snapshotter's ``estargz`` package), pure and I/O-free.

An eStargz layer is an ordinary ``tar+gzip`` layer made of many gzip members, so that each
regular file (and each chunk of a large one) can be fetched and inflated on its own. Its
last tar entry, ``stargz.index.json``, is the table of contents (TOC) listing every entry
with the offsets and digests of its chunks, and a 51-byte empty gzip member at the very
end (the footer) says where the TOC starts. The layer descriptor's
``containerd.io/snapshot/stargz/toc.digest`` annotation is the digest of the TOC JSON and
``io.containers.estargz.uncompressed-size`` the size of the tar stream.

* :mod:`~ocistore.estargz.footer`: the footer.
* :mod:`~ocistore.estargz.toc`: the TOC model, its JSON and its validation.
* :mod:`~ocistore.estargz.reader`: the footer and TOC of a seekable blob.
* :mod:`~ocistore.estargz.writer`: writing a blob from tar members.
* :mod:`~ocistore.estargz.verify`: checking a layer stream against its TOC.
"""

from __future__ import annotations

from ocistore.estargz.footer import FOOTER_SIZE, footer_bytes, parse_footer
from ocistore.estargz.reader import MAX_TOC_BYTES, TOCBlob, read_toc_blob
from ocistore.estargz.toc import MAX_TOC_ENTRIES, TOC, TOC_NAME, Chunk, TOCEntry, format_modtime, parse_toc, toc_json
from ocistore.estargz.verify import (
    TOC_DIGEST_ANNOTATION,
    UNCOMPRESSED_SIZE_ANNOTATION,
    LayerVerifier,
    Member,
    open_verifier,
)
from ocistore.estargz.writer import (
    DEFAULT_CHUNK_SIZE,
    LANDMARK_CONTENTS,
    NO_PREFETCH_LANDMARK,
    PREFETCH_LANDMARK,
    LayerResult,
    LayerWriter,
)

__all__ = [
    "DEFAULT_CHUNK_SIZE",
    "FOOTER_SIZE",
    "LANDMARK_CONTENTS",
    "MAX_TOC_BYTES",
    "MAX_TOC_ENTRIES",
    "NO_PREFETCH_LANDMARK",
    "PREFETCH_LANDMARK",
    "TOC",
    "TOC_DIGEST_ANNOTATION",
    "TOC_NAME",
    "UNCOMPRESSED_SIZE_ANNOTATION",
    "Chunk",
    "LayerResult",
    "LayerVerifier",
    "LayerWriter",
    "Member",
    "TOCBlob",
    "TOCEntry",
    "footer_bytes",
    "format_modtime",
    "open_verifier",
    "parse_footer",
    "parse_toc",
    "read_toc_blob",
    "toc_json",
]
