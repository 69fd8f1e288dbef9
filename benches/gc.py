"""GC benchmark: time and peak memory of one collection over synthetic metadata.

    python benches/gc.py [--images 10000] [--layers 8] [--snapshots 10000] [--files] [--drop 0.2]

Builds, in one LMDB write transaction, ``images`` image records, each with a manifest blob
(``gc.ref.content.config`` / ``.l.<i>`` labels), a config blob labelled
``gc.ref.snapshot.native`` and ``layers`` layer blobs (10k images x 8 layers = 100k content
records), and ``snapshots`` committed snapshot records in chains of 5 that the configs
reference. ``--drop`` deletes that fraction of the images first, so the sweep has work.
``--files`` also writes a 16-byte blob file per content record (and a snapshot
directory per snapshot), so the backend cleanup is measured too.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import resource
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from ocistore.metadata.db import DB, key
from ocistore.metadata.gc import collect

NS = "default"
REF = "containerd.io/gc.ref.content"


def fake_digest(*parts: object) -> str:
    return "sha256:" + hashlib.sha256(repr(parts).encode()).hexdigest()


def populate(db: DB, root: Path, images: int, layers: int, snapshots: int, files: bool) -> list[str]:
    blobs = root / "content" / "blobs" / "sha256"
    blobs.mkdir(parents=True, exist_ok=True)
    names = []
    chain_len = 5
    with db.write() as txn:
        db.ensure_namespace(txn, NS)
        for s in range(snapshots):
            parent = f"chain-{s - 1}" if s % chain_len else ""
            txn.put("snapshots", key(NS, "native", f"chain-{s}"), {
                "id": s + 1, "kind": "committed", "parent": parent, "labels": {},
                "created_at": 0, "updated_at": 0, "size": 0, "inodes": 0,
            })
            if parent:
                txn.put("snapshot_children", key(NS, "native", parent, f"chain-{s}"), "")

        def blob(digest: str, labels: dict[str, str]) -> None:
            txn.put("content", key(NS, digest), {"size": 16, "labels": labels, "created_at": 0, "updated_at": 0})
            if files:
                (blobs / digest[7:]).write_bytes(b"0123456789abcdef")

        for i in range(images):
            layer_digests = [fake_digest("layer", i, j) for j in range(layers)]
            for d in layer_digests:
                blob(d, {})
            config = fake_digest("config", i)
            top = f"chain-{(i * chain_len + chain_len - 1) % max(snapshots, 1)}"
            blob(config, {"containerd.io/gc.ref.snapshot.native": top} if snapshots else {})
            manifest = fake_digest("manifest", i)
            labels = {f"{REF}.config": config}
            labels.update({f"{REF}.l.{j}": d for j, d in enumerate(layer_digests)})
            blob(manifest, labels)
            name = f"example.com/bench/img:{i}"
            names.append(name)
            txn.put("images", key(NS, name), {
                "target": {"mediaType": "application/vnd.oci.image.manifest.v1+json",
                           "digest": manifest, "size": 16},
                "labels": {}, "created_at": 0, "updated_at": 0,
            })
    if files:
        for s in range(snapshots):
            (root / "snapshots" / "native" / str(s + 1) / "fs").mkdir(parents=True)
    return names


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=10_000)
    ap.add_argument("--layers", type=int, default=8)
    ap.add_argument("--snapshots", type=int, default=10_000)
    ap.add_argument("--drop", type=float, default=0.2)
    ap.add_argument("--files", action="store_true")
    ap.add_argument("--dir", default=None, help="where to build the store (default: a temp dir)")
    args = ap.parse_args()
    root = Path(tempfile.mkdtemp(prefix="gcbench-", dir=args.dir))
    db = DB.open(str(root / "metadata.lmdb"))
    t0 = time.perf_counter()
    names = populate(db, root, args.images, args.layers, args.snapshots, args.files)
    with db.write() as txn:
        for name in names[: int(len(names) * args.drop)]:
            txn.delete("images", key(NS, name))
    print(f"populate: {time.perf_counter() - t0:.2f} s "
          f"({args.images} images, {args.images * (args.layers + 2)} blobs, {args.snapshots} snapshots, "
          f"files={args.files}, dropped {int(len(names) * args.drop)} images)")
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    cpu0 = time.process_time()
    stats = collect(db, root)
    cpu = time.process_time() - cpu0
    rss1 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(f"gc: {stats.duration:.2f} s wall, {cpu:.2f} s CPU; removed {stats.removed_content} blobs, "
          f"{stats.removed_snapshots} snapshots, {stats.removed_images} images; "
          f"max RSS {rss1 / 1024:.0f} MiB (+{(rss1 - rss0) / 1024:.0f} MiB during gc)")
    tracemalloc.start()
    t1 = time.perf_counter()
    collect(db, root)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    print(f"gc again (nothing to remove, under tracemalloc): {time.perf_counter() - t1:.2f} s, "
          f"peak Python allocations {peak / 2**20:.0f} MiB")
    db.release()
    if not args.dir:
        import shutil

        shutil.rmtree(root)
    os.sync()


if __name__ == "__main__":
    main()
