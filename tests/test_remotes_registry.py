"""Registry client against real registries (CNCF distribution) on loopback.

Four modes (plain HTTP, TLS with a private CA, basic auth, bearer tokens), a pull-through
mirror reached through a containerd ``hosts.toml``, every corpus image resolved and
fetched with the digests of ``corpus.json``, and a push -> fetch round trip.
"""

from __future__ import annotations

import io
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from registry_fixtures import Registry

from ocistore import errors
from ocistore.oci import mediatypes
from ocistore.oci.descriptor import Descriptor
from ocistore.oci.digest import digest_bytes
from ocistore.remotes import RegistryClient, RegistryOptions, Retry

pytestmark = pytest.mark.registry

IMAGES = ("debian:gzip", "debian:zstd", "app:layers", "multi:index")
FAST = Retry(total=1, read=2, backoff_factor=0.01, backoff_max=0.05)


@pytest.fixture(autouse=True)
def _no_docker_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Never read the developer's docker credentials."""
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path / "docker-config"))


def _client(reg: Registry, **kw: Any) -> RegistryClient:
    opts = reg.client_options()
    opts.update(kw)
    return RegistryClient(RegistryOptions(**opts))


def _layout_blob(corpus_dir: Path, digest: str) -> bytes:
    return (corpus_dir / "blobs" / "sha256" / digest.removeprefix("sha256:")).read_bytes()


def _children(manifest: dict[str, Any]) -> list[Descriptor]:
    if "manifests" in manifest:
        return [Descriptor.from_json(d) for d in manifest["manifests"]]
    return [Descriptor.from_json(manifest["config"])] + [Descriptor.from_json(d) for d in manifest["layers"]]


def _fetch_tree(client: RegistryClient, name: str, desc: Descriptor, with_layers: bool = True) -> dict[str, int]:
    """Fetch ``desc`` and everything below it; return digest -> bytes read (all verified)."""
    seen: dict[str, int] = {}
    todo = [desc]
    while todo:
        d = todo.pop()
        if d.digest in seen:
            continue
        if mediatypes.is_layer(d.media_type):
            if not with_layers:
                continue
            size = 0
            with client.fetch(name, d) as reader:
                while chunk := reader.read(1 << 20):
                    size += len(chunk)
                assert reader.verified
            seen[d.digest] = size
            continue
        data = client.fetch_bytes(name, d)
        seen[d.digest] = len(data)
        if mediatypes.is_manifest(d.media_type) or mediatypes.is_index(d.media_type):
            todo.extend(_children(json.loads(data)))
    return seen


def _expected_digests(entry: dict[str, Any]) -> set[str]:
    out = {entry["digest"]}
    for m in entry.get("manifests", []):
        out |= _expected_digests(m)
    if "config" in entry:
        out.add(entry["config"]["digest"])
    out |= {layer["digest"] for layer in entry.get("layers", [])}
    return out


# -- plain HTTP -----------------------------------------------------------------------------


@pytest.mark.parametrize("image", IMAGES)
def test_resolve_and_fetch_every_corpus_image(registry_plain: Registry, corpus: dict[str, Any], image: str) -> None:
    entry = corpus["images"][image]
    with _client(registry_plain) as client:
        name, desc = client.resolve(registry_plain.ref(image))
        assert name == registry_plain.ref(image)
        assert (desc.digest, desc.size, desc.media_type) == (entry["digest"], entry["size"], entry["mediaType"])
        fetched = _fetch_tree(client, name, desc)
    assert set(fetched) == _expected_digests(entry)
    for manifest in entry.get("manifests", [entry]):
        for layer in manifest["layers"]:
            assert fetched[layer["digest"]] == layer["size"]


def test_resolve_by_digest_and_child_manifest(registry_plain: Registry, corpus: dict[str, Any]) -> None:
    index = corpus["images"]["multi:index"]
    amd64 = next(m for m in index["manifests"] if m["platform"]["architecture"] == "amd64")
    with _client(registry_plain) as client:
        _, desc = client.resolve(f"{registry_plain.address}/multi@{index['digest']}")
        assert desc.digest == index["digest"] and desc.media_type == mediatypes.OCI_INDEX
        _, child = client.resolve(f"{registry_plain.address}/multi@{amd64['digest']}")
        assert (child.digest, child.size) == (amd64["digest"], amd64["size"])


def test_default_options_fall_back_from_tls_to_http_on_loopback(registry_plain: Registry) -> None:
    with RegistryClient(RegistryOptions()) as client:  # no plain_http: containerd's loopback rule
        name, desc = client.resolve(registry_plain.ref("debian:gzip"))
        assert client.fetch_bytes(name, desc)
        assert registry_plain.address in client.transport._plain


def test_unknown_tag_and_repository_are_not_found(registry_plain: Registry) -> None:
    with _client(registry_plain) as client:
        with pytest.raises(errors.NotFound, match="debian:nope"):
            client.resolve(registry_plain.ref("debian:nope"))
        with pytest.raises(errors.NotFound):
            client.resolve(registry_plain.ref("no/such/repo:latest"))
        missing = Descriptor(media_type=mediatypes.OCI_LAYER_GZIP, digest="sha256:" + "1" * 64, size=10)
        with pytest.raises(errors.NotFound):
            client.fetch_bytes(registry_plain.ref("debian:gzip"), missing)


def test_fetch_into_content_store_and_already_exists(
    registry_plain: Registry, corpus: dict[str, Any], tmp_path: Path
) -> None:
    from ocistore.store import Store

    layer = corpus["images"]["debian:zstd"]["layers"][0]
    desc = Descriptor(media_type=layer["mediaType"], digest=layer["digest"], size=layer["size"])
    ref = registry_plain.ref("debian:zstd")
    events: list[tuple[int, int]] = []
    with Store(tmp_path / "root") as store, _client(registry_plain) as client:
        with store.content.writer("fetch-a", total=desc.size) as w:
            assert client.fetch_into(ref, desc, w, progress=lambda o, t: events.append((o, t))) == desc.digest
        assert store.content.info(desc.digest).size == desc.size
        assert events[-1] == (desc.size, desc.size)
        # a second download of the same blob commits into AlreadyExists: success
        with store.content.writer("fetch-b", total=desc.size) as w:
            assert client.fetch_into(ref, desc, w) == desc.digest


# -- TLS ---------------------------------------------------------------------------------------


def test_tls_with_private_ca(registry_tls: Registry, corpus: dict[str, Any]) -> None:
    assert registry_tls.scheme == "https" and registry_tls.ca
    with _client(registry_tls) as client:
        name, desc = client.resolve(registry_tls.ref("app:layers"))
        assert desc.digest == corpus["images"]["app:layers"]["digest"]
        fetched = _fetch_tree(client, name, desc)
        assert set(fetched) == _expected_digests(corpus["images"]["app:layers"])
        assert client.transport._plain == set()


def test_tls_through_hosts_toml_with_ca(registry_tls: Registry, corpus: dict[str, Any]) -> None:
    # the fixture script's own containerd hosts dir: server = https://..., ca = ...
    with RegistryClient(RegistryOptions(hosts_dir=registry_tls.hosts_dir)) as client:
        _, desc = client.resolve(registry_tls.ref("debian:gzip"))
        assert desc.digest == corpus["images"]["debian:gzip"]["digest"]


def test_tls_by_localhost_name(registry_tls: Registry) -> None:
    port = registry_tls.address.rsplit(":", 1)[1]
    with RegistryClient(RegistryOptions(ca_file=registry_tls.ca)) as client:
        assert client.resolve(f"localhost:{port}/debian:gzip")[1].size > 0


def test_tls_unknown_ca_is_refused(registry_tls: Registry, tmp_path: Path) -> None:
    hosts = tmp_path / "hosts" / registry_tls.address
    hosts.mkdir(parents=True)
    (hosts / "hosts.toml").write_text(f'server = "https://{registry_tls.address}"\n')
    with (
        RegistryClient(RegistryOptions(hosts_dir=tmp_path / "hosts", retry=FAST)) as client,
        pytest.raises(errors.Unavailable, match="CERTIFICATE_VERIFY_FAILED"),
    ):
        client.resolve(registry_tls.ref("debian:gzip"))
    with RegistryClient(RegistryOptions(hosts_dir=tmp_path / "hosts", skip_verify=True)) as client:
        assert client.resolve(registry_tls.ref("debian:gzip"))[1].size > 0


# -- basic auth ----------------------------------------------------------------------------------


def test_basic_auth(registry_basic: Registry, corpus: dict[str, Any]) -> None:
    with _client(registry_basic) as client:
        name, desc = client.resolve(registry_basic.ref("multi:index"))
        assert desc.digest == corpus["images"]["multi:index"]["digest"]
        fetched = _fetch_tree(client, name, desc, with_layers=False)
        assert corpus["images"]["debian:gzip"]["config"]["digest"] in fetched


def test_basic_auth_refuses_anonymous_and_bad_password(registry_basic: Registry) -> None:
    with _client(registry_basic, credentials={}) as client, pytest.raises(errors.Unauthorized):
        client.resolve(registry_basic.ref("debian:gzip"))
    bad = {registry_basic.address: (registry_basic.user, "wrong-password")}
    with _client(registry_basic, credentials=bad) as client, pytest.raises(errors.Unauthorized):
        client.resolve(registry_basic.ref("debian:gzip"))


def test_basic_auth_from_docker_config(registry_basic: Registry, tmp_path: Path, monkeypatch: Any) -> None:
    import base64

    conf = tmp_path / "dockercfg"
    conf.mkdir()
    auth = base64.b64encode(f"{registry_basic.user}:{registry_basic.password}".encode()).decode()
    (conf / "config.json").write_text(json.dumps({"auths": {f"http://{registry_basic.address}/v2/": {"auth": auth}}}))
    monkeypatch.setenv("DOCKER_CONFIG", str(conf))
    with RegistryClient(RegistryOptions(plain_http=True)) as client:
        assert client.resolve(registry_basic.ref("debian:gzip"))[1].size > 0


# -- bearer tokens -------------------------------------------------------------------------------


def test_token_auth(registry_token: Registry, corpus: dict[str, Any]) -> None:
    assert registry_token.realm
    with _client(registry_token) as client:
        name, desc = client.resolve(registry_token.ref("debian:gzip"))
        assert desc.digest == corpus["images"]["debian:gzip"]["digest"]
        fetched = _fetch_tree(client, name, desc)
        assert set(fetched) == _expected_digests(corpus["images"]["debian:gzip"])
        # one token per scope set, reused for every request of the repository
        assert len(client.transport.authorizer._tokens) == 1


def test_token_auth_refuses_anonymous_and_bad_password(registry_token: Registry) -> None:
    with _client(registry_token, credentials={}) as client, pytest.raises(errors.Unauthorized):
        client.resolve(registry_token.ref("debian:gzip"))
    bad = {registry_token.address: (registry_token.user, "wrong-password")}
    with _client(registry_token, credentials=bad) as client, pytest.raises(errors.Unauthorized):
        client.resolve(registry_token.ref("debian:gzip"))


# -- pull-through mirror -------------------------------------------------------------------------


@pytest.fixture
def mirror_hosts(registry_plain: Registry, registry_mirror: Registry, tmp_path: Path) -> Iterator[Path]:
    root = tmp_path / "hosts"
    host_dir = root / registry_plain.address
    host_dir.mkdir(parents=True)
    (host_dir / "hosts.toml").write_text(
        f'server = "http://{registry_plain.address}"\n\n'
        f'[host."http://{registry_mirror.address}"]\n'
        '  capabilities = ["pull", "resolve"]\n'
    )
    yield root


def test_pull_through_mirror(
    registry_plain: Registry, registry_mirror: Registry, mirror_hosts: Path, corpus: dict[str, Any]
) -> None:
    entry = corpus["images"]["debian:zstd"]
    seen: list[str] = []
    with RegistryClient(RegistryOptions(hosts_dir=mirror_hosts)) as client:
        original = client.transport.request

        def recording(host: Any, method: str, url: str, **kw: Any) -> Any:
            seen.append(f"{method} {url}")
            return original(host, method, url, **kw)

        client.transport.request = recording  # type: ignore[method-assign]
        hosts = client.hosts(registry_plain.address)
        assert [h.host for h in hosts] == [registry_mirror.address, registry_plain.address]
        name, desc = client.resolve(registry_plain.ref("debian:zstd"))
        assert desc.digest == entry["digest"]
        assert set(_fetch_tree(client, name, desc)) == _expected_digests(entry)
    assert seen and all(registry_mirror.address in s for s in seen)
    assert all(f"ns={registry_plain.address}" in s for s in seen)
    # the mirror stores what it pulled through (asynchronously: give it a moment)
    layer = entry["layers"][0]["digest"].removeprefix("sha256:")
    link = registry_mirror.dir / "data/docker/registry/v2/repositories/debian/_layers/sha256" / layer / "link"
    for _ in range(100):
        if link.exists():
            break
        time.sleep(0.05)
    assert link.exists()


def test_dead_mirror_falls_back_to_server(registry_plain: Registry, tmp_path: Path) -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = f"127.0.0.1:{s.getsockname()[1]}"
    host_dir = tmp_path / "hosts" / (registry_plain.address.replace(":", "_") + "_")
    host_dir.mkdir(parents=True)
    (host_dir / "hosts.toml").write_text(
        f'server = "http://{registry_plain.address}"\n[host."http://{dead}"]\n  capabilities = ["pull", "resolve"]\n'
    )
    with RegistryClient(RegistryOptions(hosts_dir=tmp_path / "hosts", retry=FAST)) as client:
        name, desc = client.resolve(registry_plain.ref("debian:gzip"))
        assert client.fetch_bytes(name, desc)


# -- push ------------------------------------------------------------------------------------------


def _push_image(
    client: RegistryClient, corpus_dir: Path, manifest_digest: str, ref: str, **kw: Any
) -> tuple[Descriptor, bytes]:
    data = _layout_blob(corpus_dir, manifest_digest)
    manifest = json.loads(data)
    for child in _children(manifest):
        with (corpus_dir / "blobs" / "sha256" / child.digest.removeprefix("sha256:")).open("rb") as f:
            client.push_blob(ref, child, f, **kw)
    media_type = manifest.get("mediaType") or mediatypes.OCI_MANIFEST  # the corpus omits it
    desc = Descriptor(media_type=media_type, digest=manifest_digest, size=len(data))
    client.push_manifest(ref, desc, data)
    return desc, data


@pytest.mark.parametrize("chunk_size", [None, 4 << 20], ids=["monolithic", "chunked"])
def test_push_then_fetch_round_trip(
    registry_plain: Registry, corpus_dir: Path, corpus: dict[str, Any], chunk_size: int | None
) -> None:
    entry = corpus["images"]["debian:gzip"]
    repo = f"roundtrip/{'mono' if chunk_size is None else 'chunked'}"
    ref = f"{registry_plain.address}/{repo}:pushed"
    with _client(registry_plain) as client:
        desc, data = _push_image(client, corpus_dir, entry["digest"], ref, chunk_size=chunk_size)
        name, resolved = client.resolve(ref)
        assert resolved == desc
        assert client.fetch_bytes(name, resolved) == data
        for child in _children(json.loads(data)):
            with client.fetch(name, child) as reader:
                assert reader.read() == _layout_blob(corpus_dir, child.digest)
                assert reader.verified
        # pushing again finds every blob present (HEAD) and uploads nothing
        _push_image(client, corpus_dir, entry["digest"], ref)


def test_push_mounts_across_repositories(registry_plain: Registry, corpus_dir: Path, corpus: dict[str, Any]) -> None:
    entry = corpus["images"]["debian:gzip"]
    layer = entry["layers"][0]
    desc = Descriptor(media_type=layer["mediaType"], digest=layer["digest"], size=layer["size"])
    ref = f"{registry_plain.address}/mounted/debian:x"
    with _client(registry_plain) as client:
        calls: list[str] = []
        original = client.transport.request

        def recording(host: Any, method: str, url: str, **kw: Any) -> Any:
            calls.append(f"{method} {url}")
            return original(host, method, url, **kw)

        client.transport.request = recording  # type: ignore[method-assign]
        client.push_blob(ref, desc, io.BytesIO(b"never read"), mount_from=("debian",))
        assert [c.split(" ")[0] for c in calls] == ["HEAD", "POST"]
        assert "mount=" + desc.digest in calls[1] and "from=debian" in calls[1]
        with client.fetch(ref, desc) as reader:
            assert digest_bytes(reader.read()) == desc.digest


def test_push_with_token_auth(registry_token: Registry, corpus_dir: Path, corpus: dict[str, Any]) -> None:
    entry = corpus["images"]["multi:index"]
    small = next(m for m in entry["manifests"] if m["platform"]["architecture"] == "arm64")
    ref = f"{registry_token.address}/pushed/tiny:arm64"
    with _client(registry_token) as client:
        desc, data = _push_image(client, corpus_dir, small["digest"], ref)
        assert client.resolve(ref)[1] == desc
        assert client.fetch_bytes(ref, desc) == data


def test_push_manifest_digest_mismatch_is_refused_before_sending(registry_plain: Registry) -> None:
    desc = Descriptor(media_type=mediatypes.OCI_MANIFEST, digest="sha256:" + "2" * 64, size=2)
    with _client(registry_plain) as client, pytest.raises(errors.DigestMismatch):
        client.push_manifest(registry_plain.ref("bad:x"), desc, b"{}")
