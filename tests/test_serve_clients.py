"""``ocistore serve`` read by real registry clients: containerd 1.6 (as a mirror) and skopeo.

* containerd (the fixtures' ``containerd-peer``) pulls corpus images through a
  ``hosts.toml`` whose only working host is the ocistore server (the upstream ``server``
  is a dead port), and the image digests and snapshot chain IDs equal those of the same
  images pulled straight from the fixture registry; an image the store lacks falls
  through to the upstream;
* skopeo inspects and copies images from the server (plain HTTP, ``--tls-verify=false``).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from registry_fixtures import FIXTURES_DIR, Registry

from ocistore import Store
from ocistore.server.hoststoml import hosts_toml

PEER_SCRIPT = FIXTURES_DIR / "containerd-peer"


def _run(*argv: str | Path, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(a) for a in argv], capture_output=True, text=True, check=check, timeout=300)


# -- skopeo --------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory, corpus_dir: Path) -> Iterator[Any]:
    with Store(tmp_path_factory.mktemp("skopeo-served") / "root") as store:
        store.import_archive(corpus_dir, fetch_only=True, all_platforms=True)
        with store.serve("127.0.0.1:0") as srv:
            yield srv


@pytest.fixture
def skopeo() -> str:
    path = shutil.which("skopeo")
    if path is None:
        pytest.skip("skopeo is not installed (apt-get install skopeo)")
    return path


def test_skopeo_inspect(served: Any, corpus: dict[str, Any], skopeo: str) -> None:
    entry = corpus["images"]["debian:gzip"]
    out = _run(skopeo, "inspect", "--tls-verify=false", f"docker://{served.address}/debian:gzip").stdout
    doc = json.loads(out)
    assert doc["Digest"] == entry["digest"]
    assert doc["Layers"] == [layer["digest"] for layer in entry["layers"]]
    assert "gzip" in doc["RepoTags"] and "zstd" in doc["RepoTags"]
    raw = _run(skopeo, "inspect", "--raw", "--tls-verify=false", f"docker://{served.address}/multi:index").stdout
    assert [m["digest"] for m in json.loads(raw)["manifests"]] == [m["digest"] for m in
                                                                   corpus["images"]["multi:index"]["manifests"]]
    config = json.loads(_run(skopeo, "inspect", "--config", "--tls-verify=false",
                             f"docker://{served.address}/library/debian:gzip").stdout)
    assert config["rootfs"]["diff_ids"] == [layer["diff_id"] for layer in entry["layers"]]


@pytest.mark.parametrize("tag", ["app:layers", "multi:index"])
def test_skopeo_copy(served: Any, corpus: dict[str, Any], skopeo: str, tmp_path: Path, tag: str) -> None:
    entry = corpus["images"][tag]
    layout = tmp_path / "copy"
    _run(skopeo, "copy", "--all", "--preserve-digests", "--src-tls-verify=false",
         f"docker://{served.address}/{tag}", f"oci:{layout}:{tag.split(':')[1]}")
    index = json.loads((layout / "index.json").read_text())
    assert [m["digest"] for m in index["manifests"]] == [entry["digest"]]
    wanted = {entry["digest"]}
    for m in entry.get("manifests", [entry]):
        wanted |= {m["digest"], m["config"]["digest"], *(layer["digest"] for layer in m["layers"])}
    present = {"sha256:" + p.name for p in (layout / "blobs" / "sha256").iterdir()}
    assert present == wanted  # skopeo verified each blob's digest as it copied


# -- containerd --------------------------------------------------------------------------------------------
def _containerd_available() -> str | None:
    if os.geteuid() != 0:
        return "containerd-peer needs root"
    if not Path("/usr/bin/containerd").exists() or shutil.which("ctr") is None:
        return "containerd is not installed (apt-get install containerd)"
    if not PEER_SCRIPT.exists():
        return f"fixture kit not found at {FIXTURES_DIR}"
    return None


class Peer:
    """The fixtures' isolated containerd, driven through its ``ctr`` wrapper."""

    def __init__(self, directory: Path) -> None:
        self.dir = directory

    def ctr(self, *args: str | Path, namespace: str = "default", check: bool = True) -> str:
        env = dict(os.environ, CONTAINERD_NAMESPACE=namespace)
        proc = subprocess.run([str(self.dir / "ctr"), *map(str, args)], check=False, capture_output=True, text=True,
                              env=env, timeout=300)
        if check and proc.returncode != 0:
            raise AssertionError(f"ctr {' '.join(map(str, args))} failed: {proc.stderr[-2000:]}")
        return proc.stdout

    def restart_empty(self) -> None:
        """Wipe the root (every namespace's content) and start again."""
        _run(PEER_SCRIPT, "wipe", "--dir", self.dir)
        _run(PEER_SCRIPT, "start", "--dir", self.dir)

    def image_digest(self, ref: str, namespace: str) -> str:
        for line in self.ctr("images", "ls", namespace=namespace).splitlines()[1:]:
            fields = line.split()
            if fields and fields[0] == ref:
                return fields[2]
        raise AssertionError(f"{ref} not in containerd namespace {namespace}")

    def snapshots(self, namespace: str) -> set[str]:
        return {line.split()[0] for line in self.ctr("snapshots", "ls", namespace=namespace).splitlines()[1:]
                if line.strip()}

    def content(self, namespace: str) -> set[str]:
        return set(self.ctr("content", "ls", "-q", namespace=namespace).split())


@pytest.fixture(scope="module")
def peer() -> Iterator[Peer]:
    why = _containerd_available()
    if why:
        pytest.skip(why)
    directory = Path(tempfile.mkdtemp(prefix="ocs-ctrd-", dir="/tmp"))  # the socket path must stay short
    try:
        proc = _run(PEER_SCRIPT, "start", "--dir", directory, check=False)
        if proc.returncode != 0:
            raise RuntimeError(f"containerd-peer start failed: {proc.stderr[-2000:]}")
        yield Peer(directory)
    finally:
        _run(PEER_SCRIPT, "wipe", "--dir", directory, check=False)
        shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture(scope="module")
def mirror(tmp_path_factory: pytest.TempPathFactory, registry_plain: Registry) -> Iterator[tuple[Any, Store]]:
    """A store that fetched debian:gzip and multi:index (all platforms) from the fixture registry, served."""
    with Store(tmp_path_factory.mktemp("mirror-store") / "root", **registry_plain.client_options()) as store:
        store.fetch(registry_plain.ref("debian:gzip"))
        store.fetch(registry_plain.ref("multi:index"), all_platforms=True)
        with store.serve("127.0.0.1:0", access_log=True) as srv:
            yield srv, store


def _hosts_dir(tmp_path: Path, registry: Registry, mirror_url: str, upstream: str) -> Path:
    hosts = tmp_path / "hosts"
    (hosts / registry.address).mkdir(parents=True)
    (hosts / registry.address / "hosts.toml").write_text(hosts_toml(mirror_url, upstream))
    return hosts


@pytest.mark.containerd
@pytest.mark.registry
@pytest.mark.root
def test_containerd_pulls_through_ocistore_serve(peer: Peer, mirror: tuple[Any, Store], registry_plain: Registry,
                                                 corpus: dict[str, Any], tmp_path: Path) -> None:
    srv, _store = mirror
    entry = corpus["images"]["debian:gzip"]
    ref = registry_plain.ref("debian:gzip")
    # only the mirror works: the upstream named in hosts.toml is a dead port
    hosts = _hosts_dir(tmp_path, registry_plain, srv.url, "http://127.0.0.1:1")
    peer.restart_empty()  # no blob of an earlier pull in containerd: every byte comes from the server
    before = srv.stats.snapshot()
    peer.ctr("images", "pull", "--hosts-dir", hosts, ref, namespace="via-mirror")
    after = srv.stats.snapshot()
    assert after["bytes_sent"] - before["bytes_sent"] >= entry["compressed_total"]
    # the same image straight from the fixture registry, in another namespace
    peer.ctr("images", "pull", "--plain-http", ref, namespace="direct")
    assert peer.image_digest(ref, "via-mirror") == peer.image_digest(ref, "direct") == entry["digest"]
    assert peer.snapshots("via-mirror") == peer.snapshots("direct") == {entry["chain_id"]}
    assert peer.content("via-mirror") == peer.content("direct")
    check = peer.ctr("images", "check", namespace="via-mirror")
    assert "complete" in check and "incomplete" not in check


@pytest.mark.containerd
@pytest.mark.registry
@pytest.mark.root
def test_containerd_fetches_every_platform_of_an_index(peer: Peer, mirror: tuple[Any, Store],
                                                       registry_plain: Registry, corpus: dict[str, Any],
                                                       tmp_path: Path) -> None:
    srv, _store = mirror
    entry = corpus["images"]["multi:index"]
    ref = registry_plain.ref("multi:index")
    hosts = _hosts_dir(tmp_path, registry_plain, srv.url, "http://127.0.0.1:1")
    peer.ctr("content", "fetch", "--hosts-dir", hosts, "--all-platforms", ref, namespace="multi-mirror")
    assert peer.image_digest(ref, "multi-mirror") == entry["digest"]
    wanted = {entry["digest"]}
    for m in entry["manifests"]:
        wanted |= {m["digest"], m["config"]["digest"], *(layer["digest"] for layer in m["layers"])}
    assert peer.content("multi-mirror") == wanted
    # the default platform of a pull is linux/amd64, found third in the index
    peer.ctr("images", "pull", "--hosts-dir", hosts, ref, namespace="multi-pull")
    amd64 = next(m for m in entry["manifests"] if m["platform"]["architecture"] == "amd64")
    assert peer.snapshots("multi-pull") == {amd64["chain_id"]}


@pytest.mark.containerd
@pytest.mark.registry
@pytest.mark.root
def test_containerd_falls_through_to_the_upstream_for_what_the_store_lacks(
    peer: Peer, mirror: tuple[Any, Store], registry_plain: Registry, corpus: dict[str, Any], tmp_path: Path,
) -> None:
    srv, _store = mirror
    entry = corpus["images"]["app:layers"]
    ref = registry_plain.ref("app:layers")
    hosts = _hosts_dir(tmp_path, registry_plain, srv.url, registry_plain.address)
    before = srv.stats.snapshot()
    peer.ctr("content", "fetch", "--hosts-dir", hosts, ref, namespace="fallthrough")
    assert peer.image_digest(ref, "fallthrough") == entry["digest"]
    after = srv.stats.snapshot()
    assert after.get("status_404", 0) > before.get("status_404", 0)  # the mirror said "not here" first


@pytest.mark.containerd
@pytest.mark.registry
@pytest.mark.root
def test_containerd_pulls_through_an_empty_store(peer: Peer, registry_plain: Registry, corpus: dict[str, Any],
                                                 tmp_path: Path) -> None:
    """serve(upstream=...): containerd's only working host is the mirror, which fetches from the upstream."""
    entry = corpus["images"]["app:layers"]
    ref = registry_plain.ref("app:layers")
    peer.restart_empty()  # containerd shares blobs across namespaces: earlier pulls must not be there
    with Store(tmp_path / "cache") as store, store.serve("127.0.0.1:0", upstream=registry_plain.address) as srv:
        hosts = _hosts_dir(tmp_path, registry_plain, srv.url, "http://127.0.0.1:1")
        peer.ctr("images", "pull", "--hosts-dir", hosts, ref, namespace="pull-through")
        peer.ctr("images", "pull", "--plain-http", ref, namespace="pull-direct")
        assert peer.image_digest(ref, "pull-through") == peer.image_digest(ref, "pull-direct") == entry["digest"]
        assert peer.snapshots("pull-through") == peer.snapshots("pull-direct")
        assert entry["chain_id"] in peer.snapshots("pull-through")
        # the store now holds the image as a fetch would have left it
        assert store.images.get(ref).target.digest == entry["digest"]
        assert {i.digest for i in store.content.walk()} == peer.content("pull-through")
        assert store.check().ok


@pytest.mark.containerd
@pytest.mark.registry
@pytest.mark.root
def test_containerd_pushes_into_a_served_store(peer: Peer, registry_plain: Registry, corpus: dict[str, Any],
                                               tmp_path: Path) -> None:
    entry = corpus["images"]["debian:gzip"]
    local = registry_plain.ref("debian:gzip")
    peer.ctr("images", "pull", "--plain-http", local, namespace="push-source")
    with Store(tmp_path / "pushed") as store, store.serve("127.0.0.1:0", allow_push=True) as srv:
        remote = f"{srv.address}/ctr/debian:gzip"
        peer.ctr("images", "push", "--plain-http", remote, local, namespace="push-source")
        assert store.images.get(remote).target.digest == entry["digest"]
        assert {i.digest for i in store.content.walk()} == {
            entry["digest"], entry["config"]["digest"], *(layer["digest"] for layer in entry["layers"])}
        assert store.check().ok
        # and containerd pulls it back from there
        peer.ctr("images", "pull", "--plain-http", remote, namespace="push-back")
        assert peer.image_digest(remote, "push-back") == entry["digest"]
