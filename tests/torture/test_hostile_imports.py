"""Hostile archives given to ``import_archive`` (issue 11, part 3): generated cases.

A valid tiny OCI layout tar and a valid docker-archive are built in memory; each case breaks
one thing (the JSON of index.json, a manifest, a config or manifest.json; a descriptor
field; a blob; the tar itself: traversal, links, devices, duplicates, truncation). Property
of every case: the import either succeeds harmlessly or raises an ``ocistore.errors.Error``
(nothing else escapes); afterwards ``check()`` passes (orphans may be repaired) and nothing
was written outside the store's root (a sentinel directory next to it is unchanged).
"""

from __future__ import annotations

import contextlib
import copy
import gzip
import hashlib
import io
import json
import tarfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from ocistore import Store, errors

Doc = dict[str, Any]


def _digest(b: bytes) -> str:
    return "sha256:" + hashlib.sha256(b).hexdigest()


def _layer_tar(sentinel: str = "/tmp/nowhere") -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as t:
        info = tarfile.TarInfo("etc/hello")
        data = b"hello\n"
        info.size = len(data)
        t.addfile(info, io.BytesIO(data))
    return buf.getvalue()


LAYER_TAR = _layer_tar()
LAYER_GZ = gzip.compress(LAYER_TAR, mtime=0)


def _config(diff_ids: list[str]) -> Doc:
    return {"architecture": "amd64", "os": "linux", "rootfs": {"type": "layers", "diff_ids": diff_ids},
            "config": {}}


class Layout:
    """The parts of an OCI layout archive, mutable before :meth:`build`."""

    def __init__(self) -> None:
        self.layer = LAYER_GZ
        self.config: Any = _config([_digest(LAYER_TAR)])
        self.manifest: Any = None
        self.index: Any = None
        self.extra: list[tarfile.TarInfo | tuple[tarfile.TarInfo, bytes]] = []
        self.raw: dict[str, bytes] = {}  # docs given as raw bytes (not JSON-encoded)
        self.blob_override: dict[str, bytes] = {}  # digest -> stored bytes (corrupt blobs)
        self.truncate = 0

    def _enc(self, name: str, doc: Any) -> bytes:
        return self.raw[name] if name in self.raw else json.dumps(doc).encode()

    def docs(self) -> tuple[bytes, bytes]:
        cfg = self._enc("config", self.config)
        if self.manifest is None:
            self.manifest = {
                "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": _digest(cfg),
                           "size": len(cfg)},
                "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                            "digest": _digest(self.layer), "size": len(self.layer)}],
            }
        return cfg, self._enc("manifest", self.manifest)

    def build(self) -> bytes:
        cfg, man = self.docs()
        if self.index is None:
            self.index = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
                          "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json",
                                         "digest": _digest(man), "size": len(man),
                                         "annotations": {"io.containerd.image.name": "example.com/h/t:1"}}]}
        files = {"oci-layout": b'{"imageLayoutVersion":"1.0.0"}', "index.json": self._enc("index", self.index)}
        for blob in (cfg, man, self.layer):
            d = _digest(blob)
            files["blobs/sha256/" + d.split(":")[1]] = self.blob_override.get(d, blob)
        return _tar(files, self.extra, self.truncate)


def _tar(files: dict[str, bytes], extra: list[Any], truncate: int = 0) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as t:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            t.addfile(info, io.BytesIO(data))
        for item in extra:
            if isinstance(item, tuple):
                info, data = item
                t.addfile(info, io.BytesIO(data))
            else:
                t.addfile(item)
    out = buf.getvalue()
    return out[:truncate] if truncate else out


class Docker:
    """The parts of a docker-archive, mutable before :meth:`build`."""

    def __init__(self) -> None:
        self.layer = LAYER_TAR
        self.config: Any = _config([_digest(LAYER_TAR)])
        self.manifest: Any = [{"Config": "config.json", "RepoTags": ["example.com/h/d:1"],
                               "Layers": ["l1/layer.tar"]}]
        self.raw: dict[str, bytes] = {}
        self.extra: list[Any] = []
        self.truncate = 0

    def build(self) -> bytes:
        files = {
            "config.json": self.raw.get("config", json.dumps(self.config).encode()),
            "l1/layer.tar": self.layer,
            "manifest.json": self.raw.get("manifest", json.dumps(self.manifest).encode()),
        }
        return _tar(files, self.extra, self.truncate)


def _link(name: str, target: str, kind: bytes = tarfile.SYMTYPE) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = target
    return info


def _member(name: str, data: bytes, kind: bytes = tarfile.REGTYPE) -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.size = len(data) if kind == tarfile.REGTYPE else 0
    return info, data if kind == tarfile.REGTYPE else b""


# -- the cases -------------------------------------------------------------------------------------------

BAD_JSON: dict[str, bytes] = {
    "empty": b"", "not-json": b"{not json", "null": b"null", "list": b"[]", "string": b'"x"', "number": b"7",
    "deep": b"[" * 100_000 + b"]" * 100_000, "nul-bytes": b"\0" * 64, "utf16": '{"a":1}'.encode("utf-16"),
    "truncated": b'{"schemaVersion": 2, "manif',
}

BAD_DIGESTS = {
    "short": "sha256:abcd", "md5": "md5:" + "0" * 32, "traversal": "sha256:../../../../etc/passwd",
    "upper": "sha256:" + "A" * 64, "no-alg": "0" * 64, "empty": "", "int": 5, "null": None,
    "sha512-short": "sha512:" + "0" * 64, "slash": "sha256/" + "0" * 64, "absent": "sha256:" + "1" * 64,
}

BAD_SIZES = {"negative": -1, "string": "10", "huge": 2**63, "float": 10.5, "null": None, "smaller": 1,
             "larger": 10**6, "bool": True}


def _oci_case(edit: Callable[[Layout], None]) -> Callable[[], bytes]:
    def build() -> bytes:
        lay = Layout()
        edit(lay)
        return lay.build()
    return build


def _docker_case(edit: Callable[[Docker], None]) -> Callable[[], bytes]:
    def build() -> bytes:
        d = Docker()
        edit(d)
        return d.build()
    return build


def _set_in(which: str, path: list[Any], value: Any) -> Callable[[Layout], None]:
    def edit(lay: Layout) -> None:
        lay.docs()
        if which == "index":
            lay.build()
        doc = copy.deepcopy(getattr(lay, which))
        cur = doc
        for p in path[:-1]:
            cur = cur[p]
        if value is _DELETE:
            del cur[path[-1]]
        else:
            cur[path[-1]] = value
        setattr(lay, which, doc)
        if which == "manifest":
            lay.index = None  # re-point the index at the edited manifest
    return edit


_DELETE = object()

CASES: dict[str, Callable[[], bytes]] = {}

for _doc in ("index", "manifest", "config"):
    for _k, _raw in BAD_JSON.items():
        def _e(lay: Layout, d: str = _doc, r: bytes = _raw) -> None:
            lay.raw[d] = r
        CASES[f"oci-{_doc}-json-{_k}"] = _oci_case(_e)

for _k, _v in BAD_DIGESTS.items():
    CASES[f"oci-index-digest-{_k}"] = _oci_case(_set_in("index", ["manifests", 0, "digest"], _v))
    CASES[f"oci-layer-digest-{_k}"] = _oci_case(_set_in("manifest", ["layers", 0, "digest"], _v))
    CASES[f"oci-config-digest-{_k}"] = _oci_case(_set_in("manifest", ["config", "digest"], _v))
for _k, _v in BAD_SIZES.items():
    CASES[f"oci-index-size-{_k}"] = _oci_case(_set_in("index", ["manifests", 0, "size"], _v))
    CASES[f"oci-layer-size-{_k}"] = _oci_case(_set_in("manifest", ["layers", 0, "size"], _v))
    CASES[f"oci-config-size-{_k}"] = _oci_case(_set_in("manifest", ["config", "size"], _v))

_FIELD_EDITS: dict[str, tuple[str, list[Any], Any]] = {
    "index-manifests-missing": ("index", ["manifests"], _DELETE),
    "index-manifests-dict": ("index", ["manifests"], {}),
    "index-manifests-strings": ("index", ["manifests"], ["x"]),
    "index-schema-1": ("index", ["schemaVersion"], 1),
    "index-mediatype-int": ("index", ["mediaType"], 3),
    "index-entry-mediatype-layer": ("index", ["manifests", 0, "mediaType"],
                                    "application/vnd.oci.image.layer.v1.tar+gzip"),
    "index-entry-mediatype-missing": ("index", ["manifests", 0, "mediaType"], _DELETE),
    "index-annotations-list": ("index", ["manifests", 0, "annotations"], ["a"]),
    "index-name-invalid": ("index", ["manifests", 0, "annotations"], {"io.containerd.image.name": "UP/../x::"}),
    "index-name-empty": ("index", ["manifests", 0, "annotations"], {"io.containerd.image.name": ""}),
    "index-name-huge": ("index", ["manifests", 0, "annotations"], {"io.containerd.image.name": "a/" * 5000}),
    "index-platform-string": ("index", ["manifests", 0, "platform"], "linux/amd64"),
    "index-platform-bad-types": ("index", ["manifests", 0, "platform"], {"os": 1, "architecture": []}),
    "index-urls-foreign": ("index", ["manifests", 0, "urls"], ["http://evil.example/x"]),
    "manifest-layers-missing": ("manifest", ["layers"], _DELETE),
    "manifest-layers-dict": ("manifest", ["layers"], {"a": 1}),
    "manifest-layers-empty": ("manifest", ["layers"], []),
    "manifest-config-missing": ("manifest", ["config"], _DELETE),
    "manifest-config-list": ("manifest", ["config"], []),
    "manifest-schema-1": ("manifest", ["schemaVersion"], 1),
    "manifest-mediatype-index": ("manifest", ["mediaType"], "application/vnd.oci.image.index.v1+json"),
    "manifest-layer-mediatype-unknown": ("manifest", ["layers", 0, "mediaType"], "application/x-evil"),
    "manifest-layer-mediatype-zstd-lie": ("manifest", ["layers", 0, "mediaType"],
                                          "application/vnd.oci.image.layer.v1.tar+zstd"),
    "manifest-layer-urls": ("manifest", ["layers", 0, "urls"], ["file:///etc/passwd"]),
    "manifest-config-mediatype-layer": ("manifest", ["config", "mediaType"],
                                        "application/vnd.oci.image.layer.v1.tar"),
    "config-diffids-missing": ("config", ["rootfs", "diff_ids"], _DELETE),
    "config-diffids-extra": ("config", ["rootfs", "diff_ids"], ["sha256:" + "2" * 64] * 2),
    "config-diffids-wrong": ("config", ["rootfs", "diff_ids"], ["sha256:" + "3" * 64]),
    "config-diffids-bad": ("config", ["rootfs", "diff_ids"], ["nope"]),
    "config-rootfs-string": ("config", ["rootfs"], "layers"),
    "config-arch-int": ("config", ["architecture"], 64),
    "config-os-missing": ("config", ["os"], _DELETE),
}
for _k, (_which, _path, _v) in _FIELD_EDITS.items():
    def _fe(lay: Layout, w: str = _which, p: list[Any] = _path, v: Any = _v) -> None:
        if w == "config":
            cfg = copy.deepcopy(lay.config)
            cur = cfg
            for q in p[:-1]:
                cur = cur[q]
            if v is _DELETE:
                del cur[p[-1]]
            else:
                cur[p[-1]] = v
            lay.config = cfg
        else:
            _set_in(w, p, v)(lay)
    CASES[f"oci-{_k}"] = _oci_case(_fe)


def _corrupt(which: str) -> Callable[[Layout], None]:
    def edit(lay: Layout) -> None:
        cfg, man = lay.docs()
        blob = {"config": cfg, "manifest": man, "layer": lay.layer}[which]
        lay.blob_override[_digest(blob)] = blob[:-1] + bytes([blob[-1] ^ 1])
    return edit


for _w in ("config", "manifest", "layer"):
    CASES[f"oci-corrupt-{_w}-blob"] = _oci_case(_corrupt(_w))


def _layer(data: bytes) -> Callable[[Layout], None]:
    def edit(lay: Layout) -> None:
        lay.layer = data
        lay.config = _config([_digest(gzip.decompress(data)) if data[:2] == b"\x1f\x8b" else _digest(data)])
    return edit


def _bad_layer_tar(*members: Any) -> bytes:
    return gzip.compress(_tar({}, list(members)), mtime=0)


CASES |= {
    "oci-layer-not-gzip": _oci_case(lambda lay: setattr(lay, "layer", b"plain bytes, not gzip")),
    "oci-layer-truncated-gzip": _oci_case(lambda lay: setattr(lay, "layer", LAYER_GZ[:-8])),
    "oci-layer-gzip-of-garbage": _oci_case(_layer(gzip.compress(b"\xff" * 1024, mtime=0))),
    "oci-layer-traversal": _oci_case(_layer(_bad_layer_tar(_member("../../escape", b"x")))),
    "oci-layer-symlink-escape-write": _oci_case(_layer(_bad_layer_tar(_link("l", "/tmp"), _member("l/x", b"x")))),
    "oci-layer-hardlink-outside": _oci_case(_layer(_bad_layer_tar(_link("h", "/etc/passwd", tarfile.LNKTYPE)))),
    "oci-layer-device": _oci_case(_layer(_bad_layer_tar(_member("dev/null", b"", tarfile.CHRTYPE)))),
    "oci-layer-whiteout-dotdot": _oci_case(_layer(_bad_layer_tar(_member(".wh..wh..", b"")))),
    "oci-tar-truncated": _oci_case(lambda lay: setattr(lay, "truncate", 1500)),
    "oci-tar-member-traversal": _oci_case(lambda lay: lay.extra.append(_member("../../oci-escape", b"x"))),
    "oci-tar-member-absolute": _oci_case(lambda lay: lay.extra.append(_member("/tmp/oci-escape", b"x"))),
    "oci-tar-duplicate-index": _oci_case(lambda lay: lay.extra.append(_member("index.json", b"[]"))),
    "oci-tar-blob-symlink-out": _oci_case(
        lambda lay: lay.extra.append(_link("blobs/sha256/" + "4" * 64, "/etc/passwd"))),
    "oci-tar-index-fifo": _oci_case(lambda lay: lay.extra.append(_member("index.json", b"", tarfile.FIFOTYPE))),
    "oci-tar-index-symlink": _oci_case(lambda lay: lay.extra.append(_link("index.json", "/etc/passwd"))),
    "oci-tar-index-hardlink": _oci_case(lambda lay: lay.extra.append(_link("index.json", "../../etc/passwd",
                                                                            tarfile.LNKTYPE))),
    "oci-no-oci-layout": _oci_case(lambda lay: lay.extra.append(_member("oci-layout", b"not json"))),
    "tar-garbage": lambda: b"\x00garbage" * 1000,
    "tar-empty": lambda: b"",
    "tar-zero-blocks": lambda: b"\0" * 10240,
    "tar-gzip-of-layout": lambda: gzip.compress(Layout().build(), mtime=0),
}

_DOCKER_EDITS: dict[str, Callable[[Docker], None]] = {
    "manifest-dict": lambda d: setattr(d, "manifest", {"Config": "config.json"}),
    "manifest-entry-string": lambda d: setattr(d, "manifest", ["x"]),
    "config-missing": lambda d: d.manifest[0].pop("Config"),
    "config-int": lambda d: d.manifest[0].__setitem__("Config", 3),
    "config-traversal": lambda d: d.manifest[0].__setitem__("Config", "../../../etc/passwd"),
    "config-absolute": lambda d: d.manifest[0].__setitem__("Config", "/etc/passwd"),
    "config-absent": lambda d: d.manifest[0].__setitem__("Config", "nope.json"),
    "config-is-dir": lambda d: d.manifest[0].__setitem__("Config", "l1"),
    "layers-string": lambda d: d.manifest[0].__setitem__("Layers", "l1/layer.tar"),
    "layers-dict": lambda d: d.manifest[0].__setitem__("Layers", {"a": 1}),
    "layers-traversal": lambda d: d.manifest[0].__setitem__("Layers", ["../../../etc/passwd"]),
    "layers-absent": lambda d: d.manifest[0].__setitem__("Layers", ["l2/layer.tar"]),
    "layers-int": lambda d: d.manifest[0].__setitem__("Layers", [7]),
    "layers-extra": lambda d: d.manifest[0].__setitem__("Layers", ["l1/layer.tar", "l1/layer.tar"]),
    "layers-none": lambda d: d.manifest[0].__setitem__("Layers", []),
    "repotags-string": lambda d: d.manifest[0].__setitem__("RepoTags", "example.com/h/d:1"),
    "repotags-invalid": lambda d: d.manifest[0].__setitem__("RepoTags", ["UP/../x::", "", "a" * 5000]),
    "repotags-dicts": lambda d: d.manifest[0].__setitem__("RepoTags", [{"a": 1}]),
    "repotags-none": lambda d: d.manifest[0].__setitem__("RepoTags", None),
    "diffid-wrong": lambda d: setattr(d, "config", _config(["sha256:" + "5" * 64])),
    "diffid-missing": lambda d: setattr(d, "config", {"os": "linux"}),
    "layer-traversal": lambda d: setattr(d, "layer", _tar({}, [_member("../../escape", b"x")])),
    "layer-garbage": lambda d: setattr(d, "layer", b"\x01" * 4096),
    "layer-symlink-out": lambda d: d.extra.append(_link("l1/layer.tar", "/etc/passwd")),
    "manifest-symlink-out": lambda d: d.extra.append(_link("manifest.json", "/etc/passwd")),
    "member-traversal": lambda d: d.extra.append(_member("../../docker-escape", b"x")),
    "truncated": lambda d: setattr(d, "truncate", 2000),
}
for _k, _fn in _DOCKER_EDITS.items():
    CASES[f"docker-{_k}"] = _docker_case(_fn)
for _doc in ("manifest", "config"):
    for _k, _raw in BAD_JSON.items():
        def _de(d: Docker, doc: str = _doc, r: bytes = _raw) -> None:
            d.raw[doc] = r
        CASES[f"docker-{_doc}-json-{_k}"] = _docker_case(_de)


def _listing(p: Path) -> list[tuple[str, int]]:
    return sorted((str(x.relative_to(p)), x.lstat().st_size) for x in p.rglob("*"))


def test_the_valid_archives_import(tmp_path: Path) -> None:
    for name, data in (("oci.tar", Layout().build()), ("docker.tar", Docker().build())):
        (tmp_path / name).write_bytes(data)
        with Store(tmp_path / "root") as s:
            [img] = s.import_archive(tmp_path / name, snapshotter="native")
            assert s.is_unpacked(img.name, snapshotter="native")
            assert s.check().ok


@pytest.mark.parametrize("case", sorted(CASES))
def test_hostile_import(tmp_path: Path, case: str) -> None:
    sentinel = tmp_path / "sentinel"
    sentinel.mkdir()
    (sentinel / "keep").write_text("keep")
    archive = tmp_path / "in" / "archive.tar"
    archive.parent.mkdir()
    archive.write_bytes(CASES[case]())
    before = _listing(sentinel), sorted(p.name for p in tmp_path.iterdir())
    with Store(tmp_path / "root") as s:
        with contextlib.suppress(errors.Error):
            s.import_archive(archive, snapshotter="native")
        report = s.check()
        if not report.ok:
            report = s.check(repair=True)
            report = s.check()
        assert report.ok, report.problems
    assert (_listing(sentinel), sorted(p.name for p in tmp_path.iterdir())) == (before[0], sorted([*before[1], "root"]))
    assert _listing(archive.parent) == [("archive.tar", archive.stat().st_size)]
