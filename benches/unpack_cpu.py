#!/usr/bin/env python3
"""CPU and wall time of ``Store.unpack`` alone, for comparing two trees of ocistore.

    PYTHONPATH=<tree> python benches/unpack_cpu.py IMAGE LAYOUT [SNAPSHOTTER] [--work DIR]

Imports the OCI layout LAYOUT fetch-only into a fresh root under ``--work`` (use a tmpfs or a
fresh loop ext4), unpacks the image whose name ends with IMAGE, and prints
``<wall s> <CPU s>`` (CPU from getrusage, all threads). Alternate two trees in one loop to
compare them on a shared machine, e.g. ``skopeo copy oci:CORPUS:debian:zstd oci:/tmp/l:debian:zstd``
then run each tree 7 times in turn and take medians.
"""

from __future__ import annotations

import argparse
import resource
import shutil
import tempfile
import time
from pathlib import Path

from ocistore import Store


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("image")
    p.add_argument("layout")
    p.add_argument("snapshotter", nargs="?", default="overlayfs")
    p.add_argument("--work", default=None)
    a = p.parse_args()
    work = Path(tempfile.mkdtemp(dir=a.work))
    try:
        with Store(work / "root") as s:
            (img,) = [x for x in s.import_archive(a.layout, fetch_only=True) if x.name.endswith(a.image)]
            r0 = resource.getrusage(resource.RUSAGE_SELF)
            t0 = time.perf_counter()
            s.unpack(img.name, snapshotter=a.snapshotter)
            t1 = time.perf_counter()
            r1 = resource.getrusage(resource.RUSAGE_SELF)
            cpu = (r1.ru_utime + r1.ru_stime) - (r0.ru_utime + r0.ru_stime)
            print(f"{t1 - t0:.3f} {cpu:.3f}")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
