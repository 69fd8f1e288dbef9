"""Fixtures shared by the GC, lease and check tests (imported as ``test_gc_support``)."""

from __future__ import annotations

import json
import os
from datetime import timedelta
from pathlib import Path
from typing import Any

import attrs

from ocistore import Store
from ocistore._files import allocated_bytes
from ocistore.metadata.db import key
from ocistore.metadata.images import Image
from ocistore.oci import mediatypes
from ocistore.oci.descriptor import Descriptor
from ocistore.oci.digest import digest_bytes
from ocistore.oci.identity import chain_ids

REF = "containerd.io/gc.ref.content"


@attrs.frozen
class Built:
    """What :func:`build_image` created."""

    name: str
    manifest: Descriptor
    config: Descriptor
    layers: list[Descriptor]
    chain: list[str]  # committed snapshot keys, bottom first ([] if not unpacked)
    snapshot_ids: list[int]

    @property
    def blobs(self) -> list[Descriptor]:
        return [self.manifest, self.config, *self.layers]


def build_image(
    store: Store, name: str, layers: list[bytes], snapshotter: str | None = "native",
    lease: bool = True, image_labels: dict[str, str] | None = None, create: bool = True,
) -> Built:
    """Ingest layers, config and manifest with gc child labels, unpack into ``snapshotter``
    (committed chain, config labelled ``gc.ref.snapshot.<sn>``), create the image record."""
    if lease:
        with store.lease(expire=timedelta(hours=1)):
            return build_image(store, name, layers, snapshotter, False, image_labels, create)
    ldescs = [store.content.ingest(data) for data in layers]
    ldescs = [Descriptor(mediatypes.OCI_LAYER, d.digest, d.size) for d in ldescs]
    diff_ids = [d.digest for d in ldescs]
    config = json.dumps({
        "architecture": "amd64", "os": "linux", "name": name,
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
    }).encode()
    chain: list[str] = []
    ids: list[int] = []
    cfg_labels: dict[str, str] = {}
    if snapshotter and layers:
        sn = store.snapshots(snapshotter)
        chain = chain_ids(diff_ids)
        parent = ""
        for i, cid in enumerate(chain):
            try:
                sn.stat(cid)
            except LookupError:
                mounts = sn.prepare(f"extract-{i} {cid}", parent)
                Path(mounts[0].source, f"file{i}").write_bytes(layers[i])
                sn.commit(cid, f"extract-{i} {cid}")
            parent = cid
        ids = [_snapshot_id(store, snapshotter, c) for c in chain]
        cfg_labels[f"containerd.io/gc.ref.snapshot.{snapshotter}"] = chain[-1]
    cdesc = store.content.ingest(config)
    store.content.update(cdesc.digest, {**store.content.info(cdesc.digest).labels, **cfg_labels})
    cdesc = Descriptor(mediatypes.OCI_CONFIG, cdesc.digest, cdesc.size)
    manifest = json.dumps({
        "schemaVersion": 2, "mediaType": mediatypes.OCI_MANIFEST,
        "config": cdesc.to_json(), "layers": [d.to_json() for d in ldescs],
    }).encode()
    mlabels = {f"{REF}.config": cdesc.digest}
    mlabels.update({f"{REF}.l.{i}": d.digest for i, d in enumerate(ldescs)})
    mdesc = store.content.ingest(manifest, labels=mlabels)
    mdesc = Descriptor(mediatypes.OCI_MANIFEST, mdesc.digest, mdesc.size)
    if create:
        store.images.create(Image(name=name, target=mdesc, labels=image_labels or {}))
    return Built(name, mdesc, cdesc, ldescs, chain, ids)


def _snapshot_id(store: Store, sn: str, k: str) -> int:
    with store.db.read() as txn:
        rec = txn.get("snapshots", key(store.namespace, sn, k))
    return int(rec["id"])


def snapshot_dir(store: Store, sn: str, sid: int) -> Path:
    return store.root / "snapshots" / sn / str(sid)


def blob_path(store: Store, digest: str) -> Path:
    alg, _, hexpart = digest.partition(":")
    return store.root / "content" / "blobs" / alg / hexpart


def blob_exists(store: Store, digest: str) -> bool:
    return blob_path(store, digest).is_file()


def snapshot_bytes(store: Store, sn: str, ids: list[int]) -> int:
    return sum(allocated_bytes(snapshot_dir(store, sn, i)) for i in ids)


def put_record(store: Store, table: str, parts: tuple[str, ...], value: Any) -> None:
    """Write one raw record (for kinds the Store API does not expose yet)."""
    with store.db.write() as txn:
        store.db.ensure_namespace(txn, store.namespace)
        txn.put(table, key(*parts), value)


def snapshot_record(store: Store, sn: str, skey: str, parent: str = "", kind: str = "committed",
                    labels: dict[str, str] | None = None) -> int:
    """A raw snapshot record with its directory; returns its id."""
    with store.db.write() as txn:
        sid = txn.next_seq(f"snapshots/{sn}")
        store.db.ensure_namespace(txn, store.namespace)
        txn.put("snapshots", key(store.namespace, sn, skey), {
            "id": sid, "kind": kind, "parent": parent, "labels": labels or {},
            "created_at": 0, "updated_at": 0, "size": 0, "inodes": 0,
        })
        if parent:
            txn.put("snapshot_children", key(store.namespace, sn, parent, skey), "")
    d = snapshot_dir(store, sn, sid) / "fs"
    d.mkdir(parents=True)
    (d / "f").write_bytes(os.urandom(100))
    return sid


def has_snapshot(store: Store, sn: str, skey: str) -> bool:
    with store.db.read() as txn:
        return txn.has("snapshots", key(store.namespace, sn, skey))


def digest_of(data: bytes) -> str:
    return digest_bytes(data)


def test_build_image_smoke(tmp_path: Path) -> None:
    with Store(tmp_path) as store:
        built = build_image(store, "docker.io/library/a:1", [b"l0", b"l1"])
        assert all(blob_exists(store, d.digest) for d in built.blobs)
        assert len(built.chain) == 2
        assert all(snapshot_dir(store, "native", i).is_dir() for i in built.snapshot_ids)
