#!/usr/bin/env python3
"""Layer apply vs GNU tar, alone: the zstd and gzip rows of ``pipeline.py`` (issue 14).

Usage (as root, from the project root; wrap it in ``flock /tmp/bench.lock``):

    python benches/apply_tar.py [--repeat 5] [--corpus DIR] [--work DIR] [--baseline DIR]

Per repetition and per layer (debian:zstd, debian:gzip): ``apply_layer`` in a fresh child
process (timed after its imports, as ``pipeline.py`` does) and the tool (``zstd -dc | tar -x``
or ``tar -xzf``), each on its own freshly made loop-mounted ext4, the order rotating
between repetitions. ``--baseline`` names another checkout (e.g. ``git worktree add`` of
an older commit) whose ``apply_layer`` is timed in the same repetitions, for a before /
after on a noisy machine. Before each timed step: sync, writeback drained, settle. Prints
the median, min and max of each time and of the per-repetition ratio apply / tool.
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
    ap.add_argument("--baseline", help="another checkout whose apply_layer is timed alongside")
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
            sides = ["apply", "tool", *(["baseline"] if a.baseline else [])]
            shift = rep % len(sides)
            for side in sides[shift:] + sides[:shift]:
                with C.loop_ext4(1, work, f"{tag}-{side}") as fs:
                    dest = fs / "d"
                    dest.mkdir()
                    C.settle(a.settle)
                    if side == "tool":
                        res["tool"] = P.timed_shell(TOOLS[tag].format(b=path, d=dest))
                        continue
                    env = P.env_for(work)
                    if side == "baseline":
                        env["PYTHONPATH"] = str(Path(a.baseline).resolve())
                    r = C.run_child(P.apply_argv(dest, path, layer),
                                    env=env, timeout=600)
                    res[side] = r.json()["s"]
            res["ratio"] = res["apply"] / res["tool"]
            if a.baseline:
                res["baseline ratio"] = res["baseline"] / res["tool"]
            for key, value in res.items():
                runs.setdefault(f"{tag} {key}", []).append(value)
            C.log(f"rep {rep} {image}: " + ", ".join(f"{k} {v:.3f}" for k, v in res.items()))
    summary: dict[str, Any] = {}
    for key, xs in runs.items():
        summary[key] = {"median": statistics.median(xs), "min": min(xs), "max": max(xs), "runs": xs}
        print(f"{key:20s} median {statistics.median(xs):.3f}  min {min(xs):.3f}  max {max(xs):.3f}")
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
