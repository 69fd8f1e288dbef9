"""Offline variants of corpus images that share files but not layers (the inline-dedup node model).

``build_variants(src, out)`` copies the OCI layout ``src`` (the fixture corpus, or a
``build-images --big`` layout) to ``out`` and adds images whose root filesystems equal
existing ones file by file while their layers differ, as rebuilds of one package set in
another layer order do:

* ``variant:split`` -- ``debian:gzip``'s layer cut in two: everything outside ``/usr``, then
  ``/usr`` (raw tar records copied, so every header, PAX record and xattr is the original's);
* ``variant:swapped`` -- the same two layers in the other order;
* ``variant:app`` -- ``variant:split`` plus the upper layers of ``app:layers`` (the same
  rootfs as ``app:layers`` on another base chain);
* ``variant:ml`` -- with ``ml:big`` in ``src``: ``variant:split`` plus ``ml:big``'s upper
  layers (the torch layer on a different base: ``ml:big`` under a second tag built from
  another base).

Stdlib only (gzip, tarfile, json, hashlib), so tests and benches share it. Memory stays
flat: the layer is inflated to a temporary file and cut with seeks.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import shutil
import tarfile
import tempfile
from pathlib import Path
from typing import Any

__all__ = ["build_variants"]

_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"


def _blob(layout: Path, digest: str) -> Path:
    alg, _, hexd = digest.partition(":")
    return layout / "blobs" / alg / hexd


def _put(layout: Path, data: bytes) -> dict[str, Any]:
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    p = _blob(layout, digest)
    if not p.exists():
        p.write_bytes(data)
    return {"digest": digest, "size": len(data)}


def _put_file(layout: Path, path: Path) -> dict[str, Any]:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    digest = "sha256:" + h.hexdigest()
    dst = _blob(layout, digest)
    if not dst.exists():
        shutil.move(str(path), dst)
    return {"digest": digest, "size": dst.stat().st_size}


def _manifests(layout: Path) -> dict[str, dict[str, Any]]:
    index = json.loads((layout / "index.json").read_text())
    out = {}
    for m in index["manifests"]:
        name = (m.get("annotations") or {}).get("org.opencontainers.image.ref.name")
        if name and m["mediaType"].endswith("manifest.v1+json"):
            out[name] = json.loads(_blob(layout, m["digest"]).read_bytes())
    return out


def _in_usr(name: str) -> bool:
    n = name.removeprefix("./").lstrip("/")
    return n == "usr" or n.startswith("usr/")


def _split_layer(layout: Path, digest: str, tmp: Path, level: int) -> tuple[dict[str, Any], ...]:
    """Cut a gzip layer into (rest, usr) gzip layers; returns (blob desc + diff_id) of each."""
    raw = tmp / "layer.tar"
    with gzip.open(_blob(layout, digest), "rb") as src, open(raw, "wb") as dst:
        shutil.copyfileobj(src, dst, 1 << 20)
    parts = {False: tmp / "rest.tar", True: tmp / "usr.tar"}
    outs = {k: open(p, "wb") for k, p in parts.items()}  # noqa: SIM115 - closed below
    group: dict[str, bool] = {}
    try:
        with open(raw, "rb") as f, open(raw, "rb") as data, tarfile.open(fileobj=f, mode="r:") as tf:
            for m in tf:
                key = _in_usr(m.name)
                if m.islnk():  # a hard link goes with its target (the layer that holds it)
                    key = group.get(m.linkname.removeprefix("./"), _in_usr(m.linkname))
                group[m.name.removeprefix("./")] = key
                end = m.offset_data + ((m.size + 511) // 512) * 512 if m.isreg() else m.offset_data
                data.seek(m.offset)
                outs[key].write(data.read(end - m.offset))
        for out in outs.values():
            out.write(b"\0" * 1024)
    finally:
        for out in outs.values():
            out.close()
    raw.unlink()
    descs = []
    for key in (False, True):
        tar = parts[key]
        h = hashlib.sha256()
        gz = tmp / f"{tar.name}.gz"
        with open(tar, "rb") as src, gzip.GzipFile(gz, "wb", compresslevel=level, mtime=0) as dst:
            while chunk := src.read(1 << 20):
                h.update(chunk)
                dst.write(chunk)
        tar.unlink()
        desc = _put_file(layout, gz)
        descs.append({"mediaType": _LAYER_GZIP, **desc, "diff_id": "sha256:" + h.hexdigest()})
    return tuple(descs)


def _image(layout: Path, base: dict[str, Any], layers: list[dict[str, Any]], diff_ids: list[str]) -> dict[str, Any]:
    config = json.loads(_blob(layout, base["config"]["digest"]).read_bytes())
    config["rootfs"] = {"type": "layers", "diff_ids": diff_ids}
    config["history"] = [{"created_by": f"variant layer {i}"} for i in range(len(layers))]
    cdesc = {"mediaType": base["config"]["mediaType"], **_put(layout, json.dumps(config).encode())}
    manifest = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "config": cdesc, "layers": [{k: v for k, v in d.items() if k != "diff_id"} for d in layers]}
    return {"mediaType": manifest["mediaType"], **_put(layout, json.dumps(manifest).encode())}


def _diff_ids(layout: Path, manifest: dict[str, Any]) -> list[str]:
    config = json.loads(_blob(layout, manifest["config"]["digest"]).read_bytes())
    return list(config["rootfs"]["diff_ids"])


def build_variants(src: str | os.PathLike[str], out: str | os.PathLike[str], level: int = 6) -> list[str]:
    """Copy the layout ``src`` to ``out`` and add the variants; returns the names added."""
    srcp, outp = Path(src), Path(out)
    if outp.exists():
        shutil.rmtree(outp)
    shutil.copytree(srcp, outp, ignore=shutil.ignore_patterns("*.docker.tar"))
    for p in outp.rglob("*"):
        os.chmod(p, 0o755 if p.is_dir() else 0o644)
    mans = _manifests(outp)
    deb = mans["debian:gzip"]
    with tempfile.TemporaryDirectory(dir=outp) as tmp:
        rest, usr = _split_layer(outp, deb["layers"][0]["digest"], Path(tmp), level)
    split = [rest, usr]
    images: dict[str, tuple[list[dict[str, Any]], list[str]]] = {
        "variant:split": (split, [rest["diff_id"], usr["diff_id"]]),
        "variant:swapped": ([usr, rest], [usr["diff_id"], rest["diff_id"]]),
    }
    for name, source in (("variant:app", "app:layers"), ("variant:ml", "ml:big")):
        if source in mans:
            upper = mans[source]["layers"][1:]
            images[name] = ([*split, *upper], [rest["diff_id"], usr["diff_id"], *_diff_ids(outp, mans[source])[1:]])
    index = json.loads((outp / "index.json").read_text())
    for name, (layers, diff_ids) in images.items():
        desc = _image(outp, deb, layers, diff_ids)
        desc["platform"] = {"architecture": "amd64", "os": "linux"}
        desc["annotations"] = {"org.opencontainers.image.ref.name": name}
        index["manifests"].append(desc)
    (outp / "index.json").write_text(json.dumps(index))
    return list(images)
