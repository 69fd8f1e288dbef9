"""The pipelined pull (layers applied while they download) and usage counted during apply.

A small forwarding proxy sits in front of the real registry (CNCF distribution on loopback,
tests/registry_fixtures.py) and changes only how one layer blob is served: slowly, cut
mid-way every time, or with its bytes flipped. Everything else is the real registry's
answer. Usage equality is checked on the corpus layers, on both snapshotters, against the
tree walk a snapshotter does for snapshots written by other means.
"""

from __future__ import annotations

import http.client
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from ocistore import ProgressEvent, Store, errors
from ocistore.archive import apply_layer
from ocistore.snapshots.base import disk_usage
from ocistore.transfer import tee as tee_mod
from ocistore.transfer.tee import BlobTee

pytestmark = pytest.mark.registry

Fault = Callable[[bytes, Any], None]  # (blob bytes, handler) -> writes the response


class _Proxy(BaseHTTPRequestHandler):
    server: _ProxyServer

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_HEAD(self) -> None:
        self._forward("HEAD")

    def do_GET(self) -> None:
        self._forward("GET")

    def _forward(self, method: str) -> None:
        srv = self.server
        if method == "GET" and self.path.endswith(srv.digest) and srv.fault is not None:
            srv.hits += 1
            srv.fault(srv.blob, self)
            return
        conn = http.client.HTTPConnection(srv.upstream, timeout=30)
        headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "connection")}
        conn.request(method, self.path, headers=headers)
        resp = conn.getresponse()
        body = resp.read()
        self.send_response(resp.status)
        for k, v in resp.getheaders():
            if k.lower() not in ("connection", "transfer-encoding", "content-length"):
                self.send_header(k, v)
        length = resp.getheader("Content-Length") if method == "HEAD" else None
        self.send_header("Content-Length", length or str(len(body)))
        self.end_headers()
        if method == "GET":
            self.wfile.write(body)
        conn.close()


class _ProxyServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, upstream: str, digest: str, blob: bytes, fault: Fault | None) -> None:
        super().__init__(("127.0.0.1", 0), _Proxy)
        self.upstream, self.digest, self.blob, self.fault = upstream, digest, blob, fault
        self.hits = 0

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.server_address[1]}"


@pytest.fixture
def proxy(registry_plain: Any, corpus_dir: Path) -> Iterator[Callable[[str, Fault | None], _ProxyServer]]:
    servers: list[_ProxyServer] = []

    def start(digest: str, fault: Fault | None) -> _ProxyServer:
        blob = (corpus_dir / "blobs" / "sha256" / digest.removeprefix("sha256:")).read_bytes()
        srv = _ProxyServer(registry_plain.address, digest, blob, fault)
        threading.Thread(target=srv.serve_forever, daemon=True).start()
        servers.append(srv)
        return srv

    yield start
    for srv in servers:
        srv.shutdown()
        srv.server_close()


def _headers(h: Any, size: int) -> None:
    h.send_response(200)
    h.send_header("Content-Type", "application/octet-stream")
    h.send_header("Content-Length", str(size))
    h.end_headers()


def slowly(blob: bytes, h: Any) -> None:
    """The whole blob, in 64 KiB pieces with pauses (about 1.5 s in all)."""
    _headers(h, len(blob))
    piece = 64 << 10
    pause = 1.5 / max(1, len(blob) // piece)
    for i in range(0, len(blob), piece):
        h.wfile.write(blob[i : i + piece])
        h.wfile.flush()
        time.sleep(pause)


def cut_midway(blob: bytes, h: Any) -> None:
    """Headers for the whole blob, then 60% of it and a closed connection, every time."""
    _headers(h, len(blob))
    h.wfile.write(blob[: len(blob) * 6 // 10])
    h.wfile.flush()
    h.close_connection = True


def flipped(blob: bytes, h: Any) -> None:
    """The right size, one byte wrong in the middle."""
    bad = bytearray(blob)
    bad[len(bad) // 2] ^= 0xFF
    _headers(h, len(bad))
    h.wfile.write(bytes(bad))


def _store(path: Path, **kw: Any) -> Store:
    return Store(path, plain_http=True, **kw)


def _tree(root: Path) -> dict[str, tuple[int, int, int, bytes | str]]:
    out: dict[str, tuple[int, int, int, bytes | str]] = {}
    for p in sorted(root.rglob("*")):
        st = p.lstat()
        rel = str(p.relative_to(root))
        if p.is_symlink():
            out[rel] = (st.st_mode, st.st_uid, st.st_mtime_ns, str(p.readlink()))
        elif p.is_file():
            out[rel] = (st.st_mode, st.st_uid, st.st_mtime_ns, p.read_bytes()[:64] + str(st.st_size).encode())
        else:
            out[rel] = (st.st_mode, st.st_uid, st.st_mtime_ns, b"")
    return out


def test_slow_layer_is_applied_while_it_downloads(
    tmp_path: Path, proxy: Any, registry_plain: Any, corpus: dict[str, Any]
) -> None:
    app = corpus["images"]["app:layers"]
    big = max(app["layers"], key=lambda layer: layer["size"])
    srv = proxy(big["digest"], slowly)
    events: list[tuple[float, ProgressEvent]] = []
    with _store(tmp_path / "pipe") as s:
        s.pull(f"{srv.address}/app:layers", progress=lambda e: events.append((time.monotonic(), e)))
        assert s.check().ok
        top = app["chain_id"]
        pulled = _tree(s.snapshots("overlayfs").path(top))
        infos = {i.name: i for i in s.snapshots("overlayfs").walk()}
        assert srv.hits == 1
    mine = [(t, e.status, e.offset) for t, e in events if e.digest == big["digest"]]
    first_extract = min(t for t, st, off in mine if st == "extracting" and off > 0)
    complete = min(t for t, st, _ in mine if st == "complete")
    assert first_extract < complete  # bytes were applied before the download ended

    # the same image, fetched then unpacked from the committed blobs, is the same tree and usage
    with _store(tmp_path / "seq") as s:
        ref = registry_plain.ref("app:layers")
        s.fetch(ref)
        s.unpack(ref)
        assert _tree(s.snapshots("overlayfs").path(top)) == pulled
        for info in s.snapshots("overlayfs").walk():
            assert s.snapshots("overlayfs").usage(info.name) == disk_usage(s.snapshots("overlayfs").path(info.name))
            assert info.name in infos


@pytest.mark.parametrize("fault", [cut_midway, flipped], ids=["cut-midway", "wrong-bytes"])
def test_failing_layer_commits_nothing_of_it(tmp_path: Path, proxy: Any, corpus: dict[str, Any], fault: Fault) -> None:
    deb = corpus["images"]["debian:gzip"]
    layer = deb["layers"][0]
    srv = proxy(layer["digest"], fault)
    ref = f"{srv.address}/debian:gzip"
    with _store(tmp_path / "r") as s:
        with pytest.raises(errors.Error):
            s.pull(ref)
        assert srv.hits >= 1
        assert not s.content.exists(layer["digest"])
        assert [i.name for i in s.snapshots("overlayfs").walk()] == []
        assert not any(p.name.startswith("new-") for p in (tmp_path / "r").rglob("new-*"))
        with pytest.raises(errors.NotFound):
            s.images.get(ref)
        assert s.check().ok
        # the fault gone, the same root pulls the image
        srv.fault = None
        s.pull(ref)
        assert s.is_unpacked(ref)
        assert s.check().ok


def test_cancelled_pipelined_pull_stops_and_commits_nothing(tmp_path: Path, proxy: Any, corpus: dict[str, Any]) -> None:
    deb = corpus["images"]["debian:gzip"]
    layer = deb["layers"][0]
    srv = proxy(layer["digest"], slowly)
    cancel = threading.Event()

    def on_progress(e: ProgressEvent) -> None:
        if e.status == "extracting" and e.offset > layer["size"] // 4:
            cancel.set()

    with _store(tmp_path / "r") as s:
        t0 = time.monotonic()
        with pytest.raises(errors.Cancelled):
            s.pull(f"{srv.address}/debian:gzip", progress=on_progress, cancel=cancel)
        assert time.monotonic() - t0 < 5
        assert [i.name for i in s.snapshots("overlayfs").walk()] == []
        assert s.check().ok


def test_tee_detaches_when_nobody_reads_and_the_reader_goes_on_from_the_blob(tmp_path: Path) -> None:
    data = bytes(range(256)) * ((3 * tee_mod.BUFFER) // 256 + 7)
    blob = tmp_path / "blob"
    blob.write_bytes(data)
    t = BlobTee(len(data))
    t.start(0)
    for i in range(0, len(data), 1 << 20):
        t.feed(data[i : i + (1 << 20)])  # never waits: nobody is attached
    t.finish()
    with t.reader(lambda: blob.open("rb")) as r:
        got = b"".join(iter(lambda: r.read(100_000), b""))
    assert got == data


def test_tee_hands_the_download_error_to_the_reader(tmp_path: Path) -> None:
    t = BlobTee(10)
    r = t.reader(lambda: (tmp_path / "missing").open("rb"))
    t.start(0)
    t.feed(b"12345")
    assert r.read(3) == b"123"
    assert r.read() == b"45"
    t.finish(errors.Unavailable("registry went away"))
    with pytest.raises(errors.Unavailable):
        r.read()


def test_resumed_download_is_read_from_the_blob(tmp_path: Path) -> None:
    blob = tmp_path / "blob"
    blob.write_bytes(b"abcdefghij")
    t = BlobTee(10)
    r = t.reader(lambda: blob.open("rb"))
    t.start(4)  # 4 bytes were already in the ingest: they never pass through the tee
    t.feed(b"efghij")
    t.finish()
    with r:
        assert r.read() + r.read() + r.read() == b"abcdefghij"


def test_full_tee_resumes_the_download_only_once_drained_to_low_water(tmp_path: Path) -> None:
    chunk = 1 << 20
    data = bytes(range(256)) * ((tee_mod.BUFFER + 4 * chunk) // 256)
    t = BlobTee(len(data))
    r = t.reader(lambda: (tmp_path / "unused").open("rb"))
    t.start(0)
    fed: list[int] = []

    def download() -> None:
        for i in range(0, len(data), chunk):
            t.feed(data[i : i + chunk])
            fed.append(i + chunk)
        t.finish()

    th = threading.Thread(target=download, daemon=True)
    th.start()
    try:
        deadline = time.monotonic() + 10
        # the ninth chunk's feed must be waiting on the full buffer before anything is read: a
        # read that comes first makes room for it, and it is queued without a wait
        while not (fed and fed[-1] >= tee_mod.BUFFER and t._writer_waiting) and time.monotonic() < deadline:
            time.sleep(0.01)
        assert fed[-1] == tee_mod.BUFFER and t._writer_waiting  # full: the next chunk waits
        got = [r.read(chunk)]  # one chunk read: still above the low-water mark, the download stays put
        time.sleep(0.3)
        assert fed[-1] == tee_mod.BUFFER
        while len(got) * chunk < tee_mod.BUFFER - tee_mod.LOW_WATER:
            got.append(r.read(chunk))
        deadline = time.monotonic() + 10
        while fed[-1] == tee_mod.BUFFER and time.monotonic() < deadline:
            time.sleep(0.01)
        assert fed[-1] > tee_mod.BUFFER  # drained to LOW_WATER: the download goes on
        got.extend(iter(lambda: r.read(chunk), b""))
        th.join(10)
    finally:
        r.close()  # a failed assertion must not leave the download waiting for room
    assert b"".join(got) == data


@pytest.mark.parametrize("snapshotter", ["overlayfs", "native"])
@pytest.mark.parametrize("image", ["debian:gzip", "debian:zstd", "app:layers"])
def test_usage_counted_during_apply_equals_the_walk(
    tmp_path: Path, corpus: dict[str, Any], corpus_dir: Path, image: str, snapshotter: str
) -> None:
    with Store(tmp_path / "root") as s:
        s.import_archive(corpus_dir, fetch_only=True)
        name = next(i.name for i in s.images.list() if i.name.endswith(image))
        s.unpack(name, snapshotter=snapshotter)
        sn = s.snapshots(snapshotter)
        infos = list(sn.walk())
        assert len(infos) == len(corpus["images"][image]["layers"])
        for info in infos:
            assert sn.usage(info.name) == disk_usage(sn.path(info.name)), info.name


def test_apply_reports_no_usage_when_the_root_was_not_empty(tmp_path: Path, corpus: dict[str, Any],
                                                            corpus_dir: Path) -> None:
    layer = corpus["images"]["debian:gzip"]["layers"][0]
    path = corpus_dir / "blobs" / "sha256" / layer["digest"].removeprefix("sha256:")
    root = tmp_path / "r"
    root.mkdir()
    with path.open("rb") as f:
        first = apply_layer(f, root, media_type=layer["mediaType"])
    assert first.usage is not None
    assert first.usage == disk_usage(root)
    with path.open("rb") as f:
        second = apply_layer(f, root, media_type=layer["mediaType"])  # over its own files
    assert second.usage is None
