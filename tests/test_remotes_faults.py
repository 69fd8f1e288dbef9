"""Registry client against a hand-written loopback server, for faults a real registry won't make.

Each test scripts the server's answers (wrong bytes, cut bodies, resets, endless 500s,
redirects to another host, oversized manifests, bad credentials, error bodies) and
asserts what the client did on the wire: which Range it asked for, how many attempts it
made, which headers reached which host.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import socket
import struct
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import attrs
import pytest

from ocistore import errors
from ocistore.oci import mediatypes
from ocistore.oci.descriptor import Descriptor
from ocistore.remotes import RegistryClient, RegistryOptions, Retry
from ocistore.remotes.client import MAX_MANIFEST_SIZE

FAST = Retry(total=2, read=2, backoff_factor=0.001, backoff_max=0.01)
BLOB = os.urandom(3 * 1024 * 1024 + 17)
BLOB_DESC = Descriptor(
    media_type=mediatypes.OCI_LAYER_GZIP, digest="sha256:" + hashlib.sha256(BLOB).hexdigest(), size=len(BLOB)
)
REPO = "test/repo"


@attrs.frozen
class Seen:
    """One request as the server saw it."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: FakeServer

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _dispatch(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        seen = Seen(self.command, self.path, {k.lower(): v for k, v in self.headers.items()}, body)
        with self.server.lock:
            self.server.seen.append(seen)
        self.server.app(self, seen)

    do_GET = do_HEAD = do_POST = do_PUT = do_PATCH = _dispatch

    def reply(self, status: int, body: bytes = b"", headers: dict[str, str] | None = None) -> None:
        """A complete answer (no body on HEAD, but its Content-Length)."""
        self.send_response(status)
        hdrs = {"Content-Length": str(len(body))} | (headers or {})
        for k, v in hdrs.items():
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def reply_json_error(self, status: int, code: str, message: str) -> None:
        body = json.dumps({"errors": [{"code": code, "message": message, "detail": None}]}).encode()
        self.reply(status, body, {"Content-Type": "application/json"})

    def cut(
        self, body: bytes, total: int, status: int = 200, extra: dict[str, str] | None = None, reset: bool = False
    ) -> None:
        """Announce ``total`` bytes, send ``body`` (fewer), then close or reset the connection."""
        self.send_response(status)
        self.send_header("Content-Length", str(total))
        for k, v in (extra or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(body)
        self.wfile.flush()
        self.close_connection = True
        if reset:
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.connection.shutdown(socket.SHUT_WR)


App = Callable[[_Handler, Seen], None]


class FakeServer(ThreadingHTTPServer):
    """A threaded loopback HTTP server answering with ``app`` and recording every request."""

    daemon_threads = True

    def __init__(self, app: App) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.app = app
        self.seen: list[Seen] = []
        self.lock = threading.Lock()
        self._thread = threading.Thread(target=self.serve_forever, args=(0.05,), daemon=True)
        self._thread.start()

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.server_address[1]}"

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # clients hanging up on purpose (cut bodies, caps) are not errors here

    def requests(self, method: str | None = None, contains: str = "") -> list[Seen]:
        with self.lock:
            return [s for s in self.seen if (method is None or s.method == method) and contains in s.path]

    def stop(self) -> None:
        self.shutdown()
        self.server_close()
        self._thread.join(5)


@pytest.fixture
def serve() -> Iterator[Callable[[App], FakeServer]]:
    servers: list[FakeServer] = []

    def start(app: App) -> FakeServer:
        srv = FakeServer(app)
        servers.append(srv)
        return srv

    yield start
    for srv in servers:
        srv.stop()


@pytest.fixture(autouse=True)
def _no_docker_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Never read the developer's docker credentials."""
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path / "docker-config"))


def _client(**kw: Any) -> RegistryClient:
    opts: dict[str, Any] = {"plain_http": True, "retry": FAST}
    opts.update(kw)
    return RegistryClient(RegistryOptions(**opts))


def _blob_path(desc: Descriptor = BLOB_DESC) -> str:
    return f"/v2/{REPO}/blobs/{desc.digest}"


def _range_start(seen: Seen) -> int:
    value = seen.headers.get("range", "")
    assert value.startswith("bytes=") and value.endswith("-"), value
    return int(value[len("bytes=") : -1])


def _serve_range(h: _Handler, seen: Seen, data: bytes = BLOB) -> None:
    """A well-behaved blob answer honouring ``Range: bytes=N-``."""
    if "range" in seen.headers:
        start = _range_start(seen)
        h.reply(206, data[start:], {"Content-Range": f"bytes {start}-{len(data) - 1}/{len(data)}"})
    else:
        h.reply(200, data)


def _store(tmp_path: Path) -> Any:
    from ocistore.store import Store

    return Store(tmp_path / "root")


# -- digests and sizes -------------------------------------------------------------------------


def test_wrong_bytes_raise_digest_mismatch_and_commit_nothing(serve: Any, tmp_path: Path) -> None:
    bad = bytearray(BLOB)
    bad[12345] ^= 0xFF
    srv = serve(lambda h, s: h.reply(200, bytes(bad)))
    ref = f"{srv.address}/{REPO}:t"
    with _client() as client:
        with pytest.raises(errors.DigestMismatch) as info:
            client.fetch_bytes(ref, BLOB_DESC, max_size=len(BLOB))
        assert info.value.expected == BLOB_DESC.digest
        with pytest.raises(errors.DigestMismatch), client.fetch(ref, BLOB_DESC) as reader:
            reader.read()
        store = _store(tmp_path)
        try:
            with store.content.writer("layer-1", total=BLOB_DESC.size, expected=BLOB_DESC.digest) as w:
                with pytest.raises(errors.DigestMismatch):
                    client.fetch_into(ref, BLOB_DESC, w)
                assert w.status().offset == 0  # truncated: a retry starts clean
            with pytest.raises(errors.NotFound):
                store.content.info(BLOB_DESC.digest)
        finally:
            store.close()


def test_longer_body_than_descriptor_is_refused(serve: Any) -> None:
    srv = serve(lambda h, s: h.reply(200, BLOB + b"trailing garbage"))
    with (
        _client() as client,
        pytest.raises(errors.SizeLimitExceeded),
        client.fetch(f"{srv.address}/{REPO}:t", BLOB_DESC) as reader,
    ):
        reader.read()


def test_reader_stops_at_descriptor_size_even_when_asked_for_more(serve: Any) -> None:
    srv = serve(_serve_range)
    with _client() as client, client.fetch(f"{srv.address}/{REPO}:t", BLOB_DESC) as reader:
        data = reader.read(len(BLOB) * 2)
        data += reader.read()
        assert data == BLOB
        assert reader.read(10) == b""
        assert reader.verified


# -- truncation, drops and resume --------------------------------------------------------------


@pytest.mark.parametrize("reset", [False, True], ids=["short-body", "connection-reset"])
def test_cut_body_resumes_with_range_at_the_offset(serve: Any, reset: bool) -> None:
    cut_at = 1_000_000

    def app(h: _Handler, seen: Seen) -> None:
        if len(h.server.requests("GET")) == 1:
            h.cut(BLOB[:cut_at], len(BLOB), reset=reset)
        else:
            _serve_range(h, seen)

    srv = serve(app)
    with _client() as client, client.fetch(f"{srv.address}/{REPO}:t", BLOB_DESC) as reader:
        data = reader.read()
        assert reader.verified
    assert data == BLOB
    gets = srv.requests("GET", BLOB_DESC.digest)
    assert len(gets) == 2
    assert "range" not in gets[0].headers
    # Resume, not restart: the second request starts where the first body stopped.
    assert 0 < _range_start(gets[1]) <= cut_at
    if not reset:
        assert _range_start(gets[1]) == cut_at


def test_server_ignoring_range_has_its_prefix_discarded(serve: Any) -> None:
    cut_at = 2_000_000

    def app(h: _Handler, seen: Seen) -> None:
        if len(h.server.requests("GET")) == 1:
            h.cut(BLOB[:cut_at], len(BLOB))
        else:
            h.reply(200, BLOB)  # ignores Range: the client must skip what it has

    srv = serve(app)
    with _client() as client, client.fetch(f"{srv.address}/{REPO}:t", BLOB_DESC) as reader:
        assert reader.read() == BLOB
        assert reader.verified
    assert _range_start(srv.requests("GET")[1]) == cut_at


def test_wrong_content_range_is_an_error(serve: Any) -> None:
    def app(h: _Handler, seen: Seen) -> None:
        if "range" not in seen.headers:
            h.cut(BLOB[:1000], len(BLOB))
        else:
            h.reply(206, BLOB, {"Content-Range": f"bytes 0-{len(BLOB) - 1}/{len(BLOB)}"})

    srv = serve(app)
    with (
        _client() as client,
        pytest.raises(errors.RegistryError),
        client.fetch(f"{srv.address}/{REPO}:t", BLOB_DESC) as reader,
    ):
        reader.read()


def test_endless_truncation_is_bounded(serve: Any) -> None:
    def app(h: _Handler, seen: Seen) -> None:
        start = _range_start(seen) if "range" in seen.headers else 0
        h.cut(
            BLOB[start : start + 1000],
            len(BLOB) - start,
            status=206 if start else 200,
            extra={"Content-Range": f"bytes {start}-{len(BLOB) - 1}/{len(BLOB)}"} if start else None,
        )

    srv = serve(app)
    retry = Retry(total=2, read=3, backoff_factor=0.001)
    with (
        _client(retry=retry) as client,
        pytest.raises(errors.Unavailable, match="cut short"),
        client.fetch(f"{srv.address}/{REPO}:t", BLOB_DESC) as reader,
    ):
        reader.read()
    gets = srv.requests("GET")
    assert len(gets) == retry.read + 1
    # every reconnection continued at the offset reached so far
    assert [_range_start(g) for g in gets[1:]] == [1000 * i for i in range(1, len(gets))]


def test_interrupted_ingest_resumes_from_the_content_writer_offset(serve: Any, tmp_path: Path) -> None:
    cut_at = 1_500_000
    state = {"broken": True}

    def app(h: _Handler, seen: Seen) -> None:
        if state["broken"]:
            h.cut(BLOB[:cut_at], len(BLOB), reset=False)
        else:
            _serve_range(h, seen)

    srv = serve(app)
    ref = f"{srv.address}/{REPO}:t"
    store = _store(tmp_path)
    try:
        with (
            _client(retry=Retry(total=0, read=0)) as client,
            store.content.writer("layer-ref", total=BLOB_DESC.size, expected=BLOB_DESC.digest) as w,
        ):
            with pytest.raises(errors.Unavailable):
                client.fetch_into(ref, BLOB_DESC, w)
            assert w.status().offset == cut_at
        # A later process: a new writer on the same ref continues where the ingest stopped.
        state["broken"] = False
        with (
            _client() as client,
            store.content.writer("layer-ref", total=BLOB_DESC.size, expected=BLOB_DESC.digest) as w,
        ):
            assert w.status().offset == cut_at
            assert client.fetch_into(ref, BLOB_DESC, w) == BLOB_DESC.digest
        assert store.content.read(BLOB_DESC.digest) == BLOB
    finally:
        store.close()
    gets = srv.requests("GET")
    assert len(gets) == 2
    assert _range_start(gets[1]) == cut_at


def test_fetch_into_complete_ingest_needs_no_request(serve: Any, tmp_path: Path) -> None:
    srv = serve(lambda h, s: h.reply(500))
    store = _store(tmp_path)
    try:
        with store.content.writer("done", total=BLOB_DESC.size) as w:
            w.write(BLOB)
        with _client() as client, store.content.writer("done", total=BLOB_DESC.size) as w:
            client.fetch_into(f"{srv.address}/{REPO}:t", BLOB_DESC, w)
        assert store.content.info(BLOB_DESC.digest).size == len(BLOB)
    finally:
        store.close()
    assert srv.requests() == []


def test_forward_seek_far_reopens_with_range(serve: Any) -> None:
    srv = serve(_serve_range)
    with _client() as client, client.fetch(f"{srv.address}/{REPO}:t", BLOB_DESC) as reader:
        assert reader.read(10) == BLOB[:10]
        reader.seek(20, os.SEEK_SET)  # near: read through (still verifying)
        assert reader.read(5) == BLOB[20:25]
        with pytest.raises(OSError):
            reader.seek(0)
        assert reader.seek(len(BLOB) - 100) == len(BLOB) - 100  # far: a new ranged request
        assert reader.read() == BLOB[-100:]
        assert not reader.verified
    assert _range_start(srv.requests("GET")[-1]) == len(BLOB) - 100
    with _client() as client, client.fetch(f"{srv.address}/{REPO}:t", BLOB_DESC, offset=5) as reader:
        assert reader.read() == BLOB[5:]


# -- retries ----------------------------------------------------------------------------------


def test_endless_500_is_bounded_and_carries_the_error_codes(serve: Any) -> None:
    srv = serve(lambda h, s: h.reply_json_error(500, "UNKNOWN", "storage backend down"))
    retry = Retry(total=3, backoff_factor=0.001)
    with _client(retry=retry) as client, pytest.raises(errors.RegistryError) as info:
        client.fetch_bytes(f"{srv.address}/{REPO}:t", BLOB_DESC, max_size=len(BLOB))
    assert info.value.status == 500
    assert info.value.codes == ("UNKNOWN",)
    assert "storage backend down" in str(info.value)
    assert len(srv.requests("GET")) == retry.total + 1


def test_transient_503_then_success(serve: Any) -> None:
    def app(h: _Handler, seen: Seen) -> None:
        if len(h.server.requests()) < 3:
            h.reply(503, b"", {"Retry-After": "0"})
        else:
            h.reply(200, BLOB)

    srv = serve(app)
    with _client() as client:
        assert client.fetch_bytes(f"{srv.address}/{REPO}:t", BLOB_DESC, max_size=len(BLOB)) == BLOB
    assert len(srv.requests()) == 3


def test_connection_refused_is_bounded_unavailable() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nobody listens there
    with (
        _client(retry=Retry(total=1, backoff_factor=0.001)) as client,
        pytest.raises(errors.Unavailable, match="2 attempts"),
    ):
        client.resolve(f"127.0.0.1:{port}/{REPO}:t")


def test_retry_is_an_immutable_value() -> None:
    r = Retry(total=2, backoff_factor=0.5, backoff_max=1.5)
    r1 = r.increment("GET", "u", status=500)
    r2 = r1.increment("GET", "u", error=OSError("x"))
    r3 = r2.increment("GET", "u", status=503)
    assert (r.total, r1.total, r2.total, r3.total) == (2, 1, 0, -1)
    assert not r2.is_exhausted() and r3.is_exhausted()
    assert len(r3.history) == 3 and r3.history[0].status == 500
    assert r.backoff_time() == 0
    assert 0.5 <= r1.backoff_time() <= 0.55
    assert 1.0 <= r2.backoff_time() <= 1.1
    assert r3.backoff_time() <= 1.5 * 1.1
    assert r1.backoff_time(retry_after=100) == 1.5
    assert Retry.never().increment("GET", "u").is_exhausted()


# -- redirects, auth ----------------------------------------------------------------------------


def test_redirect_to_another_host_gets_no_credentials(serve: Any, tmp_path: Path) -> None:
    storage = serve(lambda h, s: h.reply(200, BLOB))
    user, password = "alice", "s3cret"
    good = "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()

    def registry(h: _Handler, seen: Seen) -> None:
        if seen.headers.get("authorization") != good:
            h.reply(401, b"", {"WWW-Authenticate": 'Basic realm="test"'})
        else:
            h.reply(307, b"", {"Location": f"http://{storage.address}/signed/blob?sig=abc"})

    reg = serve(registry)
    hosts = tmp_path / "hosts"
    (hosts / reg.address).mkdir(parents=True)
    (hosts / reg.address / "hosts.toml").write_text(
        f'server = "http://{reg.address}"\n[header]\n  X-Registry-Secret = "only-for-the-registry"\n'
    )
    with _client(credentials={reg.address: (user, password)}, hosts_dir=hosts) as client:
        assert client.fetch_bytes(f"{reg.address}/{REPO}:t", BLOB_DESC, max_size=len(BLOB)) == BLOB
    assert [s.headers.get("authorization") for s in reg.requests("GET")] == [None, good]
    assert reg.requests("GET")[1].headers.get("x-registry-secret") == "only-for-the-registry"
    (arrived,) = storage.requests("GET")
    assert arrived.path == "/signed/blob?sig=abc"
    assert "authorization" not in arrived.headers
    assert "x-registry-secret" not in arrived.headers


def test_bad_basic_credentials_are_unauthorized(serve: Any) -> None:
    srv = serve(lambda h, s: h.reply(401, b"", {"WWW-Authenticate": 'Basic realm="r"'}))
    with (
        _client(credentials={srv.address: ("bob", "wrong")}) as client,
        pytest.raises(errors.Unauthorized, match="rejected the credentials"),
    ):
        client.resolve(f"{srv.address}/{REPO}:t")
    assert len(srv.requests()) == 2  # anonymous, then once with the credentials
    with _client() as client, pytest.raises(errors.Unauthorized, match="requires a username"):
        client.resolve(f"{srv.address}/{REPO}:t")


def test_bearer_token_post_falls_back_to_get_and_is_cached(serve: Any) -> None:
    def token_app(h: _Handler, seen: Seen) -> None:
        if seen.method == "POST":
            h.reply(404)  # a token server without the OAuth2 endpoint
        elif seen.headers.get("authorization", "").startswith("Basic "):
            h.reply(200, json.dumps({"token": "tok-1", "expires_in": 300}).encode())
        else:
            h.reply(401)

    tokens = serve(token_app)

    def registry_with_challenge(h: _Handler, seen: Seen) -> None:
        if seen.headers.get("authorization") != "Bearer tok-1":
            challenge = f'Bearer realm="http://{tokens.address}/token",service="reg",scope="repository:{REPO}:pull"'
            h.reply(401, b"", {"WWW-Authenticate": challenge})
        else:
            _serve_range(h, seen)

    reg = serve(registry_with_challenge)
    with _client(credentials=lambda host: ("carol", "pw") if host == reg.address else None) as client:
        ref = f"{reg.address}/{REPO}:t"
        assert client.fetch_bytes(ref, BLOB_DESC, max_size=len(BLOB)) == BLOB
        assert client.fetch_bytes(ref, BLOB_DESC, max_size=len(BLOB)) == BLOB
    methods = [s.method for s in tokens.requests()]
    assert methods == ["POST", "GET"]  # one token, fetched once, used twice
    post = tokens.requests("POST")[0]
    form = dict(kv.split("=", 1) for kv in post.body.decode().split("&"))
    assert form["grant_type"] == "password" and form["username"] == "carol"
    assert form["service"] == "reg" and "pull" in form["scope"]
    get = tokens.requests("GET")[0]
    assert "scope=repository%3Atest%2Frepo%3Apull" in get.path
    assert [s.headers.get("authorization") for s in reg.requests("GET")] == [None, "Bearer tok-1", "Bearer tok-1"]


def test_token_server_refusing_credentials_is_unauthorized(serve: Any) -> None:
    tokens = serve(lambda h, s: h.reply(401))
    reg = serve(
        lambda h, s: h.reply(
            401, b"", {"WWW-Authenticate": f'Bearer realm="http://{tokens.address}/token",service="reg"'}
        )
    )
    with (
        _client(credentials={reg.address: ("dave", "nope")}) as client,
        pytest.raises(errors.Unauthorized, match="refused user 'dave'"),
    ):
        client.resolve(f"{reg.address}/{REPO}:t")


def test_403_after_auth_is_unauthorized_with_message(serve: Any) -> None:
    srv = serve(lambda h, s: h.reply_json_error(403, "DENIED", "requested access to the resource is denied"))
    with _client() as client, pytest.raises(errors.Unauthorized, match="DENIED"):
        client.fetch_bytes(f"{srv.address}/{REPO}:t", BLOB_DESC, max_size=len(BLOB))


# -- resolve ------------------------------------------------------------------------------------


MANIFEST = json.dumps(
    {
        "schemaVersion": 2,
        "mediaType": mediatypes.OCI_MANIFEST,
        "config": {"mediaType": mediatypes.OCI_CONFIG, "digest": BLOB_DESC.digest, "size": 1},
        "layers": [],
    }
).encode()
MANIFEST_DIGEST = "sha256:" + hashlib.sha256(MANIFEST).hexdigest()


def test_resolve_head_then_get_when_digest_header_missing(serve: Any) -> None:
    srv = serve(lambda h, s: h.reply(200, MANIFEST, {"Content-Type": mediatypes.OCI_MANIFEST}))
    with _client() as client:
        name, desc = client.resolve(f"{srv.address}/{REPO}")
    assert name == f"{srv.address}/{REPO}:latest"
    assert desc == Descriptor(media_type=mediatypes.OCI_MANIFEST, digest=MANIFEST_DIGEST, size=len(MANIFEST))
    assert [s.method for s in srv.requests()] == ["HEAD", "GET"]
    assert "application/vnd.oci.image.index.v1+json" in srv.requests()[0].headers["accept"]


def test_resolve_head_only_when_headers_suffice(serve: Any) -> None:
    srv = serve(
        lambda h, s: h.reply(
            200, MANIFEST, {"Content-Type": mediatypes.OCI_MANIFEST, "Docker-Content-Digest": MANIFEST_DIGEST}
        )
    )
    with _client() as client:
        _, desc = client.resolve(f"{srv.address}/{REPO}:v1")
    assert desc.digest == MANIFEST_DIGEST and desc.size == len(MANIFEST)
    assert [s.method for s in srv.requests()] == ["HEAD"]
    assert srv.requests()[0].path == f"/v2/{REPO}/manifests/v1"


def test_resolve_sniffs_media_type_of_untyped_manifest(serve: Any) -> None:
    srv = serve(lambda h, s: h.reply(200, MANIFEST, {"Content-Type": "application/octet-stream"}))
    with _client() as client:
        _, desc = client.resolve(f"{srv.address}/{REPO}@{MANIFEST_DIGEST}")
    assert desc.media_type == mediatypes.OCI_MANIFEST


def test_resolve_digest_header_lie_is_a_digest_mismatch(serve: Any) -> None:
    lie = "sha256:" + "0" * 64

    def app(h: _Handler, seen: Seen) -> None:
        h.reply(
            200,
            MANIFEST,
            {"Content-Type": mediatypes.OCI_MANIFEST, "Docker-Content-Digest": lie}
            if seen.method == "GET"
            else {"Content-Type": mediatypes.OCI_MANIFEST},
        )

    srv = serve(app)
    with _client() as client, pytest.raises(errors.DigestMismatch):
        client.resolve(f"{srv.address}/{REPO}:t")
    # a digest reference whose bytes do not match is refused too
    srv2 = serve(
        lambda h, s: (
            h.reply(200, MANIFEST, {"Content-Type": mediatypes.OCI_MANIFEST}) if s.method == "GET" else h.reply(405)
        )
    )
    with _client() as client, pytest.raises(errors.DigestMismatch):
        client.resolve(f"{srv2.address}/{REPO}@{lie}")


def test_oversized_manifest_is_refused(serve: Any) -> None:
    big = MAX_MANIFEST_SIZE + 1
    announced = serve(
        lambda h, s: h.reply(200, b"", {"Content-Length": str(big), "Content-Type": mediatypes.OCI_MANIFEST})
    )
    with _client() as client, pytest.raises(errors.SizeLimitExceeded, match="4393216"):
        client.resolve(f"{announced.address}/{REPO}:t")

    def streaming(h: _Handler, seen: Seen) -> None:
        # no Content-Length: the client must stop reading at the cap by itself
        h.send_response(200)
        h.send_header("Content-Type", mediatypes.OCI_MANIFEST)
        h.send_header("Connection", "close")
        h.end_headers()
        if seen.method == "GET":
            chunk = b" " * 65536
            try:
                for _ in range(big // len(chunk) + 2):
                    h.wfile.write(chunk)
            except OSError:
                pass
        h.close_connection = True

    srv = serve(streaming)
    with _client() as client, pytest.raises(errors.SizeLimitExceeded):
        client.resolve(f"{srv.address}/{REPO}:t")
    with _client() as client, pytest.raises(errors.SizeLimitExceeded):
        client.fetch_bytes(
            f"{srv.address}/{REPO}:t", Descriptor(media_type=mediatypes.OCI_MANIFEST, digest=MANIFEST_DIGEST, size=big)
        )


def test_schema1_is_not_supported(serve: Any) -> None:
    srv = serve(
        lambda h, s: h.reply(
            200,
            b'{"schemaVersion": 1}',
            {
                "Content-Type": "application/vnd.docker.distribution.manifest.v1+prettyjws",
                "Docker-Content-Digest": MANIFEST_DIGEST,
            },
        )
    )
    with _client() as client, pytest.raises(errors.NotImplementedKind, match="schema 1"):
        client.resolve(f"{srv.address}/{REPO}:old")


def test_not_found_names_the_reference_and_error_codes_reach_registry_error(serve: Any) -> None:
    srv = serve(lambda h, s: h.reply_json_error(404, "MANIFEST_UNKNOWN", "manifest unknown"))
    with _client() as client, pytest.raises(errors.NotFound, match=f"{srv.address}/{REPO}:missing"):
        client.resolve(f"{srv.address}/{REPO}:missing")
    srv2 = serve(lambda h, s: h.reply_json_error(400, "NAME_INVALID", "invalid repository name"))
    with _client() as client, pytest.raises(errors.RegistryError) as info:
        client.resolve(f"{srv2.address}/{REPO}:t")
    assert info.value.status == 400
    assert info.value.codes == ("NAME_INVALID",)
    assert "invalid repository name" in str(info.value)


def test_head_405_falls_back_to_get(serve: Any) -> None:
    def app(h: _Handler, seen: Seen) -> None:
        if seen.method == "HEAD":
            h.reply(405)
        else:
            h.reply(200, MANIFEST, {"Content-Type": mediatypes.OCI_MANIFEST, "Docker-Content-Digest": MANIFEST_DIGEST})

    srv = serve(app)
    with _client() as client:
        assert client.resolve(f"{srv.address}/{REPO}:t")[1].digest == MANIFEST_DIGEST


# -- push ----------------------------------------------------------------------------------------


def test_push_reader_with_wrong_content_is_a_digest_mismatch(serve: Any) -> None:
    def app(h: _Handler, seen: Seen) -> None:
        if seen.method == "HEAD":
            h.reply(404)
        elif seen.method == "POST":
            h.reply(202, b"", {"Location": f"/v2/{REPO}/blobs/uploads/u1?_state=x"})
        else:
            h.reply_json_error(400, "DIGEST_INVALID", "provided digest did not match uploaded content")

    srv = serve(app)
    import io

    with _client() as client, pytest.raises(errors.DigestMismatch):
        client.push_blob(f"{srv.address}/{REPO}:t", BLOB_DESC, io.BytesIO(b"x" * len(BLOB)))
    (put,) = srv.requests("PUT")
    assert put.path.startswith(f"/v2/{REPO}/blobs/uploads/u1?_state=x&digest=sha256:")
    assert len(put.body) == len(BLOB)
