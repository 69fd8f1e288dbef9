"""Inline file dedup: unpacked bytes and pull time on a node of images that share files.

    python benches/dedup.py [--layout DIR] [--repeat 3] [--size-gb 16] [--thresholds 16384]
                            [--no-containerd] [--work /tmp/ddb] [--out benches/results]

The node model (``benches/dedup_variants.py`` builds the variants offline from ``--layout``,
default the fixture corpus; a ``build-images --big`` layout adds ``ml:big``):
``debian:gzip``, ``app:layers``, ``variant:split`` (debian's layer cut in two),
``variant:swapped`` (the same two layers the other way round), ``variant:app`` (app:layers'
packages on the split base) and, with ml:big, ``ml:big`` and ``variant:ml`` (the torch layer
on the split base: ml:big under a second tag built from another base). Every image is pulled
from a local registry (CNCF distribution on 127.0.0.1), one after the other.

Sides, each on its own freshly made loop-mounted ext4, in a rotating order per repetition:
containerd 1.6 (``ctr images pull``, overlayfs), ocistore ``Store.pull`` without dedup, and
ocistore with ``dedup=True`` (once per ``--thresholds`` value). Measured: the wall time of
each pull (sync + writeback drained + 1 s before each), and after the last pull the
allocated bytes of the snapshot directories by one method for all sides, ``du -sB1``
(st_blocks, each hard-linked inode once).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import common as C

REPO = Path(__file__).resolve().parents[1]
NODE = ["debian:gzip", "app:layers", "variant:split", "variant:swapped", "variant:app"]
BIG = ["ml:big", "variant:ml"]


def child(a: argparse.Namespace) -> int:
    """Pull ``--refs`` into ``--root``; print per-pull seconds as JSON."""
    from ocistore import Store
    from ocistore.archive import _dedup

    if a.threshold:
        kw = _dedup.FileDeduper.__init__.__kwdefaults__
        assert kw is not None
        kw["threshold"] = a.threshold
    times = []
    with Store(a.root, dedup=a.dedup, plain_http=True) as s:
        for ref in a.refs.split(","):
            C.settle(1.0)
            t0 = time.perf_counter()
            s.pull(ref)
            times.append(time.perf_counter() - t0)
        saved = s.dedup_saved()
    print(json.dumps({"pulls": times, "dedup_saved": saved}))
    return 0


def ocistore_side(a: argparse.Namespace, fs: Path, refs: list[str], dedup: bool, threshold: int) -> dict[str, Any]:
    env = dict(os.environ)
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env["PYTHONPYCACHEPREFIX"] = str(Path(a.work).absolute() / "pycache")
    env["PYTHONPATH"] = str(REPO) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", "--root", str(fs / "o"),
           "--refs", ",".join(refs), "--threshold", str(threshold)] + (["--dedup"] if dedup else [])
    r = C.run_child(cmd, env=env, timeout=3600)
    out: dict[str, Any] = r.json()
    out["snapshots"] = C.du_bytes(fs / "o" / "snapshots")
    out["maxrss_kb"] = r.maxrss_kb
    return out


def containerd_side(fs: Path, refs: list[str]) -> dict[str, Any]:
    with C.ContainerdPeer(fs / "c") as peer:
        peer.fresh()
        times = []
        for ref in refs:
            C.settle(1.0)
            times.append(C.timed_cmd(peer.ctr("images", "pull", "--plain-http", ref)))
        disk = peer.disk()
    return {"pulls": times, "snapshots": disk["snapshots"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--root", help=argparse.SUPPRESS)
    ap.add_argument("--refs", help=argparse.SUPPRESS)
    ap.add_argument("--dedup", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--threshold", type=int, default=0, help=argparse.SUPPRESS)
    ap.add_argument("--layout", default=str(C.FIXTURES_DIR / "corpus"))
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--size-gb", type=float, default=16)
    ap.add_argument("--thresholds", default="16384", help="comma-separated dedup thresholds (bytes)")
    ap.add_argument("--no-containerd", action="store_true")
    ap.add_argument("--work", default="/tmp/ddb")
    ap.add_argument("--out", default=str(REPO / "benches" / "results"))
    a = ap.parse_args()
    if a.child:
        sys.exit(child(a))
    C.require_root()
    C.exit_on_sigterm()
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from dedup_variants import build_variants

    work = Path(a.work).absolute()
    work.mkdir(parents=True, exist_ok=True)
    C.log("building the variants")
    layout = work / "variants"
    names = build_variants(a.layout, layout)
    images = NODE + (BIG if "variant:ml" in names else [])
    thresholds = [int(t) for t in a.thresholds.split(",") if t]
    sides = ([] if a.no_containerd else ["containerd"]) + ["ocistore"] + [f"ocistore+dedup@{t}" for t in thresholds]
    raw: dict[str, list[dict[str, Any]]] = {s: [] for s in sides}
    command = "python benches/dedup.py " + " ".join(sys.argv[1:])
    with C.LocalRegistry(work / "reg") as reg:
        reg.load(layout, images)
        refs = [reg.ref(i) for i in images]
        for rep in range(a.repeat):
            order = sides[rep % len(sides):] + sides[:rep % len(sides)]
            for side in order:
                C.log(f"repetition {rep + 1}/{a.repeat}: {side}")
                with C.loop_ext4(a.size_gb, work, name="fs") as fs:
                    if side == "containerd":
                        raw[side].append(containerd_side(fs, refs))
                    else:
                        dedup = side.startswith("ocistore+dedup")
                        t = int(side.rpartition("@")[2]) if dedup else 0
                        raw[side].append(ocistore_side(a, fs, refs, dedup, t))
    results = {"command": command, "images": images, "raw": raw, "env": C.machine_info(work)}
    md = render(results)
    C.write_results(a.out, "dedup", results, md)
    print(md)


def render(results: dict[str, Any]) -> str:
    raw = results["raw"]
    base = raw["ocistore"]
    base_bytes = C.median([r["snapshots"] for r in base])
    base_time = C.median([sum(r["pulls"]) for r in base])
    rows = []
    for side, reps in raw.items():
        total = [sum(r["pulls"]) for r in reps]
        snaps = [r["snapshots"] for r in reps]
        b, t = C.median(snaps), C.median(total)
        rows.append([side, C.fmt_mb(b), f"{(1 - b / base_bytes) * 100:+.1f}%" if side != "ocistore" else "",
                     f"{C.fmt_s(t, 2)} ({C.fmt_s(min(total), 2)}-{C.fmt_s(max(total), 2)})",
                     f"{(t / base_time - 1) * 100:+.1f}%" if side != "ocistore" else ""])
    lines = [f"Node model: {', '.join(results['images'])} (pulled in that order).", "",
             C.markdown_table(["side", "snapshot MB (du -sB1)", "fewer than ocistore", "pull s, sum (min-max)",
                               "pull time vs ocistore"], rows, "lrrrr"), ""]
    per = []
    for i, img in enumerate(results["images"]):
        per.append([img] + [C.fmt_s(C.median([r["pulls"][i] for r in reps]), 2) for reps in raw.values()])
    lines += ["Median seconds per pull:", "", C.markdown_table(["image", *raw], per, "l" + "r" * len(raw)), "",
              f"`{results['command']}`; {len(base)} repetitions, medians."]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
