"""Import (fetch-only and unpack), lazy container create, platforms, export, bad archives.

Uses the real images of ../shared/fixtures/corpus (an OCI layout) and real overlay mounts.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import tarfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ocistore import Platform, Store, errors
from ocistore.oci import chain_ids
from ocistore.testing.layout import write_layout

APP = "docker.io/library/app:layers"
DEBIAN = "docker.io/library/debian:gzip"
MULTI = "docker.io/library/multi:index"


def _mount_ok() -> bool:
    return os.geteuid() == 0 and Path("/proc/filesystems").read_text().find("overlay") >= 0


needs_mount = pytest.mark.skipif(not _mount_ok(), reason="needs root and overlayfs to mount snapshots")


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    with Store(tmp_path / "root") as s:
        yield s


def _image(corpus: dict[str, Any], tag: str) -> dict[str, Any]:
    return corpus["images"][tag]


def test_fetch_only_import_creates_records_and_no_snapshots(store: Store, corpus_dir: Path,
                                                             corpus: dict[str, Any]) -> None:
    images = store.import_archive(corpus_dir, fetch_only=True)
    names = {i.name for i in images}
    assert {APP, DEBIAN, MULTI, "docker.io/library/debian:zstd"} <= names
    assert list(store.snapshots("overlayfs").walk()) == []
    assert store.disk_usage().snapshots == 0
    app = _image(corpus, "app:layers")
    img = store.images.get(APP)
    assert img.target.digest == app["digest"]
    labels = store.content.info(app["digest"]).labels
    assert labels["containerd.io/gc.ref.content.config"] == app["config"]["digest"]
    for i, layer in enumerate(app["layers"]):
        assert labels[f"containerd.io/gc.ref.content.l.{i}"] == layer["digest"]
        assert store.content.info(layer["digest"]).size == layer["size"]
    assert not store.is_unpacked(APP)
    assert store.image_size(APP) == app["size"] + app["config"]["size"] + sum(
        layer["size"] for layer in app["layers"])


def test_multi_index_strict_takes_only_the_host_platform(store: Store, corpus_dir: Path,
                                                         corpus: dict[str, Any]) -> None:
    store.import_archive(corpus_dir, fetch_only=True, platform="linux/amd64")
    multi = _image(corpus, "multi:index")
    labels = store.content.info(multi["digest"]).labels
    manifests = [v for k, v in labels.items() if k.startswith("containerd.io/gc.ref.content.m.")]
    assert len(manifests) == 3  # the index labels every child, before platform filtering
    present = [d for d in manifests if store.content.exists(d)]
    assert present == [_image(corpus, "debian:gzip")["digest"]]


def test_multi_index_other_platforms(tmp_path: Path, corpus_dir: Path, corpus: dict[str, Any]) -> None:
    from ocistore.oci.manifest import parse_index

    sizes = {}
    for plat in ("linux/386", "linux/arm64/v8"):
        with Store(tmp_path / plat.replace("/", "-")) as s:
            s.import_archive(corpus_dir, fetch_only=True, platform=plat)
            img = s.images.get(MULTI)
            index = parse_index(s.content.read(img.target.digest))
            by_platform = {str(d.platform.normalized()): d.digest for d in index.manifests if d.platform}
            wanted = str(Platform.parse(plat))
            assert s.content.exists(by_platform[wanted])
            others = [p for p in ("linux/386", "linux/arm64") if p != wanted]
            assert not any(s.content.exists(by_platform[p]) for p in others)
            sizes[plat] = s.image_size(img.name, platform=plat)
    assert sizes["linux/386"] != sizes["linux/arm64/v8"]


def test_unpack_after_fetch_equals_pull(tmp_path: Path, corpus_dir: Path, corpus: dict[str, Any]) -> None:
    app = _image(corpus, "app:layers")
    with Store(tmp_path / "a") as a, Store(tmp_path / "b") as b:
        a.import_archive(corpus_dir, fetch_only=True)
        top = a.unpack(APP, snapshotter="native")
        b.import_archive(corpus_dir, fetch_only=False, snapshotter="native")
        assert top == app["chain_id"] == chain_ids([layer["diff_id"] for layer in app["layers"]])[-1]
        assert b.is_unpacked(APP, "native") and a.is_unpacked(APP, "native")
        ta = _tree(a.snapshots("native").path(top))
        tb = _tree(b.snapshots("native").path(top))
        assert ta == tb and len(ta) > 4000


def test_unpack_labels_and_second_snapshotter(store: Store, corpus_dir: Path, corpus: dict[str, Any]) -> None:
    app = _image(corpus, "app:layers")
    store.import_archive(corpus_dir, fetch_only=True)
    top = store.unpack(APP, snapshotter="overlayfs")
    assert store.unpack(APP, snapshotter="native") == top
    cfg = store.content.info(app["config"]["digest"]).labels
    assert cfg["containerd.io/gc.ref.snapshot.overlayfs"] == top
    assert cfg["containerd.io/gc.ref.snapshot.native"] == top
    chains = chain_ids([layer["diff_id"] for layer in app["layers"]])
    for sn in ("overlayfs", "native"):
        for i, chain in enumerate(chains):
            info = store.snapshots(sn).stat(chain)
            assert info.kind.value == "committed"
            assert info.parent == (chains[i - 1] if i else "")
            assert info.labels["containerd.io/snapshot.ref"] == chain
            assert info.labels["containerd.io/snapshot/cri.image-ref"] == APP
            assert info.labels["containerd.io/snapshot/cri.manifest-digest"] == app["digest"]
            assert info.labels["containerd.io/snapshot/cri.layer-digest"] == app["layers"][i]["digest"]
            assert info.labels["containerd.io/snapshot/cri.image-layers"] == ",".join(
                layer["digest"] for layer in app["layers"][i:])
    for layer in app["layers"]:
        assert store.content.info(layer["digest"]).labels["containerd.io/uncompressed"] == layer["diff_id"]
    # a second unpack does nothing new
    before = {i.name: i.created_at for i in store.snapshots("overlayfs").walk()}
    store.unpack(APP, snapshotter="overlayfs")
    assert {i.name: i.created_at for i in store.snapshots("overlayfs").walk()} == before


def test_zstd_and_gzip_share_diff_ids(store: Store, corpus_dir: Path) -> None:
    store.import_archive(corpus_dir, fetch_only=True)
    assert store.unpack(DEBIAN, snapshotter="native") == store.unpack(
        "docker.io/library/debian:zstd", snapshotter="native")


def _tree(root: Path) -> dict[str, tuple[Any, ...]]:
    """path -> (type, mode, uid, gid, size, content digest or link target), whiteouts applied."""
    import hashlib

    out: dict[str, tuple[Any, ...]] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            rel = str(p.relative_to(root))
            st = p.lstat()
            if stat.S_ISLNK(st.st_mode):
                extra: Any = os.readlink(p)
            elif stat.S_ISREG(st.st_mode):
                extra = hashlib.sha256(p.read_bytes()).hexdigest()
            else:
                extra = None
            out[rel] = (stat.S_IFMT(st.st_mode), stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid,
                        st.st_size if stat.S_ISREG(st.st_mode) else 0, extra)
    return out


@needs_mount
def test_lazy_create_matches_umoci(tmp_path: Path, corpus_dir: Path) -> None:
    if shutil.which("umoci") is None:
        pytest.skip("umoci is not installed (apt-get install umoci)")
    layout = tmp_path / "layout"
    shutil.copytree(corpus_dir, layout)
    bundle = tmp_path / "bundle"
    subprocess.run(["umoci", "unpack", "--image", f"{layout}:app:layers", str(bundle)], check=True,
                   capture_output=True)
    from ocistore.mount import mount, unmount

    with Store(tmp_path / "root") as s:
        s.import_archive(corpus_dir, fetch_only=True)
        assert not s.is_unpacked(APP)
        c = s.containers.create("web", APP)
        assert s.is_unpacked(APP)
        target = tmp_path / "mnt"
        target.mkdir()
        mount(c.mounts, target)
        try:
            ours = _tree(target)
        finally:
            unmount(target)
    theirs = _tree(bundle / "rootfs")
    # umoci applies the same layers; directory mtimes are not compared (not in the tuple)
    missing = sorted(set(theirs) - set(ours))[:10]
    extra = sorted(set(ours) - set(theirs))[:10]
    assert not missing and not extra, (missing, extra)
    diff = [k for k in theirs if theirs[k] != ours[k]]
    assert not diff, [(k, theirs[k], ours[k]) for k in diff[:5]]


def test_concurrent_creates_unpack_once(store: Store, corpus_dir: Path, corpus: dict[str, Any]) -> None:
    store.import_archive(corpus_dir, fetch_only=True)
    n_layers = len(_image(corpus, "app:layers")["layers"])
    errs: list[BaseException] = []

    def create(i: int) -> None:
        try:
            with Store(store.root) as s:
                s.containers.create(f"c{i}", APP, snapshotter="overlayfs")
        except BaseException as e:
            errs.append(e)

    threads = [threading.Thread(target=create, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errs, errs
    assert len(store.containers.list()) == 8
    with store.db.read() as txn:
        seq = txn.get("counters", b"snapshots/overlayfs")
    # one extract snapshot per layer and one active snapshot per container: nothing unpacked twice
    assert seq == n_layers + 8
    for c in store.containers.list():
        assert store.snapshots("overlayfs").stat(c.snapshot_key).kind.value == "active"
    store.containers.delete("c0")
    with pytest.raises(errors.NotFound):
        store.snapshots("overlayfs").stat("c0")


def test_container_errors(store: Store, corpus_dir: Path) -> None:
    with pytest.raises(errors.NotFound):
        store.containers.create("x", "example.com/none:1")
    store.import_archive(corpus_dir, fetch_only=True)
    store.containers.create("x", "debian:gzip", snapshotter="native")  # normalised name
    with pytest.raises(errors.AlreadyExists):
        store.containers.create("x", DEBIAN, snapshotter="native")
    with pytest.raises(errors.InvalidArgument):
        store.containers.create("bad/id", DEBIAN)


def test_export_import_round_trip(tmp_path: Path, corpus_dir: Path, corpus: dict[str, Any]) -> None:
    with Store(tmp_path / "a") as a:
        a.import_archive(corpus_dir, fetch_only=True)
        a.export_archive(tmp_path / "out.tar", [APP, MULTI])
        (tmp_path / "outdir").mkdir()
        a.export_archive(tmp_path / "outdir", [DEBIAN], format="docker")
    with tarfile.open(tmp_path / "out.tar") as tf:
        names = set(tf.getnames())
    assert {"oci-layout", "index.json"} <= names
    with Store(tmp_path / "b") as b:
        imgs = b.import_archive(tmp_path / "out.tar", fetch_only=True)
        assert {i.name for i in imgs} == {APP, MULTI}
        assert b.images.get(APP).target.digest == _image(corpus, "app:layers")["digest"]
        imgs = b.import_archive(tmp_path / "outdir", fetch_only=True)
        assert [i.name for i in imgs] == [DEBIAN]
        assert b.check().ok


def test_docker_archive_from_skopeo(tmp_path: Path, corpus_dir: Path, corpus: dict[str, Any]) -> None:
    if shutil.which("skopeo") is None:
        pytest.skip("skopeo is not installed (apt-get install skopeo)")
    archive = tmp_path / "debian.docker.tar"
    subprocess.run(["skopeo", "copy", f"oci:{corpus_dir}:debian:gzip", f"docker-archive:{archive}:debian:gzip"],
                   check=True, capture_output=True)
    with Store(tmp_path / "root") as s:
        imgs = s.import_archive(archive, fetch_only=False, snapshotter="native")
        assert [i.name for i in imgs] == [DEBIAN]
        assert s.unpack(DEBIAN, snapshotter="native") == _image(corpus, "debian:gzip")["chain_id"]


def test_bad_archives(store: Store, tmp_path: Path) -> None:
    with pytest.raises(errors.NotFound):
        store.import_archive(tmp_path / "missing.tar")
    junk = tmp_path / "junk.tar"
    junk.write_bytes(b"this is not a tar archive at all" * 100)
    with pytest.raises(errors.InvalidArgument):
        store.import_archive(junk)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(errors.InvalidArgument):
        store.import_archive(empty)


def test_corrupt_blob_leaves_no_image(store: Store, tmp_path: Path) -> None:
    layout = tmp_path / "layout"
    write_layout(layout, {"example.com/a:1": [{"etc/": None, "etc/hosts": "127.0.0.1 localhost\n"}]})
    index = json.loads((layout / "index.json").read_text())
    manifest = json.loads((layout / "blobs/sha256" / index["manifests"][0]["digest"][7:]).read_text())
    layer = layout / "blobs/sha256" / manifest["layers"][0]["digest"][7:]
    data = bytearray(layer.read_bytes())
    data[-5] ^= 0xFF
    layer.write_bytes(bytes(data))
    with pytest.raises(errors.DigestMismatch):
        store.import_archive(layout, fetch_only=True)
    with pytest.raises(errors.NotFound):
        store.images.get("example.com/a:1")
    store.gc()
    assert store.check().ok


def test_lazy_unpack_of_crafted_image_native(store: Store, tmp_path: Path) -> None:
    layout = tmp_path / "layout"
    write_layout(layout, {"example.com/app:1": [
        {"etc/": None, "etc/a": "a", "etc/b": "b", "lib/": None, "lib/x": "x"},
        {"etc/a": ("whiteout", ""), "etc/c": "c", "lib/y": ("symlink", "x")},
    ]})
    store.import_archive(layout, fetch_only=True)
    c = store.containers.create("c", "example.com/app:1", snapshotter="native")
    root = Path(c.mounts[0].source)
    assert sorted(p.name for p in (root / "etc").iterdir()) == ["b", "c"]
    assert os.readlink(root / "lib/y") == "x"


def _raw_layout(root: Path, name: str, tars: list[bytes], diff_ids: list[str] | None = None) -> None:
    """An OCI layout from raw (possibly hostile) tar streams, gzip-compressed."""
    import gzip
    import hashlib

    def put(data: bytes) -> dict[str, Any]:
        d = "sha256:" + hashlib.sha256(data).hexdigest()
        p = root / "blobs/sha256" / d[7:]
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)
        return {"digest": d, "size": len(data)}

    layers = [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", **put(gzip.compress(t))} for t in tars]
    ids = diff_ids or ["sha256:" + hashlib.sha256(t).hexdigest() for t in tars]
    config = {"architecture": "amd64", "os": "linux", "rootfs": {"type": "layers", "diff_ids": ids}}
    cdesc = {"mediaType": "application/vnd.oci.image.config.v1+json", **put(json.dumps(config).encode())}
    manifest = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "config": cdesc, "layers": layers}
    mdesc = {"mediaType": "application/vnd.oci.image.manifest.v1+json", **put(json.dumps(manifest).encode()),
             "annotations": {"io.containerd.image.name": name}}
    (root / "oci-layout").write_text('{"imageLayoutVersion":"1.0.0"}')
    (root / "index.json").write_text(json.dumps({"schemaVersion": 2, "manifests": [mdesc]}))


def _tar(members: list[tuple[str, bytes]]) -> bytes:
    import io

    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return buf.getvalue()


@pytest.mark.parametrize("snapshotter", ["native", pytest.param("overlayfs", marks=needs_mount)])
def test_hostile_images_fail_cleanly(tmp_path: Path, snapshotter: str) -> None:
    """A layer escaping its root and a config lying about diff IDs: typed errors, nothing
    written outside, no committed snapshot, and the store still checks clean."""
    sentinel = tmp_path / "outside"
    sentinel.mkdir()
    good = _tar([("etc/hostname", b"ok\n")])
    escape = _tar([("../../outside/pwned", b"x"), ("etc/x", b"y")])
    _raw_layout(tmp_path / "evil", "example.com/evil:1", [good, escape])
    _raw_layout(tmp_path / "liar", "example.com/liar:1", [good], diff_ids=["sha256:" + "1" * 64])
    with Store(tmp_path / "root") as s:
        s.import_archive(tmp_path / "evil", fetch_only=True)
        s.import_archive(tmp_path / "liar", fetch_only=True)
        with pytest.raises(errors.UnsafeArchive):
            s.containers.create("evil", "example.com/evil:1", snapshotter=snapshotter)
        with pytest.raises(errors.DigestMismatch):
            s.containers.create("liar", "example.com/liar:1", snapshotter=snapshotter)
        assert list(sentinel.iterdir()) == []
        assert s.containers.list() == []
        committed = [i.name for i in s.snapshots(snapshotter).walk() if i.kind.value == "committed"]
        # only the good first layer of the evil image may have been committed
        assert len(committed) <= 1
        assert not [i for i in s.snapshots(snapshotter).walk() if i.kind.value == "active"]
        s.images.delete("example.com/evil:1")
        s.images.delete("example.com/liar:1")
        s.gc()
        report = s.check()
        assert report.ok, report.problems
        assert list(s.snapshots(snapshotter).walk()) == []
