"""A node fleet on loopback: one upstream registry, one pull-through ocistore mirror, 8 client stores.

Every client is wired to the mirror by a containerd ``hosts.toml`` (the mirror first, the
upstream as the server behind it). A counting proxy in front of the real upstream registry
(CNCF distribution) shows what the upstream served: each blob once, whatever the number of
clients. Killing the mirror in the middle of the pulls makes the clients fall back to the
upstream and finish with verified content.
"""

from __future__ import annotations

import http.client
import threading
from collections import Counter
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from registry_fixtures import Registry

from ocistore import Store

pytestmark = pytest.mark.registry

CLIENTS = 8
IMAGES = ["debian:gzip", "app:layers"]


class CountingProxy(ThreadingHTTPServer):
    """Forwards to the upstream registry and counts the blob GETs it answered."""

    daemon_threads = True

    def __init__(self, upstream: str, lie: bool = False) -> None:
        super().__init__(("127.0.0.1", 0), _Proxy)
        self.upstream = upstream
        self.lie = lie  # a lying peer: every blob comes back with one byte changed
        self.blob_gets: Counter[str] = Counter()
        self.lock = threading.Lock()
        threading.Thread(target=self.serve_forever, args=(0.05,), daemon=True).start()

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.server_address[1]}"

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass


class _Proxy(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: CountingProxy

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _forward(self) -> None:
        host, _, port = self.server.upstream.rpartition(":")
        conn = http.client.HTTPConnection(host, int(port), timeout=60)
        headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "connection")}
        conn.request(self.command, self.path, headers=headers)
        resp = conn.getresponse()
        if self.command == "GET" and "/blobs/sha256:" in self.path and resp.status == 200:
            with self.server.lock:
                self.server.blob_gets[self.path.split("?")[0].rsplit("/", 1)[1]] += 1
        self.send_response(resp.status)
        for k, v in resp.getheaders():
            if k.lower() not in ("connection", "transfer-encoding"):
                self.send_header(k, v)
        self.end_headers()
        first = True
        while self.command != "HEAD" and (chunk := resp.read(1 << 16)):
            if self.server.lie and first and "/blobs/" in self.path:
                chunk = bytes([chunk[0] ^ 0xFF]) + chunk[1:]
            first = False
            self.wfile.write(chunk)
        conn.close()

    do_GET = do_HEAD = _forward


@pytest.fixture
def upstream(registry_plain: Registry) -> Iterator[CountingProxy]:
    proxy = CountingProxy(registry_plain.address)
    yield proxy
    proxy.shutdown()
    proxy.server_close()


def _hosts_dir(tmp_path: Path, upstream: str, mirror: str) -> Path:
    hosts = tmp_path / "hosts"
    d = hosts / (upstream.replace(":", "_") + "_")
    d.mkdir(parents=True)
    (d / "hosts.toml").write_text(
        f'server = "http://{upstream}"\n[host."http://{mirror}"]\n  capabilities = ["pull", "resolve"]\n'
    )
    return hosts


def _pull_all(roots: list[Path], hosts: Path, refs: list[str], errors: list[BaseException]) -> list[Any]:
    results: list[Any] = []
    lock = threading.Lock()

    def client(root: Path) -> None:
        try:
            with Store(root, hosts_dir=hosts) as s:
                got = [s.pull(ref) for ref in refs]
                with lock:
                    results.append((root, [(i.name, i.target.digest) for i in got], s.check().ok))
        except BaseException as exc:
            with lock:
                errors.append(exc)

    threads = [threading.Thread(target=client, args=(r,)) for r in roots]
    for t in threads:
        t.start()
    for t in threads:
        t.join(600)
    return results


def test_eight_clients_through_one_mirror_fetch_each_blob_once_upstream(
    upstream: CountingProxy, tmp_path: Path, corpus: dict[str, Any]
) -> None:
    refs = [f"{upstream.address}/{i}" for i in IMAGES]
    with Store(tmp_path / "mirror") as cache, cache.serve("127.0.0.1:0", upstream=upstream.address) as srv:
        hosts = _hosts_dir(tmp_path, upstream.address, srv.address)
        errors: list[BaseException] = []
        results = _pull_all([tmp_path / f"client{i}" for i in range(CLIENTS)], hosts, refs, errors)
        assert not errors, errors
        assert cache.check().ok, cache.check().problems
    assert len(results) == CLIENTS
    want = [(ref, corpus["images"][i]["digest"]) for ref, i in zip(refs, IMAGES, strict=True)]
    for _root, images, ok in results:
        assert ok and images == want
    layers = {d["digest"] for i in IMAGES for d in corpus["images"][i]["layers"]}
    assert layers <= set(upstream.blob_gets)
    assert all(n == 1 for n in upstream.blob_gets.values()), upstream.blob_gets  # each blob once upstream


def test_clients_fall_back_to_the_upstream_when_the_mirror_dies(
    upstream: CountingProxy, tmp_path: Path, corpus: dict[str, Any]
) -> None:
    refs = [f"{upstream.address}/{i}" for i in IMAGES]
    cache = Store(tmp_path / "mirror")
    srv = cache.serve("127.0.0.1:0", upstream=upstream.address)
    srv.start()
    hosts = _hosts_dir(tmp_path, upstream.address, srv.address)
    killer = threading.Timer(0.3, srv.stop)  # in the middle of the first pulls
    killer.start()
    errors: list[BaseException] = []
    try:
        results = _pull_all([tmp_path / f"client{i}" for i in range(CLIENTS)], hosts, refs, errors)
    finally:
        killer.cancel()
        srv.stop()
        cache.close()
    assert not errors, errors
    want = [(ref, corpus["images"][i]["digest"]) for ref, i in zip(refs, IMAGES, strict=True)]
    assert len(results) == CLIENTS
    for _root, images, ok in results:
        assert ok and images == want  # verified content: digests of the corpus, check passes
    # the clients did go to the upstream themselves once the mirror was gone
    assert max(upstream.blob_gets.values()) > 1, upstream.blob_gets


def test_a_lying_peer_is_skipped_for_the_next_host(upstream: CountingProxy, tmp_path: Path,
                                                   corpus: dict[str, Any]) -> None:
    """A mirror that sends wrong bytes is caught by the digest and the blob comes from the server."""
    liar = CountingProxy(upstream.address, lie=True)
    try:
        hosts = _hosts_dir(tmp_path, upstream.address, liar.address)
        with Store(tmp_path / "client", hosts_dir=hosts) as s:
            img = s.fetch(f"{upstream.address}/debian:gzip")
            assert img.target.digest == corpus["images"]["debian:gzip"]["digest"]
            assert all(b.present for b in s.inspect(img.name).blobs)
            assert s.check().ok
        layer = corpus["images"]["debian:gzip"]["layers"][0]["digest"]
        assert liar.blob_gets[layer] == 1 and upstream.blob_gets[layer] == 2, (liar.blob_gets, upstream.blob_gets)
    finally:
        liar.shutdown()
        liar.server_close()
