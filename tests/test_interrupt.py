"""Ctrl-C and cancellation stop downloads within about a second, keep them resumable, leave a clean store.

A real slow registry on loopback (a threaded HTTP server that sends a layer at 512 KiB/s),
a real CLI process, and a real SIGINT.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from ocistore import Store, errors
from ocistore.testing.layout import write_layout

RATE = 512 << 10  # bytes per second for layer blobs
LAYER = 6 << 20  # an incompressible layer: 12 s at RATE


class SlowRegistry(ThreadingHTTPServer):
    """Serves one OCI layout as a registry; layer blobs trickle out at RATE (Range supported)."""

    daemon_threads = True

    def __init__(self, layout: Path, repo: str, tag: str) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.layout, self.repo, self.tag = layout, repo, tag
        index = json.loads((layout / "index.json").read_text())
        self.manifest = index["manifests"][0]
        self.sent = 0
        self.ranges: list[str] = []
        self.thread = threading.Thread(target=self.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # clients hang up when interrupted: that is the point


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: SlowRegistry

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _send(self, status: int, body: bytes, headers: dict[str, str]) -> None:
        self.send_response(status)
        for k, v in {"Content-Length": str(len(body)), **headers}.items():
            self.send_header(k, v)
        self.end_headers()
        if self.command == "HEAD":
            return
        slow = len(body) > 1 << 20
        for i in range(0, len(body), 32 << 10):
            self.wfile.write(body[i:i + (32 << 10)])
            self.server.sent += min(32 << 10, len(body) - i)
            if slow:
                time.sleep((32 << 10) / RATE)

    def do_HEAD(self) -> None:
        self.do_GET()

    def do_GET(self) -> None:
        srv = self.server
        if self.path == "/v2/":
            return self._send(200, b"{}", {"Content-Type": "application/json"})
        m = re.fullmatch(rf"/v2/{srv.repo}/(manifests|blobs)/(.+)", self.path)
        if not m:
            return self._send(404, b"{}", {})
        kind, ref = m.groups()
        digest = srv.manifest["digest"] if ref == srv.tag else ref
        path = srv.layout / "blobs" / "sha256" / digest.split(":", 1)[1]
        if not path.is_file():
            return self._send(404, b"{}", {})
        data = path.read_bytes()
        headers = {"Docker-Content-Digest": digest}
        if kind == "manifests":
            headers["Content-Type"] = srv.manifest["mediaType"]
            return self._send(200, data, headers)
        rng = self.headers.get("Range")
        if rng:
            srv.ranges.append(rng)
            start = int(rng.removeprefix("bytes=").split("-")[0])
            headers["Content-Range"] = f"bytes {start}-{len(data) - 1}/{len(data)}"
            return self._send(206, data[start:], headers)
        return self._send(200, data, headers)


@pytest.fixture
def registry(tmp_path: Path) -> Iterator[SlowRegistry]:
    layout = tmp_path / "layout"
    write_layout(layout, {"example.com/slow:1": [{"big.bin": os.urandom(LAYER)}]}, compression="none")
    srv = SlowRegistry(layout, "slow", "1")
    yield srv
    srv.shutdown()
    srv.server_close()


def _env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("OCISTORE_")}


def _wait_for(cond: Any, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


@pytest.mark.parametrize("verb", ["fetch", "pull"])
def test_sigint_stops_the_cli_within_a_second(registry: SlowRegistry, tmp_path: Path, verb: str) -> None:
    root = tmp_path / "root"
    ref = f"127.0.0.1:{registry.server_address[1]}/slow:1"
    proc = subprocess.Popen(
        [sys.executable, "-m", "ocistore.cli", "--root", str(root), "images", verb, "--plain-http", ref],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=_env(),
    )
    _wait_for(lambda: registry.sent > 1 << 20)  # a megabyte of the layer is through
    started = time.monotonic()
    proc.send_signal(signal.SIGINT)
    _out, err = proc.communicate(timeout=30)
    took = time.monotonic() - started
    assert proc.returncode == 130, err
    assert err.decode().splitlines() == ["ocistore: interrupted"]
    assert took < 2.5, f"took {took:.1f} s to stop"
    with Store(root) as store:
        assert store.check().ok, store.check().problems
        [ingest] = [s for s in store.content.statuses() if s.ref.startswith("layer-")]
        assert 0 < ingest.offset < ingest.total  # kept for a resume
        assert store.images.list() == []  # nothing recorded half-way


def test_cancel_event_stops_fetch_and_the_next_fetch_resumes(registry: SlowRegistry, tmp_path: Path) -> None:
    ref = f"127.0.0.1:{registry.server_address[1]}/slow:1"
    cancel = threading.Event()
    with Store(tmp_path / "root", plain_http=True) as store:
        threading.Timer(1.5, cancel.set).start()
        started = time.monotonic()
        with pytest.raises(errors.Cancelled):
            store.fetch(ref, cancel=cancel)
        assert time.monotonic() - started < 4.0
        [ingest] = [s for s in store.content.statuses() if s.ref.startswith("layer-")]
        assert ingest.offset > 0
        assert store.check().ok
        global RATE
        RATE, saved = 64 << 20, RATE
        try:
            img = store.fetch(ref)  # resumes at the ingest's offset with a Range request
        finally:
            RATE = saved
        assert registry.ranges and int(registry.ranges[-1].removeprefix("bytes=").split("-")[0]) >= ingest.offset
        assert store.inspect(img.name).blobs[-1].present
        assert store.content.statuses() == []
        assert store.check().ok
