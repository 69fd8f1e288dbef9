"""Property-based fuzzing of the parsers that read outside data (issue 11, part 3).

Property: for any input, a parser returns or raises an ``ocistore.errors.Error``; nothing else
escapes (no ``KeyError``, ``TypeError``, ``RecursionError``, ``OSError``...), and the import
fuzzers write nothing outside their temporary root.

Budget (CI): ``derandomize=True`` (the same examples every run), ``max_examples`` per parser
as in :data:`BUDGET`, no deadline; the whole file runs in about 30 s on the 2-core CI machine.
Raise the budget locally with ``OCISTORE_FUZZ_EXAMPLES=<n>`` (every parser gets ``n``).
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import tarfile
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ocistore import errors
from ocistore.archive._tarformat import TarReader
from ocistore.filters import parse_filters
from ocistore.oci.descriptor import Descriptor
from ocistore.oci.manifest import parse_config, parse_index, parse_manifest
from ocistore.oci.platform import Platform
from ocistore.oci.reference import normalize_name, parse_reference

_SCALE = os.environ.get("OCISTORE_FUZZ_EXAMPLES")
BUDGET = {
    "tar": 300, "manifest": 150, "descriptor": 150, "reference": 300, "platform": 200, "filters": 300,
    "hosts": 150, "docker_config": 150, "import_oci": 50, "import_docker": 50,
}


def budget(name: str) -> Callable[[Any], Any]:
    return settings(max_examples=int(_SCALE) if _SCALE else BUDGET[name], deadline=None, derandomize=True,
                    database=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


def only_ocistore_errors(fn: Callable[[], Any]) -> None:
    with contextlib.suppress(errors.Error):
        fn()


# -- strategies ----------------------------------------------------------------------------------------

_scalars = st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats(allow_nan=True) | st.text(max_size=40)
json_values = st.recursive(_scalars, lambda kids: st.lists(kids, max_size=4)
                           | st.dictionaries(st.text(max_size=12), kids, max_size=4), max_leaves=20)

_DIGEST = "sha256:" + "a" * 64
_digests = st.sampled_from([_DIGEST, "sha256:abc", "md5:00", "", "sha256:../../x", "sha512:" + "b" * 128]) | st.text(
    max_size=80)
_media = st.sampled_from([
    "application/vnd.oci.image.manifest.v1+json", "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.v2+json", "application/vnd.oci.image.layer.v1.tar+gzip",
    "application/vnd.oci.image.config.v1+json", "", "x/y",
]) | st.text(max_size=30)


def _maybe(value: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return value | json_values


descriptors = st.fixed_dictionaries(
    {}, optional={"mediaType": _maybe(_media), "digest": _maybe(_digests),
                  "size": _maybe(st.integers(-5, 2**64)), "annotations": json_values,
                  "platform": _maybe(st.fixed_dictionaries({"os": st.text(max_size=8),
                                                            "architecture": st.text(max_size=8)})),
                  "urls": json_values, "artifactType": json_values})

manifests = st.fixed_dictionaries(
    {}, optional={"schemaVersion": _maybe(st.just(2)), "mediaType": _maybe(_media),
                  "config": _maybe(descriptors), "layers": _maybe(st.lists(descriptors, max_size=3)),
                  "manifests": _maybe(st.lists(descriptors, max_size=3)), "annotations": json_values,
                  "subject": _maybe(descriptors)})

configs = st.fixed_dictionaries(
    {}, optional={"architecture": json_values, "os": json_values, "variant": json_values,
                  "rootfs": _maybe(st.fixed_dictionaries({}, optional={
                      "type": _maybe(st.just("layers")), "diff_ids": _maybe(st.lists(_digests, max_size=3))})),
                  "history": _maybe(st.lists(json_values, max_size=3)), "config": json_values})


def _encoded(docs: st.SearchStrategy[Any]) -> st.SearchStrategy[bytes]:
    return docs.map(lambda d: json.dumps(d).encode()) | st.binary(max_size=200)


# -- tar headers ---------------------------------------------------------------------------------------


def _valid_tar() -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as t:
        for name, data in (("a/b", b"x" * 700), ("long/" + "n" * 150, b"y"), ("ü", b"")):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.pax_headers = {"SCHILY.xattr.user.k": "v"}
            t.addfile(info, io.BytesIO(data))
        link = tarfile.TarInfo("l")
        link.type = tarfile.SYMTYPE
        link.linkname = "a/b"
        t.addfile(link)
    return buf.getvalue()


VALID_TAR = _valid_tar()


def _read_all(data: bytes, chunk: int) -> None:
    chunks: Iterator[bytes] = (data[i:i + chunk] for i in range(0, len(data), chunk))
    reader = TarReader(lambda: next(chunks, b""))
    for _ in range(1000):
        if reader.next() is None:
            return
        reader.drain()


@budget("tar")
@given(st.lists(st.tuples(st.integers(0, len(VALID_TAR) - 1), st.integers(0, 255)), max_size=12),
       st.integers(1, 4096), st.integers(0, len(VALID_TAR)))
def test_tar_reader_on_mutated_tars(edits: list[tuple[int, int]], chunk: int, cut: int) -> None:
    data = bytearray(VALID_TAR)
    for pos, value in edits:
        data[pos] = value
    only_ocistore_errors(lambda: _read_all(bytes(data[:cut or None]), chunk))


@budget("tar")
@given(st.binary(max_size=3000), st.integers(1, 600))
def test_tar_reader_on_random_bytes(data: bytes, chunk: int) -> None:
    only_ocistore_errors(lambda: _read_all(data, chunk))


# -- OCI documents -------------------------------------------------------------------------------------


@budget("manifest")
@given(_encoded(manifests), st.sampled_from([None, "application/vnd.oci.image.manifest.v1+json",
                                              "application/vnd.oci.image.index.v1+json",
                                              "application/vnd.docker.distribution.manifest.v2+json"]))
def test_manifest_and_index_parsers(data: bytes, media_type: str | None) -> None:
    only_ocistore_errors(lambda: parse_manifest(data, media_type))
    only_ocistore_errors(lambda: parse_index(data, media_type))


@budget("manifest")
@given(_encoded(configs))
def test_config_parser(data: bytes) -> None:
    only_ocistore_errors(lambda: parse_config(data))


@budget("descriptor")
@given(descriptors | json_values)
def test_descriptor_from_json(doc: Any) -> None:
    def parse() -> None:
        if not isinstance(doc, dict):
            raise errors.InvalidArgument("not an object")  # from_json takes a mapping (its callers check)
        Descriptor.from_json(doc).to_json()
    only_ocistore_errors(parse)


# -- strings -------------------------------------------------------------------------------------------

_ref_parts = st.sampled_from(["docker.io", "localhost:5000", "127.0.0.1:5100", "a.b", "[::1]:5000", "UP", ""])
refs = st.builds(lambda d, p, t, g: f"{d}/{p}{t}{g}", _ref_parts,
                 st.from_regex(r"[a-z0-9._/-]{0,30}", fullmatch=True),
                 st.sampled_from(["", ":latest", ":v1.2", ":", ":" + "t" * 200]),
                 st.sampled_from(["", "@" + _DIGEST, "@sha256:x", "@"])) | st.text(max_size=120)


@budget("reference")
@given(refs)
def test_references(ref: str) -> None:
    only_ocistore_errors(lambda: str(parse_reference(ref)))
    only_ocistore_errors(lambda: normalize_name(ref))


@budget("platform")
@given(st.from_regex(r"[a-zA-Z0-9/_.()-]{0,30}", fullmatch=True) | st.text(max_size=40))
def test_platform_strings(spec: str) -> None:
    only_ocistore_errors(lambda: str(Platform.parse(spec)))


@budget("platform")
@given(json_values | st.fixed_dictionaries({}, optional={"os": json_values, "architecture": json_values,
                                                        "variant": json_values, "os.version": json_values,
                                                        "os.features": json_values}))
def test_platform_json(doc: Any) -> None:
    def parse() -> None:
        if not isinstance(doc, dict):
            raise errors.InvalidArgument("not an object")
        Platform.from_json(doc)
    only_ocistore_errors(parse)


_filter_atoms = st.sampled_from(['labels."a.b/c"==v', "name~=^x", "name!=y", "labels.a", "kind==active",
                                 "parent==", ",", "==", '"', "labels.\"unterminated", "name~=(", "a==b,c~=d"])


@budget("filters")
@given(st.lists(_filter_atoms | st.text(max_size=30), max_size=4).map(",".join) | st.text(max_size=80),
       st.booleans())
def test_filter_language(text: str, as_list: bool) -> None:
    only_ocistore_errors(lambda: parse_filters([text, text] if as_list else text))


# -- configuration files -------------------------------------------------------------------------------

_toml_lines = st.sampled_from([
    'server = "https://r.example"', 'server = 3', "[host.\"https://m.example\"]", "[host]", "[[host]]",
    'capabilities = ["pull", "resolve"]', "capabilities = \"pull\"", "skip_verify = true", "skip_verify = \"no\"",
    'ca = "/nonexistent/ca.pem"', "ca = [1, 2]", 'client = [["/a", "/b"]]', "client = 5",
    '[host."https://m.example".header]', 'x-a = "b"', "x-b = [1]", "override_path = true", "= broken",
    '[host."ftp://x"]', '[host."https://"]', 'server = "https://[::1"', "\x00",
])


@budget("hosts")
@given(st.lists(_toml_lines | st.text(max_size=30), max_size=8).map("\n".join), st.sampled_from(
    ["r.example", "127.0.0.1:5000", "localhost", "docker.io"]))
def test_hosts_toml(text: str, host: str) -> None:
    from ocistore.remotes.hosts import configure_hosts
    from ocistore.remotes.options import RegistryOptions

    with tempfile.TemporaryDirectory() as d:
        hdir = Path(d) / "hosts" / host
        hdir.mkdir(parents=True)
        (hdir / "hosts.toml").write_text(text, errors="surrogateescape")
        only_ocistore_errors(lambda: configure_hosts(host, RegistryOptions(hosts_dir=str(Path(d) / "hosts"))))
        assert sorted(p.name for p in Path(d).iterdir()) == ["hosts"]


_auth = st.fixed_dictionaries({}, optional={"auth": _maybe(st.sampled_from(["dTpw", "!!", "dQ==", ""])),
                                            "username": json_values, "password": json_values,
                                            "identitytoken": json_values})
docker_configs = st.fixed_dictionaries({}, optional={
    "auths": _maybe(st.dictionaries(st.sampled_from(["r.example", "https://index.docker.io/v1/", "x"]), _maybe(_auth),
                                    max_size=3)),
    "credHelpers": json_values, "credsStore": json_values})


@budget("docker_config")
@given(_encoded(docker_configs) | st.just(b"[" * 50_000), st.sampled_from(["r.example", "docker.io", "x"]))
def test_docker_config_json(data: bytes, host: str) -> None:
    from ocistore.remotes.credentials import DockerConfig

    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "config.json"
        path.write_bytes(data)
        old = os.environ.get("PATH", "")
        os.environ["PATH"] = d  # credential helpers resolve to nothing: no program is ever run
        try:
            only_ocistore_errors(lambda: DockerConfig.load(path).lookup(host))
        finally:
            os.environ["PATH"] = old
        assert [p.name for p in Path(d).iterdir()] == ["config.json"]


# -- archives: index.json and docker-archive manifest.json ---------------------------------------------


def _tar_of(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as t:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            t.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def _import(archive: bytes) -> None:
    from ocistore import Store

    with tempfile.TemporaryDirectory() as d:
        base = Path(d)
        (base / "a.tar").write_bytes(archive)
        with Store(base / "root") as s:
            only_ocistore_errors(lambda: s.import_archive(base / "a.tar", snapshotter="native"))
            report = s.check()
            if not report.ok:
                s.check(repair=True)
                report = s.check()
            assert report.ok, report.problems
        assert sorted(p.name for p in base.iterdir()) == ["a.tar", "root"]


_index_docs = st.fixed_dictionaries({}, optional={
    "schemaVersion": _maybe(st.just(2)), "mediaType": _maybe(_media),
    "manifests": _maybe(st.lists(descriptors.map(lambda d: {**d, "annotations": {
        "io.containerd.image.name": "example.com/f/z:1"}} if isinstance(d, dict) else d), max_size=3))})


@budget("import_oci")
@given(_encoded(_index_docs), st.binary(max_size=64))
def test_import_oci_index_json(index: bytes, blob: bytes) -> None:
    import hashlib

    name = "blobs/sha256/" + hashlib.sha256(blob).hexdigest()
    _import(_tar_of({"oci-layout": b'{"imageLayoutVersion":"1.0.0"}', "index.json": index, name: blob}))


_docker_entries = st.lists(st.fixed_dictionaries({}, optional={
    "Config": _maybe(st.sampled_from(["c.json", "../c.json", "/etc/passwd", "l.tar", ""])),
    "RepoTags": _maybe(st.lists(st.sampled_from(["example.com/f/d:1", "UP::", ""]) | st.text(max_size=10),
                                max_size=2)),
    "Layers": _maybe(st.lists(st.sampled_from(["l.tar", "../l.tar", "c.json", "missing"]), max_size=2))}),
    max_size=2)


@budget("import_docker")
@given(_encoded(_docker_entries) | _encoded(json_values), _encoded(configs))
def test_import_docker_manifest_json(manifest: bytes, config: bytes) -> None:
    layer = _tar_of({"etc/x": b"x"})
    _import(_tar_of({"manifest.json": manifest, "c.json": config, "l.tar": layer}))


def test_regressions_found_by_the_fuzzers(tmp_path: Path) -> None:
    """Bugs these fuzzers found: each must be an InvalidArgument now."""
    import pytest

    from ocistore.remotes.credentials import DockerConfig
    from ocistore.remotes.hosts import configure_hosts
    from ocistore.remotes.options import RegistryOptions

    hdir = tmp_path / "hosts" / "r.example"
    hdir.mkdir(parents=True)
    for text in ('server = "https://[::1"', 'server = "https://r.example:99999"', '[host."http://h:x"]'):
        (hdir / "hosts.toml").write_text(text)
        with pytest.raises(errors.InvalidArgument):
            configure_hosts("r.example", RegistryOptions(hosts_dir=str(tmp_path / "hosts")))
    (tmp_path / "config.json").write_bytes(b"[" * 100_000)
    with pytest.raises(errors.InvalidArgument):
        DockerConfig.load(tmp_path / "config.json")
