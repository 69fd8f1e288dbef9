"""eStargz: the format (footer, TOC), verification on apply, hostile layers, and convert.

Convert is checked on the real corpus (../shared/fixtures/corpus): the converted image
unpacks to the same tree as the source, plain tools (GNU tar, skopeo, umoci) read it, and
converting twice gives the same bytes.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import shutil
import subprocess
import tarfile
import time
from pathlib import Path
from typing import Any

import pytest
from archive_helpers import CORPUS, snapshot
from lazy_helpers import tar_layer

from ocistore import Descriptor, Image, Store, errors
from ocistore import estargz as esgz
from ocistore.archive import apply_layer, convert_layer
from ocistore.estargz import verify as esgz_verify
from ocistore.estargz.tarheader import END_OF_ARCHIVE, padding, ustar_header
from ocistore.oci import mediatypes as mt

GZ = mt.OCI_LAYER_GZIP


# -- building blobs ---------------------------------------------------------------------------------


_tar = tar_layer  # (name, bytes) files, (name/, None) dirs, (name, ("sym"|"hard", target)) links


BIG = hashlib.sha256(b"x").digest() * 40_000  # 1.28 MB, three chunks of 512 KiB
FILES: list[tuple[str, Any]] = [
    ("etc/", None), ("etc/passwd", b"root:x:0:0::/root:/bin/sh\n"), ("big", BIG), ("empty", b""),
    ("etc/link", ("sym", "/etc/passwd")), ("hard", ("hard", "etc/passwd")), ("a <&> b", b"html\n"),
]


def _convert(tar: bytes, tmp: Path, **kw: Any) -> tuple[bytes, esgz.LayerResult]:
    out = io.BytesIO()
    kw.setdefault("chunk_size", 512 << 10)
    converted = convert_layer(io.BytesIO(gzip.compress(tar)), out.write, media_type=GZ, spool_dir=tmp, **kw)
    return out.getvalue(), converted.result


def _annotations(res: esgz.LayerResult) -> dict[str, str]:
    return {esgz.TOC_DIGEST_ANNOTATION: res.toc_digest, esgz.UNCOMPRESSED_SIZE_ANNOTATION: str(res.uncompressed_size)}


def _toc_doc(blob: bytes) -> tuple[dict[str, Any], int]:
    tb = esgz.read_toc_blob(io.BytesIO(blob), len(blob))
    return json.loads(tb.json), tb.toc_offset


def _rebuild(blob: bytes, doc: dict[str, Any], toc_offset: int | None = None) -> tuple[bytes, dict[str, str]]:
    """The blob with its TOC replaced by ``doc`` (footer recomputed), and matching annotations."""
    _old, offset = _toc_doc(blob)
    data = json.dumps(doc, indent="\t").encode()
    member = gzip.compress(ustar_header(esgz.TOC_NAME, len(data)) + data + padding(len(data)) + END_OF_ARCHIVE,
                           mtime=0)
    new = blob[:offset] + member + esgz.footer_bytes(offset if toc_offset is None else toc_offset)
    size = len(gzip.decompress(new))
    return new, {esgz.TOC_DIGEST_ANNOTATION: "sha256:" + hashlib.sha256(data).hexdigest(),
                 esgz.UNCOMPRESSED_SIZE_ANNOTATION: str(size)}


def _apply(blob: bytes, root: Path, annotations: dict[str, str]) -> Any:
    root.mkdir(exist_ok=True)
    diff_id = "sha256:" + hashlib.sha256(gzip.decompress(blob)).hexdigest()
    return apply_layer(io.BytesIO(blob), root, media_type=GZ, annotations=annotations, expected_diff_id=diff_id)


# -- format ----------------------------------------------------------------------------------------------


def test_footer_round_trip_and_refusals() -> None:
    footer = esgz.footer_bytes(0x1234)
    assert len(footer) == esgz.FOOTER_SIZE == 51
    assert esgz.parse_footer(footer) == 0x1234
    assert gzip.decompress(footer) == b""  # plain gzip readers see an empty member
    assert footer[16:38] == b"0000000000001234STARGZ"
    for bad in (footer[:-1], b"\x00" * 51, footer.replace(b"STARGZ", b"STARGX"),
                footer[:16] + b"zz" + footer[18:], footer[:-8] + b"\x01" + footer[-7:]):
        with pytest.raises(errors.InvalidEStargz):
            esgz.parse_footer(bad)


def test_toc_json_is_written_like_stargz_snapshotter() -> None:
    toc = esgz.TOC(1, [esgz.TOCEntry(name="a<b>&c", type="reg", size=3, mode=0o644, offset=7,
                                     xattrs={"user.k": b"\x00v"}, digest="sha256:" + "0" * 64)])
    text = esgz.toc_json(toc).decode()
    assert text.startswith('{\n\t"version": 1,\n\t"entries": [\n\t\t{\n\t\t\t"name": "a\\u003cb\\u003e\\u0026c",')
    keys = [line.strip().split(":")[0] for line in text.splitlines() if line.startswith("\t\t\t\"")]
    assert keys == ['"name"', '"type"', '"size"', '"mode"', '"offset"', '"xattrs"', '"digest"']
    assert '"user.k": "AHY="' in text
    assert esgz.format_modtime(1_700_000_000 * 10**9) == "2023-11-14T22:13:20Z"
    assert esgz.format_modtime(0) == ""


def test_convert_layer_layout(tmp_path: Path) -> None:
    blob, res = _convert(_tar(FILES), tmp_path)
    assert hashlib.sha256(blob).hexdigest() == res.digest.split(":")[1] and len(blob) == res.size
    plain = gzip.decompress(blob)  # an ordinary gzip layer
    assert "sha256:" + hashlib.sha256(plain).hexdigest() == res.diff_id and len(plain) == res.uncompressed_size
    with tarfile.open(fileobj=io.BytesIO(plain)) as tf:
        names = tf.getnames()
    assert names[0] == esgz.NO_PREFETCH_LANDMARK and names[-1] == esgz.TOC_NAME
    doc, offset = _toc_doc(blob)
    assert offset == res.toc_offset
    entries = doc["entries"]
    big = [e for e in entries if e["name"] == "big"]
    assert [e["type"] for e in big] == ["reg", "chunk", "chunk"]
    assert [e.get("chunkOffset", 0) for e in big] == [0, 512 << 10, 1 << 20]
    assert big[0]["chunkSize"] == 512 << 10 and "chunkSize" not in big[2]  # last chunk: to the end
    assert big[0]["digest"] == "sha256:" + hashlib.sha256(BIG).hexdigest()
    for e in big:  # each chunk starts a gzip member holding exactly its bytes
        start = e.get("chunkOffset", 0)
        chunk = BIG[start : start + (e.get("chunkSize") or len(BIG) - start)]
        member = zlib_member(blob, e["offset"])
        assert member[: len(chunk)] == chunk
        assert e["chunkDigest"] == "sha256:" + hashlib.sha256(chunk).hexdigest()
    link = next(e for e in entries if e["name"] == "etc/link")
    assert link["type"] == "symlink" and link["linkName"] == "/etc/passwd"
    assert next(e for e in entries if e["name"] == "hard")["type"] == "hardlink"
    empty = next(e for e in entries if e["name"] == "empty")  # stargz records a digest for empty files too
    assert empty["digest"] == "sha256:" + hashlib.sha256(b"").hexdigest() and "offset" not in empty
    assert blob[-51:] == esgz.footer_bytes(offset)
    assert blob[:10] == b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x02\xff"  # MTIME 0, XFL best, OS unknown


def zlib_member(blob: bytes, offset: int) -> bytes:
    import zlib

    return zlib.decompressobj(wbits=31).decompress(blob[offset:])


def test_convert_is_deterministic_whatever_the_workers(tmp_path: Path) -> None:
    tar = _tar(FILES)
    outs = {workers: _convert(tar, tmp_path, workers=workers)[0] for workers in (1, 2, 5)}
    assert outs[1] == outs[2] == outs[5]


def test_prioritized_files_come_first_with_their_parents(tmp_path: Path) -> None:
    blob, res = _convert(_tar(FILES), tmp_path, prioritized_files=["/hard"])
    names = [e.name for e in res.toc.entries if e.type != "chunk"]
    # the hard link's target and its parent come first, then the link, then the landmark
    assert names[:4] == ["etc/", "etc/passwd", "hard", esgz.PREFETCH_LANDMARK]
    assert names.count("etc/passwd") == 1 and "big" in names[4:]
    root = tmp_path / "r"
    _apply(blob, root, _annotations(res))
    assert (root / "hard").read_bytes() == (root / "etc/passwd").read_bytes()


def test_apply_verifies_and_hides_the_toc_and_landmarks(tmp_path: Path) -> None:
    blob, res = _convert(_tar(FILES), tmp_path)
    result = _apply(blob, tmp_path / "r", _annotations(res))
    assert result.toc_digest == res.toc_digest
    assert sorted(os.listdir(tmp_path / "r")) == ["a <&> b", "big", "empty", "etc", "hard"]
    assert (tmp_path / "r/big").read_bytes() == BIG
    # without the annotation the layer is a plain gzip layer: everything lands
    plain = tmp_path / "p"
    plain.mkdir()
    apply_layer(io.BytesIO(blob), plain, media_type=GZ)
    assert {esgz.TOC_NAME, esgz.NO_PREFETCH_LANDMARK} <= set(os.listdir(plain))


# -- hostile layers (apply level) ----------------------------------------------------------------------


def _hostile(tmp_path: Path, edit: Any, toc_offset: Any = None) -> tuple[bytes, dict[str, str]]:
    blob, _res = _convert(_tar(FILES), tmp_path)
    doc, offset = _toc_doc(blob)
    edit(doc["entries"])
    return _rebuild(blob, doc, toc_offset(offset) if toc_offset else None)


def _entry(entries: list[dict[str, Any]], name: str, kind: str = "reg") -> dict[str, Any]:
    return next(e for e in entries if e["name"] == name and e["type"] == kind)


def _set(entries: list[dict[str, Any]], name: str, **kw: Any) -> None:
    _entry(entries, name).update(kw)


HOSTILE = {
    "chunk digest lies": (lambda es: _set(es, "etc/passwd", chunkDigest="sha256:" + "1" * 64), errors.DigestMismatch),
    "file digest lies": (lambda es: _set(es, "big", digest="sha256:" + "2" * 64), errors.DigestMismatch),
    "offset outside the blob": (lambda es: _set(es, "etc/passwd", offset=10**9), errors.InvalidEStargz),
    "overlapping chunks": (lambda es: _set(es, "big", offset=_entry(es, "etc/passwd")["offset"]),
                           errors.InvalidEStargz),
    "offset off a member start": (lambda es: _set(es, "etc/passwd", offset=_entry(es, "etc/passwd")["offset"] + 1),
                                  errors.InvalidEStargz),
    "chunks that do not tile": (lambda es: [e.update(chunkOffset=7) for e in es if e["type"] == "chunk"][:1],
                                errors.InvalidEStargz),
    "dot-dot name": (lambda es: _entry(es, "empty").update(name="../../empty"), errors.UnsafeArchive),
    "entry under an absolute symlink": (
        lambda es: es.extend([{"name": "evil", "type": "symlink", "linkName": "/"},
                              {"name": "evil/etc/shadow", "type": "reg"}]), errors.UnsafeArchive),
    "hard link to nothing": (lambda es: _entry(es, "hard", "hardlink").update(linkName="nope"),
                             errors.InvalidEStargz),
    "toc and tar disagree": (lambda es: _set(es, "etc/passwd", mode=0o4755), errors.InvalidEStargz),
    "toc lists a missing file": (lambda es: es.append({"name": "ghost", "type": "dir"}), errors.InvalidEStargz),
}


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_hostile_toc_is_a_typed_error(tmp_path: Path, case: str) -> None:
    edit, kind = HOSTILE[case]
    blob, annotations = _hostile(tmp_path, edit)
    with pytest.raises(kind):
        _apply(blob, tmp_path / "r", annotations)


def test_footer_that_lies_about_the_toc_offset(tmp_path: Path) -> None:
    for shift in (lambda o: o - 1, lambda o: 0, lambda o: o + 10**6):
        blob, annotations = _hostile(tmp_path, lambda es: None, shift)
        with pytest.raises(errors.InvalidEStargz):
            _apply(blob, tmp_path / "r", annotations)


def test_toc_digest_and_uncompressed_size_must_match(tmp_path: Path) -> None:
    blob, res = _convert(_tar(FILES), tmp_path)
    with pytest.raises(errors.DigestMismatch, match="TOC digest"):
        _apply(blob, tmp_path / "a", {esgz.TOC_DIGEST_ANNOTATION: "sha256:" + "3" * 64})
    with pytest.raises(errors.DigestMismatch, match="uncompressed size"):
        _apply(blob, tmp_path / "b", {**_annotations(res), esgz.UNCOMPRESSED_SIZE_ANNOTATION: "12"})
    with pytest.raises(errors.InvalidEStargz):
        _apply(gzip.compress(_tar(FILES)), tmp_path / "c", _annotations(res))  # no footer at all


def test_toc_bomb_is_capped(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    blob, annotations = _hostile(tmp_path, lambda es: es.extend({"name": f"d{i}", "type": "dir"} for i in range(50)))
    monkeypatch.setattr(esgz_verify, "MAX_TOC_ENTRIES", 40)
    with pytest.raises(errors.SizeLimitExceeded):
        _apply(blob, tmp_path / "r", annotations)
    with pytest.raises(errors.SizeLimitExceeded):
        esgz.parse_toc(json.dumps({"version": 1, "entries": [{"name": "x", "type": "dir"}] * 11}).encode(),
                       payload_size=10, max_entries=10)


_GOOD_ENTRY: dict[str, Any] = {
    "name": "etc/app.conf", "type": "reg", "size": 3, "modtime": "2024-01-02T03:04:05Z", "mode": 0o644,
    "uid": 1000, "gid": 1000, "userName": "app", "groupName": "app", "offset": 0,
    "xattrs": {"user.k": "dg=="}, "digest": "sha256:" + "a" * 64, "chunkSize": 3,
    "chunkDigest": "sha256:" + "b" * 64, "someFutureKey": [1, 2],
}


def _toc_of(entry: dict[str, Any]) -> bytes:
    return json.dumps({"version": 1, "entries": [entry]}).encode()


def test_toc_fields_parse_into_the_entry() -> None:
    """Every known key lands in its field, and a key stargz does not define is ignored."""
    toc = esgz.parse_toc(_toc_of(_GOOD_ENTRY), payload_size=100)
    (entry,) = toc.entries
    assert (entry.name, entry.type, entry.size, entry.modtime, entry.mode) == (
        "etc/app.conf", "reg", 3, "2024-01-02T03:04:05Z", 0o644)
    assert (entry.uid, entry.gid, entry.user_name, entry.group_name) == (1000, 1000, "app", "app")
    assert entry.xattrs == {"user.k": b"v"}
    assert (entry.digest, entry.chunk_size, entry.chunk_digest) == (
        "sha256:" + "a" * 64, 3, "sha256:" + "b" * 64)
    assert entry.to_json() == {k: v for k, v in _GOOD_ENTRY.items() if k not in ("offset", "someFutureKey")}


@pytest.mark.parametrize(("key", "value", "message"), [
    ("size", -1, "'size' must not be negative"),
    ("size", "3", "'size' must be an integer"),
    ("size", True, "'size' must be an integer"),
    ("size", 1.5, "'size' must be an integer"),
    ("uid", 2**63, "'uid' is out of range"),
    ("offset", None, "'offset' must be an integer"),
    ("mode", "0644", "'mode' must be an integer"),
    ("mode", -(2**63) - 1, "'mode' is out of range"),
    ("modtime", 5, "'modtime' must be a string"),
    ("userName", None, "'userName' must be a string"),
    ("digest", None, "'digest' must be a string"),
    ("digest", 0, "'digest' must be a string"),
    ("chunkDigest", "sha256:xyz", "'chunkDigest'"),
    ("chunkDigest", "md5:" + "a" * 32, "'chunkDigest'"),
    ("xattrs", {"user.k": "!!"}, "not valid base64"),
    ("xattrs", {"user.k": 1}, "must be a base64 string"),
    ("xattrs", ["user.k"], "'xattrs' must be an object"),
    ("type", "socket", "unknown type"),
    ("name", 7, "has no name"),
])
def test_toc_field_of_the_wrong_type_is_refused(key: str, value: Any, message: str) -> None:
    with pytest.raises(errors.InvalidEStargz, match="invalid eStargz TOC: entry 0") as exc:
        esgz.parse_toc(_toc_of({**_GOOD_ENTRY, key: value}), payload_size=100)
    assert message in str(exc.value)


# -- hostile layers through the store: typed error, no snapshot, clean check -------------------------


def _store_image(store: Store, name: str, blob: bytes, annotations: dict[str, str]) -> None:
    layer = store.content.ingest(blob, media_type=GZ)
    diff_id = "sha256:" + hashlib.sha256(gzip.decompress(blob)).hexdigest()
    config = store.content.ingest(json.dumps({
        "architecture": "amd64", "os": "linux", "rootfs": {"type": "layers", "diff_ids": [diff_id]},
    }).encode(), media_type=mt.OCI_CONFIG)
    manifest = {
        "schemaVersion": 2, "mediaType": mt.OCI_MANIFEST,
        "config": {"mediaType": mt.OCI_CONFIG, "digest": config.digest, "size": config.size},
        "layers": [{"mediaType": GZ, "digest": layer.digest, "size": layer.size, "annotations": annotations}],
    }
    labels = {"containerd.io/gc.ref.content.config": config.digest, "containerd.io/gc.ref.content.l.0": layer.digest}
    desc = store.content.ingest(json.dumps(manifest).encode(), media_type=mt.OCI_MANIFEST, labels=labels)
    store.images.create(Image(name=name, target=Descriptor(mt.OCI_MANIFEST, desc.digest, desc.size)))


@pytest.mark.parametrize("snapshotter", ["native", "overlayfs"])
@pytest.mark.parametrize("case", ["chunk digest lies", "offset outside the blob", "dot-dot name",
                                  "entry under an absolute symlink", "overlapping chunks"])
def test_hostile_unpack_leaves_no_snapshot(tmp_path: Path, case: str, snapshotter: str) -> None:
    edit, kind = HOSTILE[case]
    blob, annotations = _hostile(tmp_path, edit)
    with Store(tmp_path / "root") as store:
        _store_image(store, "example.com/evil:1", blob, annotations)
        with pytest.raises(kind):
            store.unpack("example.com/evil:1", snapshotter=snapshotter)
        assert list(store.snapshots(snapshotter).walk()) == []
        assert store.check().ok, store.check().problems
        # the honest layer unpacks
        good, res = _convert(_tar(FILES), tmp_path)
        _store_image(store, "example.com/good:1", good, _annotations(res))
        store.unpack("example.com/good:1", snapshotter=snapshotter)
        assert store.check().ok


# -- convert on the real corpus -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def corpus_store(tmp_path_factory: pytest.TempPathFactory) -> Any:
    root = tmp_path_factory.mktemp("esgz-store")
    started = time.time()
    store = Store(root)
    store.import_archive(CORPUS, fetch_only=True)
    converted = {}
    for tag in ("debian:gzip", "debian:zstd", "app:layers"):
        converted[tag] = store.convert(tag, dst=f"example.com/esgz/{tag.replace(':', '-')}:esgz",
                                       compression_level=1)
    yield store, converted, started
    store.close()


def _tree(store: Store, name: str, started: float) -> dict[str, tuple[Any, ...]]:
    top = store.unpack(name, snapshotter="native")
    sn = store.snapshots("native")
    key = f"view-{top[-12:]}-{name.replace('/', '_')}"
    sn.view(key, top)
    try:
        # directories a later layer changes without listing them get the time of the unpack
        return snapshot(Path(sn.path(key)), mtimes_before=started)
    finally:
        sn.remove(key)


@pytest.mark.parametrize("tag", ["debian:gzip", "debian:zstd", "app:layers"])
def test_converted_corpus_image_unpacks_to_the_same_tree(corpus_store: Any, tag: str) -> None:
    store, converted, started = corpus_store
    image = converted[tag]
    source = _tree(store, f"docker.io/library/{tag}", started)
    ours = _tree(store, image.name, started)
    assert source == ours
    manifest = json.loads(store.content.read(image.target.digest))
    assert manifest["mediaType"] == mt.OCI_MANIFEST
    for layer in manifest["layers"]:
        assert layer["mediaType"] == GZ
        assert layer["annotations"][esgz.TOC_DIGEST_ANNOTATION].startswith("sha256:")
        assert int(layer["annotations"][esgz.UNCOMPRESSED_SIZE_ANNOTATION]) > 0
    assert store.images.get(f"docker.io/library/{tag}")  # the source is kept
    assert store.check().ok


def test_convert_twice_gives_the_same_image(corpus_store: Any) -> None:
    store, converted, _started = corpus_store
    again = store.convert("app:layers", dst="example.com/esgz/again:1", compression_level=1)
    assert again.target.digest == converted["app:layers"].target.digest


def test_convert_errors(corpus_store: Any) -> None:
    store, _converted, _started = corpus_store
    with pytest.raises(errors.InvalidArgument):
        store.convert("debian:gzip", to="zstd:chunked")
    with pytest.raises(errors.InvalidArgument):
        store.convert("debian:gzip", dst="debian:gzip")
    with pytest.raises(errors.NotFound):
        store.convert("debian:gzip", prioritized_files=["/no/such/file"], dst="x.io/y:z", compression_level=1)
    with pytest.raises(errors.NotFound):
        store.convert("nope:nope")


def test_plain_tools_read_the_converted_image(corpus_store: Any, tmp_path: Path) -> None:
    store, converted, _started = corpus_store
    image = converted["app:layers"]
    manifest = json.loads(store.content.read(image.target.digest))
    layer = manifest["layers"][-1]["digest"]
    path = tmp_path / "layer.tar.gz"
    with store.content.open(layer) as f, open(path, "wb") as out:
        shutil.copyfileobj(f, out)
    listing = subprocess.run(["tar", "-tzf", path], check=True, capture_output=True, text=True).stdout.split("\n")
    assert esgz.TOC_NAME in listing and "opt/app/" in listing
    layout = tmp_path / "layout"
    layout.mkdir()
    store.export_archive(layout, [image.name])
    if shutil.which("skopeo"):
        out = subprocess.run(["skopeo", "inspect", f"oci:{layout}:esgz"], check=True,
                             capture_output=True, text=True).stdout
        assert json.loads(out)["Layers"] == [d["digest"] for d in manifest["layers"]]
    if shutil.which("umoci") and os.geteuid() == 0:
        bundle = tmp_path / "bundle"
        subprocess.run(["umoci", "unpack", "--image", f"{layout}:esgz", str(bundle)], check=True,
                       capture_output=True)
        assert (bundle / "rootfs/opt/app").is_dir()
        assert (bundle / "rootfs" / esgz.TOC_NAME).exists()  # eStargz-agnostic: the TOC is a file
    # export, import into a fresh store: eStargz is checked on the way in
    archive = tmp_path / "esgz.tar"
    store.export_archive(archive, [image.name])
    with Store(tmp_path / "fresh") as fresh:
        [imported] = fresh.import_archive(archive)
        assert fresh.is_unpacked(imported.name, snapshotter="overlayfs")
        assert fresh.check().ok


@pytest.mark.registry
def test_pull_and_fetch_of_a_converted_image_from_a_registry(corpus_store: Any, registry_plain: Any,
                                                              tmp_path: Path) -> None:
    """A registry serves eStargz like any gzip image; a pull checks it as eStargz on unpack."""
    store, converted, _started = corpus_store
    image = converted["app:layers"]
    layout = tmp_path / "layout"
    layout.mkdir()
    store.export_archive(layout, [image.name])
    ref = registry_plain.ref("esgz/app:esgz")
    creds = [f"--dest-creds={registry_plain.user}:{registry_plain.password}"] if registry_plain.user else []
    subprocess.run(["skopeo", "--insecure-policy", "copy", "--quiet", "--preserve-digests",
                    "--dest-tls-verify=false", *creds, f"oci:{layout}:esgz", f"docker://{ref}"],
                   check=True, capture_output=True)
    with Store(tmp_path / "pulled", **registry_plain.client_options()) as fresh:
        pulled = fresh.pull(ref, snapshotter="native")
        assert pulled.target.digest == image.target.digest
        assert fresh.is_unpacked(pulled.name, snapshotter="native")
        fresh.fetch(ref)
        assert fresh.check().ok


def test_cli_images_convert(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from ocistore.cli import main

    root = tmp_path / "root"
    blob = gzip.compress(_tar(FILES))
    with Store(root) as store:
        layer = store.content.ingest(blob, media_type=GZ)
        diff_id = "sha256:" + hashlib.sha256(gzip.decompress(blob)).hexdigest()
        cfg = store.content.ingest(json.dumps({"os": "linux", "architecture": "amd64",
                                               "rootfs": {"type": "layers", "diff_ids": [diff_id]}}).encode())
        doc = {"schemaVersion": 2, "mediaType": mt.OCI_MANIFEST,
               "config": {"mediaType": mt.OCI_CONFIG, "digest": cfg.digest, "size": cfg.size},
               "layers": [{"mediaType": GZ, "digest": layer.digest, "size": layer.size}]}
        m = store.content.ingest(json.dumps(doc).encode())
        store.images.create(Image(name="example.com/src:1", target=Descriptor(mt.OCI_MANIFEST, m.digest, m.size)))
    prio = tmp_path / "prio"
    prio.write_text("/etc/passwd\n\n")
    assert main(["--root", str(root), "images", "convert", "--estargz", "--estargz-prioritized-files", str(prio),
                 "--estargz-chunk-size", "65536", "example.com/src:1", "example.com/dst:1"]) == 0
    assert capsys.readouterr().out.strip() == "example.com/dst:1"
    assert main(["--root", str(root), "images", "convert", "example.com/src:1", "example.com/x:1"]) == 2
    assert main(["--root", str(root), "images", "convert", "--estargz", "example.com/nope:1", "example.com/x:1"]) == 1
    with Store(root) as store:
        image = store.images.get("example.com/dst:1")
        manifest = json.loads(store.content.read(image.target.digest))
        assert esgz.TOC_DIGEST_ANNOTATION in manifest["layers"][0]["annotations"]
        store.unpack(image.name, snapshotter="native")
        assert store.check().ok
