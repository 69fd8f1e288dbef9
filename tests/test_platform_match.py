"""Platform selection when an index has no manifest for the platform asked for.

containerd's rules: a strict platform that matches nothing in an index is NotFound ("no match
for platform in manifest") and nothing is recorded; the non-strict matcher (``platforms.Only``)
takes the fallbacks (386 for amd64, arm/v7 for arm64). The images are crafted with
``ocistore.testing.layout.write_index_layout`` and pushed to the real registry of the fixtures.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from layout_push import push_layout_image

from ocistore import Store, errors
from ocistore.oci.manifest import parse_index
from ocistore.testing.layout import write_index_layout, write_layout

ONLY_386 = "example.com/fid/only386:1"
ONLY_ARMV7 = "example.com/fid/onlyarmv7:1"
MULTI = "docker.io/library/multi:index"


@pytest.fixture(scope="module")
def layout(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, dict[str, str]]]:
    root = tmp_path_factory.mktemp("platform-layouts") / "layout"
    digests = {
        ONLY_386: write_index_layout(root, ONLY_386, ["linux/386"]),
        ONLY_ARMV7: write_index_layout(root, ONLY_ARMV7, ["linux/arm/v7"]),
    }
    return root, digests


@pytest.fixture(scope="module")
def pushed(layout: tuple[Path, dict[str, dict[str, str]]], registry_plain: Any) -> dict[str, str]:
    root, _ = layout
    return {
        ONLY_386: push_layout_image(registry_plain, root, ONLY_386, "fid/only386:1"),
        ONLY_ARMV7: push_layout_image(registry_plain, root, ONLY_ARMV7, "fid/onlyarmv7:1"),
    }


@pytest.fixture
def store(tmp_path: Path, registry_plain: Any) -> Iterator[Store]:
    with Store(tmp_path / "root", **registry_plain.client_options()) as s:
        yield s


def _present(store: Store, index_digest: str) -> set[str]:
    index = parse_index(store.content.read(index_digest))
    return {str(d.platform) for d in index.manifests if d.platform and store.content.exists(d.digest)}


# -- registry: fetch and pull ---------------------------------------------------------------------------------


@pytest.mark.registry
@pytest.mark.parametrize(("image", "asked", "fallback"), [
    (ONLY_386, "linux/amd64", "linux/386"),
    (ONLY_ARMV7, "linux/arm64", "linux/arm/v7"),
])
def test_strict_fetch_without_a_match_fails_and_records_nothing(
    store: Store, pushed: dict[str, str], layout: tuple[Path, dict[str, dict[str, str]]],
    image: str, asked: str, fallback: str,
) -> None:
    ref = pushed[image]
    index_digest = layout[1][image]["index"]
    with pytest.raises(errors.NotFound) as exc:
        store.fetch(ref, platform=asked, strict=True)
    message = str(exc.value)
    assert "no match for platform" in message and asked in message and fallback in message
    assert index_digest in message and "strict=False" in message
    assert store.images.list() == []
    with pytest.raises(errors.NotFound):
        store.pull(ref, platform=asked, strict=True, snapshotter="native")
    assert store.images.list() == []
    # non-strict takes containerd's fallback
    img = store.fetch(ref, platform=asked, strict=False)
    assert img.target.digest == index_digest
    assert _present(store, index_digest) == {fallback}
    store.images.delete(img.name)
    img = store.pull(ref, platform=asked, strict=False, snapshotter="native")
    assert store.is_unpacked(img.name, "native", platform=fallback)
    assert store.check().ok, store.check().problems


@pytest.mark.registry
def test_all_platforms_and_the_corpus_index_are_unaffected(
    store: Store, pushed: dict[str, str], layout: tuple[Path, dict[str, dict[str, str]]], registry_plain: Any,
    corpus: dict[str, Any],
) -> None:
    img = store.fetch(pushed[ONLY_386], all_platforms=True)
    assert _present(store, img.target.digest) == {"linux/386"}
    multi = store.fetch(registry_plain.ref("multi:index"), platform="linux/amd64", strict=True)
    assert multi.target.digest == corpus["images"]["multi:index"]["digest"]
    assert _present(store, multi.target.digest) == {"linux/amd64"}


@pytest.mark.registry
def test_fetch_message_names_the_platform_and_what_the_index_lists(
    store: Store, registry_plain: Any, corpus: dict[str, Any],
) -> None:
    with pytest.raises(errors.NotFound) as exc:
        store.fetch(registry_plain.ref("multi:index"), platform="linux/s390x")
    message = str(exc.value)
    assert "linux/s390x" in message and corpus["images"]["multi:index"]["digest"] in message
    assert "linux/arm64/v8, linux/386, linux/amd64" in message
    assert "all_platforms=True" in message
    assert store.images.list() == []


# -- import -------------------------------------------------------------------------------------------------


def test_import_with_a_platform_the_index_lacks_records_nothing(
    tmp_path: Path, layout: tuple[Path, dict[str, dict[str, str]]],
) -> None:
    root = tmp_path / "layout"
    write_layout(root, {"example.com/fid/single:1": [{"etc/": None, "etc/a": "a"}]})
    digests = write_index_layout(root, ONLY_386, ["linux/386"])
    with Store(tmp_path / "root") as s:
        with pytest.raises(errors.NotFound) as exc:
            s.import_archive(root, fetch_only=True, platform="linux/amd64")
        assert "linux/amd64" in str(exc.value) and "linux/386" in str(exc.value)
        assert s.images.list() == []  # neither image: an import records all or nothing
        [img] = [i for i in s.import_archive(root, fetch_only=True, platform="linux/386") if i.name == ONLY_386]
        assert img.target.digest == digests["index"]


# -- the local message (image_parts) -----------------------------------------------------------------------


def test_create_for_a_platform_not_present_says_what_is_present(
    tmp_path: Path, corpus_dir: Path, corpus: dict[str, Any],
) -> None:
    index = json.loads((corpus_dir / "index.json").read_text())
    assert any(m["annotations"].get("org.opencontainers.image.ref.name") == "multi:index" for m in index["manifests"])
    with Store(tmp_path / "root") as s:
        s.import_archive(corpus_dir, fetch_only=True, platform="linux/arm64/v8")
        with pytest.raises(errors.NotFound) as exc:
            s.containers.create("c", MULTI, snapshotter="native", platform="linux/s390x")
        message = str(exc.value)
        assert "linux/s390x" in message
        assert "linux/arm64/v8, linux/386, linux/amd64" in message
        assert "that are present locally" not in message
        # (the amd64 manifest is debian:gzip's, which the corpus import brought in)
        assert "present locally: linux/arm64/v8, linux/amd64" in message
        with pytest.raises(errors.NotFound) as exc:
            s.containers.create("c", MULTI, snapshotter="native", platform="linux/386")
        assert "present locally: linux/arm64/v8, linux/amd64" in str(exc.value)
        assert "fetch the image for linux/386" in str(exc.value)  # it is listed: fetching it would help
