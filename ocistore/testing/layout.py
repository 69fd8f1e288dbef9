"""Build small, real OCI image layouts on disk (for examples, tests and demos).

Layers are real tar streams (gzip or zstd compressed, or plain), configs carry real
diff IDs, and the layout is what ``skopeo``/``umoci``/``ctr import`` read.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import tarfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import zstandard

from ocistore.oci import mediatypes as mt
from ocistore.oci.imagelayout import blob_name

__all__ = ["File", "build_layer", "write_index_layout", "write_layout"]

File = bytes | str | tuple[str, str] | None
"""A layer entry: file bytes, ``"dir/"``-style dirs are given as the value ``"<dir>"``,
``("symlink", target)``, ``("hardlink", target)``, ``("whiteout", "")`` or None for a
directory."""


def _digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def build_layer(
    files: Mapping[str, File], compression: str = "gzip", mtime: int = 1_700_000_000
) -> tuple[bytes, bytes]:
    """Return ``(blob, uncompressed tar)`` for a layer holding ``files`` (sorted by path)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for path in sorted(files):
            value = files[path]
            info = tarfile.TarInfo(path.strip("/"))
            info.mtime = mtime
            if value is None or value == "<dir>":
                info.type, info.mode = tarfile.DIRTYPE, 0o755
                tf.addfile(info)
            elif isinstance(value, tuple):
                kind, target = value
                if kind == "symlink":
                    info.type, info.linkname, info.mode = tarfile.SYMTYPE, target, 0o777
                elif kind == "hardlink":
                    info.type, info.linkname, info.mode = tarfile.LNKTYPE, target, 0o644
                elif kind == "whiteout":
                    head, _, base = path.strip("/").rpartition("/")
                    info.name = f"{head}/.wh.{base}" if head else f".wh.{base}"
                    info.mode = 0o644
                else:
                    raise ValueError(f"unknown entry kind {kind!r}")
                tf.addfile(info)
            else:
                data = value.encode() if isinstance(value, str) else value
                info.size, info.mode = len(data), 0o644
                tf.addfile(info, io.BytesIO(data))
    tar = buf.getvalue()
    if compression == "gzip":
        blob = gzip.compress(tar, compresslevel=6, mtime=0)
    elif compression == "zstd":
        blob = zstandard.ZstdCompressor(level=3).compress(tar)
    elif compression == "none":
        blob = tar
    else:
        raise ValueError(f"unknown compression {compression!r}")
    return blob, tar


_LAYER_TYPES = {"gzip": mt.OCI_LAYER_GZIP, "zstd": mt.OCI_LAYER_ZSTD, "none": mt.OCI_LAYER}


def _put(root: Path, data: bytes) -> dict[str, object]:
    d = _digest(data)
    p = root / blob_name(d)
    p.parent.mkdir(parents=True, exist_ok=True)
    if not p.exists():
        p.write_bytes(data)
    return {"digest": d, "size": len(data)}


def _image_manifest(
    rootp: Path, layers: Sequence[Mapping[str, File]], compression: str, platform: Mapping[str, str],
) -> dict[str, Any]:
    """Write the layers, config and manifest of one image; returns the manifest's descriptor."""
    layer_descs, diff_ids = [], []
    for files in layers:
        blob, tar = build_layer(files, compression)
        layer_descs.append({"mediaType": _LAYER_TYPES[compression], **_put(rootp, blob)})
        diff_ids.append(_digest(tar))
    config = {
        **platform,
        "config": {"Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"]},
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
        "history": [{"created_by": f"layer {i}"} for i in range(len(layers))],
    }
    cdesc = {"mediaType": mt.OCI_CONFIG, **_put(rootp, json.dumps(config).encode())}
    manifest = {"schemaVersion": 2, "mediaType": mt.OCI_MANIFEST, "config": cdesc, "layers": layer_descs}
    return {"mediaType": mt.OCI_MANIFEST, **_put(rootp, json.dumps(manifest).encode())}


def _platform_json(spec: str) -> dict[str, str]:
    os_, _, rest = spec.partition("/")
    arch, _, variant = rest.partition("/")
    out = {"architecture": arch, "os": os_}
    if variant:
        out["variant"] = variant
    return out


def _start_layout(rootp: Path) -> tuple[Path, dict[str, Any]]:
    rootp.mkdir(parents=True, exist_ok=True)
    (rootp / "oci-layout").write_text('{"imageLayoutVersion":"1.0.0"}')
    index_path = rootp / "index.json"
    index: dict[str, Any] = (
        json.loads(index_path.read_text()) if index_path.exists() else {"schemaVersion": 2, "manifests": []}
    )
    return index_path, index


def _name_entry(index: dict[str, Any], name: str, desc: dict[str, Any]) -> None:
    desc["annotations"] = {"io.containerd.image.name": name,
                           "org.opencontainers.image.ref.name": name.rpartition(":")[2]}
    index["manifests"] = [m for m in index["manifests"]
                          if m.get("annotations", {}).get("io.containerd.image.name") != name] + [desc]


def write_index_layout(
    root: str | os.PathLike[str],
    name: str,
    platforms: Sequence[str],
    layers: Sequence[Mapping[str, File]] | None = None,
    compression: str = "gzip",
) -> dict[str, str]:
    """Write (or add to) an OCI layout holding ``name`` as an image index, one manifest per platform.

    ``platforms`` are strings such as ``"linux/arm/v7"``, listed in the index in that order.
    Each platform's image gets ``layers`` (default: one small layer) plus a file naming the
    platform, so every platform has its own layer blob. Returns ``{"index": digest,
    <platform>: manifest digest, ...}``.
    """
    rootp = Path(root)
    index_path, index = _start_layout(rootp)
    out: dict[str, str] = {}
    entries = []
    for spec in platforms:
        plat = _platform_json(spec)
        own: dict[str, File] = {"etc/": None, "etc/platform": f"{spec}\n"}
        image_layers = [*(layers or [{"bin/": None, "bin/sh": "#!/bin/true\n"}]), own]
        mdesc = _image_manifest(rootp, image_layers, compression, plat)
        mdesc["platform"] = plat
        entries.append(mdesc)
        out[spec] = str(mdesc["digest"])
    image_index = {"schemaVersion": 2, "mediaType": mt.OCI_INDEX, "manifests": entries}
    idesc = {"mediaType": mt.OCI_INDEX, **_put(rootp, json.dumps(image_index).encode())}
    out["index"] = str(idesc["digest"])
    _name_entry(index, name, idesc)
    index_path.write_text(json.dumps(index))
    return out


def write_layout(
    root: str | os.PathLike[str],
    images: Mapping[str, Sequence[Mapping[str, File]]],
    compression: str = "gzip",
    architecture: str = "amd64",
) -> dict[str, str]:
    """Write an OCI layout at ``root`` with one single-platform image per name.

    ``images`` maps a reference (``example.com/app:1``) to its layers (file maps).
    Returns ``{name: manifest digest}``.
    """
    rootp = Path(root)
    index_path, index = _start_layout(rootp)
    out = {}
    for name, layers in images.items():
        plat = {"architecture": architecture, "os": "linux"}
        mdesc = _image_manifest(rootp, layers, compression, plat)
        mdesc["platform"] = dict(plat)
        _name_entry(index, name, mdesc)
        out[name] = str(mdesc["digest"])
    index_path.write_text(json.dumps(index))
    return out
