"""export_archive of multi-platform images, as ``ctr images export`` does it.

containerd's exporter (core/images/archive/exporter.go) keeps the image's index as the
index.json entry and walks only the manifests of the selected platform (the host's, strict,
unless one is given; all of them with ``all_platforms``). A partly fetched image therefore
exports with its own digest, and re-importing it gives the same image. Uses the corpus's
``multi:index`` (linux/arm64/v8, linux/386, linux/amd64).
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import tarfile
from pathlib import Path
from typing import Any

import pytest

from ocistore import Store, errors
from ocistore.cli.app import main as cli_main

MULTI = "docker.io/library/multi:index"


def _multi_only(corpus_dir: Path, dest: Path) -> Path:
    """A layout naming only multi:index (blobs linked, not copied)."""
    index = json.loads((corpus_dir / "index.json").read_text())
    index["manifests"] = [d for d in index["manifests"]
                          if d.get("annotations", {}).get("org.opencontainers.image.ref.name") == "multi:index"]
    dest.mkdir()
    (dest / "index.json").write_text(json.dumps(index))
    (dest / "oci-layout").write_text((corpus_dir / "oci-layout").read_text())
    (dest / "blobs").symlink_to(corpus_dir / "blobs")
    return dest


def _platform_blobs(corpus_dir: Path, corpus: dict[str, Any]) -> dict[str, set[str]]:
    """platform -> the digests of its manifest, config and layers."""
    out: dict[str, set[str]] = {}
    for m in corpus["images"]["multi:index"]["manifests"]:
        p = m["platform"]
        name = "/".join(x for x in (p["os"], p["architecture"], p.get("variant")) if x)
        doc = json.loads((corpus_dir / "blobs/sha256" / m["digest"].removeprefix("sha256:")).read_text())
        out[name] = {m["digest"], doc["config"]["digest"], *(layer["digest"] for layer in doc["layers"])}
    return out


def _tar_blobs(path: Path) -> tuple[set[str], dict[str, Any]]:
    with tarfile.open(path) as tf:
        names = tf.getnames()
        index = json.load(tf.extractfile("index.json"))  # type: ignore[arg-type]
    blobs = {"sha256:" + n.rsplit("/", 1)[1] for n in names if n.startswith("blobs/sha256/") and n.count("/") == 2}
    return blobs, index


@pytest.fixture
def layout(tmp_path: Path, corpus_dir: Path) -> Path:
    return _multi_only(corpus_dir, tmp_path / "layout")


def test_default_export_writes_the_host_platform_only(tmp_path: Path, layout: Path, corpus_dir: Path,
                                                      corpus: dict[str, Any]) -> None:
    per = _platform_blobs(corpus_dir, corpus)
    index_digest = corpus["images"]["multi:index"]["digest"]
    with Store(tmp_path / "a") as a:
        a.import_archive(layout, fetch_only=True, all_platforms=True)
        a.export_archive(tmp_path / "host.tar", [MULTI])
        a.export_archive(tmp_path / "i386.tar", [MULTI], platform="linux/386")
        a.export_archive(tmp_path / "all.tar", [MULTI], all_platforms=True)
    blobs, index = _tar_blobs(tmp_path / "host.tar")
    assert [m["digest"] for m in index["manifests"]] == [index_digest]
    assert index["manifests"][0]["annotations"]["io.containerd.image.name"] == MULTI
    assert blobs == {index_digest} | per["linux/amd64"]
    blobs, _ = _tar_blobs(tmp_path / "i386.tar")
    assert blobs == {index_digest} | per["linux/386"]
    blobs, _ = _tar_blobs(tmp_path / "all.tar")
    assert blobs == {index_digest} | per["linux/amd64"] | per["linux/386"] | per["linux/arm64/v8"]


def test_partly_fetched_index_keeps_its_digest(tmp_path: Path, layout: Path, corpus_dir: Path,
                                                corpus: dict[str, Any]) -> None:
    per = _platform_blobs(corpus_dir, corpus)
    index_digest = corpus["images"]["multi:index"]["digest"]
    out = tmp_path / "partial.tar"
    with Store(tmp_path / "a") as a:
        a.import_archive(layout, fetch_only=True, platform="linux/amd64")  # one platform, as `images fetch`
        a.export_archive(out, [MULTI])
        (tmp_path / "dir").mkdir()
        a.export_archive(tmp_path / "dir", [MULTI])
        with pytest.raises(errors.FailedPrecondition) as exc:
            a.export_archive(tmp_path / "all.tar", [MULTI], all_platforms=True)
        assert "linux/386" in str(exc.value) and "linux/arm64/v8" in str(exc.value)
        assert "all_platforms=True" in str(exc.value)
        with pytest.raises(errors.FailedPrecondition) as exc:
            a.export_archive(tmp_path / "arm.tar", [MULTI], platform="linux/arm64/v8")
        assert "present" in str(exc.value) and "linux/amd64" in str(exc.value)
        with pytest.raises(errors.NotFound):
            a.export_archive(tmp_path / "s390x.tar", [MULTI], platform="linux/s390x")
        assert not (tmp_path / "all.tar").exists() and not (tmp_path / "arm.tar").exists()
    blobs, index = _tar_blobs(out)
    assert [m["digest"] for m in index["manifests"]] == [index_digest]  # the index, not the amd64 manifest
    assert blobs == {index_digest} | per["linux/amd64"]
    for source in (out, tmp_path / "dir"):
        with Store(tmp_path / f"b-{source.name}") as b:
            [img] = b.import_archive(source, fetch_only=True)
            assert img.name == MULTI and img.target.digest == index_digest
            assert b.check().ok, b.check().problems
            assert b.unpack(MULTI, snapshotter="native") == corpus["images"]["debian:gzip"]["chain_id"]
    if shutil.which("skopeo"):
        raw = subprocess.run(["skopeo", "inspect", "--raw", f"oci-archive:{out}"], check=True,
                             capture_output=True).stdout
        assert "sha256:" + hashlib.sha256(raw).hexdigest() == index_digest
        info = json.loads(subprocess.run(["skopeo", "inspect", f"oci-archive:{out}"], check=True,
                                         capture_output=True).stdout)
        assert info["Architecture"] == "amd64"


def test_docker_format_names_the_selected_manifest(tmp_path: Path, layout: Path, corpus: dict[str, Any]) -> None:
    with Store(tmp_path / "a") as a:
        a.import_archive(layout, fetch_only=True, all_platforms=True)
        a.export_archive(tmp_path / "d.tar", [MULTI], format="docker", platform="linux/386")
    with tarfile.open(tmp_path / "d.tar") as tf:
        [entry] = json.load(tf.extractfile("manifest.json"))  # type: ignore[arg-type]
    i386 = next(m for m in corpus["images"]["multi:index"]["manifests"] if m["platform"]["architecture"] == "386")
    assert entry["RepoTags"] == ["multi:index"]
    assert len(entry["Layers"]) == 1 and entry["Config"].startswith("blobs/sha256/")
    with Store(tmp_path / "b") as b:
        [img] = b.import_archive(tmp_path / "d.tar", fetch_only=True, platform="linux/386")
        assert img.target.digest == corpus["images"]["multi:index"]["digest"]
        assert b.content.exists(i386["digest"])


def test_cli_hint_names_the_flag(tmp_path: Path, layout: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = tmp_path / "root"
    assert cli_main(["--root", str(root), "images", "import", "--fetch-only", str(layout)]) == 0
    capsys.readouterr()
    assert cli_main(["--root", str(root), "images", "export", "--all-platforms", str(tmp_path / "x.tar"),
                     "multi:index"]) == 1
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and "--all-platforms" in err and "all_platforms" not in err
