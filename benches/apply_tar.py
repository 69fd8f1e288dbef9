#!/usr/bin/env python3
"""Layer apply vs GNU tar, alone: the zstd and gzip rows of ``pipeline.py`` (issue 14).

Usage (as root, from the project root; wrap it in ``flock /tmp/bench.lock``):

    python benches/apply_tar.py [--repeat 5] [--corpus DIR] [--work DIR]

Per repetition and per layer (debian:zstd, debian:gzip): ``apply_layer`` in a fresh child
process (timed after its imports, as ``pipeline.py`` does) and the tool (``zstd -dc | tar -x``
or ``tar -xzf``), each on its own freshly made loop-mounted ext4, the order alternating
between repetitions. Before each timed step: sync, writeback drained, settle. Prints the
median, min and max of each time and of the per-repetition ratio apply / tool.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import common as C  # noqa: E402
import pipeline as P  # noqa: E402

TOOLS = {"zstd": "zstd -dc {b} | tar -x -C {d}", "gzip": "tar -xzf {b} -C {d}"}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--corpus", default=str(C.FIXTURES_DIR / "corpus"))
    ap.add_argument("--work", default="/var/tmp/ocistore-bench-apply")
    ap.add_argument("--settle", type=float, default=0.5)
    ap.add_argument("--images", default="debian:zstd,debian:gzip")
    a = ap.parse_args()
    C.require_root()
    work = Path(a.work)
    corpus = Path(a.corpus)
    runs: dict[str, list[float]] = {}
    for rep in range(a.repeat):
        for image in a.images.split(","):
            layer = P.layer_of(corpus, image)
            path = P.blob(corpus, layer["digest"])
            tag = image.split(":")[1]
            res: dict[str, float] = {}
            for side in ((0, 1) if rep % 2 else (1, 0)):
                with C.loop_ext4(1, work, f"{tag}{side}") as fs:
                    dest = fs / "d"
                    dest.mkdir()
                    C.settle(a.settle)
                    if side == 0:
                        r = C.run_child([sys.executable, "-c", P.APPLY, str(dest), str(path), layer["mediaType"]],
                                        env=P.env_for(work), timeout=600)
                        res["apply"] = r.json()["s"]
                    else:
                        res["tool"] = P.timed_shell(TOOLS[tag].format(b=path, d=dest))
            for key, value in (*res.items(), ("ratio", res["apply"] / res["tool"])):
                runs.setdefault(f"{tag} {key}", []).append(value)
            C.log(f"rep {rep} {image}: apply {res['apply']:.3f} s, tool {res['tool']:.3f} s")
    summary: dict[str, Any] = {}
    for key, xs in runs.items():
        summary[key] = {"median": statistics.median(xs), "min": min(xs), "max": max(xs), "runs": xs}
        print(f"{key:12s} median {statistics.median(xs):.3f}  min {min(xs):.3f}  max {max(xs):.3f}")
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
