"""``store.serve(upstream=...)``: misses are pulled through from a real registry (CNCF distribution).

The store starts empty; clients (ocistore's own registry client, and containerd in
test_serve_clients.py) pull through the server; afterwards the store holds exactly what they
pulled, with the digests of ``corpus.json``, and passes ``check``.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from registry_fixtures import Registry

from ocistore import Store

pytestmark = pytest.mark.registry


@pytest.fixture(autouse=True)
def _no_docker_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path / "docker-config"))


@pytest.fixture
def cache(tmp_path: Path, registry_plain: Registry) -> Iterator[tuple[Store, Any]]:
    with Store(tmp_path / "cache") as store, store.serve("127.0.0.1:0", upstream=registry_plain.address) as srv:
        yield store, srv


def request(srv: Any, method: str, path: str) -> tuple[int, http.client.HTTPMessage, bytes]:
    host, _, port = srv.address.rpartition(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=60)
    try:
        conn.request(method, path)
        resp = conn.getresponse()
        return resp.status, resp.headers, resp.read()
    finally:
        conn.close()


def test_a_client_pulls_through_an_empty_store(cache: tuple[Store, Any], registry_plain: Registry,
                                               corpus: dict[str, Any], tmp_path: Path) -> None:
    store, srv = cache
    entry = corpus["images"]["debian:gzip"]
    with Store(tmp_path / "client", plain_http=True) as client:
        img = client.pull(f"{srv.address}/debian:gzip", snapshotter="native")
        assert img.target.digest == entry["digest"]
    # the cache recorded the image as a fetch from the upstream would have
    cached = store.images.get(registry_plain.ref("debian:gzip"))
    assert cached.target.digest == entry["digest"]
    held = {i.digest for i in store.content.walk()}
    assert held == {entry["digest"], entry["config"]["digest"], *(layer["digest"] for layer in entry["layers"])}
    labels = store.content.info(entry["digest"]).labels
    assert labels["containerd.io/gc.ref.content.l.0"] == entry["layers"][0]["digest"]
    assert labels[f"containerd.io/distribution.source.{registry_plain.address}"] == "debian"
    assert store.check().ok
    store.gc()
    assert {i.digest for i in store.content.walk()} == held  # the record keeps it all


def test_an_index_pulls_through_only_the_platform_asked_for(cache: tuple[Store, Any], registry_plain: Registry,
                                                            corpus: dict[str, Any], tmp_path: Path) -> None:
    store, srv = cache
    entry = corpus["images"]["multi:index"]
    arm64 = next(m for m in entry["manifests"] if m["platform"]["architecture"] == "arm64")
    with Store(tmp_path / "client", plain_http=True) as client:
        img = client.fetch(f"{srv.address}/multi:index", platform="linux/arm64/v8")
        assert img.target.digest == entry["digest"]
    held = {i.digest for i in store.content.walk()}
    assert held == {entry["digest"], arm64["digest"], arm64["config"]["digest"], arm64["layers"][0]["digest"]}
    assert store.check().ok


def test_the_server_pulls_through_only_for_its_upstream(cache: tuple[Store, Any], corpus: dict[str, Any]) -> None:
    store, srv = cache
    digest = corpus["images"]["debian:gzip"]["layers"][0]["digest"]
    status, _, body = request(srv, "GET", "/v2/debian/manifests/gzip?ns=registry.example")
    assert status == 404 and json.loads(body)["errors"][0]["code"] == "NAME_UNKNOWN"
    status, _, body = request(srv, "GET", "/v2/debian/manifests/no-such-tag")  # upstream lacks it too
    assert status == 404 and json.loads(body)["errors"][0]["code"] == "NAME_UNKNOWN"
    # a blob no manifest in the store names: its size is unknown, it is not fetched blind
    status, _, body = request(srv, "GET", f"/v2/debian/blobs/{digest}")
    assert status == 404 and json.loads(body)["errors"][0]["code"] == "BLOB_UNKNOWN"
    assert store.images.list() == [] and list(store.content.walk()) == []


def test_concurrent_clients_of_one_blob(cache: tuple[Store, Any], corpus: dict[str, Any]) -> None:
    store, srv = cache
    entry = corpus["images"]["debian:gzip"]
    assert request(srv, "GET", "/v2/debian/manifests/gzip")[0] == 200
    layer = entry["layers"][0]
    got: list[str] = []
    lock = threading.Lock()

    def fetch() -> None:
        status, _, body = request(srv, "GET", f"/v2/debian/blobs/{layer['digest']}")
        with lock:
            got.append(f"{status} sha256:{hashlib.sha256(body).hexdigest()}")

    threads = [threading.Thread(target=fetch) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert got == [f"200 {layer['digest']}"] * 4
    assert store.content.statuses() == []  # no ingest left behind


def test_a_restarted_server_finds_sizes_in_the_stored_manifests(tmp_path: Path, registry_plain: Registry,
                                                                corpus: dict[str, Any]) -> None:
    entry = corpus["images"]["app:layers"]
    with Store(tmp_path / "cache") as store:
        with store.serve("127.0.0.1:0", upstream=registry_plain.address) as srv:
            assert request(srv, "GET", "/v2/app/manifests/layers")[0] == 200
        with store.serve("127.0.0.1:0", upstream=registry_plain.address) as srv:  # a new server knows nothing
            for layer in entry["layers"]:
                status, _, body = request(srv, "GET", f"/v2/app/blobs/{layer['digest']}")
                assert status == 200 and f"sha256:{hashlib.sha256(body).hexdigest()}" == layer["digest"]
        assert store.check().ok


def test_a_dead_upstream_is_a_502(tmp_path: Path) -> None:
    with Store(tmp_path / "cache") as store, store.serve("127.0.0.1:0", upstream="127.0.0.1:1") as srv:
        status, _, body = request(srv, "GET", "/v2/debian/manifests/gzip")
        assert status == 502 and json.loads(body)["errors"][0]["code"] == "UNKNOWN"
        assert request(srv, "GET", "/v2/")[0] == 200
