"""Eviction under a snapshot budget: what re-unpacking an evicted image costs.

    python benches/evict.py [--repeat 3] [--snapshotter overlayfs] [--corpus DIR] [--no-loop]

On one freshly made loop-mounted ext4 (``--no-loop``: a temp dir), import the fixture corpus
fetch-only, then per image and repetition, from a fresh store each time:

* **first create**: ``containers.create`` of a fetched image (lazy unpack of every layer);
* **warm create**: a second container while the image is unpacked;
* **after evict**: delete the containers, ``store.evict(0)``, create again (only the layers
  eviction removed are applied again: for ``app:layers`` with ``debian:gzip`` kept unpacked
  under a container, the four upper layers).

Prints a markdown table of medians (seconds) and the bytes eviction freed.
"""

from __future__ import annotations

import argparse
import contextlib
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import common as C

from ocistore import Store

CASES = [
    ("debian:gzip", None),
    ("debian:zstd", None),
    ("app:layers", None),
    ("app:layers", "debian:gzip"),  # the base stays unpacked under a container: partial re-unpack
]


@contextlib.contextmanager
def workdir(use_loop: bool) -> Iterator[Path]:
    base = Path(tempfile.mkdtemp(prefix="evict-bench-"))
    try:
        if use_loop:
            with C.loop_ext4(4, base) as fs:
                yield fs
        else:
            yield base
    finally:
        shutil.rmtree(base, ignore_errors=True)


def one_run(fs: Path, corpus: Path, image: str, keep: str | None, snapshotter: str) -> dict[str, float]:
    root = fs / "root"
    shutil.rmtree(root, ignore_errors=True)
    with Store(root) as s:
        s.import_archive(corpus, fetch_only=True)
        name = next(i.name for i in s.images.list() if i.name.endswith("/" + image) or i.name == image)
        if keep:
            kname = next(i.name for i in s.images.list() if i.name.endswith("/" + keep))
            s.containers.create("keeper", kname, snapshotter=snapshotter)
        C.settle(0.5)
        with C.Timer() as first:
            s.containers.create("c1", name, snapshotter=snapshotter)
        with C.Timer() as warm:
            s.containers.create("c2", name, snapshotter=snapshotter)
        s.containers.delete("c1")
        s.containers.delete("c2")
        before = s.unpacked_bytes()
        with C.Timer() as ev:
            gone = s.evict(0)
        freed = before - s.unpacked_bytes()
        C.settle(0.5)
        with C.Timer() as again:
            s.containers.create("c3", name, snapshotter=snapshotter)
    return {"first": first.s, "warm": warm.s, "evict": ev.s, "again": again.s, "layers": len(gone), "freed": freed}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--snapshotter", default="overlayfs")
    ap.add_argument("--corpus", default=str(C.FIXTURES_DIR / "corpus"))
    ap.add_argument("--no-loop", action="store_true", help="use a temp dir instead of a fresh ext4")
    a = ap.parse_args()
    C.exit_on_sigterm()
    rows = []
    with workdir(not a.no_loop) as fs:
        for image, keep in CASES:
            runs = [one_run(fs, Path(a.corpus), image, keep, a.snapshotter) for _ in range(a.repeat)]
            med = {k: C.median(r[k] for r in runs) or 0.0 for k in runs[0]}
            label = image + (f" (with {keep} kept)" if keep else "")
            rows.append([label, f"{med['first']:.2f}", f"{med['warm'] * 1000:.0f} ms", f"{med['evict'] * 1000:.0f} ms",
                         f"{int(med['layers'])}", C.fmt_mb(int(med["freed"])), f"{med['again']:.2f}",
                         f"{med['again'] / med['first']:.2f}"])
            C.log(f"{label}: {runs}")
    print(C.markdown_table(
        ["image", "first create (s)", "warm create", "evict(0)", "layers evicted", "freed (MB)",
         "create after evict (s)", "after / first"], rows, "lrrrrrrr"))


if __name__ == "__main__":
    main()
