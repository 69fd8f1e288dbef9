#!/usr/bin/env python3
"""HelloBench-style lazy pulling benchmark: bytes downloaded and time until a start's reads are done.

Usage (as root, from the project root):

    python benches/lazy.py [--images debian:gzip app:layers ml:big] [--repeat 3]
                           [--big-layout DIR] [--work /var/tmp/ocistore-bench-lazy] [--port 5072]
                           [--out benches/out] [--level 6] [--chunk-kib 4096]
                           [--modes ...] [--import-torch] [--loop-ext4 4]
                           [--profile recorded|ranges]

A real registry (the fixture kit's ``registry`` script, plain HTTP on 127.0.0.1) is started.
Each image (``ml:big`` from ``--big-layout``, a layout made by ``build-images --big``) is
converted to eStargz once (gzip ``--level``, chunks of ``--chunk-kib``), with the files its
start reads in full as ``prioritized_files`` (not those it reads a part of, such as the shared
libraries the loader maps), and pushed. The workloads are derived by
``benches/lazy_workloads.py`` and committed in ``benches/lazy_workloads/`` (``app:layers``:
``python3 -c pass``; ``ml:big``: ``import torch``; ``debian:gzip``: ``sh -c true``):
``<tag>.txt`` lists the files the start opens (strace), ``<tag>.ranges.json`` the byte
ranges of them it read (the pages resident after a start from a dropped page cache).
The workload replayed is those ranges: for each file, open, and for each range seek + read.

Then, for each image and repetition, from a fresh store root every time, in this process:

* ``pull``: ``store.pull`` -> ``containers.create`` -> mount -> replay the ranges;
* ``fetch + lazy unpack``: ``store.fetch`` -> ``containers.create`` (unpacks) -> mount -> replay;
* ``lazy fetch + on-demand reads``: ``store.fetch(lazy=True)``, then replay through
  ``store.open_file`` (each range read fetches the chunks covering it);
* ``lazy fetch + on-demand reads, whole files`` (``--modes``): the same reading every opened
  file in full (the workload of the first run of this bench);
* ``lazy fetch + prefetch landmark``: fetch lazily, ``containers.create(lazy=True, fill=False)``
  (FUSE rootfs; the prioritized files are fetched before it returns; no background unpack)
  -> mount -> replay through it;
* ``lazy fetch + prefetch profile``: fetch lazily, ``store.prefetch(image, profile)`` (their chunks
  in a few multi-range requests), then replay through ``store.open_file``. The profile
  (``--profile recorded``, the default) is what ocistore records of the start, once per image
  before the runs: a lazy container's FUSE rootfs serves the replayed start and
  ``Container.read_profile`` returns the ranges the kernel asked for (readahead included);
  ``--profile ranges`` prefetches the workload's ranges themselves;
* ``lazy fetch + prefetch profile + FUSE``: ``containers.create(lazy=True, fill=False,
  prefetch=profile)`` (the same prefetch, while the FUSE helper starts) -> mount -> replay through
  the FUSE rootfs.

Each run's store root is on a fresh loop-mounted ext4 of ``--loop-ext4`` GB (0: under ``--work``).

``--import-torch`` (ml:big) adds two real starts, timed from the fetch to the end of a
``python3.11 -c "import torch"`` child (the host's interpreter, ``sys.path`` pointing at the
rootfs's site-packages; torch's pure-Python dependencies from the host): ``pull + import torch``
(pull, create, mount) and ``lazy fetch + FUSE + import torch`` (lazy fetch, ``create(lazy=True,
fill=False)``, mount).

Bytes downloaded: what the registry sent during the mode's window, summed from its access log
(the response sizes of every request: manifests, configs, blobs, ranges; no HTTP headers).
Results: medians with min-max, written to OUT/lazy.json and OUT/lazy.md and printed.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

import common as C  # noqa: E402

from ocistore import Store  # noqa: E402
from ocistore.mount import mount, unmount  # noqa: E402

PULL, UNPACK, ONDEMAND, WHOLE, LANDMARK, PROFILE, PROFILE_FUSE = (
    "pull", "fetch + lazy unpack", "lazy fetch + on-demand reads", "lazy fetch + on-demand reads, whole files",
    "lazy fetch + prefetch landmark", "lazy fetch + prefetch profile", "lazy fetch + prefetch profile + FUSE")
MODES = [PULL, UNPACK, ONDEMAND, LANDMARK, PROFILE, PROFILE_FUSE]
IMPORT_PULL, IMPORT_LAZY = "pull + import torch", "lazy fetch + FUSE + import torch"
ALL_MODES = [PULL, UNPACK, ONDEMAND, WHOLE, LANDMARK, PROFILE, PROFILE_FUSE, IMPORT_PULL, IMPORT_LAZY]
SITE = "opt/venv/lib/python3.11/site-packages"
PYTHON = "python3.11"

Ranges = dict[str, list[tuple[int, int]]]


def workload(tag: str) -> list[str]:
    """The files the start opens (convert's prioritized files)."""
    return (HERE / "lazy_workloads" / f"{tag.replace(':', '-')}.txt").read_text().split()


def prioritized(tag: str) -> list[str]:
    """The files the start reads in full, in the order it opens them: the conversion's
    ``prioritized_files`` (before the landmark, fetched in one request by a lazy create). A
    file it reads a part of (a shared library the loader maps) is left to on-demand reads."""
    doc = json.loads((HERE / "lazy_workloads" / f"{tag.replace(':', '-')}.ranges.json").read_text())
    files = doc["files"]
    return [f for f in workload(tag) if f in files and files[f]["size"] > 0
            and files[f]["ranges"] == [[0, files[f]["size"]]]]


def workload_ranges(tag: str) -> Ranges:
    """The byte ranges of them the start read."""
    doc = json.loads((HERE / "lazy_workloads" / f"{tag.replace(':', '-')}.ranges.json").read_text())
    return {f: [(int(a), int(b)) for a, b in v["ranges"]] for f, v in doc["files"].items()}


def replay(opener: Callable[[str], IO[bytes]], ranges: Ranges) -> int:
    """Open every file and read its ranges (seek + read); the bytes read."""
    n = 0
    for f, rs in ranges.items():
        with opener(f) as fh:
            for start, end in rs:
                fh.seek(start)
                n += len(fh.read(end - start))
    return n


class RegistryLog:
    """Bytes the registry sent, from its access log: ``mark()`` then ``since()``."""

    _LINE = re.compile(r'"(?:GET|HEAD) \S+ HTTP/[\d.]+" (\d{3}) (\d+|-)')

    def __init__(self, path: Path) -> None:
        self.path = path
        self._at = 0

    def mark(self) -> None:
        self._at = self.path.stat().st_size

    def since(self) -> tuple[int, int]:
        """(bytes, requests) logged since the mark (after a short wait: a line is written when its
        response is done)."""
        time.sleep(0.3)
        with open(self.path, "rb") as f:
            f.seek(self._at)
            text = f.read().decode(errors="replace")
        total = requests = 0
        for m in self._LINE.finditer(text):
            requests += 1
            total += int(m.group(2)) if m.group(2) != "-" else 0
        return total, requests


# -- setup: convert and push ---------------------------------------------------------------------


def prepare(reg: C.LocalRegistry, work: Path, layout: str, tag: str, level: int, chunk: int) -> tuple[str, int]:
    """Convert ``tag`` of ``layout`` to eStargz (prioritized: its workload), push it; (ref, image bytes)."""
    dst = f"lazy/{tag.replace(':', '-')}:esgz-{chunk >> 10}k-l{level}-p"
    marker = reg.dir / f"pushed-{dst.replace('/', '-').replace(':', '-')}.json"
    if marker.exists():  # converted and pushed by an earlier run into the same registry dir
        done = json.loads(marker.read_text())
        return reg.ref(dst), int(done["size"])
    root = work / f"setup-{tag.replace(':', '-')}"
    shutil.rmtree(root, ignore_errors=True)
    with Store(root, plain_http=True) as store:
        store.import_archive(layout, fetch_only=True)
        t = time.monotonic()
        image = store.convert(f"docker.io/library/{tag}", dst=dst, prioritized_files=prioritized(tag),
                              compression_level=level, chunk_size=chunk)
        C.log(f"{tag}: converted in {time.monotonic() - t:.1f} s (chunks of {chunk >> 10} KiB)")
        ref = reg.ref(dst)
        store.push(image.name, ref)
        size = store.image_size(image.name)
    shutil.rmtree(root, ignore_errors=True)
    marker.write_text(json.dumps({"ref": ref, "size": size}))
    return ref, size


# -- one run --------------------------------------------------------------------------------------------


def import_torch(root: Path) -> None:
    """``import torch`` in a fresh host interpreter, from ``root``'s site-packages."""
    code = f"import sys; sys.path.insert(0, {str(root / SITE)!r}); import torch"
    subprocess.run([PYTHON, "-c", code], check=True, stdout=subprocess.DEVNULL)


def record_profile(ref: str, ranges: Ranges, work: Path) -> Ranges:
    """The profile ocistore records of the start: a lazy container (no fill) of a lazy fetch,
    the start's reads replayed through its FUSE rootfs, then ``Container.read_profile`` (the
    ranges the kernel asked the rootfs for, readahead included). Not timed."""
    root, mnt = work / "record", work / "mnt"
    shutil.rmtree(root, ignore_errors=True)
    mnt.mkdir(exist_ok=True)
    with Store(root, plain_http=True) as store:
        img = store.fetch(ref, lazy=True)
        c = store.containers.create("rec", img.name, lazy=True, fill=False)
        try:
            mount(c.mounts, mnt)
            try:
                replay(lambda f: open(mnt / f, "rb"), ranges)  # noqa: SIM115 (replay closes it)
                profile = c.read_profile()
            finally:
                unmount(mnt)
        finally:
            store.containers.delete("rec")
    shutil.rmtree(root, ignore_errors=True)
    return profile


def run_mode(mode: str, ref: str, ranges: Ranges, work: Path, reglog: RegistryLog, loop_gb: float,
             profile: Ranges | None = None) -> dict[str, Any]:
    """One run of ``mode`` from a fresh store root: on a fresh loop-mounted ext4 of ``loop_gb`` GB
    (the root disk here is slow and erratic at creating files), or under ``work`` when 0.
    ``profile``: what the prefetch-profile modes prefetch (default: ``ranges``)."""
    if not loop_gb:
        root = work / "run"
        shutil.rmtree(root, ignore_errors=True)
        return _run_mode(mode, ref, ranges, root, work, reglog, profile)
    with C.loop_ext4(loop_gb, work, "fs") as fs:
        return _run_mode(mode, ref, ranges, fs / "root", work, reglog, profile)


def _run_mode(mode: str, ref: str, ranges: Ranges, root: Path, work: Path, reglog: RegistryLog,
              profile: Ranges | None = None) -> dict[str, Any]:
    mnt = work / "mnt"
    mnt.mkdir(exist_ok=True)
    store = Store(root, plain_http=True)
    out: dict[str, Any] = {}
    try:
        C.settle(0.5, False)
        reglog.mark()
        t = time.monotonic()
        if mode in (PULL, UNPACK, IMPORT_PULL):
            img = store.pull(ref) if mode != UNPACK else store.fetch(ref)
            c = store.containers.create("c", img.name)
        else:
            img = store.fetch(ref, lazy=True)
            c = None
            wanted = ranges if profile is None else profile  # the start's recorded reads
            if mode == PROFILE:
                store.prefetch(img.name, wanted)
            if mode == PROFILE_FUSE:  # prefetched while the FUSE helper starts
                c = store.containers.create("c", img.name, lazy=True, fill=False, prefetch=wanted)
            if mode in (LANDMARK, IMPORT_LAZY):
                c = store.containers.create("c", img.name, lazy=True, fill=False)
        if c is None:
            if mode == WHOLE:
                for f in ranges:
                    store.read_file(img.name, f)
            else:
                replay(lambda f: store.open_file(img.name, f), ranges)
            out["seconds"] = time.monotonic() - t
        else:
            mount(c.mounts, mnt)
            try:
                if mode in (IMPORT_PULL, IMPORT_LAZY):
                    import_torch(mnt)
                else:
                    replay(lambda f: open(mnt / f, "rb"), ranges)  # noqa: SIM115 (replay closes it)
                out["seconds"] = time.monotonic() - t
            finally:
                unmount(mnt)
        out["bytes"], out["requests"] = reglog.since()
        return out
    finally:
        for cont in store.containers.list():
            store.containers.delete(cont.id)
        store.close()
        shutil.rmtree(root, ignore_errors=True)


# -- report --------------------------------------------------------------------------------------------


def report(results: dict[str, Any], machine: dict[str, Any]) -> str:
    md = [f"Machine: {machine}", ""]
    for tag, r in results.items():
        md.append(f"**{tag}** (eStargz image {C.fmt_mb(r['image_bytes'])} MB compressed, chunks of "
                  f"{r['chunk_kib']} KiB; workload: {r['files']} files of {C.fmt_mb(r['file_bytes'])} MB, "
                  f"of which the start reads {C.fmt_mb(r['range_bytes'])} MB in {r['ranges']} ranges)")
        md.append("")
        rows = []
        for mode, m in r["modes"].items():
            base = r["modes"].get(IMPORT_PULL if "import" in mode else PULL, {})
            pull = C.median(base["seconds"]) if base.get("seconds") else None
            secs = m["seconds"]
            med = C.median(secs)
            mb = C.median(m["bytes"])
            assert med is not None and mb is not None
            rows.append([mode, f"{mb / 1e6:.1f} ({min(m['bytes']) / 1e6:.1f}-{max(m['bytes']) / 1e6:.1f})",
                         f"{100 * mb / r['image_bytes']:.1f}%", str(round(C.median(m["requests"]) or 0)),
                         f"{med:.2f} ({min(secs):.2f}-{max(secs):.2f})",
                         f"{med / pull:.2f}" if pull else ""])
        md.append(C.markdown_table(["mode", "MB downloaded, median (min-max)", "of image", "requests",
                                    "s until done, median (min-max)", "x pull"], rows, "lrrrrr"))
        md.append("")
    return "\n".join(md)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", nargs="+", default=["debian:gzip", "app:layers", "ml:big"])
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--corpus", default=str(C.FIXTURES_DIR / "corpus"))
    ap.add_argument("--big-layout", default=os.environ.get("OCISTORE_FIXTURES") or "/var/tmp/obench/images")
    ap.add_argument("--work", default="/var/tmp/ocistore-bench-lazy")
    ap.add_argument("--port", type=int, default=None, help="the registry's port (default: a free one)")
    ap.add_argument("--level", type=int, default=6, help="gzip level of the conversion (9 is convert's default)")
    ap.add_argument("--chunk-kib", type=int, default=4096, help="eStargz chunk size of the conversion, KiB")
    ap.add_argument("--modes", nargs="+", default=MODES, choices=ALL_MODES)
    ap.add_argument("--import-torch", action="store_true", help="ml:big: also time real `import torch` starts")
    ap.add_argument("--profile", choices=("recorded", "ranges"), default="recorded",
                    help="what the prefetch-profile modes prefetch: the profile ocistore records of the start "
                         "through a lazy rootfs (Container.read_profile), or the workload's ranges themselves")
    ap.add_argument("--loop-ext4", type=float, default=4.0,
                    help="GB of the fresh loop-mounted ext4 each run's store root is made on (0: under --work)")
    ap.add_argument("--out", default=str(HERE / "out"))
    a = ap.parse_args()
    C.require_root()
    C.exit_on_sigterm()
    work = Path(a.work)
    work.mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = {"machine": C.machine_info(), "images": {}}
    with C.LocalRegistry(work / "reg", port=a.port) as reg:
        reglog = RegistryLog(reg.dir / "registry.log")
        for tag in a.images:
            layout = a.big_layout if tag == "ml:big" else a.corpus
            if not (Path(layout) / "index.json").exists():
                C.log(f"{tag}: no layout at {layout}; skipped")
                continue
            ref, size = prepare(reg, work, layout, tag, a.level, a.chunk_kib << 10)
            doc = json.loads((HERE / "lazy_workloads" / f"{tag.replace(':', '-')}.ranges.json").read_text())
            ranges = workload_ranges(tag)
            profile = None
            if a.profile == "recorded" and ({PROFILE, PROFILE_FUSE} & set(a.modes)):
                profile = record_profile(ref, ranges, work)
                C.log(f"{tag}: recorded profile: {len(profile)} files, "
                      f"{sum(e - s for rs in profile.values() for s, e in rs) / 1e6:.1f} MB of ranges")
            modes = list(a.modes) + ([IMPORT_PULL, IMPORT_LAZY] if a.import_torch and tag == "ml:big" else [])
            r: dict[str, Any] = {
                "ref": ref, "image_bytes": size, "chunk_kib": a.chunk_kib, "files": len(ranges),
                "file_bytes": doc["bytes_of_files"], "range_bytes": doc["bytes_resident"],
                "ranges": sum(len(v) for v in ranges.values()),
                "modes": {m: {"seconds": [], "bytes": [], "requests": []} for m in modes},
                "profile": a.profile if profile is not None or a.profile == "ranges" else None,
                "profile_bytes": None if profile is None else sum(e - s for rs in profile.values() for s, e in rs)}
            for i in range(a.repeat):
                for mode in modes:
                    res = run_mode(mode, ref, ranges, work, reglog, a.loop_ext4, profile)
                    for k in ("seconds", "bytes", "requests"):
                        r["modes"][mode][k].append(res[k])
                    C.log(f"{tag} #{i} {mode}: {res['seconds']:.2f} s, {res['bytes'] / 1e6:.1f} MB, "
                          f"{res['requests']} requests")
            results["images"][tag] = r
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    stem = f"lazy-{a.chunk_kib}k"
    (out / f"{stem}.json").write_text(json.dumps(results, indent=1))
    text = report(results["images"], results["machine"])
    (out / f"{stem}.md").write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
