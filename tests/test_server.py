"""``store.serve()``: the read side of the distribution API, its limits and hostile requests.

The store holds the prebuilt corpus (imported, all platforms); every request goes over a
real loopback socket to a real server. Clients are ``http.client``, raw sockets for
requests no well-behaved client would send, and ocistore's own registry client.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import http.client
import json
import os
import shutil
import socket
import ssl
import subprocess
import sys
import threading
import time
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ocistore import Descriptor, Image, Store, errors
from ocistore.cli import main
from ocistore.oci import chain_ids, mediatypes
from ocistore.server.hoststoml import hosts_toml, upstream_server
from ocistore.server.ranges import ByteRange, RangeNotSatisfiable, parse_range

DEBIAN = "docker.io/library/debian:gzip"
MULTI = "docker.io/library/multi:index"


# -- audit: which files does the server open? ------------------------------------------------------
_OPENED: list[str] | None = None


def _audit(event: str, args: tuple[Any, ...]) -> None:
    if _OPENED is not None and event == "open" and args and isinstance(args[0], str | bytes | os.PathLike):
        _OPENED.append(os.fsdecode(args[0]))


sys.addaudithook(_audit)


# -- fixtures ----------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory, corpus_dir: Path) -> Iterator[Store]:
    root = tmp_path_factory.mktemp("served") / "root"
    with Store(root) as s:
        s.import_archive(corpus_dir, fetch_only=True, all_platforms=True)
        yield s


@pytest.fixture(scope="module")
def server(store: Store) -> Iterator[Any]:
    with store.serve("127.0.0.1:0", timeout=5.0) as srv:
        yield srv


def _layout_blob(corpus_dir: Path, digest: str) -> bytes:
    return (corpus_dir / "blobs" / "sha256" / digest.removeprefix("sha256:")).read_bytes()


def _conn(srv: Any, timeout: float = 10.0) -> http.client.HTTPConnection:
    host, _, port = srv.address.rpartition(":")
    return http.client.HTTPConnection(host, int(port), timeout=timeout)


def request(srv: Any, method: str, path: str, headers: dict[str, str] | None = None,
            conn: http.client.HTTPConnection | None = None) -> tuple[int, http.client.HTTPMessage, bytes]:
    c = conn or _conn(srv)
    try:
        c.request(method, path, headers=headers or {})
        resp = c.getresponse()
        return resp.status, resp.headers, resp.read()
    finally:
        if conn is None:
            c.close()


def raw(srv: Any, data: bytes, timeout: float = 10.0) -> tuple[int, http.client.HTTPMessage, bytes]:
    """Send ``data`` as is and parse one answer."""
    host, _, port = srv.address.rpartition(":")
    with socket.create_connection((host, int(port)), timeout=timeout) as sock:
        sock.sendall(data)
        resp = http.client.HTTPResponse(sock, method="GET")
        resp.begin()
        return resp.status, resp.headers, resp.read()


def error_code(body: bytes) -> str:
    doc = json.loads(body)
    assert set(doc) == {"errors"} and isinstance(doc["errors"], list) and doc["errors"]
    code: str = doc["errors"][0]["code"]
    assert isinstance(doc["errors"][0]["message"], str)
    return code


def _largest_layer(corpus: dict[str, Any]) -> dict[str, Any]:
    layers = [layer for e in corpus["images"].values() if not e.get("big") for layer in e.get("layers", [])]
    return max(layers, key=lambda layer: layer["size"])


# -- the API -------------------------------------------------------------------------------------------
def test_base_endpoint(server: Any) -> None:
    status, headers, body = request(server, "GET", "/v2/")
    assert status == 200 and json.loads(body) == {}
    assert headers["Docker-Distribution-API-Version"] == "registry/2.0"
    assert headers["Content-Type"].startswith("application/json")
    status, headers, body = request(server, "HEAD", "/v2/")
    assert status == 200 and body == b"" and headers["Content-Length"] == "2"
    assert request(server, "GET", "/v2")[0] == 200


@pytest.mark.parametrize("path", [
    "/v2/debian/manifests/gzip",                       # the repository path, in any registry
    "/v2/library/debian/manifests/gzip?ns=docker.io",  # what containerd sends to a mirror
    "/v2/debian/manifests/gzip?ns=docker.io",          # ns + Docker Hub's short name
    "/v2/docker.io/library/debian/manifests/gzip",     # the full name
])
def test_manifest_by_tag(server: Any, corpus: dict[str, Any], corpus_dir: Path, path: str) -> None:
    entry = corpus["images"]["debian:gzip"]
    status, headers, body = request(server, "GET", path)
    assert status == 200
    assert body == _layout_blob(corpus_dir, entry["digest"])
    assert headers["Content-Type"] == entry["mediaType"]
    assert headers["Docker-Content-Digest"] == entry["digest"]
    assert headers["Content-Length"] == str(entry["size"])
    assert headers["ETag"] == f'"{entry["digest"]}"'
    status, head_headers, head_body = request(server, "HEAD", path)
    assert status == 200 and head_body == b""
    for h in ("Content-Type", "Docker-Content-Digest", "Content-Length"):
        assert head_headers[h] == headers[h]


def test_every_corpus_manifest_by_tag_and_digest(server: Any, corpus: dict[str, Any], corpus_dir: Path) -> None:
    for ref, entry in corpus["images"].items():
        if entry.get("big"):
            continue
        name, tag = ref.split(":")
        status, headers, body = request(server, "GET", f"/v2/{name}/manifests/{tag}")
        assert status == 200, ref
        assert headers["Content-Type"] == entry["mediaType"]
        assert hashlib.sha256(body).hexdigest() == entry["digest"].removeprefix("sha256:")
        children = [m for m in entry.get("manifests", [])] + [entry]
        for child in children:
            status, headers, body = request(server, "GET", f"/v2/{name}/manifests/{child['digest']}")
            assert status == 200, child["digest"]
            assert headers["Docker-Content-Digest"] == child["digest"]
            assert headers["Content-Type"] == child["mediaType"]  # the corpus omits mediaType: sniffed
            assert body == _layout_blob(corpus_dir, child["digest"])


def test_manifest_not_modified(server: Any, corpus: dict[str, Any]) -> None:
    digest = corpus["images"]["debian:gzip"]["digest"]
    status, headers, body = request(server, "GET", "/v2/debian/manifests/gzip", {"If-None-Match": f'"{digest}"'})
    assert status == 304 and body == b"" and headers["Docker-Content-Digest"] == digest


def test_blob_whole_and_head(server: Any, corpus: dict[str, Any]) -> None:
    layer = corpus["images"]["debian:gzip"]["layers"][0]
    status, headers, body = request(server, "GET", f"/v2/debian/blobs/{layer['digest']}")
    assert status == 200
    assert headers["Content-Length"] == str(layer["size"]) and len(body) == layer["size"]
    assert headers["Docker-Content-Digest"] == layer["digest"]
    assert headers["Content-Type"] == "application/octet-stream"
    assert headers["Accept-Ranges"] == "bytes"
    assert "sha256:" + hashlib.sha256(body).hexdigest() == layer["digest"]
    status, headers, body = request(server, "HEAD", f"/v2/debian/blobs/{layer['digest']}")
    assert status == 200 and body == b"" and headers["Content-Length"] == str(layer["size"])
    # content is addressed by digest: any valid repository name serves it (as Spegel does)
    assert request(server, "HEAD", f"/v2/some/other/repo/blobs/{layer['digest']}")[0] == 200


@pytest.mark.parametrize(("spec", "start", "end"), [
    ("bytes=0-0", 0, 0),
    ("bytes=10-19", 10, 19),
    ("bytes=100-", 100, None),
    ("bytes=-10", -10, None),
    ("bytes=5-99999999999999", 5, None),  # an end past the blob is cut to it
    ("BYTES = 1 - 2", 1, 2),
])
def test_blob_ranges(server: Any, corpus: dict[str, Any], corpus_dir: Path, spec: str, start: int,
                     end: int | None) -> None:
    config = corpus["images"]["debian:gzip"]["config"]
    data = _layout_blob(corpus_dir, config["digest"])
    size = len(data)
    status, headers, body = request(server, "GET", f"/v2/debian/blobs/{config['digest']}", {"Range": spec})
    assert status == 206
    first = start if start >= 0 else size + start
    last = size - 1 if end is None else end
    assert body == data[first:last + 1]
    assert headers["Content-Range"] == f"bytes {first}-{last}/{size}"
    assert headers["Content-Length"] == str(last - first + 1)


@pytest.mark.parametrize("spec", [
    "bytes=573-", "bytes=100000-200000", "bytes=-0", "bytes=5-3", "bytes=-5-10", "bytes=abc", "bytes=",
    "bytes=-", "bytes=1-2-3", "bytes=" + "9" * 40 + "-", "bytes=0x10-", "bytes=+1-2", "garbage",
])
def test_unsatisfiable_ranges_are_416(server: Any, corpus: dict[str, Any], spec: str) -> None:
    config = corpus["images"]["debian:gzip"]["config"]
    assert config["size"] == 573
    status, headers, body = request(server, "GET", f"/v2/debian/blobs/{config['digest']}", {"Range": spec})
    assert status == 416
    assert headers["Content-Range"] == "bytes */573"
    assert error_code(body) == "RANGE_INVALID"


@pytest.mark.parametrize("headers", [
    {"Range": "bytes=" + ",".join(f"{i}-{i}" for i in range(0, 2 * 200, 2))},  # more than MAX_RANGES
    {"Range": "items=0-5"},           # another unit: ignored
    {"Range": "bytes=0-5", "If-Range": '"sha256:' + "0" * 64 + '"'},  # If-Range does not match
])
def test_ignored_ranges_send_the_whole_blob(server: Any, corpus: dict[str, Any], headers: dict[str, str]) -> None:
    config = corpus["images"]["debian:gzip"]["config"]
    status, _, body = request(server, "GET", f"/v2/debian/blobs/{config['digest']}", headers)
    assert status == 200 and len(body) == config["size"]


def test_several_ranges_are_one_multipart_answer(server: Any, corpus: dict[str, Any], corpus_dir: Path) -> None:
    """``bytes=a-b,c-d``: one part per range, in order, overlapping or touching ones merged, those
    past the end dropped; what ``RegistryClient.read_ranges`` splits back into the ranges."""
    from ocistore import Descriptor
    from ocistore.remotes import RegistryClient, byteranges

    layer = _largest_layer(corpus)
    data = _layout_blob(corpus_dir, layer["digest"])
    size = len(data)
    path = f"/v2/debian/blobs/{layer['digest']}"
    status, headers, body = request(server, "GET", path, {"Range": f"bytes=900-999,0-9,5-19,20-29,{size + 5}-"})
    assert status == 206 and headers["Content-Type"].startswith("multipart/byteranges; boundary=")
    got = byteranges.split_answer(body, headers["Content-Type"], None, [(0, 30), (900, 1000)], size, "t")
    assert got == [data[0:30], data[900:1000]]
    assert body.count(b"Content-Range: ") == 2  # 0-9, 5-19 and 20-29 merged into one part
    status, headers, body = request(server, "GET", path, {"Range": "bytes=0-9,5-19"})  # merged into one
    assert status == 206 and headers["Content-Range"] == f"bytes 0-19/{size}" and body == data[:20]
    status, headers, _ = request(server, "GET", path, {"Range": f"bytes={size}-,{size + 10}-{size + 20}"})
    assert status == 416 and headers["Content-Range"] == f"bytes */{size}"
    status, _, _ = request(server, "GET", path, {"Range": "bytes=0-1,9-3"})  # a malformed one among them
    assert status == 416
    spans = [(i * 7919, i * 7919 + 100) for i in range(60)]
    with RegistryClient(plain_http=True) as client:
        desc = Descriptor(layer["mediaType"], layer["digest"], size)
        assert client.read_ranges(f"{server.address}/debian@{layer['digest']}", desc, spans) == [
            data[a:b] for a, b in spans]


def test_range_parser_table() -> None:
    assert parse_range(None, 10) is None
    assert parse_range("bytes=0-", 10) == ByteRange(0, 9, 10)
    assert parse_range("bytes=-100", 10) == ByteRange(0, 9, 10)
    assert parse_range("bytes=9-9", 10).length == 1  # type: ignore[union-attr]
    for bad in ("bytes=10-", "bytes=-0", "bytes=3-2", "bytes=" + "1" * 20 + "-"):
        with pytest.raises(RangeNotSatisfiable):
            parse_range(bad, 10)
    with pytest.raises(RangeNotSatisfiable):
        parse_range("bytes=0-", 0)  # nothing of an empty blob can be asked for


@pytest.mark.parametrize(("method", "path", "status", "code"), [
    ("GET", "/v2/debian/blobs/sha256:" + "0" * 64, 404, "BLOB_UNKNOWN"),
    ("HEAD", "/v2/debian/blobs/sha256:" + "0" * 64, 404, None),
    ("GET", "/v2/debian/manifests/sha256:" + "0" * 64, 404, "MANIFEST_UNKNOWN"),
    ("GET", "/v2/debian/manifests/nosuchtag", 404, "MANIFEST_UNKNOWN"),
    ("GET", "/v2/nosuchrepo/manifests/latest", 404, "NAME_UNKNOWN"),
    ("GET", "/v2/library/debian/manifests/gzip?ns=127.0.0.1:5999", 404, "NAME_UNKNOWN"),
    ("GET", "/v2/nosuchrepo/tags/list", 404, "NAME_UNKNOWN"),
    ("GET", "/v2/debian/blobs/sha256:abc", 400, "DIGEST_INVALID"),
    ("GET", "/v2/debian/blobs/sha256:" + "A" * 64, 400, "DIGEST_INVALID"),
    ("GET", "/v2/debian/blobs/md5:" + "0" * 32, 400, "DIGEST_INVALID"),
    ("GET", "/v2/debian/blobs/latest", 400, "DIGEST_INVALID"),
    ("GET", "/v2/debian/manifests/sha256:zz", 400, "DIGEST_INVALID"),
    ("GET", "/v2/debian/manifests/.hidden", 400, "TAG_INVALID"),
    ("GET", "/v2/Debian/manifests/gzip", 400, "NAME_INVALID"),
    ("GET", "/v2/debian/manifests/gzip?ns=bad/host", 400, "NAME_INVALID"),
    ("GET", "/v2/debian/nothing/here", 404, "NOT_FOUND"),
    ("GET", "/v1/debian", 404, "NOT_FOUND"),
    ("PUT", "/v2/debian/manifests/gzip", 405, "UNSUPPORTED"),
    ("POST", "/v2/debian/blobs/uploads/", 405, "UNSUPPORTED"),
    ("DELETE", "/v2/debian/manifests/gzip", 405, "UNSUPPORTED"),
    ("PATCH", "/v2/debian/blobs/uploads/x", 405, "UNSUPPORTED"),
    ("OPTIONS", "/v2/", 405, "UNSUPPORTED"),
])
def test_errors_are_typed(server: Any, method: str, path: str, status: int, code: str | None) -> None:
    got, headers, body = request(server, method, path)
    assert got == status
    if method == "HEAD":
        assert body == b""
        return
    assert headers["Content-Type"].startswith("application/json")
    assert error_code(body) == code


def test_a_layer_is_not_a_manifest(server: Any, corpus: dict[str, Any]) -> None:
    layer = corpus["images"]["debian:gzip"]["layers"][0]["digest"]
    config = corpus["images"]["debian:gzip"]["config"]["digest"]
    for digest in (layer, config):
        status, _, body = request(server, "GET", f"/v2/debian/manifests/{digest}")
        assert status == 404 and error_code(body) == "MANIFEST_UNKNOWN"


def test_tags_list_is_sorted_and_paginated(store: Store, server: Any) -> None:
    target = store.images.get(DEBIAN).target
    for tag in ("b", "a", "c", "zz"):
        store.images.upsert(f"docker.io/library/debian:{tag}", target)
    try:
        status, _, body = request(server, "GET", "/v2/debian/tags/list")
        assert status == 200
        assert json.loads(body) == {"name": "debian", "tags": ["a", "b", "c", "gzip", "zstd", "zz"]}
        status, headers, body = request(server, "GET", "/v2/library/debian/tags/list?ns=docker.io&n=2")
        assert json.loads(body)["tags"] == ["a", "b"]
        assert headers["Link"] == '</v2/library/debian/tags/list?n=2&last=b&ns=docker.io>; rel="next"'
        status, headers, body = request(server, "GET", "/v2/library/debian/tags/list?ns=docker.io&n=2&last=b")
        assert json.loads(body)["tags"] == ["c", "gzip"]
        status, headers, body = request(server, "GET", "/v2/debian/tags/list?n=10&last=gzip")
        assert json.loads(body)["tags"] == ["zstd", "zz"] and "Link" not in headers
        for n in ("-1", "abc", "99999999"):
            status, _, body = request(server, "GET", f"/v2/debian/tags/list?n={n}")
            assert status == 400 and error_code(body) == "PAGINATION_NUMBER_INVALID"
        assert json.loads(request(server, "GET", "/v2/debian/tags/list?n=0")[2])["tags"] == []
    finally:
        for tag in ("b", "a", "c", "zz"):
            store.images.delete(f"docker.io/library/debian:{tag}")


def test_ns_maps_registry_and_name_to_the_image_record(store: Store, server: Any, corpus: dict[str, Any]) -> None:
    gzip, zstd = (store.images.get(f"docker.io/library/debian:{t}").target for t in ("gzip", "zstd"))
    store.images.upsert("127.0.0.1:5000/debian:gzip", zstd)  # the same tag, other content, other registry
    store.images.upsert("registry.example/team/app:1", gzip)
    try:
        def digest_of(path: str) -> str | int:
            status, headers, _ = request(server, "HEAD", path)
            return headers["Docker-Content-Digest"] if status == 200 else status

        assert digest_of("/v2/debian/manifests/gzip?ns=127.0.0.1:5000") == zstd.digest
        assert digest_of("/v2/library/debian/manifests/gzip?ns=docker.io") == gzip.digest
        # without ns the tag is ambiguous between the two registries: refused, not guessed
        status, _, body = request(server, "GET", "/v2/debian/manifests/gzip")
        assert status == 404 and error_code(body) == "MANIFEST_UNKNOWN" and b"ambiguous" in body
        # a tag only one registry has is unambiguous
        assert digest_of("/v2/debian/manifests/zstd") == zstd.digest
        assert digest_of("/v2/team/app/manifests/1") == gzip.digest
        assert digest_of("/v2/registry.example/team/app/manifests/1") == gzip.digest
        assert digest_of("/v2/team/app/manifests/1?ns=registry.example") == gzip.digest
        assert digest_of("/v2/team/app/manifests/1?ns=docker.io") == 404
        with store.serve("127.0.0.1:0", default_registry="127.0.0.1:5000") as srv:
            status, headers, _ = request(srv, "HEAD", "/v2/debian/manifests/gzip")
            assert status == 200 and headers["Docker-Content-Digest"] == zstd.digest
    finally:
        store.images.delete("127.0.0.1:5000/debian:gzip")
        store.images.delete("registry.example/team/app:1")


# -- only committed content of this namespace ---------------------------------------------------------
def test_uncommitted_and_foreign_namespace_blobs_are_not_served(store: Store, server: Any) -> None:
    data = os.urandom(4096)
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    with store.content.writer("half-written", total=len(data), expected=digest) as w:
        w.write(data)  # all the bytes, never committed
    try:
        status, _, body = request(server, "GET", f"/v2/x/blobs/{digest}")
        assert status == 404 and error_code(body) == "BLOB_UNKNOWN"
        with store.with_namespace("elsewhere") as other:
            other.content.ingest(data)
            status, _, body = request(server, "GET", f"/v2/x/blobs/{digest}")
            assert status == 404 and error_code(body) == "BLOB_UNKNOWN"
            other.content.delete(digest)
    finally:
        store.content.abort("half-written")


def test_a_corrupt_blob_is_refused(tmp_path: Path) -> None:
    with Store(tmp_path / "root") as s:
        data = b'{"schemaVersion":2,"manifests":[]}'
        desc = s.content.ingest(data)
        s.images.create(Image("docker.io/library/x:1", Descriptor(mediatypes.OCI_INDEX, desc.digest, len(data))))
        blob = s.layout.content.blob_path(desc.digest)
        os.chmod(blob, 0o644)
        blob.write_bytes(data.replace(b"2", b"3"))  # bit rot after commit: same size, other bytes
        with s.serve("127.0.0.1:0") as srv:
            status, _, body = request(srv, "GET", "/v2/x/manifests/1")
            assert status == 500 and error_code(body) == "UNKNOWN"
            blob.write_bytes(data[:-1])  # a truncated blob
            status, _, body = request(srv, "GET", f"/v2/x/blobs/{desc.digest}")
            assert status == 500 and error_code(body) == "UNKNOWN"


# -- hostile requests ------------------------------------------------------------------------------------
HOSTILE = [
    b"GET /v2/../../../../etc/passwd HTTP/1.1\r\nHost: x\r\n\r\n",
    b"GET /v2/x/blobs/sha256:../../../../../../etc/passwd HTTP/1.1\r\nHost: x\r\n\r\n",
    b"GET /v2/x/blobs/..%2f..%2f..%2fetc%2fpasswd HTTP/1.1\r\nHost: x\r\n\r\n",
    b"GET /v2/%2e%2e/%2e%2e/blobs/sha256:" + b"0" * 64 + b" HTTP/1.1\r\nHost: x\r\n\r\n",
    b"GET /v2/../secret/manifests/latest HTTP/1.1\r\nHost: x\r\n\r\n",
    b"GET /v2/a/../../blobs/sha256:" + b"0" * 64 + b" HTTP/1.1\r\nHost: x\r\n\r\n",
    b"GET /v2/x/manifests/..%00 HTTP/1.1\r\nHost: x\r\n\r\n",
    b"GET /v2/x/blobs/sha256:" + b"0" * 63 + b"/ HTTP/1.1\r\nHost: x\r\n\r\n",
    b"GET http://evil.example/v2/../../etc/passwd HTTP/1.1\r\nHost: x\r\n\r\n",
    b"GET //etc/passwd HTTP/1.1\r\nHost: x\r\n\r\n",
    b"GET etc/passwd HTTP/1.1\r\nHost: x\r\n\r\n",
    b"GET /v2/x/tags/list?" + b"&".join(b"a=%d" % i for i in range(100)) + b" HTTP/1.1\r\nHost: x\r\n\r\n",
    b"GET /v2/" + b"a/" * 200 + b"manifests/latest HTTP/1.1\r\nHost: x\r\n\r\n",
    b"GARBAGE\r\n\r\n",
    b"GET /v2/ HTTP/9.9\r\n\r\n",
    b"GET /v2/ HTTP/1.1\r\n" + b"".join(b"X-%d: y\r\n" % i for i in range(150)) + b"\r\n",
    b"GET /v2/" + b"a" * 70000 + b" HTTP/1.1\r\n\r\n",
    b"GET /v2/ HTTP/1.1\r\nX-Long: " + b"y" * 70000 + b"\r\n\r\n",
    b"BREW /v2/ HTTP/1.1\r\n\r\n",
]


def test_hostile_requests_get_typed_4xx_and_open_nothing_outside_the_store(
    store: Store, server: Any, tmp_path: Path,
) -> None:
    global _OPENED
    secret = tmp_path / "secret"
    secret.write_text("TOPSECRET")
    for data in HOSTILE[:3]:  # warm up: lazy imports of the stdlib happen now, not while recording
        raw(server, data)
    _OPENED = []
    try:
        for data in HOSTILE:
            status, _, body = raw(server, data)
            # 505 (HTTP Version Not Supported) is HTTP's own answer to "HTTP/9.9"
            assert 400 <= status < 500 or (status == 505 and b"HTTP/9.9" in data), (data[:80], status)
            assert b"TOPSECRET" not in body and b"root:" not in body
            if body:
                assert error_code(body)
        opened = list(_OPENED)
    finally:
        _OPENED = None
    root = str(store.root)
    assert all(p.startswith(root) for p in opened), opened


def test_opening_only_blob_files_under_the_root(store: Store, server: Any, corpus: dict[str, Any]) -> None:
    global _OPENED
    layer = corpus["images"]["debian:gzip"]["layers"][0]["digest"]
    _OPENED = []
    try:
        assert request(server, "GET", f"/v2/debian/blobs/{layer}", {"Range": "bytes=0-9"})[0] == 206
        opened = list(_OPENED)
    finally:
        _OPENED = None
    assert opened == [str(store.layout.content.blob_path(layer))]


def test_many_requests_on_one_connection(server: Any, corpus: dict[str, Any]) -> None:
    config = corpus["images"]["debian:gzip"]["config"]["digest"]
    conn = _conn(server)
    try:
        for i in range(200):
            path = f"/v2/debian/blobs/{config}" if i % 2 else "/v2/nosuch/manifests/x"
            status, _, _ = request(server, "GET", path, conn=conn)
            assert status == (200 if i % 2 else 404)
    finally:
        conn.close()


def test_a_body_on_a_get_closes_the_connection(server: Any) -> None:
    status, headers, _ = raw(server, b"GET /v2/ HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello")
    assert status == 200 and headers["Connection"] == "close"


# -- slow and flooding clients -------------------------------------------------------------------------------
def test_slow_headers_are_cut_off(store: Store) -> None:
    with store.serve("127.0.0.1:0", timeout=0.5) as srv:
        host, _, port = srv.address.rpartition(":")
        with socket.create_connection((host, int(port)), timeout=5) as sock:
            sock.sendall(b"GET /v2/ HTTP/1.1\r\n")
            start = time.monotonic()
            closed = False
            while time.monotonic() - start < 4:
                try:
                    sock.sendall(b"X")  # one byte now and then, never the end of the headers
                except OSError:
                    closed = True
                    break
                sock.settimeout(0.2)
                try:
                    if sock.recv(100) == b"":
                        closed = True
                        break
                except TimeoutError:
                    continue
            assert closed and time.monotonic() - start < 2.5


def test_idle_connections_are_closed_after_keepalive(store: Store) -> None:
    with store.serve("127.0.0.1:0", keepalive=0.3) as srv:
        conn = _conn(srv)
        assert request(srv, "GET", "/v2/", conn=conn)[0] == 200
        sock = conn.sock
        assert sock is not None
        sock.settimeout(3)
        start = time.monotonic()
        assert sock.recv(10) == b""  # the server closed it
        assert time.monotonic() - start < 2
        conn.close()


def test_idle_kept_alive_connections_give_way_to_waiting_ones(store: Store) -> None:
    with store.serve("127.0.0.1:0", workers=2, keepalive=30) as srv:
        idle = [_conn(srv) for _ in range(2)]
        for c in idle:
            assert request(srv, "GET", "/v2/", conn=c)[0] == 200  # both workers now hold an idle connection
        start = time.monotonic()
        assert request(srv, "GET", "/v2/")[0] == 200
        assert time.monotonic() - start < 2  # not 30 s
        for c in idle:
            c.close()


def _stuck_download(srv: Any, digest: str) -> socket.socket:
    """A client that asks for a big blob and never reads it: its worker stays busy."""
    host, _, port = srv.address.rpartition(":")
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect((host, int(port)))
    sock.sendall(f"GET /v2/x/blobs/{digest} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    return sock


def test_a_connection_flood_gets_429(store: Store, corpus: dict[str, Any]) -> None:
    big = _largest_layer(corpus)["digest"]
    with store.serve("127.0.0.1:0", workers=1, queue_size=1, timeout=3) as srv:
        stuck = _stuck_download(srv, big)
        time.sleep(0.3)
        host, _, port = srv.address.rpartition(":")
        waiting = socket.create_connection((host, int(port)))  # queued behind the stuck one
        time.sleep(0.2)
        answers = []
        for _ in range(5):
            status, headers, body = raw(srv, b"GET /v2/ HTTP/1.1\r\n\r\n")
            answers.append(status)
            assert status == 429 and error_code(body) == "TOOMANYREQUESTS" and headers["Retry-After"] == "1"
        assert srv.stats.snapshot()["rejected"] >= 5
        stuck.close()
        waiting.close()
    assert answers == [429] * 5


def test_a_stalled_reader_is_dropped_and_stop_is_prompt(store: Store, corpus: dict[str, Any]) -> None:
    big = _largest_layer(corpus)["digest"]
    srv = store.serve("127.0.0.1:0", timeout=0.5).start()
    try:
        stuck = _stuck_download(srv, big)
        time.sleep(2)  # more than the timeout: the worker gave up on the send
        assert request(srv, "GET", "/v2/")[0] == 200
        stuck2 = _stuck_download(srv, big)
        time.sleep(0.2)
    finally:
        start = time.monotonic()
        srv.stop()
        assert time.monotonic() - start < 3
    stuck.close()
    stuck2.close()


def test_blobs_go_out_with_sendfile(server: Any, corpus: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    layer = _largest_layer(corpus)
    calls: list[int | None] = []
    original = socket.socket.sendfile

    def spy(self: socket.socket, file: Any, offset: int = 0, count: int | None = None) -> int:
        calls.append(count)
        return original(self, file, offset, count)

    monkeypatch.setattr(socket.socket, "sendfile", spy)
    status, _, body = request(server, "GET", f"/v2/x/blobs/{layer['digest']}")
    assert status == 200 and len(body) == layer["size"]
    assert calls == [layer["size"]]


def test_concurrent_clients_get_identical_bytes(server: Any, corpus: dict[str, Any]) -> None:
    layer = _largest_layer(corpus)
    digests: list[str] = []
    lock = threading.Lock()

    def fetch() -> None:
        _, _, body = request(server, "GET", f"/v2/x/blobs/{layer['digest']}")
        with lock:
            digests.append("sha256:" + hashlib.sha256(body).hexdigest())

    threads = [threading.Thread(target=fetch) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert digests == [layer["digest"]] * 8


# -- auth and TLS ---------------------------------------------------------------------------------------
def test_read_only_basic_auth(store: Store) -> None:
    def basic(user: str, password: str) -> dict[str, str]:
        return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}

    with store.serve("127.0.0.1:0", credentials={"reader": "s3cret"}) as srv:
        for headers in ({}, basic("reader", "wrong"), basic("nobody", "s3cret"), {"Authorization": "Basic !!!"},
                        {"Authorization": "Bearer xyz"}, basic("reader", "")):
            status, got, body = request(srv, "GET", "/v2/", headers)
            assert status == 401 and got["WWW-Authenticate"] == 'Basic realm="ocistore"'
            assert error_code(body) == "UNAUTHORIZED"
        assert request(srv, "GET", "/v2/debian/manifests/gzip", basic("reader", "wrong"))[0] == 401
        assert request(srv, "GET", "/v2/", basic("reader", "s3cret"))[0] == 200
        assert request(srv, "GET", "/v2/debian/manifests/gzip", basic("reader", "s3cret"))[0] == 200
        # still read-only with the right credentials
        assert request(srv, "PUT", "/v2/debian/manifests/gzip", basic("reader", "s3cret"))[0] == 405
    with store.serve("127.0.0.1:0", credentials=lambda u, p: u == "fn" and p == "ok") as srv:
        assert request(srv, "GET", "/v2/", basic("fn", "ok"))[0] == 200
        assert request(srv, "GET", "/v2/", basic("fn", "no"))[0] == 401


def _self_signed(tmp_path: Path) -> tuple[Path, Path]:
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed (needed to make a test certificate)")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(cert),
         "-days", "1", "-subj", "/CN=localhost", "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"],
        check=True, capture_output=True,
    )
    return cert, key


def test_tls(store: Store, corpus: dict[str, Any], tmp_path: Path) -> None:
    cert, key = _self_signed(tmp_path)
    layer = corpus["images"]["debian:gzip"]["layers"][0]
    with store.serve("127.0.0.1:0", tls_cert=str(cert), tls_key=str(key)) as srv:
        assert srv.url.startswith("https://")
        host, _, port = srv.address.rpartition(":")
        context = ssl.create_default_context(cafile=str(cert))
        conn = http.client.HTTPSConnection(host, int(port), context=context, timeout=10)
        conn.request("GET", f"/v2/debian/blobs/{layer['digest']}")
        resp = conn.getresponse()
        body = resp.read()
        assert resp.status == 200 and "sha256:" + hashlib.sha256(body).hexdigest() == layer["digest"]
        conn.request("GET", f"/v2/debian/blobs/{layer['digest']}", headers={"Range": "bytes=1000-1999"})
        resp = conn.getresponse()
        assert resp.status == 206 and len(resp.read()) == 1000
        conn.close()
        # plain HTTP to the TLS port: the connection is dropped, the server goes on
        with socket.create_connection((host, int(port)), timeout=5) as sock:
            sock.sendall(b"GET /v2/ HTTP/1.1\r\n\r\n")
            with contextlib.suppress(ConnectionResetError):
                assert not sock.recv(100).startswith(b"HTTP/")
        with Store(tmp_path / "client") as client:
            img = client.fetch(f"{srv.address}/debian:gzip", ca_file=str(cert))
            assert img.target.digest == corpus["images"]["debian:gzip"]["digest"]


def test_bad_tls_files_are_invalid_argument(store: Store, tmp_path: Path) -> None:
    (tmp_path / "junk.pem").write_text("not a certificate")
    with pytest.raises(errors.InvalidArgument):
        store.serve("127.0.0.1:0", tls_cert=str(tmp_path / "junk.pem"))


# -- lifecycle --------------------------------------------------------------------------------------------
def test_lifecycle(store: Store) -> None:
    srv = store.serve("127.0.0.1:0")
    assert srv.address == "127.0.0.1:0"
    srv.stop()  # never started: nothing to do
    srv.start()
    try:
        assert srv.start() is srv
        port = int(srv.address.rpartition(":")[2])
        assert port > 0 and srv.url == f"http://127.0.0.1:{port}"
        with pytest.raises(errors.Unavailable):
            store.serve(f"127.0.0.1:{port}").start()  # the port is taken
    finally:
        srv.stop()
    srv.stop()
    with pytest.raises(errors.InvalidArgument):
        store.serve("localhost")
    with pytest.raises(errors.InvalidArgument):
        store.serve("127.0.0.1:0", workers=0)


# -- real clients: ocistore itself ---------------------------------------------------------------------------------
def test_a_second_store_fetches_and_pulls_from_the_first(server: Any, corpus: dict[str, Any],
                                                        tmp_path: Path) -> None:
    entry = corpus["images"]["debian:gzip"]
    with Store(tmp_path / "second", plain_http=True) as second:
        img = second.pull(f"{server.address}/debian:gzip", snapshotter="native")
        assert img.target.digest == entry["digest"]
        assert second.is_unpacked(img.name, snapshotter="native")
        config = json.loads(second.content.read(entry["config"]["digest"]))
        assert chain_ids(config["rootfs"]["diff_ids"])[-1] == entry["chain_id"]
        multi = corpus["images"]["multi:index"]
        img = second.fetch(f"{server.address}/multi:index", all_platforms=True)
        assert img.target.digest == multi["digest"]
        for m in multi["manifests"]:
            assert second.content.exists(m["digest"]) and second.content.exists(m["config"]["digest"])
        assert second.check().ok


def test_a_second_store_uses_the_server_as_a_mirror(server: Any, corpus: dict[str, Any], tmp_path: Path) -> None:
    """ocistore's client sends ?ns=docker.io to a mirror named in hosts.toml; the upstream is dead."""
    hosts = tmp_path / "hosts" / "docker.io"
    hosts.mkdir(parents=True)
    (hosts / "hosts.toml").write_text(hosts_toml(server.url, "http://127.0.0.1:1"))
    before = server.stats.snapshot()
    with Store(tmp_path / "third", hosts_dir=tmp_path / "hosts") as third:
        img = third.fetch("debian:gzip")
        assert img.name == DEBIAN and img.target.digest == corpus["images"]["debian:gzip"]["digest"]
    after = server.stats.snapshot()
    assert after["bytes_sent"] - before["bytes_sent"] >= corpus["images"]["debian:gzip"]["compressed_total"]


# -- hosts.toml and the CLI -------------------------------------------------------------------------------------
def test_hosts_toml_snippet() -> None:
    assert upstream_server("docker.io") == ("docker.io", "https://registry-1.docker.io")
    assert upstream_server("127.0.0.1:5000") == ("127.0.0.1:5000", "http://127.0.0.1:5000")
    assert upstream_server("localhost:443") == ("localhost:443", "https://localhost:443")
    assert upstream_server("ghcr.io") == ("ghcr.io", "https://ghcr.io")
    assert upstream_server("http://10.0.0.5:5000/") == ("10.0.0.5:5000", "http://10.0.0.5:5000")
    with pytest.raises(errors.InvalidArgument):
        upstream_server("ftp://x")
    doc = tomllib.loads(hosts_toml("http://127.0.0.1:5000", "docker.io"))
    assert doc == {"server": "https://registry-1.docker.io",
                   "host": {"http://127.0.0.1:5000": {"capabilities": ["pull", "resolve"]}}}


def test_cli_print_hosts_toml(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--root", str(tmp_path / "r"), "serve", "--print-hosts-toml", "--upstream", "127.0.0.1:5100",
                 "--listen", "127.0.0.1:5999"]) == 0
    out = capsys.readouterr().out
    assert "save as <config_path>/127.0.0.1:5100/hosts.toml" in out
    assert tomllib.loads(out) == {"server": "http://127.0.0.1:5100",
                                  "host": {"http://127.0.0.1:5999": {"capabilities": ["pull", "resolve"]}}}
    assert main(["--root", str(tmp_path / "r"), "serve", "--print-hosts-toml", "--listen", "0.0.0.0:5000"]) == 2
    assert main(["--root", str(tmp_path / "r"), "serve", "--print-hosts-toml", "--listen", "0.0.0.0:5000",
                 "--mirror-url", "https://mirror.lan:5000"]) == 0
    assert '[host."https://mirror.lan:5000"]' in capsys.readouterr().out


def test_cli_serve_runs_until_sigterm(store: Store, corpus: dict[str, Any]) -> None:
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[1]))
    proc = subprocess.Popen(
        [sys.executable, "-m", "ocistore", "--root", str(store.root), "serve", "--listen", "127.0.0.1:0",
         "--access-log"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line.startswith(f"serving {store.root} (namespace default) at http://127.0.0.1:")
        url = line.split(" at ")[1].split(",")[0]
        host, _, port = url.removeprefix("http://").rpartition(":")
        conn = http.client.HTTPConnection(host, int(port), timeout=10)
        conn.request("HEAD", "/v2/debian/manifests/gzip")
        resp = conn.getresponse()
        assert resp.status == 200 and resp.headers["Docker-Content-Digest"] == corpus["images"]["debian:gzip"]["digest"]
        conn.close()
        proc.terminate()
        _, err = proc.communicate(timeout=10)
        assert proc.returncode == 0
        assert '"HEAD /v2/debian/manifests/gzip" 200' in err
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
