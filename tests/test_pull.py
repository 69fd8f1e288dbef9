"""End to end against a real registry: fetch vs pull, platforms, unpack policy, kills + resume.

The registry is CNCF distribution (Debian's docker-registry) on 127.0.0.1, loaded with the
corpus of ../shared/fixtures (see tests/registry_fixtures.py).
"""

from __future__ import annotations

import json
import random
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ocistore import ProgressEvent, Store, errors
from ocistore.oci.manifest import parse_index

pytestmark = pytest.mark.registry


@pytest.fixture
def store(tmp_path: Path, registry_plain: Any) -> Iterator[Store]:
    with Store(tmp_path / "root", **registry_plain.client_options()) as s:
        yield s


def test_fetch_makes_no_snapshots(store: Store, registry_plain: Any, corpus: dict[str, Any]) -> None:
    events: list[ProgressEvent] = []
    img = store.fetch(registry_plain.ref("debian:gzip"), progress=events.append)
    deb = corpus["images"]["debian:gzip"]
    assert img.name == registry_plain.ref("debian:gzip")
    assert img.target.digest == deb["digest"]
    assert list(store.snapshots("overlayfs").walk()) == []
    assert store.disk_usage().snapshots == 0
    assert not store.is_unpacked(img.name)
    layer = deb["layers"][0]
    info = store.content.info(layer["digest"])
    assert info.labels[f"containerd.io/distribution.source.{registry_plain.address}"] == "debian"
    statuses = [e.status for e in events]
    assert statuses[:2] == ["resolving", "resolved"]
    done = [e for e in events if e.status == "complete" and e.digest == layer["digest"]]
    assert done and done[-1].offset == done[-1].total == layer["size"]
    # a second fetch downloads nothing
    events.clear()
    store.fetch(registry_plain.ref("debian:gzip"), progress=events.append)
    assert not [e for e in events if e.status in ("downloading", "complete")]
    assert {e.status for e in events} >= {"exists"}


def test_pull_equals_fetch_then_unpack(tmp_path: Path, registry_plain: Any, corpus: dict[str, Any]) -> None:
    app = corpus["images"]["app:layers"]
    opts = registry_plain.client_options()
    with Store(tmp_path / "a", **opts) as a, Store(tmp_path / "b", **opts) as b:
        ref = registry_plain.ref("app:layers")
        a.pull(ref, snapshotter="native")
        b.fetch(ref)
        assert b.unpack(ref, snapshotter="native") == app["chain_id"]
        assert a.is_unpacked(ref, "native") and b.is_unpacked(ref, "native")
        ours = sorted(p.name for p in a.snapshots("native").path(app["chain_id"]).iterdir())
        theirs = sorted(p.name for p in b.snapshots("native").path(app["chain_id"]).iterdir())
        assert ours == theirs
        c = a.containers.create("c1", ref, snapshotter="native")
        assert c.mounts[0].type == "bind"


def _present_platforms(store: Store, index_digest: str) -> set[str]:
    index = parse_index(store.content.read(index_digest))
    return {str(d.platform.normalized()) for d in index.manifests if d.platform and store.content.exists(d.digest)}


def test_multi_index_strict_and_non_strict(tmp_path: Path, registry_plain: Any, corpus: dict[str, Any]) -> None:
    opts = registry_plain.client_options()
    ref = registry_plain.ref("multi:index")
    digest = corpus["images"]["multi:index"]["digest"]
    with Store(tmp_path / "strict", **opts) as s:
        img = s.fetch(ref, platform="linux/amd64")
        assert img.target.digest == digest  # the index is the image target
        assert _present_platforms(s, digest) == {"linux/amd64"}
    with Store(tmp_path / "nonstrict", **opts) as s:
        s.fetch(ref, platform="linux/amd64", strict=False)  # containerd's Only(): 386 also matches
        assert _present_platforms(s, digest) == {"linux/amd64", "linux/386"}
    with Store(tmp_path / "pull", **opts) as s:
        s.pull(ref, platform="linux/amd64", strict=False, snapshotter="native")  # best match only
        assert _present_platforms(s, digest) == {"linux/amd64"}
        assert s.is_unpacked(ref, "native")
    with Store(tmp_path / "all", **opts) as s:
        s.fetch(ref, all_platforms=True)
        assert _present_platforms(s, digest) == {"linux/amd64", "linux/386", "linux/arm64"}
    with Store(tmp_path / "none", **opts) as s, pytest.raises(errors.NotFound):
        s.pull(ref, platform="linux/s390x", snapshotter="native")


def test_unpack_policy_and_discard(tmp_path: Path, registry_plain: Any, corpus: dict[str, Any]) -> None:
    opts = registry_plain.client_options()
    ref = registry_plain.ref("debian:gzip")
    deb = corpus["images"]["debian:gzip"]
    with Store(tmp_path / "r", **opts) as s:
        s.pull(ref, unpack="auto", threshold=1 << 20, snapshotter="native")
        assert not s.is_unpacked(ref, "native")
        s.pull(ref, unpack="auto", threshold=1 << 30, snapshotter="native")
        assert s.is_unpacked(ref, "native")
        with pytest.raises(errors.InvalidArgument):
            s.pull(ref, unpack="sometimes")
    with Store(tmp_path / "d", **opts) as s:
        s.pull(ref, snapshotter="native", discard_layers=True)
        s.gc()
        assert not s.content.exists(deb["layers"][0]["digest"])
        assert s.content.exists(deb["config"]["digest"]) and s.content.exists(deb["digest"])
        assert s.is_unpacked(ref, "native")
        s.containers.create("c", ref, snapshotter="native")
        assert s.check().ok, s.check().problems


def test_missing_tag_is_not_found(store: Store, registry_plain: Any) -> None:
    with pytest.raises(errors.NotFound):
        store.fetch(registry_plain.ref("debian:no-such-tag"))


_PULL_SCRIPT = """
import sys
from ocistore import Store
with Store(sys.argv[1], plain_http=True) as s:
    s.pull(sys.argv[2], snapshotter="overlayfs")
"""


@pytest.mark.slow
def test_killed_pulls_resume_and_check(tmp_path: Path, registry_plain: Any, corpus: dict[str, Any]) -> None:
    """Kill pulls at random points (50 kills); the next pull completes, resumes partial
    downloads at their offset, and the store passes check."""
    ref = registry_plain.ref("app:layers")
    app = corpus["images"]["app:layers"]
    rng = random.Random(1234)
    # time one whole pull (process start included) so the kills land inside the pull on any machine
    t0 = time.monotonic()
    subprocess.run([sys.executable, "-c", _PULL_SCRIPT, str(tmp_path / "timing"), ref], check=True)
    full = time.monotonic() - t0
    kills = resumed = 0
    for round_ in range(10):
        root = tmp_path / f"r{round_}"
        for _ in range(5):
            p = subprocess.Popen([sys.executable, "-c", _PULL_SCRIPT, str(root), ref])
            # half the kills early (downloads), half later (unpack, commits)
            time.sleep(rng.uniform(0.02, 0.3) * full if rng.random() < 0.5 else rng.uniform(0.3, 0.8) * full)
            if p.poll() is None:
                p.kill()
                kills += 1
            p.wait()
        with Store(root, plain_http=True) as s:
            partial = {st.ref: st.offset for st in s.content.statuses() if st.offset}
            events: list[ProgressEvent] = []
            s.pull(ref, progress=events.append)
            for e in events:
                if e.status == "downloading" and f"layer-{e.digest}" in partial:
                    assert e.offset == partial[f"layer-{e.digest}"], "download restarted instead of resuming"
                    resumed += 1
            assert s.is_unpacked(ref)
            assert s.unpack(ref) == app["chain_id"]
            report = s.check()
            assert report.ok, report.problems
            s.gc()
            assert s.check().ok
    assert kills >= 30, f"only {kills} of 50 pulls were killed mid-way (a whole pull took {full:.2f} s)"
    print(json.dumps({"kills": kills, "resumed_downloads": resumed}))


_FETCH_SCRIPT = """
import json, sys
from ocistore import Store
events = []
with Store(sys.argv[1], plain_http=True) as s:
    s.fetch(sys.argv[2], progress=events.append)
print(json.dumps([[e.digest, e.status] for e in events]))
"""


def test_concurrent_fetches_download_each_blob_once(tmp_path: Path, registry_plain: Any,
                                                    corpus: dict[str, Any]) -> None:
    ref = registry_plain.ref("app:layers")
    root = tmp_path / "shared-root"
    procs = [subprocess.Popen([sys.executable, "-c", _FETCH_SCRIPT, str(root), ref], stdout=subprocess.PIPE)
             for _ in range(4)]
    outputs = [p.communicate(timeout=300)[0] for p in procs]
    assert all(p.returncode == 0 for p in procs)
    completes: dict[str, int] = {}
    for out in outputs:
        for digest, status in json.loads(out):
            if status == "complete":
                completes[digest] = completes.get(digest, 0) + 1
    app = corpus["images"]["app:layers"]
    blobs = [app["digest"], app["config"]["digest"], *(layer["digest"] for layer in app["layers"])]
    assert {d: completes.get(d, 0) for d in blobs} == dict.fromkeys(blobs, 1)
    with Store(root) as s:
        assert s.check().ok


def _lose(store: Store, digest: str) -> None:
    """A lost blob: its file and its record are gone (the snapshots built from it stay)."""
    store.layout.content.blob_path(digest).unlink()
    store.content.delete(digest)


def test_pull_and_fetch_again_bring_back_a_lost_layer_blob(store: Store, registry_plain: Any,
                                                            corpus: dict[str, Any]) -> None:
    ref = registry_plain.ref("app:layers")
    layers = [layer["digest"] for layer in corpus["images"]["app:layers"]["layers"]]
    store.pull(ref, snapshotter="native")
    lost = layers[1]
    _lose(store, lost)
    assert store.is_unpacked(ref, "native")  # every chain is still committed
    events: list[ProgressEvent] = []
    store.pull(ref, snapshotter="native", progress=events.append)
    assert store.content.exists(lost) and store.layout.content.blob_path(lost).is_file()
    downloaded = {e.digest for e in events if e.status == "complete" and e.kind == "layer"}
    assert downloaded == {lost}  # the others are present: nothing else moves
    assert not [e for e in events if e.status == "extracting"]  # nothing is unpacked again
    report = store.check()
    assert report.ok, report.problems
    _lose(store, lost)
    store.fetch(ref)
    assert store.content.exists(lost)
    assert store.check().ok


def test_pull_with_discard_layers_does_not_download_unpacked_layers(store: Store, registry_plain: Any,
                                                                     corpus: dict[str, Any]) -> None:
    ref = registry_plain.ref("app:layers")
    layers = [layer["digest"] for layer in corpus["images"]["app:layers"]["layers"]]
    store.pull(ref, snapshotter="native", discard_layers=True)
    store.gc()
    assert not any(store.content.exists(d) for d in layers)
    events: list[ProgressEvent] = []
    store.pull(ref, snapshotter="native", discard_layers=True, progress=events.append)
    assert not [e for e in events if e.kind == "layer" and e.status in ("downloading", "complete")]
    assert not any(store.content.exists(d) for d in layers)
    # without discard_layers, a pull leaves every blob of the platform in the store
    store.pull(ref, snapshotter="native")
    assert all(store.content.exists(d) for d in layers)
    assert store.check().ok, store.check().problems
