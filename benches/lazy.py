#!/usr/bin/env python3
"""HelloBench-style lazy pulling benchmark: bytes downloaded and time until a start's files are readable.

Usage (as root, from the project root):

    python benches/lazy.py [--images debian:gzip app:layers ml:big] [--repeat 3]
                           [--big-layout DIR] [--work /var/tmp/ocistore-bench-lazy]
                           [--out benches/out] [--level 6] [--lazy-fetch]

A real registry (the fixture kit's ``registry`` script, plain HTTP on 127.0.0.1) is started.
Each image (``ml:big`` from ``--big-layout``, a layout made by ``build-images --big``) is
converted to eStargz once, with its start workload as ``prioritized_files``, and pushed.
The workload is the list of files a start opens, derived with strace by
``benches/lazy_workloads.py`` and committed in ``benches/lazy_workloads/`` (``app:layers``:
``python3 -c pass``; ``ml:big``: ``import torch``; ``debian:gzip``: ``sh -c true``).

Then, for each image and repetition, from a fresh store root every time, in this process:

* ``pull``: ``store.pull`` -> ``containers.create`` -> mount -> read every workload file;
* ``fetch + lazy unpack``: ``store.fetch`` -> ``containers.create`` (unpacks) -> mount -> read;
* ``lazy fetch + on-demand reads``: fetch, then ``store.read_file`` of every workload file;
* ``lazy fetch + prefetch landmark``: fetch, then ``containers.create(lazy=True)`` (FUSE
  rootfs; the prioritized files are read before it returns) -> mount -> read through it.

The last two modes need ``store.fetch(ref, lazy=True)`` to fetch only footers, TOCs and
chunks. Until it exists (``--lazy-fetch`` says whether it does; without it, or when
``fetch`` has no ``lazy`` parameter, the mode reports "not available"), they run on the
local source: the blobs are fetched whole *before* the clock starts, and "bytes
downloaded" is computed from the TOCs as what a range-fetching source transfers: manifest,
config, each layer's TOC member and footer, the prefetch range ``[0, landmark)`` of each
layer (prefetch mode), and the compressed span of every chunk read (from its gzip member's
offset to the next member). Times then include no network transfer for those modes.
Results: medians with min-max, written to OUT/lazy.json and OUT/lazy.md and printed.
"""

from __future__ import annotations

import argparse
import bisect
import inspect
import json
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

import common as C  # noqa: E402

from ocistore import Store  # noqa: E402
from ocistore import estargz as esgz  # noqa: E402
from ocistore.mount import mount, unmount  # noqa: E402
from ocistore.transfer import lazyread  # noqa: E402

MODES = ["pull", "fetch + lazy unpack", "lazy fetch + on-demand reads", "lazy fetch + prefetch landmark"]


def workload(tag: str) -> list[str]:
    return (HERE / "lazy_workloads" / f"{tag.replace(':', '-')}.txt").read_text().split()


def has_lazy_fetch() -> bool:
    return "lazy" in inspect.signature(Store.fetch).parameters


# -- setup: convert and push ---------------------------------------------------------------------


def prepare(reg: C.LocalRegistry, work: Path, layout: str, tag: str, level: int) -> tuple[str, int]:
    """Convert ``tag`` of ``layout`` to eStargz (prioritized: its workload), push it; (ref, image bytes)."""
    root = work / f"setup-{tag.replace(':', '-')}"
    shutil.rmtree(root, ignore_errors=True)
    with Store(root, plain_http=True) as store:
        store.import_archive(layout, fetch_only=True)
        t = time.monotonic()
        image = store.convert(f"docker.io/library/{tag}", dst=f"lazy/{tag.replace(':', '-')}:esgz",
                              prioritized_files=workload(tag), compression_level=level)
        C.log(f"{tag}: converted in {time.monotonic() - t:.1f} s")
        ref = reg.ref(f"lazy/{tag.replace(':', '-')}:esgz")
        store.push(image.name, ref)
        size = store.image_size(image.name)
    shutil.rmtree(root, ignore_errors=True)
    return ref, size


# -- bytes a range-fetching source would transfer -----------------------------------------------------


class RangeBytes:
    """Per layer: TOC member + footer, and the compressed span of each chunk (to the next member)."""

    def __init__(self, store: Store, image: lazyread.LazyImage, parts_sizes: int) -> None:
        self.total = parts_sizes  # manifest + config
        self._layers = []
        for source in image.sources:
            desc = store.content.info(source.layer_digest)
            with store.content.open(source.layer_digest) as f:
                tb = esgz.read_toc_blob(f, desc.size)
            toc = source.toc()
            offsets = sorted({c.offset for _e, cs in toc.files() for c in cs} | {tb.toc_offset})
            landmark = next((e.offset for e in toc.entries if e.name == esgz.PREFETCH_LANDMARK), 0)
            self._layers.append((offsets, landmark))
            self.total += desc.size - tb.toc_offset
        self._seen: set[tuple[int, int]] = set()

    def prefetch(self) -> None:
        for index, (_offsets, landmark) in enumerate(self._layers):
            self.total += landmark
            self._seen.add((index, -1))

    def chunk(self, layer: int, offset: int) -> None:
        offsets, landmark = self._layers[layer]
        if (layer, offset) in self._seen or ((layer, -1) in self._seen and offset < landmark):
            return
        self._seen.add((layer, offset))
        nxt = offsets[bisect.bisect_right(offsets, offset)]
        self.total += nxt - offset


def manifest_bytes(store: Store, name: str) -> int:
    img = store.images.get(name)
    manifest = json.loads(store.content.read(img.target.digest))
    return img.target.size + manifest["config"]["size"]


# -- one run --------------------------------------------------------------------------------------------


def read_tree(root: Path, files: list[str]) -> int:
    n = 0
    for f in files:
        with open(root / f, "rb") as fh:
            n += len(fh.read())
    return n


def run_mode(mode: str, ref: str, image_bytes: int, files: list[str], work: Path, lazy_fetch: bool) -> dict[str, Any]:
    root = work / "run"
    mnt = work / "mnt"
    shutil.rmtree(root, ignore_errors=True)
    mnt.mkdir(exist_ok=True)
    store = Store(root, plain_http=True)
    out: dict[str, Any] = {}
    try:
        if mode in ("pull", "fetch + lazy unpack"):
            C.settle(0.5, False)
            t = time.monotonic()
            img = store.pull(ref) if mode == "pull" else store.fetch(ref)
            c = store.containers.create("c", img.name)
            mount(c.mounts, mnt)
            try:
                read_tree(mnt, files)
                out["seconds"] = time.monotonic() - t
            finally:
                unmount(mnt)
            out["bytes"] = image_bytes
            out["source"] = "registry (measured: whole image)"
            return out
        real = lazy_fetch and has_lazy_fetch()
        if lazy_fetch and not real:
            return {"available": False}
        img = None if real else store.fetch(ref)  # the local source: blobs fetched before the clock starts
        C.settle(0.5, False)
        t = time.monotonic()
        if real:
            img = store.fetch(ref, lazy=True)  # type: ignore[call-arg]
        assert img is not None
        if mode == "lazy fetch + on-demand reads":
            for f in files:
                store.read_file(img.name, f)
            out["seconds"] = time.monotonic() - t
        else:
            c = store.containers.create("c", img.name, lazy=True)
            mount(c.mounts, mnt)
            try:
                read_tree(mnt, files)
                out["seconds"] = time.monotonic() - t
            finally:
                unmount(mnt)
                store.containers.delete("c")
        if real:
            out["bytes"] = C.du_bytes(root / "content", apparent=True)
            out["source"] = "registry (content store bytes after the workload)"
        else:
            image = lazyread.lazy_image(store._ops, img.name)
            try:
                counter = RangeBytes(store, image, manifest_bytes(store, img.name))
                if mode == "lazy fetch + prefetch landmark":
                    counter.prefetch()
                for f in files:
                    node = image.file_node(f)
                    for chunk in node.chunks:
                        counter.chunk(node.layer, chunk.offset)
            finally:
                image.close()
            out["bytes"] = counter.total
            out["source"] = "local source (bytes computed from the TOC; no transfer in the time)"
        return out
    finally:
        for cont in store.containers.list():
            store.containers.delete(cont.id)
        store.close()
        shutil.rmtree(root, ignore_errors=True)


# -- report --------------------------------------------------------------------------------------------


def report(results: dict[str, Any]) -> str:
    md = [f"Machine: {C.machine_info()}", ""]
    for tag, r in results.items():
        md.append(f"**{tag}** (eStargz image {C.fmt_mb(r['image_bytes'])} MB compressed, workload "
                  f"{r['files']} files, {C.fmt_mb(r['workload_bytes'])} MB)")
        md.append("")
        rows = []
        pull = C.median(r["modes"]["pull"]["seconds"]) if r["modes"]["pull"].get("seconds") else None
        for mode in MODES:
            m = r["modes"][mode]
            if not m.get("seconds"):
                rows.append([mode, "not available", "", "", "", ""])
                continue
            secs = m["seconds"]
            med = C.median(secs)
            rows.append([mode, C.fmt_mb(m["bytes"]), f"{100 * m['bytes'] / r['image_bytes']:.1f}%",
                         f"{med:.2f} ({min(secs):.2f}-{max(secs):.2f})",
                         f"{med / pull:.2f}" if pull else "", m["source"]])
        md.append(C.markdown_table(["mode", "MB downloaded", "of image", "s until readable, median (min-max)",
                                    "x pull", "bytes from"], rows, "lrrrrl"))
        md.append("")
    return "\n".join(md)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", nargs="+", default=["debian:gzip", "app:layers", "ml:big"])
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--corpus", default=str(C.FIXTURES_DIR / "corpus"))
    ap.add_argument("--big-layout", default=os.environ.get("OCISTORE_FIXTURES") or "/var/tmp/obench/images")
    ap.add_argument("--work", default="/var/tmp/ocistore-bench-lazy")
    ap.add_argument("--level", type=int, default=6, help="gzip level of the conversion (9 is convert's default)")
    ap.add_argument("--out", default=str(HERE / "out"))
    ap.add_argument("--lazy-fetch", action="store_true",
                    help="use store.fetch(ref, lazy=True) for the lazy modes (not available before it exists)")
    a = ap.parse_args()
    C.require_root()
    C.exit_on_sigterm()
    work = Path(a.work)
    work.mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = {}
    with C.LocalRegistry(work / "reg") as reg:
        for tag in a.images:
            layout = a.big_layout if tag == "ml:big" else a.corpus
            if not (Path(layout) / "index.json").exists():
                C.log(f"{tag}: no layout at {layout}; skipped")
                continue
            ref, size = prepare(reg, work, layout, tag, a.level)
            files = workload(tag)
            r: dict[str, Any] = {"ref": ref, "image_bytes": size, "files": len(files),
                                 "modes": {m: {"seconds": []} for m in MODES}}
            for i in range(a.repeat):
                for mode in MODES:
                    res = run_mode(mode, ref, size, files, work, a.lazy_fetch)
                    if res.get("available") is False:
                        r["modes"][mode] = {"available": False}
                        continue
                    r["modes"][mode]["seconds"].append(res["seconds"])
                    r["modes"][mode].update(bytes=res["bytes"], source=res["source"])
                    C.log(f"{tag} #{i} {mode}: {res['seconds']:.2f} s, {res['bytes'] / 1e6:.1f} MB")
            with Store(work / "sizes", plain_http=True) as store:
                img = store.fetch(ref)
                r["workload_bytes"] = sum(len(store.read_file(img.name, f)) for f in files)
            shutil.rmtree(work / "sizes", ignore_errors=True)
            results[tag] = r
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "lazy.json").write_text(json.dumps(results, indent=1))
    text = report(results)
    (out / "lazy.md").write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
