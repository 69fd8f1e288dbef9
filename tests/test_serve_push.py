"""``serve(allow_push=True)``: the write side of the distribution API, by real clients and by hand.

Real clients: ocistore's own registry client (monolithic and chunked uploads, mounts) and
skopeo (chunked ``PATCH`` bodies); what they pushed is fetched back and compared with
``corpus.json``. By hand: every refusal (bad ranges, digests, manifests naming missing blobs,
oversized manifests, malformed chunked bodies, unknown sessions, auth).
"""

from __future__ import annotations

import base64
import hashlib
import http.client
import json
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ocistore import Store

DEBIAN = "docker.io/library/debian:gzip"


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory, corpus_dir: Path) -> Iterator[Store]:
    with Store(tmp_path_factory.mktemp("push-source") / "root") as s:
        s.import_archive(corpus_dir, fetch_only=True, all_platforms=True)
        yield s


@pytest.fixture
def target(tmp_path: Path) -> Iterator[tuple[Store, Any]]:
    with Store(tmp_path / "target") as store, store.serve("127.0.0.1:0", allow_push=True) as srv:
        yield store, srv


def request(srv: Any, method: str, path: str, body: bytes | None = None,
            headers: dict[str, str] | None = None) -> tuple[int, http.client.HTTPMessage, bytes]:
    host, _, port = srv.address.rpartition(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=30)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, resp.headers, resp.read()
    finally:
        conn.close()


def code(body: bytes) -> str:
    return str(json.loads(body)["errors"][0]["code"])


def _blobs(entry: dict[str, Any]) -> set[str]:
    out = {entry["digest"]}
    for m in entry.get("manifests", [entry]):
        out |= {m["digest"], m["config"]["digest"], *(layer["digest"] for layer in m["layers"])}
    return out


# -- real clients -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("chunk_size", [None, 4 << 20], ids=["monolithic", "chunked"])
def test_ocistore_pushes_into_a_served_store(source: Store, target: tuple[Store, Any], corpus: dict[str, Any],
                                             tmp_path: Path, chunk_size: int | None) -> None:
    store, srv = target
    for tag in ("app:layers", "multi:index"):
        entry = corpus["images"][tag]
        ref = f"{srv.address}/team/{tag}"
        desc = source.push(f"docker.io/library/{tag}", ref, plain_http=True, chunk_size=chunk_size)
        assert desc.digest == entry["digest"]
        assert store.images.get(ref).target.digest == entry["digest"]  # recorded under the name pushed to
    assert store.check().ok
    store.gc()  # the records keep everything
    assert {i.digest for i in store.content.walk()} == _blobs(corpus["images"]["app:layers"]) | _blobs(
        corpus["images"]["multi:index"])
    with Store(tmp_path / "reader", plain_http=True) as reader:
        img = reader.fetch(f"{srv.address}/team/multi:index", all_platforms=True)
        assert img.target.digest == corpus["images"]["multi:index"]["digest"]
        assert reader.check().ok


def test_a_second_push_uploads_nothing_the_namespace_holds(source: Store, target: tuple[Store, Any]) -> None:
    _store, srv = target
    source.push(DEBIAN, f"{srv.address}/a/debian:1", plain_http=True)
    # the server counts a request after its response is written: let the first push's counts land
    before = srv.stats.snapshot()
    while True:
        time.sleep(0.2)
        settled = srv.stats.snapshot()
        if settled == before:
            break
        before = settled
    source.push(DEBIAN, f"{srv.address}/b/debian:1", plain_http=True, mount_from=("a/debian",))
    # the server counts a request after its response is written: let the last count land
    deadline = time.monotonic() + 5
    while srv.stats.snapshot()["requests"] - before["requests"] < 3 and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(0.1)  # and no request beyond the three
    after = srv.stats.snapshot()
    # blobs are addressed by digest: the HEAD of each finds it, no upload session starts
    assert after.get("status_202", 0) == before.get("status_202", 0)
    assert after["requests"] - before["requests"] == 3  # HEAD config, HEAD layer, PUT manifest


def test_skopeo_copies_into_a_served_store(target: tuple[Store, Any], corpus: dict[str, Any],
                                           corpus_dir: Path) -> None:
    if shutil.which("skopeo") is None:
        pytest.skip("skopeo is not installed (apt-get install skopeo)")
    store, srv = target
    for tag in ("multi:index", "app:layers"):
        subprocess.run(["skopeo", "copy", "--all", "--preserve-digests", "--dest-tls-verify=false",
                        f"oci:{corpus_dir}:{tag}", f"docker://{srv.address}/skopeo/{tag}"],
                       check=True, capture_output=True, timeout=300)
        assert store.images.get(f"{srv.address}/skopeo/{tag}").target.digest == corpus["images"][tag]["digest"]
    assert store.check().ok
    raw = subprocess.run(["skopeo", "inspect", "--raw", "--tls-verify=false",
                          f"docker://{srv.address}/skopeo/multi:index"], check=True, capture_output=True).stdout
    assert "sha256:" + hashlib.sha256(raw).hexdigest() == corpus["images"]["multi:index"]["digest"]


# -- the protocol by hand ------------------------------------------------------------------------------------
def test_upload_session_lifecycle(target: tuple[Store, Any]) -> None:
    store, srv = target
    data = os.urandom(300_000)
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    status, headers, _ = request(srv, "POST", "/v2/x/blobs/uploads/")
    assert status == 202 and headers["Range"] == "0-0"
    location, sid = headers["Location"], headers["Docker-Upload-UUID"]
    assert location == f"/v2/x/blobs/uploads/{sid}"
    status, headers, _ = request(srv, "PATCH", location, data[:100_000], {"Content-Range": "0-99999"})
    assert status == 202 and headers["Range"] == "0-99999"
    status, _, body = request(srv, "PATCH", location, data[:10], {"Content-Range": "5-14"})
    assert status == 416 and code(body) == "BLOB_UPLOAD_INVALID"
    status, _, body = request(srv, "PATCH", location, data[:10], {"Content-Range": "garbage"})
    assert status == 416
    status, headers, _ = request(srv, "PATCH", location, data[100_000:200_000])  # no Content-Range: append
    assert status == 202 and headers["Range"] == "0-199999"
    status, headers, _ = request(srv, "GET", location)
    assert status == 204 and headers["Range"] == "0-199999"
    assert request(srv, "GET", f"/v2/other/blobs/uploads/{sid}")[0] == 404  # a session belongs to its repo
    store.gc()  # a gc in the middle of an upload takes nothing
    status, headers, _ = request(srv, "PUT", f"{location}?digest={digest}", data[200_000:])
    assert status == 201 and headers["Docker-Content-Digest"] == digest
    assert headers["Location"] == f"/v2/x/blobs/{digest}"
    store.gc()  # nor before the manifest that names the blob arrives (a 24 h lease holds it)
    status, _, body = request(srv, "GET", f"/v2/x/blobs/{digest}")
    assert status == 200 and body == data
    status, _, body = request(srv, "GET", location)
    assert status == 404 and code(body) == "BLOB_UPLOAD_UNKNOWN"  # the session is over


def test_a_wrong_digest_is_refused_and_nothing_is_kept(target: tuple[Store, Any]) -> None:
    store, srv = target
    status, headers, _ = request(srv, "POST", "/v2/x/blobs/uploads/")
    location = headers["Location"]
    wrong = "sha256:" + "1" * 64
    status, _, body = request(srv, "PUT", f"{location}?digest={wrong}", b"some bytes")
    assert status == 400 and code(body) == "DIGEST_INVALID"
    assert not store.content.exists(wrong) and store.content.statuses() == []
    assert request(srv, "GET", location)[0] == 404
    for bad in ("?digest=sha256:abc", "", "?digest=../../etc/passwd"):
        status, headers, _ = request(srv, "POST", "/v2/x/blobs/uploads/")
        status, _, body = request(srv, "PUT", headers["Location"] + bad, b"x")
        assert status == 400 and code(body) == "DIGEST_INVALID"


def test_monolithic_post_mount_and_cancel(target: tuple[Store, Any]) -> None:
    store, srv = target
    data = b"hello blob"
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    status, headers, _ = request(srv, "POST", f"/v2/x/blobs/uploads/?digest={digest}", data)
    assert status == 201 and store.content.exists(digest)
    status, headers, _ = request(srv, "POST", f"/v2/y/blobs/uploads/?mount={digest}&from=x")
    assert status == 201 and headers["Docker-Content-Digest"] == digest
    absent = "sha256:" + "2" * 64
    status, headers, _ = request(srv, "POST", f"/v2/y/blobs/uploads/?mount={absent}&from=x")
    assert status == 202  # not here: an upload session instead
    leases = {lease.id for lease in store.leases.list()}
    assert request(srv, "DELETE", headers["Location"])[0] == 204
    assert request(srv, "GET", headers["Location"])[0] == 404
    assert len({lease.id for lease in store.leases.list()}) == len(leases) - 1  # its lease went with it
    assert request(srv, "GET", "/v2/x/blobs/uploads/not-a-session")[0] == 404


def test_chunked_bodies(target: tuple[Store, Any]) -> None:
    store, srv = target
    data = os.urandom(70_000)
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    _, headers, _ = request(srv, "POST", "/v2/x/blobs/uploads/")
    host, _, port = srv.address.rpartition(":")
    chunked = b"".join(b"%x;ext=1\r\n%s\r\n" % (len(data[i:i + 30000]), data[i:i + 30000])
                       for i in range(0, len(data), 30000)) + b"0\r\nX-Trailer: y\r\n\r\n"
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(f"PUT {headers['Location']}?digest={digest} HTTP/1.1\r\nHost: x\r\n"
                     "Transfer-Encoding: chunked\r\n\r\n".encode() + chunked)
        resp = http.client.HTTPResponse(sock)
        resp.begin()
        assert resp.status == 201
        resp.read()
    assert store.content.read(digest) == data
    for bad in (b"zz\r\nabc\r\n0\r\n\r\n", b"5\r\nabcdefgh\r\n0\r\n\r\n"):
        _, headers, _ = request(srv, "POST", "/v2/x/blobs/uploads/")
        with socket.create_connection((host, int(port)), timeout=10) as sock:
            sock.sendall(f"PATCH {headers['Location']} HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                         .encode() + bad)
            resp = http.client.HTTPResponse(sock)
            resp.begin()
            assert resp.status == 400
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(b"PATCH /v2/x/blobs/uploads/x HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n")
        resp = http.client.HTTPResponse(sock)
        resp.begin()
        assert resp.status == 501


def _manifest(config: dict[str, Any], layers: list[dict[str, Any]]) -> bytes:
    return json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                       "config": config, "layers": layers}).encode()


def test_manifest_puts(target: tuple[Store, Any]) -> None:
    store, srv = target
    config = b'{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}'
    cdigest = "sha256:" + hashlib.sha256(config).hexdigest()
    cdesc = {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cdigest, "size": len(config)}
    oci = {"Content-Type": "application/vnd.oci.image.manifest.v1+json"}
    manifest = _manifest(cdesc, [])
    mdigest = "sha256:" + hashlib.sha256(manifest).hexdigest()
    # the config is not there yet
    status, _, body = request(srv, "PUT", "/v2/app/manifests/1", manifest, oci)
    assert status == 400 and code(body) == "MANIFEST_BLOB_UNKNOWN" and cdigest.encode() in body
    assert store.images.list() == []
    assert request(srv, "POST", f"/v2/app/blobs/uploads/?digest={cdigest}", config)[0] == 201
    status, _, body = request(srv, "PUT", "/v2/app/manifests/sha256:" + "3" * 64, manifest, oci)
    assert status == 400 and code(body) == "DIGEST_INVALID"
    status, _, body = request(srv, "PUT", "/v2/app/manifests/1", b"{not json", oci)
    assert status == 400 and code(body) == "MANIFEST_INVALID"
    status, _, body = request(srv, "PUT", "/v2/app/manifests/1", b"{}", {"Content-Type": "text/plain"})
    assert status == 400 and code(body) == "MANIFEST_INVALID"
    status, _, body = request(srv, "PUT", "/v2/app/manifests/1", b" " * (5 << 20), oci)
    assert status == 413 and code(body) == "SIZE_INVALID"
    status, headers, _ = request(srv, "PUT", "/v2/app/manifests/1", manifest, oci)
    assert status == 201 and headers["Docker-Content-Digest"] == mdigest
    img = store.images.get(f"{srv.address}/app:1")  # the registry part is the Host the client used
    assert img.target.digest == mdigest and img.target.media_type == oci["Content-Type"]
    assert store.content.info(mdigest).labels["containerd.io/gc.ref.content.config"] == cdigest
    status, headers, body = request(srv, "GET", "/v2/app/manifests/1")
    assert status == 200 and body == manifest and headers["Content-Type"] == oci["Content-Type"]
    assert request(srv, "DELETE", "/v2/app/manifests/1")[0] == 405
    assert request(srv, "DELETE", f"/v2/app/blobs/{cdigest}")[0] == 405
    assert store.check().ok


def test_pushes_need_the_credentials_too(source: Store, tmp_path: Path, corpus: dict[str, Any]) -> None:
    def basic(user: str, password: str) -> dict[str, str]:
        return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}

    with Store(tmp_path / "t") as store, store.serve("127.0.0.1:0", allow_push=True,
                                                     credentials={"ci": "pw"}) as srv:
        assert request(srv, "POST", "/v2/x/blobs/uploads/")[0] == 401
        assert request(srv, "POST", "/v2/x/blobs/uploads/", headers=basic("ci", "no"))[0] == 401
        assert request(srv, "POST", "/v2/x/blobs/uploads/", headers=basic("ci", "pw"))[0] == 202
        ref = f"{srv.address}/ci/debian:1"
        desc = source.push(DEBIAN, ref, plain_http=True, credentials={srv.address: ("ci", "pw")})
        assert desc.digest == corpus["images"]["debian:gzip"]["digest"] == store.images.get(ref).target.digest


def test_idle_sessions_are_forgotten(tmp_path: Path) -> None:
    from ocistore.server import uploads as up

    now = [1000.0]
    with Store(tmp_path / "t") as store, store.serve("127.0.0.1:0", allow_push=True) as srv:
        assert srv.uploads is not None
        srv.uploads._clock = lambda: now[0]
        _, headers, _ = request(srv, "POST", "/v2/x/blobs/uploads/")
        assert request(srv, "PATCH", headers["Location"], b"abc")[0] == 202
        assert store.content.statuses()
        now[0] += up.SESSION_IDLE + 1
        assert request(srv, "POST", "/v2/x/blobs/uploads/")[0] == 202  # a new session sweeps the idle one
        assert request(srv, "GET", headers["Location"])[0] == 404
        assert store.content.statuses() == []
