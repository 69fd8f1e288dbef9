#!/usr/bin/env python3
"""Pull pipeline and cold start: the figures of issue 14, in one run.

Usage (as root, from the project root):

    python benches/pipeline.py [--repeat 5] [--big-layout DIR] [--loop-ext4 6] [--work DIR]
                               [--create-runs 21] [--out benches/out] [--drop-caches]
                               [--only pull ctr apply create] [--baseline DIR]

A real registry (the fixture kit's CNCF distribution, plain HTTP on 127.0.0.1) is loaded
with ``ml:big`` (from ``--big-layout``, made by ``build-images --big``), ``debian:gzip`` and
``debian:zstd``. Each repetition makes a fresh loop-mounted ext4 for each side and times,
each step in its own fresh process (ocistore steps time the API call after the imports):

* ml:big: ocistore ``Store.pull``; ``ctr images pull`` (containerd 1.6, on its own fresh
  ext4); ocistore ``Store.fetch`` alone, then ``Store.unpack`` alone (the two halves of the
  pull, in sequence); the ratio pull / max(fetch, unpack) is computed per repetition;
* ``apply_layer`` of debian:zstd vs ``zstd -dc | tar -x``, of debian:gzip vs ``tar -xzf``
  (each from the page cache into an empty directory, child process wall time; called as
  ``Store.unpack`` calls it: diffID checked, the stored blob not hashed again);
* after the ml:big pull: a fresh-process ``ocistore containers create`` (``python -m
  ocistore.cli``), ``--create-runs`` times, with bytecode (``PYTHONPYCACHEPREFIX``, compiled
  once before) and without (``PYTHONDONTWRITEBYTECODE=1`` and no cache: every module is
  compiled each time), plus ``python -c pass`` as the interpreter's floor; and the in-process
  ``containers.create`` (median of 21 in one process).

``--only`` runs some of the parts (``create`` needs ``pull``). The pull and the fetch/unpack
sides run back to back, pull first in even repetitions and fetch/unpack first in odd ones.
``--baseline DIR`` (another checkout, e.g. an export of an older commit) times that tree's
pull, fetch and unpack in the same repetitions as a third side, the order rotating.
Before every timed step: ``sync`` and writeback drained (``--drop-caches``: and the page cache
dropped, for every side), 1 s settle. Peak RSS is the
child's ``ru_maxrss``. Every figure is the median of the repetitions with min, max and the
spread ((max - min) / median). The machine is shared: read the spread.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import common as C  # noqa: E402

REPO = HERE.parent

CHILD = r"""
import json, sys, time
import ocistore, ocistore.archive, ocistore.remotes, ocistore.snapshots, ocistore.transfer.pull
import ocistore.transfer.unpack, ocistore.transfer.containers
from ocistore import Store
scenario, root, ref = sys.argv[1:4]
store = Store(root, plain_http=True)
out = {}
t = time.perf_counter()
if scenario == "pull":
    store.pull(ref)
elif scenario == "fetch":
    store.fetch(ref)
elif scenario == "unpack":
    store.unpack(ref)
elif scenario == "create":
    times = []
    for i in range(21):
        t0 = time.perf_counter()
        store.containers.create(f"inproc-{i}", ref)
        times.append(time.perf_counter() - t0)
    out["creates"] = times
out["s"] = time.perf_counter() - t
store.close()
print(json.dumps(out))
"""

APPLY = r"""
import sys, time
from ocistore.archive import apply_layer
t = time.perf_counter()
with open(sys.argv[2], "rb") as f:
    # as Store.unpack applies a layer: the diffID computed and checked, the blob not hashed
    # a second time (the content store verified it when it was written)
    apply_layer(f, sys.argv[1], media_type=sys.argv[3], expected_diff_id=sys.argv[4], blob_digest=False)
print('{"s": %f}' % (time.perf_counter() - t))
"""


def apply_argv(dest: Path, blob_path: Path, layer: dict[str, Any]) -> list[str]:
    """The child process that times :data:`APPLY` of one corpus layer into ``dest``."""
    return [sys.executable, "-c", APPLY, str(dest), str(blob_path), layer["mediaType"], layer["diff_id"]]


def env_for(work: Path, bytecode: bool = True, tree: Path | None = None) -> dict[str, str]:
    env = dict(os.environ)
    tree = tree or REPO
    env["PYTHONPATH"] = str(tree) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    if bytecode:
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        env["PYTHONPYCACHEPREFIX"] = str(work / ("pycache" if tree == REPO else "pycache-baseline"))
    else:  # the standard library keeps its own __pycache__; ocistore (no __pycache__ here) is compiled
        env["PYTHONDONTWRITEBYTECODE"] = "1"
        env.pop("PYTHONPYCACHEPREFIX", None)
    return env


def child(work: Path, scenario: str, root: Path, ref: str, tree: Path | None = None) -> tuple[dict[str, Any], int]:
    r = C.run_child([sys.executable, "-c", CHILD, scenario, str(root), ref], env=env_for(work, tree=tree),
                    timeout=1800)
    out: dict[str, Any] = r.json()
    return out, r.maxrss_kb


def spread(xs: list[float]) -> dict[str, float | None]:
    xs = [x for x in xs if x is not None]
    if not xs:
        return {"median": None, "min": None, "max": None, "spread": None, "n": 0}
    med = statistics.median(xs)
    return {"median": med, "min": min(xs), "max": max(xs), "spread": (max(xs) - min(xs)) / med if med else None,
            "n": len(xs)}


def timed_shell(cmd: str) -> float:
    t = time.perf_counter()
    subprocess.run(["sh", "-c", cmd], check=True)
    return time.perf_counter() - t


def blob(layout: Path, digest: str) -> Path:
    return layout / "blobs" / "sha256" / digest.removeprefix("sha256:")


def layer_of(layout: Path, image: str) -> dict[str, Any]:
    import json

    corpus = json.loads((layout / "corpus.json").read_text())
    layers: list[dict[str, Any]] = corpus["images"][image]["layers"]
    return layers[0]


def one_repetition(a: argparse.Namespace, work: Path, reg: C.LocalRegistry, rep: int) -> dict[str, Any]:
    res: dict[str, Any] = {}
    big = reg.ref("ml:big")
    only = set(a.only)

    def pull_side() -> None:  # ocistore: pull, then creates (fresh process and in process), on a fresh ext4
        with C.loop_ext4(a.loop_ext4, work, f"o{rep}") as fs:
            C.settle(a.settle, a.drop_caches)
            out, rss = child(work, "pull", fs / "r", big)
            res["pull"], res["pull_rss_kb"] = out["s"], rss
            if "create" in only:
                C.settle(a.settle)
                res.update(cold_creates(a, work, fs / "r", big, rep))
                out, _ = child(work, "create", fs / "r", big)
                res["create_inproc"] = statistics.median(out["creates"])

    def split_side() -> None:  # ocistore: fetch alone, then unpack alone
        with C.loop_ext4(a.loop_ext4, work, f"f{rep}") as fs:
            C.settle(a.settle, a.drop_caches)
            out, rss = child(work, "fetch", fs / "r", big)
            res["fetch"], res["fetch_rss_kb"] = out["s"], rss
            C.settle(a.settle, a.drop_caches)
            out, rss = child(work, "unpack", fs / "r", big)
            res["unpack"], res["unpack_rss_kb"] = out["s"], rss

    def baseline_side() -> None:  # --baseline: the other checkout's pull and unpack, on fresh ext4s
        baseline = Path(a.baseline).resolve()
        with C.loop_ext4(a.loop_ext4, work, f"b{rep}") as fs:
            C.settle(a.settle, a.drop_caches)
            res["baseline_pull"] = child(work, "pull", fs / "r", big, baseline)[0]["s"]
        with C.loop_ext4(a.loop_ext4, work, f"bf{rep}") as fs:
            C.settle(a.settle, a.drop_caches)
            res["baseline_fetch"] = child(work, "fetch", fs / "r", big, baseline)[0]["s"]
            C.settle(a.settle, a.drop_caches)
            res["baseline_unpack"] = child(work, "unpack", fs / "r", big, baseline)[0]["s"]

    if "pull" in only:
        # the two sides of the ratio run one right after the other, in alternating order, so
        # that a burst of load elsewhere on the machine does not always land on the same side
        sides = [pull_side, split_side, *([baseline_side] if a.baseline else [])]
        shift = rep % len(sides)
        for side in sides[shift:] + sides[:shift]:
            side()
        res["pull_over_max"] = res["pull"] / max(res["fetch"], res["unpack"])
        if a.baseline:
            res["baseline_pull_over_max"] = res["baseline_pull"] / max(res["baseline_fetch"],
                                                                       res["baseline_unpack"])
    if "ctr" in only:  # containerd: ctr images pull on its own fresh ext4
        with C.loop_ext4(a.loop_ext4, work, f"c{rep}") as fs:
            opts = ["--hosts-dir", reg.hosts_dir] if reg.hosts_dir else ["--plain-http"]
            with C.ContainerdPeer(fs / "c", registry_opts=opts) as peer:
                peer.fresh()
                C.settle(a.settle, a.drop_caches)
                res["ctr_pull"] = C.timed_cmd(peer.ctr("images", "pull", *opts, big))
                res["ctr_rss_kb"] = peer.hwm_kb()
        if "pull" in res:
            res["pull_over_ctr"] = res["pull"] / res["ctr_pull"]
    if "apply" not in only:
        return res
    # -- layer apply vs GNU tar, on a fresh ext4
    with C.loop_ext4(2, work, f"a{rep}") as fs:
        for image, tool in (("debian:zstd", "zstd -dc {b} | tar -x -C {d}"), ("debian:gzip", "tar -xzf {b} -C {d}")):
            layer = layer_of(Path(a.corpus), image)
            path = blob(Path(a.corpus), layer["digest"])
            tag = image.split(":")[1]
            for order in ((0, 1) if rep % 2 else (1, 0)):
                dest = fs / f"{tag}-{order}"
                dest.mkdir()
                C.settle(a.settle)
                if order == 0:
                    r = C.run_child(apply_argv(dest, path, layer),
                                    env=env_for(work), timeout=600)
                    res[f"apply_{tag}"] = r.json()["s"]
                    res[f"apply_{tag}_rss_kb"] = r.maxrss_kb
                else:
                    res[f"tool_{tag}"] = timed_shell(tool.format(b=path, d=dest))
            res[f"apply_{tag}_ratio"] = res[f"apply_{tag}"] / res[f"tool_{tag}"]
    return res


def cold_creates(a: argparse.Namespace, work: Path, root: Path, ref: str, rep: int) -> dict[str, Any]:
    """Fresh-process ``ocistore containers create``, with and without bytecode; ``python -c pass``."""
    out: dict[str, Any] = {}
    cli = [sys.executable, "-m", "ocistore.cli", "--root", str(root), "containers", "create"]
    runs: dict[str, list[float]] = {"cli_create_bytecode": [], "cli_create_no_bytecode": [], "python_floor": []}
    for bytecode in (True, False):  # warm-up: the standard library's bytecode lands in the cache
        subprocess.run([*cli, f"warm-{rep}-{bytecode}", ref], env=env_for(work, bytecode), check=True,
                       stdout=subprocess.DEVNULL)
    for i in range(a.create_runs):
        for key, cmd, bytecode in (
            ("cli_create_bytecode", [*cli, f"bc-{rep}-{i}", ref], True),
            ("cli_create_no_bytecode", [*cli, f"nb-{rep}-{i}", ref], False),
            ("python_floor", [sys.executable, "-c", "pass"], True),
        ):
            t = time.perf_counter()
            subprocess.run(cmd, env=env_for(work, bytecode), check=True, stdout=subprocess.DEVNULL)
            runs[key].append(time.perf_counter() - t)
    for key, xs in runs.items():
        out[key] = statistics.median(xs)
    return out


ONLY = ("pull", "ctr", "apply", "create")

ROWS = [
    ("ml:big pull (ocistore)", "pull", "s"),
    ("ml:big `ctr images pull` (containerd 1.6)", "ctr_pull", "s"),
    ("ml:big fetch alone (ocistore)", "fetch", "s"),
    ("ml:big unpack alone, after the fetch (ocistore)", "unpack", "s"),
    ("pull / max(fetch, unpack)  (goal <= 1.1)", "pull_over_max", "x"),
    ("pull / ctr images pull  (goal <= 0.30)", "pull_over_ctr", "x"),
    ("--baseline: ml:big pull", "baseline_pull", "s"),
    ("--baseline: ml:big fetch alone", "baseline_fetch", "s"),
    ("--baseline: ml:big unpack alone", "baseline_unpack", "s"),
    ("--baseline: pull / max(fetch, unpack)", "baseline_pull_over_max", "x"),
    ("debian:zstd apply_layer", "apply_zstd", "s"),
    ("debian:zstd `zstd -dc | tar -x`", "tool_zstd", "s"),
    ("zstd apply / zstd|tar  (goal <= 1.0)", "apply_zstd_ratio", "x"),
    ("debian:gzip apply_layer", "apply_gzip", "s"),
    ("debian:gzip `tar -xzf`", "tool_gzip", "s"),
    ("gzip apply / tar -xzf  (goal <= 0.8)", "apply_gzip_ratio", "x"),
    ("fresh-process `ocistore containers create` after pull, bytecode (goal <= 60 ms)", "cli_create_bytecode", "ms"),
    ("fresh-process `ocistore containers create`, no bytecode (PYTHONDONTWRITEBYTECODE=1)",
     "cli_create_no_bytecode", "ms"),
    ("fresh-process `python -c pass` (the interpreter's floor here)", "python_floor", "ms"),
    ("in-process containers.create after pull (goal <= 10 ms)", "create_inproc", "ms"),
    ("peak RSS: pull (MB)", "pull_rss_kb", "MB"),
    ("peak RSS: fetch (MB)", "fetch_rss_kb", "MB"),
    ("peak RSS: unpack (MB)", "unpack_rss_kb", "MB"),
    ("peak RSS: debian:zstd apply (MB)", "apply_zstd_rss_kb", "MB"),
    ("peak RSS: debian:gzip apply (MB)", "apply_gzip_rss_kb", "MB"),
    ("peak RSS: containerd daemon during ctr pull (MB)", "ctr_rss_kb", "MB"),
]


def fmt(x: float | None, unit: str) -> str:
    if x is None:
        return ""
    if unit == "ms":
        return f"{x * 1000:.0f}"
    if unit == "MB":
        return f"{x / 1024:.0f}"
    if unit == "x":
        return f"{x:.2f}"
    return f"{x:.2f}"


def render(summary: dict[str, dict[str, Any]], header: str) -> str:
    lines = [header, "", "| figure | unit | median | min | max | spread |", "|---|---|---:|---:|---:|---:|"]
    for label, key, unit in ROWS:
        s = summary.get(key)
        if not s or s["median"] is None:
            continue
        shown = "s" if unit == "s" else ("ratio" if unit == "x" else unit)
        sp = f"{s['spread'] * 100:.0f}%" if s["spread"] is not None else ""
        lines.append(f"| {label} | {shown} | {fmt(s['median'], unit)} | {fmt(s['min'], unit)} | "
                     f"{fmt(s['max'], unit)} | {sp} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--big-layout", default=os.environ.get("OCISTORE_BIG_LAYOUT", "/var/tmp/ocistore-pipeline/images"))
    ap.add_argument("--corpus", default=str(C.FIXTURES_DIR / "corpus"))
    ap.add_argument("--loop-ext4", type=float, default=6, metavar="GB")
    ap.add_argument("--work", default="/var/tmp/ocistore-bench-pipe")
    ap.add_argument("--create-runs", type=int, default=11)
    ap.add_argument("--settle", type=float, default=1.0)
    ap.add_argument("--drop-caches", action="store_true",
                    help="also drop the page cache before every timed step (the same for every side)")
    ap.add_argument("--only", nargs="+", choices=ONLY, default=list(ONLY),
                    help="parts to run: pull (pull, fetch, unpack), ctr, apply (vs GNU tar), create "
                         "(after the pull); default all")
    ap.add_argument("--out", default=str(REPO / "benches" / "out"))
    ap.add_argument("--baseline", help="another checkout whose pull, fetch and unpack are timed in the same "
                                       "repetitions (a before / after on a noisy machine)")
    a = ap.parse_args()
    C.require_root()
    C.exit_on_sigterm()
    work = Path(a.work).absolute()
    work.mkdir(parents=True, exist_ok=True)
    # compile once into the bench's bytecode cache (what `ocistore compile` / compileall gives)
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(REPO / "ocistore")], env=env_for(work), check=True)
    loads: list[float] = []
    reps: list[dict[str, Any]] = []
    with contextlib.ExitStack() as stack:
        reg = stack.enter_context(C.LocalRegistry(work / "reg"))
        reg.load(a.big_layout, ["ml:big"])
        for rep in range(a.repeat):
            loads.append(os.getloadavg()[0])
            C.log(f"repetition {rep + 1}/{a.repeat}")
            reps.append(one_repetition(a, work, reg, rep))
            C.log(", ".join(f"{k}={v:.3f}" for k, v in reps[-1].items() if isinstance(v, float)))
    keys = {k for r in reps for k in r}
    summary = {k: spread([r[k] for r in reps if r.get(k) is not None]) for k in sorted(keys)}
    env = C.machine_info(work)
    header = (f"Run {env['date']}: `python benches/pipeline.py {' '.join(sys.argv[1:])}`; {env.get('cpu', '?')}, "
              f"{env['cpus']} CPUs shared with other work (1-min load {min(loads):.1f}-{max(loads):.1f} at the "
              f"repetitions' starts), kernel {env['kernel']}, Python {env['python']}; a fresh {a.loop_ext4:g} GB "
              f"loop ext4 per side and repetition; median of {a.repeat} repetitions, min, max and spread "
              f"((max-min)/median); fresh-process creates are the median of {a.create_runs} per repetition.")
    md = render(summary, header)
    jp, mp = C.write_results(a.out, "pipeline", {"summary": summary, "raw": reps, "env": env, "loads": loads}, md)
    print(md)
    C.log(f"wrote {jp} and {mp}")


if __name__ == "__main__":
    main()
