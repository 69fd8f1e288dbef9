"""Where the bytes of one eStargz layer come from when it is read without being unpacked.

A :class:`LayerSource` is the seam between the two halves of lazy pulling: the readers
(``store.read_file``/``open_file``, the FUSE rootfs) walk the layer's TOC and ask for chunks;
the sources decide where the chunks come from (a complete blob in the content store, or
ranged requests to a registry with a verified chunk cache). Every source returns only bytes
whose ``chunkDigest`` it has checked.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from ocistore.estargz.toc import TOC, Chunk

__all__ = ["LayerSource"]


class LayerSource(Protocol):
    """Verified reads of one eStargz layer: its TOC and the chunks of its files."""

    @property
    def layer_digest(self) -> str:
        """The digest of the layer blob this source reads."""

    def toc(self) -> TOC:
        """The layer's TOC, already checked against the descriptor's TOC digest and validated."""

    def read_chunk(self, chunk: Chunk) -> bytes:
        """The uncompressed bytes of ``chunk`` (exactly ``chunk.size``), their digest verified.

        Raises ``errors.DigestMismatch`` or ``errors.InvalidEStargz`` when the bytes lie,
        ``errors.Unavailable`` when they cannot be had; never returns unverified bytes.
        """

    def has(self, chunk: Chunk) -> bool:
        """Whether ``chunk`` is local: reading it makes no request."""

    def prefetch(self, chunks: Sequence[Chunk]) -> None:
        """Make ``chunks`` local ahead of reads (a source may batch them into fewer requests)."""
