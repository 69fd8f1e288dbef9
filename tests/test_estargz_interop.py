"""eStargz interop with the real tool: stargz-snapshotter's ``ctr-remote`` (Debian package
``stargz-snapshotter``) in the fixtures' containerd peer.

* ``ctr-remote image convert --estargz --oci`` converts a corpus image, ``ctr-remote image
  push`` sends it to the fixture registry, and ocistore fetches it lazily (TOC digest checked
  against the annotation) and reads chunks through the remote source (chunk digests checked),
  byte-identical to the files of the original layer.
* The other way: ocistore's ``convert`` of the same layer with the same chunk size and
  compression level gives the same TOC field by field except ``offset`` (the gzip encoders
  differ: Go's ``compress/gzip`` against zlib), the same footer layout, the same annotation
  keys and uncompressed size, and the same uncompressed tar up to the TOC entry (the table is
  in docs/guide.md, "Lazy pulling").

Skipped, with the reason, when ctr-remote, containerd or root are missing.
"""

from __future__ import annotations

import gzip
import json
import os
import shutil
import subprocess
import tarfile
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from archive_helpers import blob_path, corpus_json
from registry_fixtures import FIXTURES_DIR, Registry

from ocistore import Store
from ocistore import estargz as esgz
from ocistore.images import image_parts

PEER_SCRIPT = FIXTURES_DIR / "containerd-peer"
CTR_REMOTE = "/usr/bin/ctr-remote"
LEVEL = 1  # both tools at the same level; 1 keeps the test quick
CHUNK = 4 << 20

pytestmark = [pytest.mark.registry, pytest.mark.containerd]


def _unavailable() -> str | None:
    if os.geteuid() != 0:
        return "the containerd peer needs root"
    if not Path(CTR_REMOTE).exists():
        return "ctr-remote is not installed (apt-get install stargz-snapshotter)"
    if not Path("/usr/bin/containerd").exists() or shutil.which("ctr") is None:
        return "containerd is not installed (apt-get install containerd)"
    if not PEER_SCRIPT.exists():
        return f"fixture kit not found at {FIXTURES_DIR}"
    return None


def _run(*args: str | Path, timeout: float = 600) -> str:
    proc = subprocess.run([str(a) for a in args], capture_output=True, text=True, timeout=timeout, check=False)
    if proc.returncode != 0:
        raise AssertionError(f"{' '.join(map(str, args))} failed: {proc.stderr[-2000:]}")
    return proc.stdout


@pytest.fixture(scope="module")
def converted(registry_plain: Registry) -> Iterator[str]:
    """debian:gzip converted by ctr-remote in the containerd peer and pushed; yields its reference."""
    why = _unavailable()
    if why:
        pytest.skip(why)
    if registry_plain.user:
        pytest.skip("the interop test uses the plain registry")
    directory = Path(tempfile.mkdtemp(prefix="ocs-esgz-", dir="/tmp"))  # the socket path must stay short
    try:
        _run(PEER_SCRIPT, "start", "--dir", directory)
        remote = [CTR_REMOTE, "--address", directory / "containerd.sock", "--namespace", "default"]
        src, dst = registry_plain.ref("debian:gzip"), registry_plain.ref("esgz/debian:ctr-remote")
        _run(directory / "ctr", "content", "fetch", "--plain-http", src)
        _run(*remote, "images", "convert", "--estargz", "--oci", "--estargz-compression-level", str(LEVEL),
             "--estargz-chunk-size", str(CHUNK), src, dst, timeout=900)
        _run(*remote, "images", "push", "--plain-http", dst)
        yield dst
    finally:
        subprocess.run([str(PEER_SCRIPT), "wipe", "--dir", str(directory)], capture_output=True, check=False)
        shutil.rmtree(directory, ignore_errors=True)


def _original_files(names: set[str]) -> dict[str, bytes]:
    layer = corpus_json()["images"]["debian:gzip"]["layers"][0]["digest"]
    out = {}
    with tarfile.open(blob_path(layer), "r:gz") as tf:
        for m in tf:
            if m.name.removeprefix("./") in names and m.isfile():
                f = tf.extractfile(m)
                assert f is not None
                out[m.name.removeprefix("./")] = f.read()
    return out


def test_ocistore_lazily_fetches_and_reads_a_ctr_remote_image(converted: str, registry_plain: Registry,
                                                              tmp_path: Path) -> None:
    wanted = {"usr/bin/ls", "usr/lib/os-release", "etc/debian_version"}
    with Store(tmp_path / "s", **registry_plain.client_options()) as store:
        image = store.fetch(converted, lazy=True)
        layer = image_parts(store.content, image.target).layers[0]
        assert esgz.TOC_DIGEST_ANNOTATION in layer.annotations
        assert store.content.info(layer.digest).partial
        assert store.disk_usage().content < layer.size // 10
        with store.remote_source(image.name, layer) as src:
            read = {e.name: b"".join(src.read_chunk(c) for c in cs) for e, cs in src.toc().files() if e.name in wanted}
            assert src.toc().landmark() == esgz.NO_PREFETCH_LANDMARK
        assert read == _original_files(wanted)
        assert store.check().ok
        # and unpacked (completed, then verified chunk by chunk on apply) it is the original tree
        store.unpack(image.name, snapshotter="native")
        assert store.check().ok


def _layer_parts(store: Store, name: str) -> tuple[Any, dict[str, Any], bytes, bytes, dict[str, Any]]:
    parts = image_parts(store.content, store.images.get(name).target)
    layer = parts.layers[0]
    with store.content.open(layer.digest) as f:
        tb = esgz.read_toc_blob(f, layer.size)
        f.seek(layer.size - esgz.FOOTER_SIZE)
        footer = f.read(esgz.FOOTER_SIZE)
        f.seek(0)
        tar = gzip.decompress(f.read())
    manifest = json.loads(store.content.read(parts.manifest_desc.digest))
    return layer, json.loads(tb.json), footer, tar[:tar.rfind(esgz.TOC_NAME.encode())], manifest


def test_ocistore_convert_matches_ctr_remote_field_by_field(converted: str, registry_plain: Registry,
                                                            tmp_path: Path) -> None:
    with Store(tmp_path / "s", **registry_plain.client_options()) as store:
        theirs_image = store.fetch(converted)
        ours_image = store.convert(store.fetch(registry_plain.ref("debian:gzip")).name, dst="example.com/esgz:ours",
                                   chunk_size=CHUNK, compression_level=LEVEL)
        t_layer, t_toc, t_footer, t_tar, t_manifest = _layer_parts(store, theirs_image.name)
        o_layer, o_toc, o_footer, o_tar, o_manifest = _layer_parts(store, ours_image.name)

    # annotations: the same keys; the same uncompressed size (the TOC digest differs with the offsets)
    assert set(o_layer.annotations) == set(t_layer.annotations) == {esgz.TOC_DIGEST_ANNOTATION,
                                                                    esgz.UNCOMPRESSED_SIZE_ANNOTATION}
    assert o_layer.annotations[esgz.UNCOMPRESSED_SIZE_ANNOTATION] == t_layer.annotations[
        esgz.UNCOMPRESSED_SIZE_ANNOTATION]
    assert o_layer.media_type == t_layer.media_type
    # the TOC: same entries in the same order, every field equal but the compressed offsets
    assert o_toc["version"] == t_toc["version"] == 1
    assert len(o_toc["entries"]) == len(t_toc["entries"])
    for ours, theirs in zip(o_toc["entries"], t_toc["entries"], strict=True):
        assert {k: v for k, v in ours.items() if k != "offset"} == {k: v for k, v in theirs.items() if k != "offset"}
        assert ("offset" in ours) == ("offset" in theirs)
    # the footer: byte for byte the same but the 16 hex digits of the TOC offset
    assert o_footer[:16] == t_footer[:16] and o_footer[32:] == t_footer[32:]
    # the tar stream: identical up to the TOC entry (whose JSON holds the offsets)
    assert o_tar == t_tar
    # the manifest: ours also writes mediaType, as the OCI spec recommends
    assert {k for k in o_manifest if k != "mediaType"} == set(t_manifest)
