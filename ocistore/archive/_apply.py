"""``apply_layer``: one pass over a layer blob, onto a directory."""

from __future__ import annotations

import os
import stat
from collections.abc import Callable, Mapping, Sequence
from typing import BinaryIO

import attrs

from ocistore import errors
from ocistore.archive._applier import Applier
from ocistore.archive._compression import GZIP, UNKNOWN, compression_for, detect_compression
from ocistore.archive._dedup import FileDeduper
from ocistore.archive._estargz import EStargzTarReader, is_estargz, prepare_verifier
from ocistore.archive._pipeline import Pipeline
from ocistore.archive._tarformat import TarReader
from ocistore.oci.digest import algorithm_of
from ocistore.snapshots.types import Usage

__all__ = ["ApplyResult", "apply_layer"]


@attrs.frozen
class ApplyResult:
    """What applying a layer computed.

    ``diff_id`` is the digest of the uncompressed tar stream, ``digest`` that of the
    blob as read; ``uncompressed_size`` counts every byte of the tar stream
    (trailing bytes after the end-of-archive marker included, as they are hashed),
    ``entries`` the members applied or skipped, and ``skipped_devices`` the device
    nodes not created for lack of privilege. ``usage`` is the allocated bytes and inodes
    under the root when the apply alone accounts for them (the root was empty and nothing
    was removed or replaced), else None: what a snapshotter records on commit without
    walking the tree.
    """

    diff_id: str
    digest: str
    compressed_size: int
    uncompressed_size: int
    entries: int
    compression: str = "none"
    skipped_devices: int = 0
    toc_digest: str = ""
    usage: Usage | None = None
    deduplicated: int = 0
    """Files replaced by a hard link to an identical committed file (``dedup=``)."""
    dedup_bytes: int = 0
    """Bytes those files took before they were linked (allocated blocks)."""
    implicit_dirs: tuple[str, ...] = ()
    """Parent directories the layer has no entry for, created with no lower directory to copy
    them from (relative, parents first): an overlay apply without ``lower_dirs`` fixes them up
    later with :func:`adopt_lower_parents`."""


def apply_layer(
    stream: BinaryIO,
    root: str | os.PathLike[str],
    *,
    media_type: str | None = None,
    overlay: bool = False,
    expected_diff_id: str | None = None,
    expected_digest: str | None = None,
    expected_size: int | None = None,
    lower_dirs: Sequence[str | os.PathLike[str]] = (),
    same_owner: bool | None = None,
    progress: Callable[[int], None] | None = None,
    privileged: bool | None = None,
    blob_digest: bool = True,
    annotations: Mapping[str, str] | None = None,
    dedup: FileDeduper | None = None,
) -> ApplyResult:
    """Apply a layer blob (tar, tar+gzip or tar+zstd) read from ``stream`` onto ``root``.

    The compression comes from ``media_type``, or from the blob's magic bytes when
    the type is missing, unknown or Docker's uncompressed layer type. With
    ``overlay=True`` the root is an overlayfs upper dir over ``lower_dirs``
    (nearest first): whiteouts become 0:0 character devices and opaque markers
    ``trusted.overlay.opaque`` xattrs. Otherwise the root is a full copy of the
    parent and whiteouts remove what they name.

    ``same_owner`` restores member ownership (default: when running as root);
    ``privileged`` allows creating device nodes (default: root outside a user
    namespace; otherwise they are skipped and counted). ``progress`` is called
    with the number of compressed bytes read so far. ``blob_digest=False`` skips hashing
    the compressed bytes (``ApplyResult.digest`` is then ``""``) unless
    ``expected_digest`` asks for it: a blob verified when it was stored needs no second
    hash, and sha256 is the slowest step on CPUs without SHA extensions.

    ``annotations`` are the layer descriptor's. When they carry
    ``containerd.io/snapshot/stargz/toc.digest`` and the layer is gzip, it is checked as
    eStargz (the stream must then be seekable): the footer and TOC are read first and the
    TOC's digest verified, then every chunk digest, every TOC offset and entry, and
    ``io.containers.estargz.uncompressed-size`` are checked as the layer streams past; the
    TOC (``stargz.index.json``) and the landmark files are not written into ``root``.
    Lies are ``DigestMismatch``, a malformed or inconsistent TOC ``InvalidEStargz``.

    ``dedup`` (a ``FileDeduper``) replaces each regular file it accepts, once written, by a
    hard link to an identical file it finds (same content, byte for byte, and same inode
    metadata); its ``entries`` then list the layer's candidate files for an index.

    Raises ``UnsafeArchive`` for members escaping the root, ``InvalidArgument``
    for corrupt or unsupported input, ``SizeLimitExceeded`` for oversized headers,
    and ``DigestMismatch`` when the blob or its uncompressed stream does not match
    ``expected_digest`` / ``expected_size`` / ``expected_diff_id`` (the root then
    holds a partial layer and should be discarded).
    """
    root_path = _check_dir(root, "layer root")
    lowers = [_check_dir(lower, "lower dir") for lower in lower_dirs]
    if lowers and not overlay:
        raise errors.InvalidArgument("lower_dirs are only used in overlay mode")
    digest_alg = algorithm_of(expected_digest) if expected_digest is not None else "sha256"
    diff_alg = algorithm_of(expected_diff_id) if expected_diff_id is not None else "sha256"
    if expected_size is not None and expected_size < 0:
        raise errors.InvalidArgument(f"expected_size must not be negative, got {expected_size}")
    is_root = os.geteuid() == 0
    chown = is_root if same_owner is None else same_owner
    devices = (is_root and not _in_user_namespace()) if privileged is None else privileged

    compression = compression_for(media_type)
    verifier = None
    if annotations is not None and is_estargz(dict(annotations)) and _is_gzip(stream, compression):
        verifier = prepare_verifier(stream, dict(annotations), f"layer {expected_digest or ''}".strip())
    pipeline = Pipeline(
        stream,
        compression,
        digest_algorithm=digest_alg,
        diff_id_algorithm=diff_alg,
        expected_size=expected_size,
        blob_digest=blob_digest or expected_digest is not None,
        member_offsets=verifier.member_offsets if verifier is not None else None,
    )
    try:
        chunks = _chunks(pipeline, progress)
        reader = TarReader(chunks) if verifier is None else EStargzTarReader(chunks, verifier)
        applier = Applier(root_path, overlay=overlay, lower_dirs=lowers, chown=chown, devices=devices,
                          dedup=dedup)
        try:
            applier.apply_all(reader)
        finally:
            applier.close()
        reader.drain()  # trailing bytes after the archive end are part of the diffID
    finally:
        pipeline.close()
    result = ApplyResult(
        diff_id=pipeline.diff_id,
        digest=pipeline.digest,
        compressed_size=pipeline.compressed_size,
        uncompressed_size=pipeline.uncompressed_size,
        entries=applier.entries,
        compression=pipeline.compression,
        skipped_devices=applier.skipped_devices,
        toc_digest=verifier.toc_blob.digest if verifier is not None else "",
        usage=_usage(applier),
        deduplicated=dedup.linked if dedup is not None else 0,
        dedup_bytes=dedup.linked_bytes if dedup is not None else 0,
        implicit_dirs=tuple(applier.implicit_dirs),
    )
    _verify(result, expected_digest, expected_size, expected_diff_id)
    if verifier is not None:
        verifier.finish(pipeline.members, pipeline.uncompressed_size)
    return result


def _usage(applier: Applier) -> Usage | None:
    counted = applier.disk_usage()
    return None if counted is None else Usage(size=counted[0], inodes=counted[1])


def _is_gzip(stream: BinaryIO, compression: str) -> bool:
    """Whether the layer is gzip (by media type, or by magic when the type says nothing)."""
    if compression != UNKNOWN:
        return compression == GZIP
    if not stream.seekable():
        return False
    start = stream.tell()
    try:
        return detect_compression(stream.read(2)) == GZIP
    finally:
        stream.seek(start)


def _chunks(pipeline: Pipeline, progress: Callable[[int], None] | None) -> Callable[[], bytes]:
    if progress is None:
        return pipeline.next_chunk

    def next_chunk() -> bytes:
        chunk = pipeline.next_chunk()
        progress(pipeline.compressed_size)
        return chunk

    return next_chunk


def _verify(
    result: ApplyResult, expected_digest: str | None, expected_size: int | None, expected_diff_id: str | None
) -> None:
    if expected_size is not None and result.compressed_size != expected_size:
        raise errors.DigestMismatch(
            f"layer blob has {result.compressed_size} bytes, expected {expected_size}",
            expected=str(expected_size),
            actual=str(result.compressed_size),
        )
    if expected_digest is not None and result.digest != expected_digest:
        raise errors.DigestMismatch(
            f"layer blob digest is {result.digest}, expected {expected_digest}",
            expected=expected_digest,
            actual=result.digest,
        )
    if expected_diff_id is not None and result.diff_id != expected_diff_id:
        raise errors.DigestMismatch(
            f"layer diffID (digest of the uncompressed tar) is {result.diff_id}, expected {expected_diff_id}",
            expected=expected_diff_id,
            actual=result.diff_id,
        )


def _check_dir(path: str | os.PathLike[str], what: str) -> str:
    text = os.path.abspath(os.fspath(path))
    try:
        st = os.stat(text)
    except FileNotFoundError:
        raise errors.NotFound(f"{what} {text!r} does not exist") from None
    if not stat.S_ISDIR(st.st_mode):
        raise errors.InvalidArgument(f"{what} {text!r} is not a directory")
    return os.path.realpath(text)


def _in_user_namespace() -> bool:
    try:
        with open("/proc/self/uid_map", "rb") as uid_map:
            fields = uid_map.read().split()
    except OSError:
        return False
    return fields[:3] != [b"0", b"0", b"4294967295"]
