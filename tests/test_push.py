"""``store.push`` and ``ocistore images push`` against real registries (CNCF distribution).

Every push is checked by fetching the pushed reference into a fresh store and comparing
digests with ``corpus.json``.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import pytest
from registry_fixtures import Registry

from ocistore import ProgressEvent, Store, errors
from ocistore.cli import main
from ocistore.remotes import RegistryClient, RegistryOptions

pytestmark = pytest.mark.registry


@pytest.fixture(autouse=True)
def _no_docker_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path / "docker-config"))


@pytest.fixture(scope="module")
def imported(tmp_path_factory: pytest.TempPathFactory, corpus_dir: Path) -> Any:
    """A store holding the whole corpus, imported from the layout (no distribution-source labels)."""
    with Store(tmp_path_factory.mktemp("push-src") / "root") as s:
        s.import_archive(corpus_dir, fetch_only=True, all_platforms=True)
        yield s


def _blobs(entry: dict[str, Any]) -> set[str]:
    out = {entry["digest"]}
    for m in entry.get("manifests", [entry]):
        out |= {m["digest"], m["config"]["digest"], *(layer["digest"] for layer in m["layers"])}
    return out


def _refetch(tmp_path: Path, reg: Registry, ref: str, **kw: Any) -> tuple[Any, Store]:
    store = Store(tmp_path / "refetch", **reg.client_options())
    return store.fetch(ref, **kw), store


@pytest.mark.parametrize("mode", ["basic", "token"])
@pytest.mark.parametrize("tag", ["debian:gzip", "app:layers", "multi:index"])
def test_push_round_trip(request: pytest.FixtureRequest, imported: Store, corpus: dict[str, Any], tmp_path: Path,
                         mode: str, tag: str) -> None:
    reg: Registry = request.getfixturevalue(f"registry_{mode}")
    entry = corpus["images"][tag]
    ref = reg.ref(f"pushed/{mode}/{tag.replace(':', '-')}:v1")
    events: list[ProgressEvent] = []
    desc = imported.push(f"docker.io/library/{tag}", ref, progress=events.append, **reg.client_options())
    assert desc.digest == entry["digest"] and desc.media_type == entry["mediaType"]
    # every config and layer is uploaded, or mounted from a repository an earlier push filled
    done = {e.digest for e in events if e.status in ("complete", "exists") and e.kind in ("layer", "config")}
    assert done == {d for d in _blobs(entry) if d not in {entry["digest"]}
                    and d not in {m["digest"] for m in entry.get("manifests", [])}}
    for e in events:
        if e.status == "complete":
            assert e.offset == e.total
    img, fresh = _refetch(tmp_path, reg, ref, all_platforms=True)
    with fresh:
        assert img.target.digest == entry["digest"]
        assert {i.digest for i in fresh.content.walk()} == _blobs(entry)
        assert fresh.check().ok
    # a second push finds every blob at the registry and sends only the manifests
    events.clear()
    imported.push(f"docker.io/library/{tag}", ref, progress=events.append, **reg.client_options())
    assert {e.status for e in events if e.kind in ("layer", "config")} <= {"waiting", "exists"}


def test_chunked_push(imported: Store, registry_plain: Registry, corpus: dict[str, Any], tmp_path: Path) -> None:
    entry = corpus["images"]["debian:gzip"]
    layer = entry["layers"][0]
    ref = registry_plain.ref("pushed/chunked:v1")
    events: list[ProgressEvent] = []
    imported.push("debian:gzip", ref, chunk_size=4 << 20, progress=events.append, **registry_plain.client_options())
    offsets = [e.offset for e in events if e.digest == layer["digest"] and e.status == "uploading"]
    assert offsets and offsets == sorted(offsets) and offsets[-1] <= layer["size"]
    assert [e.status for e in events if e.digest == layer["digest"]][-1] == "complete"
    img, fresh = _refetch(tmp_path, registry_plain, ref)
    with fresh:
        assert img.target.digest == entry["digest"] and fresh.check().ok


def test_partial_index_fails_or_pushes_one_platform(registry_plain: Registry, corpus: dict[str, Any],
                                                    tmp_path: Path) -> None:
    entry = corpus["images"]["multi:index"]
    amd64 = next(m for m in entry["manifests"] if m["platform"]["architecture"] == "amd64")
    arm64 = next(m for m in entry["manifests"] if m["platform"]["architecture"] == "arm64")
    opts = registry_plain.client_options()
    with Store(tmp_path / "src", **opts) as src:
        img = src.fetch(registry_plain.ref("multi:index"), platform="linux/amd64")
        dest = registry_plain.ref("pushed/partial:v1")
        with pytest.raises(errors.FailedPrecondition) as exc:
            src.push(img.name, dest)
        msg = str(exc.value)
        assert arm64["digest"] in msg and "linux/amd64" in msg and "platform=" in msg and "all_platforms" in msg
        with pytest.raises(errors.FailedPrecondition):
            src.push(img.name, dest, all_platforms=True)
        with pytest.raises(errors.NotFound):
            src.push(img.name, dest, platform="linux/arm64/v8")
        with pytest.raises(errors.InvalidArgument):
            src.push(img.name, dest, platform="linux/amd64", all_platforms=True)
        with pytest.raises(errors.InvalidArgument):
            src.push(img.name, f"{registry_plain.address}/pushed/partial@{entry['digest']}", platform="linux/amd64")
        desc = src.push(img.name, dest, platform="linux/amd64")
        assert desc.digest == amd64["digest"]
    with RegistryClient(RegistryOptions(**opts)) as client:
        assert client.resolve(dest)[1].digest == amd64["digest"]  # the tag names the manifest
    pulled, fresh = _refetch(tmp_path, registry_plain, dest)
    with fresh:
        assert pulled.target.digest == amd64["digest"]
        assert fresh.image_size(pulled.name) == amd64["total_with_metadata"]
    # fetched for every platform, the whole index goes
    with Store(tmp_path / "src-all", **opts) as src:
        img = src.fetch(registry_plain.ref("multi:index"), all_platforms=True)
        assert src.push(img.name, registry_plain.ref("pushed/all:v1")).digest == entry["digest"]


def test_discarded_layers_fail_until_fetched_again(registry_plain: Registry, corpus: dict[str, Any],
                                                   tmp_path: Path) -> None:
    entry = corpus["images"]["debian:gzip"]
    layer = entry["layers"][0]["digest"]
    with Store(tmp_path / "src", **registry_plain.client_options()) as src:
        img = src.pull(registry_plain.ref("debian:gzip"), snapshotter="native", discard_layers=True)
        src.gc()
        dest = registry_plain.ref("pushed/discarded:v1")
        with pytest.raises(errors.FailedPrecondition) as exc:
            src.push(img.name, dest)
        assert layer in str(exc.value) and "fetch the image again" in str(exc.value)
        src.fetch(registry_plain.ref("debian:gzip"))
        assert src.push(img.name, dest).digest == entry["digest"]


def test_cross_repository_mount_sends_no_layer_bytes(registry_plain: Registry, corpus: dict[str, Any],
                                                     tmp_path: Path) -> None:
    """Blobs fetched from the registry carry distribution-source labels: a push there mounts them."""
    entry = corpus["images"]["app:layers"]
    with Store(tmp_path / "src", **registry_plain.client_options()) as src:
        img = src.fetch(registry_plain.ref("app:layers"))
        events: list[ProgressEvent] = []
        src.push(img.name, registry_plain.ref("elsewhere/app:mounted"), progress=events.append)
        blob_events = [e for e in events if e.kind in ("layer", "config")]
        assert not [e for e in blob_events if e.status == "uploading"]
        assert {e.digest for e in blob_events if e.status == "exists"} == {
            entry["config"]["digest"], *(layer["digest"] for layer in entry["layers"])}
        source = src.content.info(entry["layers"][0]["digest"]).labels
        assert source[f"containerd.io/distribution.source.{registry_plain.address}"].split(",") == [
            "app", "elsewhere/app"]


def test_cli_images_push(imported: Store, registry_plain: Registry, corpus: dict[str, Any], tmp_path: Path) -> None:
    entry = corpus["images"]["debian:zstd"]
    ref = registry_plain.ref("pushed/cli:v1")
    out, err = io.StringIO(), io.StringIO()
    root = str(imported.root)
    code = main(["--root", root, "images", "push", "debian:zstd", ref, "--plain-http"], stdout=out, stderr=err)
    assert code == 0, err.getvalue()
    assert out.getvalue().splitlines()[-1] == f"{ref} {entry['digest']}"
    out = io.StringIO()
    assert main(["--root", root, "--json", "images", "push", "debian:zstd", ref, "--plain-http"], stdout=out) == 0
    assert f'"digest": "{entry["digest"]}"' in out.getvalue()
    # a partial image: one line on stderr, exit 1
    with Store(tmp_path / "partial", plain_http=True) as partial:
        partial.fetch(registry_plain.ref("multi:index"), platform="linux/amd64")
    err = io.StringIO()
    code = main(["--root", str(tmp_path / "partial"), "images", "push", registry_plain.ref("multi:index"),
                 registry_plain.ref("pushed/cli:partial"), "--plain-http"], stdout=io.StringIO(), stderr=err)
    assert code == 1 and len(err.getvalue().splitlines()) == 1 and "--platform linux/amd64" in err.getvalue()
    code = main(["--root", str(tmp_path / "partial"), "images", "push", registry_plain.ref("multi:index"),
                 registry_plain.ref("pushed/cli:partial"), "--plain-http", "--platform", "linux/amd64"],
                stdout=io.StringIO(), stderr=err)
    assert code == 0
