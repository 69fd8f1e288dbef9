#!/usr/bin/env python3
"""Fetch throughput: ocistore's registry client vs ``ctr content fetch``, same registry, same run.

Usage (as root, from the project root):

    python benches/fetch.py [--repeat 5] [--images debian:gzip debian:zstd app:layers multi:index]
                            [--loop-ext4 2] [--work /var/tmp/ocistore-bench-fetch] [--out benches/out]
                            [--settle 0.5] [--concurrency 3]

A real registry (CNCF distribution, the fixture kit's ``registry`` script, plain HTTP on a free
127.0.0.1 port) is started and loaded with the prebuilt corpus. On one freshly made loop ext4
(``--loop-ext4 GB``; 0 = the filesystem of ``--work``), for each image and repetition, from an
empty root every time, the order alternating between repetitions:

* ``ocistore``: a new ``RegistryClient`` (no warm connections, no token) resolves the reference,
  fetches the index/manifest/config with ``fetch_bytes`` and every layer of the linux/amd64
  image with ``fetch_into`` into ``Store(root).content`` (``--concurrency`` layers at a time,
  like containerd's 3 concurrent downloads), each blob verified and committed;
* ``ocistore (no store)``: the same downloads streamed and verified, discarded (network +
  hashing only, no disk);
* ``ctr content fetch --plain-http REF`` against a freshly wiped and started containerd 1.6
  (``containerd-peer``), whose root is on the same filesystem. Its time includes the ctr
  client start (~15 ms).

Bytes are the image's blobs for the host platform (index + manifest + config + layers).
Medians (and min/max) are written to OUT/fetch.json and OUT/fetch.md and printed.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(REPO))

import common as C  # noqa: E402

from ocistore.oci import mediatypes  # noqa: E402
from ocistore.oci.descriptor import Descriptor  # noqa: E402
from ocistore.remotes import RegistryClient, RegistryOptions  # noqa: E402

DEFAULT_IMAGES = ["debian:gzip", "debian:zstd", "app:layers", "multi:index"]
CORPUS = C.FIXTURES_DIR / "corpus"


def _amd64(index: dict[str, Any]) -> Descriptor:
    for m in index.get("manifests", []):
        p = m.get("platform") or {}
        if p.get("os") == "linux" and p.get("architecture") == "amd64":
            return Descriptor.from_json(m)
    raise SystemExit("the index has no linux/amd64 manifest")


def ocistore_fetch(ref: str, root: Path | None, concurrency: int) -> tuple[float, int]:
    """Resolve + fetch the host-platform image; returns (seconds, bytes)."""
    store = None
    if root is not None:
        from ocistore.store import Store

        store = Store(root)
    try:
        t0 = time.perf_counter()
        total = 0
        with RegistryClient(RegistryOptions(plain_http=True, max_concurrent_downloads=concurrency)) as client:
            name, desc = client.resolve(ref)

            def keep(d: Descriptor, data: bytes) -> None:
                nonlocal total
                total += len(data)
                if store is not None:
                    store.content.ingest(data, expected=d.digest)

            data = client.fetch_bytes(name, desc)
            keep(desc, data)
            doc = json.loads(data)
            if mediatypes.is_index(desc.media_type):
                desc = _amd64(doc)
                data = client.fetch_bytes(name, desc)
                keep(desc, data)
                doc = json.loads(data)
            config = Descriptor.from_json(doc["config"])
            keep(config, client.fetch_bytes(name, config))
            layers = [Descriptor.from_json(x) for x in doc["layers"]]

            def one(layer: Descriptor) -> int:
                if store is not None:
                    with store.content.writer(f"bench-{layer.digest}", total=layer.size) as w:
                        client.fetch_into(name, layer, w)
                    return layer.size
                n = 0
                with client.fetch(name, layer) as reader:
                    while chunk := reader.read(1 << 20):
                        n += len(chunk)
                    assert reader.verified
                return n

            with ThreadPoolExecutor(max_workers=concurrency) as pool:
                total += sum(pool.map(one, layers))
        return time.perf_counter() - t0, total
    finally:
        if store is not None:
            store.close()


def ctr_fetch(peer: C.ContainerdPeer, ref: str, settle: float) -> float:
    peer.fresh()
    C.settle(settle)
    return C.timed_cmd(peer.ctr("content", "fetch", "--plain-http", ref))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--images", nargs="+", default=DEFAULT_IMAGES)
    ap.add_argument("--loop-ext4", type=float, default=2.0)
    ap.add_argument("--work", default="/var/tmp/ocistore-bench-fetch")
    ap.add_argument("--out", default=str(REPO / "benches" / "out"))
    ap.add_argument("--settle", type=float, default=0.5)
    ap.add_argument("--concurrency", type=int, default=3)
    a = ap.parse_args()
    C.require_root()
    C.exit_on_sigterm()
    work = Path(a.work)
    work.mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = {"machine": C.machine_info(work), "args": vars(a), "images": {}}
    with C.LocalRegistry(work / "reg") as reg:
        reg.load(CORPUS, a.images)
        fs_ctx = C.loop_ext4(a.loop_ext4, work) if a.loop_ext4 else _plain_dir(work / "fs")
        with fs_ctx as fs, C.ContainerdPeer(fs / "peer") as peer:
            for image in a.images:
                ref = reg.ref(image)
                runs: dict[str, list[float]] = {"ocistore": [], "ocistore_nostore": [], "ctr": []}
                size = 0
                ocistore_fetch(ref, None, a.concurrency)  # warm the registry's page cache
                for i in range(a.repeat):
                    order = ["ocistore", "ctr"] if i % 2 == 0 else ["ctr", "ocistore"]
                    for who in order:
                        if who == "ctr":
                            runs["ctr"].append(ctr_fetch(peer, ref, a.settle))
                            continue
                        root = fs / "ocistore-root"
                        shutil.rmtree(root, ignore_errors=True)
                        C.settle(a.settle)
                        dt, size = ocistore_fetch(ref, root, a.concurrency)
                        runs["ocistore"].append(dt)
                        shutil.rmtree(root, ignore_errors=True)
                    C.settle(a.settle)
                    runs["ocistore_nostore"].append(ocistore_fetch(ref, None, a.concurrency)[0])
                results["images"][image] = {"bytes": size, **{k: C.summarize(v) for k, v in runs.items()}}
                C.log(f"{image}: {json.dumps({k: C.median(v) for k, v in runs.items()})}")
    md = _markdown(results, a)
    C.write_results(a.out, "fetch", results, md)
    print(md)


class _plain_dir:  # a stand-in for loop_ext4's context manager
    def __init__(self, path: Path) -> None:
        self.path = path

    def __enter__(self) -> Path:
        self.path.mkdir(parents=True, exist_ok=True)
        return self.path

    def __exit__(self, *exc: object) -> None:
        shutil.rmtree(self.path, ignore_errors=True)


def _markdown(results: dict[str, Any], a: argparse.Namespace) -> str:
    rows = []
    for image, r in results["images"].items():
        mb = r["bytes"] / 1e6

        def rate(s: float | None, mb: float = mb) -> str:
            return f"{mb / s:.0f}" if s else ""

        o, n, c = r["ocistore"]["median"], r["ocistore_nostore"]["median"], r["ctr"]["median"]
        rows.append(
            [image, f"{mb:.1f}", C.fmt_s(o), rate(o), C.fmt_s(n), rate(n), C.fmt_s(c), rate(c), C.fmt_ratio(o, c)]
        )
    table = C.markdown_table(
        ["image", "MB", "ocistore s", "MB/s", "no-store s", "MB/s", "ctr content fetch s", "MB/s", "ocistore/ctr"],
        rows,
        "lrrrrrrrr",
    )
    m = results["machine"]
    return (
        f"{table}\n\nMedian of {a.repeat}; loop ext4 {a.loop_ext4} GB; concurrency {a.concurrency}; "
        f"{m.get('cpus')} CPUs ({m.get('cpu', '?')}), kernel {m.get('kernel')}, containerd "
        f"{m.get('containerd', '?')}, Python {m.get('python')}.\n"
    )


if __name__ == "__main__":
    main()
