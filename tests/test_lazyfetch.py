"""Lazy fetch of eStargz layers (``fetch(ref, lazy=True)``) and the remote chunk source.

Against the real fixture registries (plain, TLS, basic, token auth, a pull-through mirror)
with a corpus image converted by ``store.convert`` and pushed by ``store.push``; and against a
small hand-written registry for what a real one does not do: ignore ``Range``, send wrong
bytes for a range, serve hostile eStargz layers. Every hostile case is a typed error and
leaves ``check()`` clean.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import re
import tarfile
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from archive_helpers import CORPUS
from lazy_helpers import record_ranged_reads
from registry_fixtures import Registry
from test_estargz import FILES, HOSTILE, _annotations, _convert, _hostile, _tar

from ocistore import Descriptor, Store, errors
from ocistore import estargz as esgz
from ocistore.estargz import verify as esgz_verify
from ocistore.oci import mediatypes as mt
from ocistore.transfer import lazyfetch

GZ = mt.OCI_LAYER_GZIP
PRIORITIZED = ["etc/debian_version", "usr/bin/ls"]


# -- the real registries --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def source_store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Store, str]]:
    """A store holding debian:gzip converted to eStargz (with a prefetch landmark)."""
    store = Store(tmp_path_factory.mktemp("lazy-source"))
    store.import_archive(CORPUS, fetch_only=True)
    image = store.convert("docker.io/library/debian:gzip", dst="example.com/lazy/debian:esgz",
                          prioritized_files=PRIORITIZED, compression_level=1)
    yield store, image.name
    store.close()


_PUSHED: dict[str, str] = {}


def _pushed(source_store: tuple[Store, str], reg: Registry) -> str:
    """The converted image pushed to ``reg`` (once per registry); returns its reference."""
    ref = reg.ref("lazy/debian:esgz")
    if _PUSHED.get(reg.address) != ref:
        store, name = source_store
        store.push(name, ref, **reg.client_options())
        _PUSHED[reg.address] = ref
    return ref


def _layer(store: Store, name: str) -> Descriptor:
    from ocistore.images import image_parts

    return image_parts(store.content, store.images.get(name).target).layers[0]


def _file_bytes(source: Store, name: str, path: str) -> bytes:
    """A file of the converted layer, read by tarfile from the whole blob (the reference)."""
    layer = _layer(source, name)
    with source.content.open(layer.digest) as f, tarfile.open(fileobj=f, mode="r:gz") as tf:
        member = tf.extractfile(path)
        assert member is not None
        return member.read()


def _chunks_of(src: lazyfetch.RemoteLayerSource, path: str) -> list[esgz.Chunk]:
    return next(chunks for entry, chunks in src.toc().files() if entry.name == path)


def _read(src: lazyfetch.RemoteLayerSource, path: str) -> bytes:
    return b"".join(src.read_chunk(c) for c in _chunks_of(src, path))


@pytest.mark.registry
def test_lazy_fetch_records_a_partial_layer_and_reads_chunks(
    source_store: tuple[Store, str], registry_plain: Registry, tmp_path: Path
) -> None:
    source, name = source_store
    ref = _pushed(source_store, registry_plain)
    with Store(tmp_path / "s", **registry_plain.client_options()) as store:
        image = store.fetch(ref, lazy=True)
        layer = _layer(store, image.name)
        info = store.content.info(layer.digest)
        assert info.partial and not store.content.exists(layer.digest)
        assert info.labels[lazyfetch.TOC_LABEL] == layer.annotations[esgz.TOC_DIGEST_ANNOTATION]
        assert store.content.exists(info.labels[lazyfetch.TOC_LABEL])  # the TOC is a blob of its own
        with pytest.raises(errors.PartialContent):
            store.content.open(layer.digest)
        with pytest.raises(errors.PartialContent):
            store.content.read(layer.digest)
        assert [i.digest for i in store.content.walk() if i.partial] == [layer.digest]
        # only manifest, config and the TOC are on disk: far less than the layer
        assert store.disk_usage().content < layer.size // 4
        report = store.check()
        assert report.ok, report.problems
        assert len(report.partial) == 1 and layer.digest in report.partial[0]

        du_before = store.disk_usage().content
        with store.remote_source(image.name, layer) as src:
            assert src.layer_digest == layer.digest
            ls = _read(src, "usr/bin/ls")
            assert ls == _file_bytes(source, name, "usr/bin/ls")
            assert src.requests == len(_chunks_of(src, "usr/bin/ls"))
            before = src.requests
            assert _read(src, "usr/bin/ls") == ls  # from the chunk cache
            assert src.requests == before
        cache = store.layout.content.chunk_dir(layer.digest)
        assert len(os.listdir(cache)) == len(_chunks_of(src, "usr/bin/ls"))
        assert store.disk_usage().content >= du_before + len(ls)  # du counts the chunk cache
        report = store.check()
        assert report.ok, report.problems
        assert f"{len(os.listdir(cache))} chunks cached" in report.partial[0]

        # a damaged cache entry is caught, dropped and fetched again
        victim = next(iter(cache.iterdir()))
        victim.write_bytes(b"garbage")
        assert not store.check().ok
        with store.remote_source(image.name, layer) as src:
            assert _read(src, "usr/bin/ls") == ls
            assert src.requests == 1
        assert store.check().ok

        # gc keeps the layer, its TOC and its chunks while the image exists, drops them with it
        store.gc()
        assert store.content.info(layer.digest).partial and cache.is_dir()
        store.images.delete(image.name)
        store.gc()
        assert not cache.exists()
        assert not list(store.content.walk())
        assert store.check().ok


@pytest.mark.registry
def test_prefetch_landmark_is_one_request(
    source_store: tuple[Store, str], registry_plain: Registry, tmp_path: Path
) -> None:
    source, name = source_store
    ref = _pushed(source_store, registry_plain)
    with Store(tmp_path / "s", **registry_plain.client_options()) as store:
        image = store.fetch(ref, lazy=True)
        layer = _layer(store, image.name)
        with store.remote_source(image.name, layer) as src:
            wanted = src.prefetch_landmark()
            assert wanted >= len(PRIORITIZED)
            assert src.requests == 1
            assert src.bytes_fetched < layer.size // 4
            for path in PRIORITIZED:
                assert _read(src, path) == _file_bytes(source, name, path)
            assert src.requests == 1  # the prioritized files were all in that one range
        assert store.check().ok


@pytest.mark.registry
def test_unpack_export_and_push_complete_a_partial_layer(
    source_store: tuple[Store, str], registry_plain: Registry, tmp_path: Path
) -> None:
    ref = _pushed(source_store, registry_plain)
    with Store(tmp_path / "s", **registry_plain.client_options()) as store:
        image = store.fetch(ref, lazy=True)
        layer = _layer(store, image.name)
        with store.remote_source(image.name, layer) as src:
            src.prefetch_landmark()
        store.export_archive(tmp_path / "out.tar", image.name)  # downloads the rest first
        info = store.content.info(layer.digest)
        assert not info.partial and store.content.exists(layer.digest)
        assert lazyfetch.TOC_LABEL in info.labels  # labels kept on completion
        assert store.check().ok
        store.gc()  # the chunk cache of a completed layer goes
        assert not store.layout.content.chunk_dir(layer.digest).exists()
        assert store.check().ok

    with Store(tmp_path / "u", **registry_plain.client_options()) as store:
        image = store.fetch(ref, lazy=True)
        store.unpack(image.name, snapshotter="native")
        assert store.is_unpacked(image.name, snapshotter="native")
        assert store.content.exists(_layer(store, image.name).digest)
        assert store.check().ok

    with Store(tmp_path / "c", **registry_plain.client_options()) as store:
        image = store.fetch(ref, lazy=True)
        store.containers.create("c1", image.name, snapshotter="native")
        assert store.content.exists(_layer(store, image.name).digest)
        # a second lazy fetch of a whole layer changes nothing
        store.fetch(ref, lazy=True)
        assert not store.content.info(_layer(store, image.name).digest).partial
        assert store.check().ok

    with Store(tmp_path / "p", **registry_plain.client_options()) as store:
        image = store.fetch(ref, lazy=True)
        store.push(image.name, registry_plain.ref("lazy/repushed:1"))
        assert store.content.exists(_layer(store, image.name).digest)
        assert store.check().ok


@pytest.mark.registry
def test_lazy_fetch_in_a_second_namespace_shares_the_whole_blob(
    source_store: tuple[Store, str], registry_plain: Registry, tmp_path: Path
) -> None:
    ref = _pushed(source_store, registry_plain)
    with Store(tmp_path / "s", **registry_plain.client_options()) as store:
        store.fetch(ref)  # whole, in "default"
        with store.with_namespace("other") as other:
            image = other.fetch(ref, lazy=True)
            layer = _layer(other, image.name)
            assert other.content.exists(layer.digest)  # shown the root's blob, not partial
        assert store.check().ok


@pytest.mark.registry
@pytest.mark.parametrize("mode", ["tls", "basic", "token"])
def test_range_reads_through_tls_and_auth(
    request: pytest.FixtureRequest, source_store: tuple[Store, str], tmp_path: Path, mode: str
) -> None:
    reg: Registry = request.getfixturevalue(f"registry_{mode}")
    source, name = source_store
    ref = _pushed(source_store, reg)
    with Store(tmp_path / "s", **reg.client_options()) as store:
        image = store.fetch(ref, lazy=True)
        layer = _layer(store, image.name)
        assert store.content.info(layer.digest).partial
        with store.remote_source(image.name, layer) as src:
            assert _read(src, "etc/debian_version") == _file_bytes(source, name, "etc/debian_version")
        assert store.check().ok


@pytest.mark.registry
def test_range_reads_through_a_pull_through_mirror(
    source_store: tuple[Store, str], registry_plain: Registry, registry_mirror: Registry, tmp_path: Path
) -> None:
    source, name = source_store
    ref = _pushed(source_store, registry_plain)
    hosts = tmp_path / "hosts" / registry_plain.address
    hosts.mkdir(parents=True)
    (hosts / "hosts.toml").write_text(
        f'server = "http://{registry_plain.address}"\n\n[host."http://{registry_mirror.address}"]\n'
        '  capabilities = ["pull", "resolve"]\n'
    )
    with Store(tmp_path / "s", hosts_dir=tmp_path / "hosts") as store:
        image = store.fetch(ref, lazy=True)
        layer = _layer(store, image.name)
        # distribution's proxy answers a range of a blob it has not cached yet with the whole
        # blob (200): the lazy fetch falls back to a whole, verified download
        assert store.content.exists(layer.digest)
        assert store.check().ok
    link = (registry_mirror.dir / "data/docker/registry/v2/repositories/lazy/debian/_layers/sha256"
            / layer.digest.removeprefix("sha256:") / "link")
    for _ in range(200):
        if link.exists():
            break
        time.sleep(0.05)
    assert link.exists()
    # once the mirror holds the blob it serves ranges: the layer is partial, chunks come from it
    with Store(tmp_path / "t", hosts_dir=tmp_path / "hosts") as store:
        seen: list[str] = []
        image = store.fetch(ref, lazy=True)
        assert store.content.info(layer.digest).partial
        with store.remote_source(image.name, layer) as src:
            original = src._client.transport.request

            def recording(host: Any, method: str, url: str, **kw: Any) -> Any:
                seen.append(url)
                return original(host, method, url, **kw)

            src._client.transport.request = recording  # type: ignore[method-assign]
            assert _read(src, "usr/bin/ls") == _file_bytes(source, name, "usr/bin/ls")
        assert seen and all(registry_mirror.address in u for u in seen)
        assert store.check().ok


def test_cli_images_fetch_lazy(source_store: tuple[Store, str], registry_plain: Registry, tmp_path: Path,
                               capsys: pytest.CaptureFixture[str]) -> None:
    from ocistore.cli import main

    ref = _pushed(source_store, registry_plain)
    root = tmp_path / "cli"
    assert main(["--root", str(root), "images", "fetch", "--lazy", "--plain-http", ref]) == 0
    assert main(["--root", str(root), "check"]) == 0
    out = capsys.readouterr().out
    assert "partial: content sha256:" in out and out.rstrip().endswith("ok")
    assert main(["--root", str(root), "content", "ls"]) == 0
    assert "(partial)" in capsys.readouterr().out
    # images check: a lazily fetched layer is remote, not missing
    assert main(["--root", str(root), "--json", "images", "check"]) == 0
    (row,) = json.loads(capsys.readouterr().out)
    assert row["status"].startswith("partial (") and row["status"].endswith(" remote)")
    assert row["missing"] == [] and row["partial"] and row["complete"] is False
    assert row["present"] + len(row["partial"]) == row["required"]


# -- a registry that misbehaves -------------------------------------------------------------------


def _manifest_type(data: bytes) -> str:
    """The mediaType a served manifest or index declares (a manifest when it declares none)."""
    try:
        declared = json.loads(data).get("mediaType")
    except (ValueError, AttributeError):
        declared = None
    return declared if isinstance(declared, str) else mt.OCI_MANIFEST


class _Handler(BaseHTTPRequestHandler):
    server: FakeRegistry
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_HEAD(self) -> None:
        self._serve(head=True)

    def do_GET(self) -> None:
        self._serve(head=False)

    def _serve(self, head: bool) -> None:
        srv = self.server
        rng = self.headers.get("Range")
        srv.log.append((self.command, self.path, rng))
        if self.path == "/v2/":
            return self._reply(200, b"{}", {"Content-Type": "application/json"}, head)
        m = re.fullmatch(r"/v2/(.+)/(manifests|blobs)/([^/?]+)", self.path)
        data = srv.objects.get(m.group(3)) if m else None
        if data is None:
            return self._reply(404, b'{"errors":[{"code":"BLOB_UNKNOWN"}]}', {"Content-Type": "application/json"},
                               head)
        assert m is not None
        headers = {"Docker-Content-Digest": "sha256:" + hashlib.sha256(data).hexdigest(),
                   "Content-Type": _manifest_type(data) if m.group(2) == "manifests" else "application/octet-stream"}
        several = re.fullmatch(r"bytes=(\d+-\d+(?:,\d+-\d+)+)", rng or "")
        if several is not None and srv.multi is not None and not srv.ignore_range:
            spans = [(int(a), int(b) + 1) for a, b in (x.split("-") for x in several.group(1).split(","))]
            return self._several(data, spans, headers, head)
        ranged = re.fullmatch(r"bytes=(\d+)-(\d*)", rng or "")
        if ranged is None or srv.ignore_range:
            return self._reply(200, data, headers, head)
        start = int(ranged.group(1))
        end = int(ranged.group(2)) + 1 if ranged.group(2) else len(data)
        body = data[start:end]
        if srv.corrupt is not None:
            body = srv.corrupt(start, end, body)
        headers["Content-Range"] = f"bytes {start}-{end - 1}/{len(data)}"
        return self._reply(206, body, headers, head)

    def _several(self, data: bytes, spans: list[tuple[int, int]], headers: dict[str, str], head: bool) -> None:
        """Answer a request for several ranges the way ``server.multi`` says."""
        mode = self.server.multi
        size = len(data)
        if mode == "first":  # single ranges only: the first one
            s, e = spans[0]
            return self._reply(206, data[s:e], dict(headers, **{"Content-Range": f"bytes {s}-{e - 1}/{size}"}), head)
        if mode == "merged":  # one range over all of them
            s, e = spans[0][0], spans[-1][1]
            return self._reply(206, data[s:e], dict(headers, **{"Content-Range": f"bytes {s}-{e - 1}/{size}"}), head)
        body = b""
        for i, (s, e) in enumerate(spans):
            part = data[s:e] if self.server.corrupt is None else self.server.corrupt(s, e, data[s:e])
            if mode == "short" and i == len(spans) - 1:
                part = part[:-1]  # a part shorter than its Content-Range
            body += (b"\r\n--XYZ\r\nContent-Type: application/octet-stream\r\n"
                     + f"Content-Range: bytes {s}-{e - 1}/{size}\r\n\r\n".encode() + part)
        body += b"\r\n--XYZ--\r\n"
        return self._reply(206, body, dict(headers, **{"Content-Type": "multipart/byteranges; boundary=XYZ"}), head)

    def _reply(self, status: int, body: bytes, headers: dict[str, str], head: bool) -> None:
        self.send_response(status)
        for k, v in headers.items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if not head:
            self.wfile.write(body)


class FakeRegistry(ThreadingHTTPServer):
    """Serves ``objects`` (digest or tag -> bytes) under any repository, with faults."""

    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.objects: dict[str, bytes] = {}
        self.log: list[tuple[str, str, str | None]] = []
        self.ignore_range = False
        self.corrupt: Callable[[int, int, bytes], bytes] | None = None
        # requests for several ranges: None sends the whole blob (as S3 does);
        # "multipart", "first" (only the first range), "merged" (one range over all), "short"
        self.multi: str | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.server_address[1]}"

    def add(self, data: bytes) -> Descriptor:
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        self.objects[digest] = data
        return Descriptor("application/octet-stream", digest, len(data))

    def _manifest(self, blob: bytes, annotations: dict[str, str], arch: str = "amd64") -> bytes:
        layer = self.add(blob)
        diff_id = "sha256:" + hashlib.sha256(gzip.decompress(blob)).hexdigest()
        config = self.add(json.dumps({"architecture": arch, "os": "linux",
                                      "rootfs": {"type": "layers", "diff_ids": [diff_id]}}).encode())
        manifest = json.dumps({
            "schemaVersion": 2, "mediaType": mt.OCI_MANIFEST,
            "config": {"mediaType": mt.OCI_CONFIG, "digest": config.digest, "size": config.size},
            "layers": [{"mediaType": GZ, "digest": layer.digest, "size": layer.size, "annotations": annotations}],
        }).encode()
        self.add(manifest)
        return manifest

    def image(self, tag: str, blob: bytes, annotations: dict[str, str]) -> str:
        """Serve a one-layer image of ``blob`` under ``tag``; returns its reference."""
        self.objects[tag] = self._manifest(blob, annotations)
        return f"{self.address}/lazy/evil:{tag}"

    def index(self, tag: str, per_arch: dict[str, tuple[bytes, dict[str, str]]]) -> str:
        """Serve an index of one one-layer image per architecture under ``tag``."""
        entries = []
        for arch, (blob, notes) in per_arch.items():
            d = self.add(self._manifest(blob, notes, arch))
            entries.append({"mediaType": mt.OCI_MANIFEST, "digest": d.digest, "size": d.size,
                            "platform": {"architecture": arch, "os": "linux"}})
        self.objects[tag] = json.dumps({"schemaVersion": 2, "mediaType": mt.OCI_INDEX,
                                        "manifests": entries}).encode()
        self.add(self.objects[tag])
        return f"{self.address}/lazy/evil:{tag}"

    def ranged(self) -> list[str | None]:
        return [r for method, path, r in self.log if method == "GET" and "/blobs/" in path and r]


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeRegistry]:
    # the test layers are small: a small tail guess keeps them lazy (layers within it are taken whole)
    monkeypatch.setattr(lazyfetch, "TAIL_GUESS", 4096)
    srv = FakeRegistry()
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    yield srv
    srv.shutdown()
    srv.server_close()


def _good(tmp_path: Path) -> tuple[bytes, dict[str, str]]:
    blob, res = _convert(_tar(FILES), tmp_path)
    return blob, _annotations(res)


def _clean(store: Store) -> None:
    report = store.check()
    assert report.ok, report.problems
    assert not [i for i in store.content.walk() if i.partial]


def test_registry_ignoring_range_gets_a_whole_download(fake: FakeRegistry, tmp_path: Path) -> None:
    blob, annotations = _good(tmp_path)
    ref = fake.image("v1", blob, annotations)
    fake.ignore_range = True
    with Store(tmp_path / "s", plain_http=True) as store:
        image = store.fetch(ref, lazy=True)
        layer = _layer(store, image.name)
        assert store.content.exists(layer.digest)  # whole and verified, not partial
        assert store.content.read(layer.digest) == blob
        _clean(store)


def test_registry_that_stops_honouring_range_is_a_typed_error(fake: FakeRegistry, tmp_path: Path) -> None:
    blob, annotations = _good(tmp_path)
    ref = fake.image("v1", blob, annotations)
    with Store(tmp_path / "s", plain_http=True) as store:
        image = store.fetch(ref, lazy=True)
        layer = _layer(store, image.name)
        assert store.content.info(layer.digest).partial
        layer_gets = [r for method, path, r in fake.log if method == "GET" and layer.digest in path]
        assert layer_gets and all(r and r.startswith("bytes=") for r in layer_gets)
        fake.ignore_range = True
        with store.remote_source(image.name, layer) as src, pytest.raises(errors.RangeNotSupported):
            src.read_chunk(_chunks_of(src, "etc/passwd")[0])
        assert not store.layout.content.chunk_dir(layer.digest).exists()
        assert store.check().ok
        # the fallback the error names: a whole download
        store.fetch(ref)
        assert store.content.read(layer.digest) == blob
        _clean(store)


@pytest.mark.parametrize("lie", ["other bytes of the blob", "garbage", "valid gzip of other data"])
def test_wrong_bytes_for_a_range_are_caught_and_not_cached(fake: FakeRegistry, tmp_path: Path, lie: str) -> None:
    blob, annotations = _good(tmp_path)
    ref = fake.image("v1", blob, annotations)
    with Store(tmp_path / "s", plain_http=True) as store:
        image = store.fetch(ref, lazy=True)
        layer = _layer(store, image.name)

        def corrupt(start: int, end: int, body: bytes) -> bytes:
            if lie == "garbage":
                return os.urandom(len(body))
            if lie == "valid gzip of other data":
                return gzip.compress(b"\0" * (4 * len(body)))[:len(body)].ljust(len(body), b"\0")
            return (blob[start + 1:] + blob)[:len(body)]  # the range one byte off

        fake.corrupt = corrupt
        with store.remote_source(image.name, layer) as src:
            for path in ("etc/passwd", "big"):
                with pytest.raises((errors.DigestMismatch, errors.InvalidEStargz)):
                    src.read_chunk(_chunks_of(src, path)[0])
            with pytest.raises((errors.DigestMismatch, errors.InvalidEStargz)):
                src.prefetch([c for _e, cs in src.toc().files() for c in cs])
        cache = store.layout.content.chunk_dir(layer.digest)
        assert not cache.exists() or not os.listdir(cache)
        assert store.check().ok
        fake.corrupt = None  # the honest registry again: the same reads work
        with store.remote_source(image.name, layer) as src:
            assert _read(src, "big") == FILES[2][1]
        assert store.check().ok


def test_prefetch_coalesces_adjacent_members(fake: FakeRegistry, tmp_path: Path) -> None:
    blob, annotations = _good(tmp_path)
    ref = fake.image("v1", blob, annotations)
    with Store(tmp_path / "s", plain_http=True) as store:
        image = store.fetch(ref, lazy=True)
        layer = _layer(store, image.name)
        fake.log.clear()
        with store.remote_source(image.name, layer) as src:
            every = [c for _e, cs in src.toc().files() for c in cs]
            src.prefetch(every)
            assert src.requests == 1 and len(fake.ranged()) == 1
            assert _read(src, "big") == FILES[2][1]
            assert src.requests == 1
        assert store.check().ok


def test_lazy_fetch_asks_for_the_tail_then_the_toc(fake: FakeRegistry, tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    blob, annotations = _good(tmp_path)
    ref = fake.image("v1", blob, annotations)
    monkeypatch.setattr(lazyfetch, "TAIL_GUESS", 64)  # smaller than the TOC: a second range is needed
    with Store(tmp_path / "s", plain_http=True) as store:
        image = store.fetch(ref, lazy=True)
        assert store.content.info(_layer(store, image.name).digest).partial
        ranges = fake.ranged()
        assert len(ranges) == 2 and ranges[0] == f"bytes={len(blob) - 64}-{len(blob) - 1}"
        assert store.check().ok


HOSTILE_FETCH = {
    "footer lies about the TOC offset (before)": (lambda es: None, lambda o: o - 1, errors.InvalidEStargz),
    "footer lies about the TOC offset (zero)": (lambda es: None, lambda o: 0, errors.InvalidEStargz),
    "footer lies about the TOC offset (beyond)": (lambda es: None, lambda o: o + 10**6, errors.InvalidEStargz),
    "offset outside the blob": (HOSTILE["offset outside the blob"][0], None, errors.InvalidEStargz),
    "overlapping chunks": (HOSTILE["overlapping chunks"][0], None, errors.InvalidEStargz),
    "dot-dot name": (HOSTILE["dot-dot name"][0], None, errors.UnsafeArchive),
    "entry under an absolute symlink": (HOSTILE["entry under an absolute symlink"][0], None, errors.UnsafeArchive),
}


@pytest.mark.parametrize("case", sorted(HOSTILE_FETCH))
def test_hostile_layer_fails_the_lazy_fetch_and_records_nothing(fake: FakeRegistry, tmp_path: Path,
                                                                 case: str) -> None:
    edit, shift, kind = HOSTILE_FETCH[case]
    blob, annotations = _hostile(tmp_path, edit, shift)
    ref = fake.image("v1", blob, annotations)
    with Store(tmp_path / "s", plain_http=True) as store:
        with pytest.raises(kind):
            store.fetch(ref, lazy=True)
        assert not store.images.list()
        assert not store.content.exists(annotations[esgz.TOC_DIGEST_ANNOTATION])  # no unverified TOC kept
        _clean(store)


def test_toc_digest_that_does_not_match_the_annotation(fake: FakeRegistry, tmp_path: Path) -> None:
    blob, annotations = _good(tmp_path)
    ref = fake.image("v1", blob, {**annotations, esgz.TOC_DIGEST_ANNOTATION: "sha256:" + "3" * 64})
    with Store(tmp_path / "s", plain_http=True) as store:
        with pytest.raises(errors.DigestMismatch):
            store.fetch(ref, lazy=True)
        _clean(store)


def test_toc_bomb_is_refused(fake: FakeRegistry, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    blob, annotations = _hostile(tmp_path, lambda es: es.extend({"name": f"d{i}", "type": "dir"} for i in range(50)))
    ref = fake.image("v1", blob, annotations)
    monkeypatch.setattr(esgz_verify, "MAX_TOC_ENTRIES", 40)
    with Store(tmp_path / "s", plain_http=True) as store:
        with pytest.raises(errors.SizeLimitExceeded):
            store.fetch(ref, lazy=True)
        _clean(store)


def test_chunk_digest_that_lies_is_caught_on_read(fake: FakeRegistry, tmp_path: Path) -> None:
    """The TOC is honest about itself (its digest matches) but lies about a chunk."""
    blob, annotations = _hostile(tmp_path, HOSTILE["chunk digest lies"][0])
    ref = fake.image("v1", blob, annotations)
    with Store(tmp_path / "s", plain_http=True) as store:
        image = store.fetch(ref, lazy=True)
        layer = _layer(store, image.name)
        with store.remote_source(image.name, layer) as src:
            with pytest.raises(errors.DigestMismatch):
                src.read_chunk(_chunks_of(src, "etc/passwd")[0])
            assert _read(src, "big") == FILES[2][1]  # the honest chunks still read
        assert store.check().ok
        # completing it verifies the blob digest (fine) and the unpack then checks every chunk
        with pytest.raises(errors.DigestMismatch):
            store.unpack(image.name, snapshotter="native")
        assert list(store.snapshots("native").walk()) == []
        assert store.check().ok


def test_remote_source_errors(fake: FakeRegistry, tmp_path: Path) -> None:
    blob, annotations = _good(tmp_path)
    ref = fake.image("v1", blob, annotations)
    with Store(tmp_path / "s", plain_http=True) as store:
        image = store.fetch(ref)
        layer = _layer(store, image.name)
        with pytest.raises(errors.FailedPrecondition, match="whole"):
            store.remote_source(image.name, layer)
        with pytest.raises(errors.NotFound):
            store.remote_source("example.com/nope:1", layer)


def test_unreachable_registry_fails_export_clearly(fake: FakeRegistry, tmp_path: Path) -> None:
    blob, annotations = _good(tmp_path)
    ref = fake.image("v1", blob, annotations)
    with Store(tmp_path / "s", plain_http=True) as store:
        image = store.fetch(ref, lazy=True)
        fake.objects.clear()
        with pytest.raises(errors.NotFound, match="fetched lazily"):
            store.export_archive(tmp_path / "out.tar", image.name)
        assert not (tmp_path / "out.tar").exists()
        assert store.content.info(_layer(store, image.name).digest).partial
        assert store.check().ok


def test_export_completes_only_the_exported_platforms_partial_layers(fake: FakeRegistry, tmp_path: Path) -> None:
    amd = _convert(_tar(FILES), tmp_path)
    arm = _convert(_tar([*FILES, ("arm-only", b"arm\n")]), tmp_path)
    ref = fake.index("multi", {"amd64": (amd[0], _annotations(amd[1])), "arm64": (arm[0], _annotations(arm[1]))})
    amd_digest = "sha256:" + hashlib.sha256(amd[0]).hexdigest()
    arm_digest = "sha256:" + hashlib.sha256(arm[0]).hexdigest()
    with Store(tmp_path / "s", plain_http=True) as store:
        image = store.fetch(ref, lazy=True, all_platforms=True)
        assert store.content.info(amd_digest).partial and store.content.info(arm_digest).partial
        store.export_archive(tmp_path / "amd.tar", image.name, platform="linux/amd64")
        assert not store.content.info(amd_digest).partial  # downloaded whole for the export
        assert store.content.info(arm_digest).partial  # filtered out: still remote
        with tarfile.open(tmp_path / "amd.tar") as tf:
            names = tf.getnames()
        assert f"blobs/sha256/{amd_digest[7:]}" in names and f"blobs/sha256/{arm_digest[7:]}" not in names
        assert store.check().ok
        store.export_archive(tmp_path / "all.tar", image.name, all_platforms=True)
        assert not store.content.info(arm_digest).partial
        assert store.check().ok


def test_read_range_checks_the_content_range(fake: FakeRegistry) -> None:
    from ocistore.remotes import RegistryClient

    data = bytes(range(256)) * 100
    desc = fake.add(data)
    with RegistryClient(plain_http=True) as client:
        ref = f"{fake.address}/lazy/x:1"
        assert client.read_range(ref, desc, 10, 300) == data[10:300]
        assert client.read_range(ref, desc, 0, len(data)) == data
        fake.ignore_range = True
        assert client.read_range(ref, desc, 0, len(data)) == data  # a 200 for the whole blob is fine
        with pytest.raises(errors.RangeNotSupported):
            client.read_range(ref, desc, 10, 300)
        fake.ignore_range = False
        fake.corrupt = lambda s, e, body: body + b"x"
        with pytest.raises((errors.RegistryError, errors.SizeLimitExceeded)):
            client.read_range(ref, desc, 10, 300)
        with pytest.raises(errors.InvalidArgument):
            client.read_range(ref, desc, 10, len(data) + 1)


@pytest.mark.registry
def test_read_file_of_a_lazily_fetched_image_reads_only_its_chunks(
    source_store: tuple[Store, str], registry_plain: Registry, tmp_path: Path
) -> None:
    source, name = source_store
    ref = _pushed(source_store, registry_plain)
    with Store(tmp_path / "s", **registry_plain.client_options()) as store:
        image = store.fetch(ref, lazy=True)
        layer = _layer(store, image.name)
        assert store.read_file(image.name, "usr/bin/ls") == _file_bytes(source, name, "usr/bin/ls")
        with store.open_file(image.name, "/etc/os-release") as f:
            assert f.read() == _file_bytes(source, name, "etc/os-release")
        # the layer is still partial: only the chunks of the files read were downloaded
        assert store.content.info(layer.digest).partial
        cached = sum(p.stat().st_size for p in store.layout.content.chunk_dir(layer.digest).iterdir())
        assert 0 < cached < layer.size // 2
        report = store.check()
        assert report.ok, report.problems


@pytest.mark.registry
def test_open_file_reads_a_range_and_reuses_the_parsed_toc(
    source_store: tuple[Store, str], registry_plain: Registry, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A seek + read of a lazily fetched file downloads only the chunk(s) covering the range,
    and opening more files of the image parses its TOC once (the tree cache's TOC is reused)."""
    source, name = source_store
    ref = _pushed(source_store, registry_plain)
    with Store(tmp_path / "s", **registry_plain.client_options()) as store:
        image = store.fetch(ref, lazy=True)
        layer = _layer(store, image.name)
        parsed: list[int] = []
        real_parse = lazyfetch.parse_toc
        monkeypatch.setattr(lazyfetch, "parse_toc", lambda *a, **k: parsed.append(1) or real_parse(*a, **k))
        whole = _file_bytes(source, name, "usr/bin/bash")
        with store.open_file(image.name, "usr/bin/bash") as f:
            f.seek(len(whole) // 2)
            assert f.read(100) == whole[len(whole) // 2:len(whole) // 2 + 100]
        chunks = list(store.layout.content.chunk_dir(layer.digest).iterdir())
        assert len(chunks) == 1 and chunks[0].stat().st_size <= esgz.DEFAULT_CHUNK_SIZE
        for path in ("etc/os-release", "usr/bin/ls", "etc/passwd"):
            with store.open_file(image.name, path) as f:
                assert f.read() == _file_bytes(source, name, path)
        assert len(parsed) <= 1


@pytest.mark.registry
def test_a_read_spanning_chunks_is_one_ranged_request(
    source_store: tuple[Store, str], registry_plain: Registry, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """open_file: a read over several small chunks fetches them in one coalesced range, and only them."""
    source, _name = source_store
    small = source.convert("docker.io/library/debian:gzip", dst="example.com/lazy/debian:esgz-4k",
                           chunk_size=4096, compression_level=1).name
    ref = registry_plain.ref("lazy/debian:esgz-4k")
    source.push(small, ref, **registry_plain.client_options())
    whole = source.read_file(small, "usr/bin/bash")
    ranges = record_ranged_reads(monkeypatch)
    with Store(tmp_path / "s", **registry_plain.client_options()) as store:
        image = store.fetch(ref, lazy=True)
        layer = _layer(store, image.name)
        with store.open_file(image.name, "usr/bin/bash") as f:
            f.seek(10_000)
            assert f.read(5 * 4096) == whole[10_000:10_000 + 5 * 4096]
        assert len(ranges) == 1
        # the reader's 64 KiB buffer is filled from 10,000: the chunks of bytes 8192-77823, no others
        assert len(list(store.layout.content.chunk_dir(layer.digest).iterdir())) == 17
        assert store.check().ok


@pytest.mark.registry
def test_reads_of_a_lazily_fetched_image_share_one_registry_client(
    source_store: tuple[Store, str], registry_plain: Registry, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every open_file/read_file of a store reuses one client (its connections and tokens):
    a start opens hundreds of files, and a client per file cost a handshake each."""
    from ocistore import remotes

    source, name = source_store
    ref = _pushed(source_store, registry_plain)
    made: list[object] = []
    real = remotes.RegistryClient

    class Counting(real):  # type: ignore[misc, valid-type]
        def __init__(self, *args: Any, **kw: Any) -> None:
            made.append(self)
            super().__init__(*args, **kw)

    with Store(tmp_path / "s", **registry_plain.client_options()) as store:
        image = store.fetch(ref, lazy=True)
        monkeypatch.setattr(remotes, "RegistryClient", Counting)
        for path in ("usr/bin/ls", "etc/os-release", "etc/debian_version"):
            with store.open_file(image.name, path) as f:
                assert f.read() == _file_bytes(source, name, path)
        assert store.read_file(image.name, "usr/bin/ls") == _file_bytes(source, name, "usr/bin/ls")
        assert len(made) == 1
        assert store.content.info(_layer(store, image.name).digest).partial
        assert store.check().ok
