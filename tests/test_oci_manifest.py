"""Index / manifest / config parsing and validation, and diffID -> chainID identity."""

from __future__ import annotations

import hashlib
import json
from typing import Any

import pytest

from ocistore import errors
from ocistore.oci import (
    MAX_CONFIG_SIZE,
    MAX_MANIFEST_SIZE,
    Descriptor,
    Index,
    Manifest,
    Platform,
    chain_id,
    chain_ids,
    children,
    digest_bytes,
    parse_any,
    parse_config,
    parse_index,
    parse_manifest,
)
from ocistore.oci import mediatypes as mt


def _d(n: int) -> str:
    return "sha256:" + hashlib.sha256(str(n).encode()).hexdigest()


def _desc(n: int, media_type: str, **extra: Any) -> dict[str, Any]:
    return {"mediaType": media_type, "digest": _d(n), "size": 100 + n, **extra}


def _manifest_doc(media_type: str = mt.OCI_MANIFEST, layers: int = 2, **extra: Any) -> dict[str, Any]:
    layer_type = mt.OCI_LAYER_GZIP if media_type == mt.OCI_MANIFEST else mt.DOCKER_LAYER_GZIP
    config_type = mt.OCI_CONFIG if media_type == mt.OCI_MANIFEST else mt.DOCKER_CONFIG
    return {
        "schemaVersion": 2,
        "mediaType": media_type,
        "config": _desc(0, config_type),
        "layers": [_desc(i + 1, layer_type) for i in range(layers)],
        **extra,
    }


def _index_doc(media_type: str = mt.OCI_INDEX, **extra: Any) -> dict[str, Any]:
    return {
        "schemaVersion": 2,
        "mediaType": media_type,
        "manifests": [
            _desc(10, mt.OCI_MANIFEST, platform={"os": "linux", "architecture": "arm64", "variant": "v8"}),
            _desc(11, mt.OCI_MANIFEST, platform={"os": "linux", "architecture": "amd64"}),
            _desc(12, mt.OCI_MANIFEST, annotations={"vnd.docker.reference.type": "attestation-manifest"}),
        ],
        **extra,
    }


def _b(doc: Any) -> bytes:
    return json.dumps(doc).encode()


# ---------------------------------------------------------------- manifests


@pytest.mark.parametrize("media_type", [mt.OCI_MANIFEST, mt.DOCKER_MANIFEST])
def test_parse_manifest(media_type: str) -> None:
    doc = _manifest_doc(media_type, annotations={"a": "b"})
    m = parse_manifest(_b(doc), media_type)
    assert isinstance(m, Manifest)
    assert m.media_type == media_type
    assert m.schema_version == 2
    assert m.config.digest == _d(0)
    assert [layer.digest for layer in m.layers] == [_d(1), _d(2)]
    assert m.annotations == {"a": "b"}
    assert m.raw == doc
    assert m.children == [m.config, *m.layers]


def test_manifest_media_type_from_document_or_default() -> None:
    assert parse_manifest(_b(_manifest_doc(mt.DOCKER_MANIFEST))).media_type == mt.DOCKER_MANIFEST
    doc = _manifest_doc()
    del doc["mediaType"]
    assert parse_manifest(_b(doc)).media_type == mt.OCI_MANIFEST
    assert parse_manifest(_b(doc), mt.DOCKER_MANIFEST).media_type == mt.DOCKER_MANIFEST


def test_manifest_subject_and_artifact_type() -> None:
    doc = _manifest_doc(subject=_desc(50, mt.OCI_MANIFEST), artifactType="application/x.sig")
    m = parse_manifest(_b(doc))
    assert m.subject is not None and m.subject.digest == _d(50)
    assert m.artifact_type == "application/x.sig"


def test_manifest_with_no_layers_is_fine() -> None:
    assert parse_manifest(_b(_manifest_doc(layers=0))).layers == ()


@pytest.mark.parametrize(
    ("doc", "media_type", "message"),
    [
        ({**_manifest_doc(), "schemaVersion": 1}, None, "schemaVersion must be 2"),
        ({k: v for k, v in _manifest_doc().items() if k != "schemaVersion"}, None, "schemaVersion"),
        ({**_manifest_doc(), "schemaVersion": "2"}, None, "schemaVersion"),
        ({**_manifest_doc(), "manifests": []}, None, "expected a manifest but found an index"),
        (_manifest_doc(mt.OCI_MANIFEST), mt.OCI_INDEX, "not an image manifest"),
        ({**_manifest_doc(), "mediaType": mt.OCI_INDEX}, mt.OCI_MANIFEST, "does not agree"),
        ({**_manifest_doc(), "mediaType": "application/json"}, mt.OCI_MANIFEST, "does not agree"),
        ({**_manifest_doc(), "mediaType": 5}, mt.OCI_MANIFEST, "mediaType must be a string"),
        ({k: v for k, v in _manifest_doc().items() if k != "config"}, None, "no config"),
        ({**_manifest_doc(), "config": {"mediaType": mt.OCI_CONFIG, "size": 1}}, None, "config"),
        ({**_manifest_doc(), "layers": {}}, None, "layers must be a list"),
        ({**_manifest_doc(), "layers": [{"digest": _d(1), "size": 1}]}, None, r"layers\[0\].*mediaType"),
        ({**_manifest_doc(), "layers": [_desc(1, mt.OCI_LAYER, size=-1)]}, None, r"layers\[0\].*size"),
        ({**_manifest_doc(), "annotations": {"a": 1}}, None, "annotations"),
        ({"schemaVersion": 1, "fsLayers": [{"blobSum": _d(1)}], "name": "x"}, mt.DOCKER_MANIFEST,
         "schema 1"),
    ],
)  # fmt: skip
def test_manifest_rejected(doc: dict[str, Any], media_type: str | None, message: str) -> None:
    data = _b(doc)
    with pytest.raises(errors.InvalidArgument, match=message) as info:
        parse_manifest(data, media_type)
    assert not isinstance(info.value, errors.SizeLimitExceeded)


def test_manifest_error_names_the_document() -> None:
    data = _b({**_manifest_doc(), "schemaVersion": 3})
    with pytest.raises(errors.InvalidArgument, match=digest_bytes(data)):
        parse_manifest(data)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "not valid JSON"),
        (b"{", "not valid JSON"),
        (b"[]", "must be a JSON object"),
        (b'"manifest"', "must be a JSON object"),
        (b"\xff\xfe{}", "not UTF-8"),
        (b'{"schemaVersion": 2, "config": "\xc3\x28"}', "not UTF-8"),
    ],
)
def test_bad_bytes(data: bytes, message: str) -> None:
    with pytest.raises(errors.InvalidArgument, match=message):
        parse_manifest(data)
    with pytest.raises(errors.InvalidArgument, match=message):
        parse_index(data)


def test_size_limits() -> None:
    assert MAX_MANIFEST_SIZE == 4 * 1048 * 1048 == 4_393_216
    doc = _manifest_doc(annotations={"pad": ""})
    base = len(_b(doc))
    doc["annotations"]["pad"] = "x" * (MAX_MANIFEST_SIZE - base)
    data = _b(doc)
    assert len(data) == MAX_MANIFEST_SIZE
    assert parse_manifest(data).annotations["pad"]
    doc["annotations"]["pad"] += "x"
    with pytest.raises(errors.SizeLimitExceeded, match=str(MAX_MANIFEST_SIZE)):
        parse_manifest(_b(doc))
    with pytest.raises(errors.SizeLimitExceeded):
        parse_index(b" " * (MAX_MANIFEST_SIZE + 1))
    with pytest.raises(errors.SizeLimitExceeded, match="image config"):
        parse_config(b" " * (MAX_CONFIG_SIZE + 1))


def test_not_bytes() -> None:
    with pytest.raises(errors.InvalidArgument, match="bytes"):
        parse_manifest("{}")  # type: ignore[arg-type]


# ---------------------------------------------------------------- indexes


@pytest.mark.parametrize("media_type", [mt.OCI_INDEX, mt.DOCKER_MANIFEST_LIST])
def test_parse_index(media_type: str) -> None:
    idx = parse_index(_b(_index_doc(media_type)), media_type)
    assert isinstance(idx, Index)
    assert idx.media_type == media_type
    assert [m.digest for m in idx.manifests] == [_d(10), _d(11), _d(12)]
    assert idx.manifests[0].platform == Platform("linux", "arm64", "v8")
    assert idx.manifests[2].platform is None


def test_index_without_media_type_field() -> None:
    doc = _index_doc()
    del doc["mediaType"]
    assert parse_index(_b(doc)).media_type == mt.OCI_INDEX


def test_index_kind_agreement_is_by_kind() -> None:
    # a Docker list served as an OCI index (or vice versa) is still an index
    assert parse_index(_b(_index_doc(mt.DOCKER_MANIFEST_LIST)), mt.OCI_INDEX).media_type == mt.OCI_INDEX


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        ({**_index_doc(), "config": _desc(0, mt.OCI_CONFIG)}, "expected an index but found a manifest"),
        ({**_index_doc(), "layers": []}, "expected an index but found a manifest"),
        ({**_index_doc(), "mediaType": mt.OCI_MANIFEST}, "does not agree"),
        ({**_index_doc(), "schemaVersion": 1}, "schemaVersion"),
        ({k: v for k, v in _index_doc().items() if k != "manifests"}, "manifests must be a list"),
        ({**_index_doc(), "manifests": [{"mediaType": mt.OCI_MANIFEST}]}, r"manifests\[0\]"),
        ({**_index_doc(), "manifests": [_desc(1, mt.OCI_MANIFEST, platform={"os": 1})]}, r"manifests\[0\]"),
        ({"schemaVersion": 1, "fsLayers": []}, "schema 1"),
    ],
)
def test_index_rejected(doc: dict[str, Any], message: str) -> None:
    with pytest.raises(errors.InvalidArgument, match=message):
        parse_index(_b(doc), mt.OCI_INDEX)


def test_parse_index_with_manifest_type() -> None:
    with pytest.raises(errors.InvalidArgument, match="not an index"):
        parse_index(_b(_index_doc()), mt.OCI_MANIFEST)


# ---------------------------------------------------------------- parse_any / children


def test_parse_any() -> None:
    assert isinstance(parse_any(_b(_index_doc()), mt.OCI_INDEX), Index)
    assert isinstance(parse_any(_b(_manifest_doc()), mt.OCI_MANIFEST), Manifest)
    assert isinstance(parse_any(_b(_manifest_doc(mt.DOCKER_MANIFEST)), mt.DOCKER_MANIFEST), Manifest)
    with pytest.raises(errors.InvalidArgument, match=r"application/vnd\.example"):
        parse_any(b"{}", "application/vnd.example")
    with pytest.raises(errors.InvalidArgument, match="expected a manifest"):
        parse_any(_b({**_index_doc(), "mediaType": None}), mt.OCI_MANIFEST)


def test_children() -> None:
    kids = children(mt.OCI_MANIFEST, _b(_manifest_doc()))
    assert [k.digest for k in kids] == [_d(0), _d(1), _d(2)]
    assert all(isinstance(k, Descriptor) for k in kids)
    assert [k.digest for k in children(mt.DOCKER_MANIFEST_LIST, _b(_index_doc()))] == [_d(10), _d(11), _d(12)]
    assert children(mt.OCI_LAYER_GZIP, b"\x1f\x8b not json") == []
    assert children(mt.OCI_CONFIG, b"{}") == []
    assert children("application/octet-stream", b"") == []
    with pytest.raises(errors.InvalidArgument, match="found an index"):
        children(mt.OCI_MANIFEST, _b(_index_doc(mediaType=None)))


# ---------------------------------------------------------------- configs

CONFIG = {
    "created": "2024-01-02T03:04:05Z",
    "author": "someone",
    "architecture": "arm64",
    "variant": "v8",
    "os": "linux",
    "config": {"Env": ["PATH=/usr/bin"], "Cmd": ["sh"]},
    "rootfs": {"type": "layers", "diff_ids": [_d(1), _d(2)]},
    "history": [
        {"created": "2024-01-01T00:00:00Z", "created_by": "ADD file", "comment": "base"},
        {"created_by": "ENV x=y", "empty_layer": True},
    ],
}


def test_parse_config() -> None:
    c = parse_config(_b(CONFIG))
    assert c.platform == Platform("linux", "arm64", "v8")
    assert (c.os, c.architecture, c.variant, c.os_version, c.os_features) == (
        "linux",
        "arm64",
        "v8",
        None,
        (),
    )
    assert c.rootfs_type == "layers"
    assert c.rootfs_diff_ids == (_d(1), _d(2))
    assert c.created == "2024-01-02T03:04:05Z"
    assert c.author == "someone"
    assert c.config["Cmd"] == ["sh"]
    assert c.history[0].created_by == "ADD file"
    assert c.history[0].comment == "base"
    assert not c.history[0].empty_layer
    assert c.history[1].empty_layer
    assert c.raw == CONFIG


def test_parse_windows_config() -> None:
    doc = {"os": "windows", "architecture": "amd64", "os.version": "10.0.17763.1", "os.features": ["win32k"],
           "rootfs": {"type": "layers", "diff_ids": []}}  # fmt: skip
    c = parse_config(_b(doc))
    assert c.platform == Platform("windows", "amd64", os_version="10.0.17763.1", os_features=("win32k",))


def test_config_without_rootfs() -> None:
    c = parse_config(b"{}")
    assert (c.rootfs_type, c.rootfs_diff_ids, c.history) == ("", (), ())
    assert c.platform == Platform("", "")


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        ({**CONFIG, "rootfs": []}, "rootfs must be an object"),
        ({**CONFIG, "rootfs": {"type": 1}}, "rootfs.type"),
        ({**CONFIG, "rootfs": {"type": "layers", "diff_ids": "x"}}, "diff_ids must be a list"),
        ({**CONFIG, "rootfs": {"type": "layers", "diff_ids": ["sha256:nothex"]}}, r"diff_ids\[0\]"),
        ({**CONFIG, "os": 5}, "os/architecture must be strings"),
        ({**CONFIG, "variant": 8}, "variant must be a string"),
        ({**CONFIG, "os.features": "x"}, "os.features"),
        ({**CONFIG, "history": {}}, "history must be a list"),
        ({**CONFIG, "history": [{"empty_layer": "yes"}]}, "empty_layer"),
        ({**CONFIG, "history": [{"created_by": 3}]}, "created_by"),
        ({**CONFIG, "config": []}, "config must be an object"),
    ],
)
def test_config_rejected(doc: dict[str, Any], message: str) -> None:
    with pytest.raises(errors.InvalidArgument, match=message):
        parse_config(_b(doc))


def test_config_bad_bytes() -> None:
    with pytest.raises(errors.InvalidArgument, match="not valid JSON"):
        parse_config(b"nope")
    with pytest.raises(errors.InvalidArgument, match="JSON object"):
        parse_config(b"[1]")


# ---------------------------------------------------------------- identity


def test_chain_ids_formula() -> None:
    diff = [_d(1), _d(2), _d(3)]
    c1 = "sha256:" + hashlib.sha256(f"{diff[0]} {diff[1]}".encode()).hexdigest()
    c2 = "sha256:" + hashlib.sha256(f"{c1} {diff[2]}".encode()).hexdigest()
    assert chain_ids(diff) == [diff[0], c1, c2]
    assert chain_id(diff) == c2
    assert chain_ids(diff[:1]) == [diff[0]]
    assert chain_id(diff[:1]) == diff[0]


def test_chain_ids_known_vector() -> None:
    # the diffID of an empty tar (1024 zero bytes) on top of the digest of empty bytes
    a = "sha256:5f70bf18a086007016e948b04aed3b82103a36bea41755b6cddfaf10ace3c6ef"
    b = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    joined = hashlib.sha256((a + " " + b).encode("ascii")).hexdigest()
    assert joined == "33b3e894f3d840843a86495314bf58ac707860d3553f5535922e180a451dc751"
    assert chain_ids([a, b])[1] == f"sha256:{joined}"
    assert chain_ids(iter([a, b])) == chain_ids([a, b])


def test_chain_id_empty() -> None:
    assert chain_ids([]) == []
    assert chain_id([]) == ""


def test_chain_ids_reject_bad_digest() -> None:
    with pytest.raises(errors.InvalidArgument, match="invalid digest"):
        chain_ids([_d(1), "sha256:xyz"])
