"""Helpers for the lazy-read tests: images from tar layers, trees of mounted rootfs and merged TOCs."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import stat
import tarfile
from pathlib import Path
from typing import Any

from ocistore import Descriptor, Image, Store
from ocistore.estargz.tree import MergedTree
from ocistore.mount import mounted
from ocistore.oci import mediatypes as mt

GZ = mt.OCI_LAYER_GZIP

Entry = tuple[Any, ...]


def tar_layer(members: list[tuple[str, Any]]) -> bytes:
    """(name, bytes) files, (name/, None) dirs, (name, ("sym"|"hard", target)) links, as one tar."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.mtime = 1_700_000_000
            if data is None:
                info.type, info.mode = tarfile.DIRTYPE, 0o755
                tf.addfile(info)
            elif isinstance(data, tuple):
                info.type = tarfile.SYMTYPE if data[0] == "sym" else tarfile.LNKTYPE
                info.linkname = data[1]
                tf.addfile(info)
            else:
                info.size, info.mode = len(data), 0o644
                tf.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def store_plain_image(store: Store, name: str, tars: list[bytes]) -> None:
    """An image of plain tar+gzip layers (bottom first) recorded under ``name``."""
    layers, diff_ids = [], []
    for tar in tars:
        blob = gzip.compress(tar, mtime=0)
        desc = store.content.ingest(blob, media_type=GZ)
        layers.append({"mediaType": GZ, "digest": desc.digest, "size": desc.size})
        diff_ids.append("sha256:" + hashlib.sha256(tar).hexdigest())
    config = store.content.ingest(json.dumps({
        "architecture": "amd64", "os": "linux", "rootfs": {"type": "layers", "diff_ids": diff_ids},
    }).encode(), media_type=mt.OCI_CONFIG)
    manifest = {
        "schemaVersion": 2, "mediaType": mt.OCI_MANIFEST,
        "config": {"mediaType": mt.OCI_CONFIG, "digest": config.digest, "size": config.size}, "layers": layers,
    }
    labels = {"containerd.io/gc.ref.content.config": config.digest}
    labels.update({f"containerd.io/gc.ref.content.l.{i}": layer["digest"] for i, layer in enumerate(layers)})
    desc = store.content.ingest(json.dumps(manifest).encode(), media_type=mt.OCI_MANIFEST, labels=labels)
    store.images.create(Image(name=name, target=Descriptor(mt.OCI_MANIFEST, desc.digest, desc.size)))


def dir_tree(root: Path, *, with_xattrs: bool = True) -> dict[str, Entry]:
    """path -> (file type, permissions, uid, gid, content digest / link target / device, xattrs)."""
    out: dict[str, Entry] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = os.path.join(dirpath, name)
            rel = os.path.relpath(path, root)
            st = os.lstat(path)
            kind = stat.S_IFMT(st.st_mode)
            extra: Any = None
            if stat.S_ISREG(kind):
                extra = hashlib.sha256(Path(path).read_bytes()).hexdigest()
            elif stat.S_ISLNK(kind):
                extra = os.readlink(path)
            elif stat.S_ISCHR(kind) or stat.S_ISBLK(kind):
                extra = (os.major(st.st_rdev), os.minor(st.st_rdev))
            xattrs: tuple[Any, ...] = ()
            if with_xattrs and not stat.S_ISLNK(kind):
                xattrs = tuple(sorted((k, os.getxattr(path, k, follow_symlinks=False))
                                      for k in os.listxattr(path, follow_symlinks=False)
                                      if not k.startswith("trusted.")))
            perm = None if stat.S_ISLNK(kind) else stat.S_IMODE(st.st_mode)
            out[rel] = (kind, perm, st.st_uid, st.st_gid, extra, xattrs)
    return out


def merged_tree_entries(tree: MergedTree, read: Any) -> dict[str, Entry]:
    """The same shape as :func:`dir_tree`, from a merged TOC tree (``read(path)`` gives file bytes)."""
    out: dict[str, Entry] = {}
    for path, node in tree.walk():
        if not path:
            continue
        kind = stat.S_IFMT(node.st_mode)
        extra: Any = None
        if node.type == "reg":
            extra = hashlib.sha256(read(path)).hexdigest()
        elif node.type == "symlink":
            extra = node.link_name
        elif node.type in ("char", "block"):
            extra = (node.dev_major, node.dev_minor)
        perm = None if node.type == "symlink" else node.mode
        xattrs = () if node.type == "symlink" else tuple(sorted(node.xattrs.items()))
        out[path] = (kind, perm, node.uid, node.gid, extra, xattrs)
    return out


def unpacked_tree(store: Store, name: str, tmp: Path, *, with_xattrs: bool = True,
                  snapshotter: str = "overlayfs") -> dict[str, Entry]:
    """The tree of ``name`` unpacked by ``snapshotter``, as a mounted read-only view."""
    top = store.unpack(name, snapshotter=snapshotter)
    sn = store.snapshots(snapshotter)
    key = f"view-{hashlib.sha256(name.encode()).hexdigest()[:12]}"
    target = tmp / key
    target.mkdir()
    try:
        with mounted(sn.view(key, top), target) as root:
            return dir_tree(root, with_xattrs=with_xattrs)
    finally:
        sn.remove(key)
        target.rmdir()


def record_ranged_reads(monkeypatch: Any) -> list[tuple[int, int]]:
    """From now on (for the test), the ``[start, end)`` spans every remote layer source asks its
    registry for are appended to the returned list."""
    from ocistore.transfer import lazyfetch

    asked: list[tuple[int, int]] = []
    real = lazyfetch.RemoteLayerSource._read_many

    def recording(self: lazyfetch.RemoteLayerSource, spans: list[tuple[int, int]]) -> list[bytes]:
        asked.extend(spans)
        return real(self, spans)

    monkeypatch.setattr(lazyfetch.RemoteLayerSource, "_read_many", recording)
    return asked
