"""Prefetching the chunks a start reads: several ranges per request, several requests at once.

``RemoteLayerSource.prefetch`` and ``store.prefetch`` against the real fixture registry (CNCF
distribution answers ``Range: bytes=a-b,c-d`` with ``multipart/byteranges``), and against the
small registry of ``test_lazyfetch`` for the other answers a registry may give to several
ranges: the whole blob, the first range only, one range over all, a broken multipart body,
wrong bytes. Every case ends with the right bytes or a typed error, and a clean ``check``.
"""

from __future__ import annotations

import json
import random
import threading
import time
from pathlib import Path

import pytest
from lazy_helpers import record_ranged_reads
from registry_fixtures import Registry
from test_estargz import FILES, _annotations, _convert, _tar
from test_lazyfetch import FakeRegistry, _layer, fake, source_store  # noqa: F401 (fixtures)

from ocistore import Store, errors
from ocistore import estargz as esgz
from ocistore.remotes import byteranges
from ocistore.transfer import lazyfetch
from ocistore.transfer.lazyread import LocalSource

_NOISE = random.Random(1).randbytes(1_300_000)  # no two 64 KiB chunks alike (the cache is by chunk digest)


def _good(tmp_path: Path) -> tuple[bytes, dict[str, str]]:
    """A small eStargz layer with chunks of 64 KiB (its big file has 20, all different)."""
    blob, res = _convert(_tar([*FILES, ("noise", _NOISE)]), tmp_path, chunk_size=64 << 10)
    return blob, _annotations(res)


def _scattered(src: lazyfetch.RemoteLayerSource, n: int, seed: int = 7) -> list[esgz.Chunk]:
    """``n`` chunks of different files, no two in adjacent gzip members (so no range merges them)."""
    chunks = sorted({c.offset: c for _e, cs in src.toc().files() for c in cs}.values(), key=lambda c: c.offset)
    picked = sorted(random.Random(seed).sample(range(0, len(chunks), 2), n))
    return [chunks[i] for i in picked]


@pytest.fixture(scope="module")
def small_chunks(source_store: tuple[Store, str]) -> str:  # noqa: F811
    """debian:gzip as eStargz with 4 KiB chunks (thousands of members)."""
    store, _name = source_store
    return store.convert("docker.io/library/debian:gzip", dst="example.com/lazy/debian:esgz-4k-pf",
                         chunk_size=4096, compression_level=1).name


@pytest.mark.registry
def test_scattered_chunks_come_in_one_multipart_request(
    source_store: tuple[Store, str], small_chunks: str, registry_plain: Registry, tmp_path: Path,  # noqa: F811
) -> None:
    source, _ = source_store
    ref = registry_plain.ref("lazy/debian:esgz-4k-pf")
    source.push(small_chunks, ref, **registry_plain.client_options())
    with Store(tmp_path / "s", **registry_plain.client_options()) as store:
        image = store.fetch(ref, lazy=True)
        layer = _layer(store, image.name)
        local = LocalSource(source.content, _layer(source, small_chunks))  # the same blob, whole
        with store.remote_source(image.name, layer) as src:
            chunks = _scattered(src, 40)
            src.prefetch(chunks, parallel=3)
            assert src.requests == 1  # 40 ranges, one request
            for c in chunks:
                assert src.has(c)
                assert src.read_chunk(c) == local.read_chunk(c)
            assert src.requests == 1  # every read came from the cache
        local.close()
        assert store.check().ok


@pytest.mark.registry
def test_store_prefetch_of_ranges_and_whole_files(
    source_store: tuple[Store, str], small_chunks: str, registry_plain: Registry, tmp_path: Path,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    source, _ = source_store
    ref = registry_plain.ref("lazy/debian:esgz-4k-pf2")
    source.push(small_chunks, ref, **registry_plain.client_options())
    bash = source.read_file(small_chunks, "usr/bin/bash")
    release = source.read_file(small_chunks, "etc/os-release")
    with Store(tmp_path / "s", **registry_plain.client_options()) as store:
        image = store.fetch(ref, lazy=True)
        result = store.prefetch(image.name, {"usr/bin/bash": [(10_000, 30_000), (500_000, 501_000)],
                                             "etc/os-release": None, "no/such/file": None, "etc": None})
        assert result.files == 2 and result.skipped == ["no/such/file", "etc"]
        # the chunks of bytes 8192-32767 and 499712-503807 of bash (4 KiB each), and os-release whole
        assert result.chunks == 6 + 1 + 1
        assert result.bytes == 7 * 4096 + len(release)
        assert 1 <= result.requests <= 2 and 0 < result.fetched_bytes < result.bytes
        assert store.prefetch(image.name, ["etc/os-release"]).requests == 0  # all local now

        asked = record_ranged_reads(monkeypatch)
        with store.open_file(image.name, "usr/bin/bash") as f:
            f.seek(10_000)
            assert f.read(20_000) == bash[10_000:30_000]
            f.seek(500_000)
            assert f.read(1000) == bash[500_000:501_000]
        assert store.read_file(image.name, "etc/os-release") == release
        assert asked == []  # the prefetched ranges are read without a request, even through a buffered reader
        assert store.check().ok


@pytest.mark.parametrize("multi", [None, "first", "merged", "multipart", "short"])
def test_every_answer_to_several_ranges_gives_the_right_bytes(fake: FakeRegistry, tmp_path: Path,  # noqa: F811
                                                               multi: str | None) -> None:
    blob, annotations = _good(tmp_path)
    ref = fake.image("v1", blob, annotations)
    fake.multi = multi
    with Store(tmp_path / "s", plain_http=True) as store:
        image = store.fetch(ref, lazy=True)
        layer = _layer(store, image.name)
        with store.remote_source(image.name, layer) as src:
            picked = _scattered(src, 5)
            chunks, later = picked[:3], picked[3:]
            fake.log.clear()
            src.prefetch(chunks, parallel=3)
            several = [r for r in fake.ranged() if r and "," in r]
            singles = [r for r in fake.ranged() if r and "," not in r]
            assert len(several) == 1
            # the ranges the answer left out are asked for one by one ("first" served one of them)
            assert len(singles) == {"merged": 0, "multipart": 0, "first": 2}.get(multi or "", 3)
            if multi == "merged":
                assert src.bytes_fetched == sum(src._member(c)[1] - src._member(c)[0] for c in chunks)
            for c in chunks:
                assert src.read_chunk(c) == blob_chunk(blob, src, c)
            if multi not in ("merged", "multipart"):  # this registry is asked for single ranges from now on
                fake.log.clear()
                src.prefetch(later, parallel=1)
                assert fake.ranged() and not [r for r in fake.ranged() if r and "," in r]
        assert store.check().ok


def blob_chunk(blob: bytes, src: lazyfetch.RemoteLayerSource, chunk: esgz.Chunk) -> bytes:
    """A chunk's bytes inflated from the whole blob (the reference)."""
    start, end = src._member(chunk)
    return src._inflate(blob[start:end], chunk)


def test_wrong_bytes_in_a_multipart_answer_are_caught_and_not_cached(fake: FakeRegistry,  # noqa: F811
                                                                     tmp_path: Path) -> None:
    blob, annotations = _good(tmp_path)
    ref = fake.image("v1", blob, annotations)
    fake.multi = "multipart"
    with Store(tmp_path / "s", plain_http=True) as store:
        image = store.fetch(ref, lazy=True)
        layer = _layer(store, image.name)
        fake.corrupt = lambda s, e, body: bytes(b ^ 0x55 for b in body)
        with store.remote_source(image.name, layer) as src:
            chunks = _scattered(src, 3)
            with pytest.raises((errors.DigestMismatch, errors.InvalidEStargz)):
                src.prefetch(chunks, parallel=3)
            assert not any(src.has(c) for c in chunks)
        assert store.check().ok
        fake.corrupt = None
        with store.remote_source(image.name, layer) as src:
            src.prefetch(chunks, parallel=3)
            assert all(src.read_chunk(c) == blob_chunk(blob, src, c) for c in chunks)
        assert store.check().ok


def test_prefetch_runs_requests_in_parallel(fake: FakeRegistry, tmp_path: Path,  # noqa: F811
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    blob, annotations = _good(tmp_path)
    ref = fake.image("v1", blob, annotations)
    fake.multi = "multipart"
    monkeypatch.setattr(lazyfetch, "MAX_RANGES_PER_REQUEST", 1)
    with Store(tmp_path / "s", plain_http=True) as store:
        image = store.fetch(ref, lazy=True)
        layer = _layer(store, image.name)
        with store.remote_source(image.name, layer) as src:
            chunks = _scattered(src, 4)
            in_flight, most, lock = [0], [0], threading.Lock()
            read_many = src._read_many

            def counted(spans: list[tuple[int, int]]) -> list[bytes]:
                with lock:
                    in_flight[0] += 1
                    most[0] = max(most[0], in_flight[0])
                time.sleep(0.2)  # long enough for the other workers to be asking too
                try:
                    return read_many(spans)
                finally:
                    with lock:
                        in_flight[0] -= 1

            monkeypatch.setattr(src, "_read_many", counted)
            src.prefetch(chunks, parallel=3)
            assert src.requests == 4
            assert most[0] == 3  # three requests at once, as asked
            assert all(src.read_chunk(c) == blob_chunk(blob, src, c) for c in chunks)
        assert store.check().ok


# -- the multipart parser on its own -------------------------------------------------------------------

_BODY = (b"--B\r\nContent-Range: bytes 0-2/10\r\n\r\nabc\r\n--B\r\nContent-Range: bytes 5-6/10\r\n\r\nfg\r\n"
         b"--B--\r\n")


def test_split_answer_takes_each_range_from_its_part() -> None:
    ranges = [(0, 3), (5, 7)]
    assert byteranges.range_header(ranges) == "bytes=0-2,5-6"
    assert byteranges.split_answer(_BODY, "multipart/byteranges; boundary=B", None, ranges, 10, "t") == [b"abc", b"fg"]
    assert byteranges.split_answer(_BODY, 'multipart/byteranges; boundary="B"', None, [(1, 2)], 10, "t") == [b"b"]
    # one part over both, and a first-range-only answer
    assert byteranges.split_answer(b"abcdefg", "application/octet-stream", "bytes 0-6/10", ranges, 10, "t") == [
        b"abc", b"fg"]
    assert byteranges.split_answer(b"abc", "application/octet-stream", "bytes 0-2/10", ranges, 10, "t") == [
        b"abc", None]


@pytest.mark.parametrize("body, content_type, content_range", [
    (_BODY, "multipart/byteranges", None),  # no boundary
    (_BODY.replace(b"0-2/10", b"0-2/11"), "multipart/byteranges; boundary=B", None),  # another blob's size
    (_BODY.replace(b"5-6/10", b"5-12/10"), "multipart/byteranges; boundary=B", None),  # outside the blob
    (_BODY.replace(b"abc", b"ab"), "multipart/byteranges; boundary=B", None),  # cut short
    (_BODY.replace(b"Content-Range: bytes 5-6/10", b"X: y"), "multipart/byteranges; boundary=B", None),
    (_BODY[:-8], "multipart/byteranges; boundary=B", None),  # no closing boundary
    (b"--B\r\n" + b"X: y\r\n" * 400 + b"\r\n", "multipart/byteranges; boundary=B", None),  # header bomb
    (b"abcd", "application/octet-stream", "bytes 0-2/10"),  # longer than its range
    (b"abc", "application/octet-stream", None),
])
def test_split_answer_refuses_answers_that_lie(body: bytes, content_type: str, content_range: str | None) -> None:
    with pytest.raises(errors.RegistryError):
        byteranges.split_answer(body, content_type, content_range, [(0, 3), (5, 7)], 10, "t")


def test_read_ranges_checks_its_arguments(fake: FakeRegistry) -> None:  # noqa: F811
    from ocistore.remotes import RegistryClient
    desc = fake.add(b"x" * 100)
    with RegistryClient(plain_http=True) as client:
        ref = f"{fake.address}/lazy/evil@{desc.digest}"
        for bad in ([(5, 3)], [(0, 10), (5, 20)], [(90, 101)], [(10, 20), (0, 5)]):
            with pytest.raises(errors.InvalidArgument):
                client.read_ranges(ref, desc, bad)
        assert client.read_ranges(ref, desc, []) == []
    fake.multi = "multipart"
    data = bytes(range(256)) * 4
    desc = fake.add(data)
    spans = [(i * 4, i * 4 + 2) for i in range(250)]  # more than one request holds
    with RegistryClient(plain_http=True) as client:
        fake.log.clear()
        assert client.read_ranges(f"{fake.address}/lazy/evil@{desc.digest}", desc, spans) == [
            data[a:b] for a, b in spans]
        assert len(fake.ranged()) == 3


@pytest.mark.registry
def test_cli_images_prefetch(source_store: tuple[Store, str], small_chunks: str,  # noqa: F811
                             registry_plain: Registry, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from ocistore.cli import main

    source, _ = source_store
    ref = registry_plain.ref("lazy/debian:esgz-4k-cli")
    source.push(small_chunks, ref, **registry_plain.client_options())
    root = tmp_path / "cli"
    assert main(["--root", str(root), "images", "fetch", "--lazy", "--plain-http", ref]) == 0
    capsys.readouterr()
    profile = tmp_path / "profile.json"
    profile.write_text(json.dumps({"usr/bin/bash": [[0, 4096], [100_000, 100_010]], "nope": None}))
    assert main(["--root", str(root), "--json", "images", "prefetch", "--plain-http", ref, "etc/os-release",
                 "--profile", str(profile)]) == 0
    cap = capsys.readouterr()
    result = json.loads(cap.out)
    assert result["files"] == 2 and result["chunks"] == 3 and result["skipped"] == ["nope"]
    assert "skipped 'nope'" in cap.err
    assert main(["--root", str(root), "images", "prefetch", "--plain-http", ref, "etc/os-release"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("1 files, 1 chunks") and ": 0 requests" in out  # already local
    profile.write_text("[1, 2]")
    assert main(["--root", str(root), "images", "prefetch", ref, "--profile", str(profile)]) != 0
    assert "profile" in capsys.readouterr().err
    assert main(["--root", str(root), "check"]) == 0


@pytest.mark.registry
def test_an_open_image_is_reopened_when_its_layer_completes(
    source_store: tuple[Store, str], small_chunks: str, registry_plain: Registry, tmp_path: Path,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The store reuses an open lazy image across reads, until one of its remote layers is whole
    in the content store: then it reads the local blob, with no request."""
    source, _ = source_store
    ref = registry_plain.ref("lazy/debian:esgz-4k-reopen")
    source.push(small_chunks, ref, **registry_plain.client_options())
    want = source.read_file(small_chunks, "usr/bin/ls")
    with Store(tmp_path / "s", **registry_plain.client_options()) as store:
        image = store.fetch(ref, lazy=True)
        assert store.read_file(image.name, "usr/bin/ls") == want
        opened = store._lazy_image(image.name, None)
        assert store._lazy_image(image.name, None) is opened  # reused
        store.fetch(ref)  # completes the partial layer
        asked = record_ranged_reads(monkeypatch)
        assert store._lazy_image(image.name, None) is not opened
        assert store.read_file(image.name, "usr/bin/bash") == source.read_file(small_chunks, "usr/bin/bash")
        assert asked == []
        assert store.check().ok


@pytest.mark.registry
@pytest.mark.skipif(not Path("/dev/fuse").exists(), reason="/dev/fuse is missing: no FUSE mounts")
def test_a_lazy_create_prefetches_a_profile_while_its_helper_starts(
    source_store: tuple[Store, str], small_chunks: str, registry_plain: Registry, tmp_path: Path,  # noqa: F811
    capsys: pytest.CaptureFixture[str],
) -> None:
    from ocistore.cli import main
    from ocistore.mount import mounted
    from ocistore.transfer import lazyrootfs

    source, _ = source_store
    ref = registry_plain.ref("lazy/debian:esgz-4k-create")
    source.push(small_chunks, ref, **registry_plain.client_options())
    bash = source.read_file(small_chunks, "usr/bin/bash")
    profile = {"usr/bin/bash": [(0, 8192), (200_000, 210_000)], "etc/os-release": None}
    with Store(tmp_path / "s", **registry_plain.client_options()) as store:
        image = store.fetch(ref, lazy=True)
        c = store.containers.create("pf", image.name, lazy=True, fill=False, prefetch=profile)
        try:
            assert store.prefetch(image.name, profile).requests == 0  # fetched before create returned
            log = (Path(c.labels[lazyrootfs.LAZY_LABEL]) / "log").read_text()
            assert "prefetched" not in log  # the profile took the place of the prioritized files
            (tmp_path / "mnt").mkdir()
            with mounted(c.mounts, tmp_path / "mnt") as root, open(root / "usr/bin/bash", "rb") as f:
                f.seek(200_000)
                assert f.read(10_000) == bash[200_000:210_000]
        finally:
            store.containers.delete("pf")
        assert store.check().ok
    # the CLI: --prefetch-profile FILE
    (tmp_path / "p.json").write_text(json.dumps({p: rs for p, rs in profile.items()}))
    root = str(tmp_path / "cli")
    assert main(["--root", root, "images", "fetch", "--lazy", "--plain-http", ref]) == 0
    assert main(["--root", root, "containers", "create", "--lazy", "--no-fill", "--prefetch-profile",
                 str(tmp_path / "p.json"), "pf2", ref]) == 0
    capsys.readouterr()
    with Store(root) as store:
        try:
            assert store.prefetch(ref, profile).requests == 0
        finally:
            store.containers.delete("pf2")


@pytest.mark.skipif(not Path("/dev/fuse").exists(), reason="/dev/fuse is missing: no FUSE mounts")
def test_a_lazy_create_whose_prefetch_fails_leaves_nothing(fake: FakeRegistry, tmp_path: Path) -> None:  # noqa: F811
    blob, annotations = _good(tmp_path)
    ref = fake.image("v1", blob, annotations)
    fake.multi = "multipart"
    with Store(tmp_path / "s", plain_http=True) as store:
        image = store.fetch(ref, lazy=True)
        fake.corrupt = lambda s, e, body: bytes(b ^ 0x55 for b in body)
        with pytest.raises((errors.DigestMismatch, errors.InvalidEStargz)):
            store.containers.create("bad", image.name, lazy=True, fill=False, prefetch=["noise"])
        assert store.containers.list() == []
        assert not store.layout.lazy_dir(store.namespace, "bad").exists()
        assert store.check().ok
