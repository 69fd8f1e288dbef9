#!/usr/bin/env python3
"""Fetch / pull / lazy-unpack benchmark: ocistore vs containerd 1.6, same filesystem, same run.

Usage (as root, from the project root):

    python benches/pull.py --repeat 3 [--images debian:gzip debian:zstd app:layers ml:big]
                           [--loop-ext4 8] [--out benches/out] [--work /var/tmp/ocistore-bench-pull]
                           [--big-layout DIR] [--settle 1] [--drop-caches] [--no-pigz]

A real registry (CNCF distribution, the fixture kit's ``registry`` script, plain HTTP on a
free 127.0.0.1 port) is started and loaded with the prebuilt corpus (and ``ml:big`` from
``--big-layout``, a layout made by ``build-images --big``). Then, on ONE freshly made
loop-mounted ext4 filesystem (``--loop-ext4 GB``; 0 = use ``--work``'s filesystem), for each
image and each repetition, from an empty root every time:

ocistore (each scenario in its own Python subprocess; peak RSS from its rusage):
  fetch  : Store.fetch -> disk_usage() -> Store.unpack -> containers.create (after unpack)
  lazy   : Store.fetch -> containers.create (lazy unpack + prepare) -> mount the rootfs
  pull   : Store.pull  -> disk_usage() -> containers.create (warm) -> a second create
containerd 1.6 (containerd-peer, root on the same filesystem, wiped + restarted per scenario):
  fetch  : ctr content fetch -> du -> ctr images mount --rw (unpack+prepare+mount) -> du
           -> ctr snapshots prepare (after unpack)
  unpack : ctr content fetch (untimed) -> ctr images pull (the unpack-only pull)
  pull   : ctr images pull -> du -> ctr snapshots prepare

Before every timed step: sync, wait for writeback to drain, sleep ``--settle`` s (and drop
caches with ``--drop-caches``). ocistore times are of the API call inside the process
(interpreter start, ``import ocistore`` and ``Store()`` are reported on their own row);
ctr times include the ctr client start (~15 ms). The order ocistore/containerd alternates
between repetitions. Results: medians, ratios ocistore/containerd (< 1: ocistore faster),
written to OUT/pull.json and OUT/pull.md and printed.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import common as C  # noqa: E402

REPO = HERE.parent
DEFAULT_IMAGES = ["debian:gzip", "debian:zstd", "app:layers"]
# containerd 1.6 reference figures (DESIGN / issue: fresh root on loop ext4, median)
REFERENCE = {
    "debian:gzip": {"fetch": 0.38, "pull": 1.43},
    "app:layers": {"fetch": 0.42, "pull": 1.63},
    "ml:big": {"fetch": 1.82, "first_after_fetch": 7.26, "pull": 8.35, "create_after_pull": 0.02},
}


# =============================================================================================
# child: one ocistore scenario in a fresh process


def child_main(argv: list[str]) -> None:
    ap = argparse.ArgumentParser(prog="pull.py --child")
    ap.add_argument("--scenario", required=True, choices=["fetch", "lazy", "pull"])
    ap.add_argument("--root", required=True)
    ap.add_argument("--ref", required=True)
    ap.add_argument("--mnt", required=True)
    ap.add_argument("--settle", type=float, default=1.0)
    ap.add_argument("--drop-caches", action="store_true")
    ap.add_argument("--warm-creates", type=int, default=5)
    a = ap.parse_args(argv)

    res: dict[str, Any] = {"steps": {}, "cpu": {}, "disk": {}}
    with C.Timer() as t:
        # everything the operations below import lazily, so that no step pays for imports
        # (an embedding process pays them once); reported on its own row
        import ocistore
        import ocistore.archive
        import ocistore.metadata.gc
        import ocistore.metadata.leases
        import ocistore.mount
        import ocistore.remotes
        import ocistore.snapshots
        import ocistore.transfer.containers
        import ocistore.transfer.pull
        import ocistore.transfer.unpack
        import ocistore.transfer.usage
        from ocistore import Store
    res["steps"]["import"] = t.s
    with C.Timer() as t:
        store = Store(a.root, plain_http=True)
    res["steps"]["open"] = t.s

    def step(name: str, fn: Any, settle: bool = True) -> Any:
        if settle:
            C.settle(a.settle, a.drop_caches)
        cpu0 = C.self_cpu_s()
        with C.Timer() as tt:
            out = fn()
        res["cpu"][name] = C.self_cpu_s() - cpu0
        res["steps"][name] = tt.s
        return out

    def disk(label: str) -> None:
        with C.Timer() as tt:
            du = store.disk_usage()
        root = Path(a.root)
        res["disk"][label] = {
            "api": {k: getattr(du, k) for k in ("content", "ingest", "snapshots", "metadata", "total")},
            "api_s": tt.s,
            "du": {"content": C.du_bytes(root / "content"), "snapshots": C.du_bytes(root / "snapshots"),
                   "metadata": C.du_bytes(root / "metadata.lmdb"), "total": C.du_bytes(root),
                   "total_apparent": C.du_bytes(root, apparent=True)},
        }

    try:
        if a.scenario == "fetch":
            img = step("fetch", lambda: store.fetch(a.ref))
            disk("after_fetch")
            step("unpack", lambda: store.unpack(img.name))
            step("create_after_unpack", lambda: store.containers.create("c1", img.name))
            disk("after_fetch_unpack")
        elif a.scenario == "lazy":
            from ocistore.mount import mount, unmount

            img = step("fetch", lambda: store.fetch(a.ref))
            c = step("create_lazy", lambda: store.containers.create("c1", img.name))
            os.makedirs(a.mnt, exist_ok=True)
            step("mount", lambda: mount(c.mounts, a.mnt), settle=False)
            try:
                if not os.path.exists(os.path.join(a.mnt, "etc", "os-release")):
                    raise SystemExit("mounted rootfs has no /etc/os-release")
            finally:
                unmount(a.mnt)
        else:
            img = step("pull", lambda: store.pull(a.ref))
            disk("after_pull")
            if not store.is_unpacked(img.name):
                raise SystemExit("image not unpacked after pull")
            step("create_after_pull", lambda: store.containers.create("c1", img.name))
            warm = []
            for i in range(a.warm_creates):
                with C.Timer() as tt:
                    store.containers.create(f"w{i}", img.name)
                warm.append(tt.s)
            res["warm_creates"] = warm
            res["steps"]["create_warm_next"] = C.median(warm)
    finally:
        store.close()
    res["ocistore_file"] = ocistore.__file__
    print(json.dumps(res))


# =============================================================================================
# parent


def ocistore_scenario(a: argparse.Namespace, scenario: str, root: Path, mnt: Path, ref: str) -> dict[str, Any]:
    reset_dir(root)
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", "--scenario", scenario, "--root", str(root),
           "--ref", ref, "--mnt", str(mnt), "--settle", str(a.settle)]
    if a.drop_caches:
        cmd.append("--drop-caches")
    env = dict(os.environ)
    # this environment sets PYTHONDONTWRITEBYTECODE=1: every process would recompile all of
    # ocistore (~0.7 s of compile() per process). Cache bytecode outside the repo instead.
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env["PYTHONPYCACHEPREFIX"] = str(Path(a.work).absolute() / "pycache")
    env["PYTHONPATH"] = str(REPO) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    try:
        r = C.run_child(cmd, env=env, timeout=1800)
        out: dict[str, Any] = r.json()
        out["maxrss_kb"] = r.maxrss_kb
        out["wall_s"] = r.wall_s
        out["cpu_s"] = r.cpu_s
        return out
    finally:
        reset_dir(root)


def reset_dir(path: Path) -> None:
    C.unmount_under(path)
    if C.is_mountpoint(path):
        subprocess.run(["umount", str(path)], check=False)
    shutil.rmtree(path, ignore_errors=True)


def ctr_scenario(a: argparse.Namespace, scenario: str, peer: C.ContainerdPeer, mnt: Path, ref: str,
                 opts: list[str]) -> dict[str, Any]:
    res: dict[str, Any] = {"steps": {}, "cpu": {}, "disk": {}}
    peer.fresh()
    pid = peer.pid()

    def step(name: str, cmd: list[str]) -> None:
        C.settle(a.settle, a.drop_caches)
        res["steps"][name], res["cpu"][name] = C.timed_cmd_cpu(cmd, pid)

    try:
        if scenario == "fetch":
            step("fetch", peer.ctr("content", "fetch", *opts, ref))
            res["disk"]["after_fetch"] = peer.disk()
            info = peer.image_info(ref)
            res["chain_id"] = info["chain_id"]
            mnt.mkdir(parents=True, exist_ok=True)
            step("first_after_fetch", peer.ctr("images", "mount", "--rw", ref, str(mnt)))
            ok = (mnt / "etc" / "os-release").exists()
            subprocess.run(peer.ctr("images", "unmount", str(mnt)), capture_output=True, check=True)
            if not ok:
                raise RuntimeError("ctr images mount: no /etc/os-release in the mounted rootfs")
            res["disk"]["after_fetch_unpack"] = peer.disk()
            step("create_after_unpack", peer.ctr("snapshots", "prepare", "bench-b2", info["chain_id"]))
        elif scenario == "unpack":
            subprocess.run(peer.ctr("content", "fetch", *opts, ref), capture_output=True, check=True)
            step("unpack", peer.ctr("images", "pull", *opts, ref))
        else:
            step("pull", peer.ctr("images", "pull", *opts, ref))
            res["disk"]["after_pull"] = peer.disk()
            info = peer.image_info(ref)
            step("create_after_pull", peer.ctr("snapshots", "prepare", "bench-d", info["chain_id"]))
        res["daemon_hwm_kb"] = peer.hwm_kb()
    finally:
        subprocess.run(["umount", str(mnt)], capture_output=True, check=False)
    return res


# (label, ocistore (scenario, step), containerd (scenario, step), note)
TIME_ROWS = [
    ("fetch (fresh root)", ("fetch", "fetch"), ("fetch", "fetch"),
     "Store.fetch vs ctr content fetch"),
    ("unpack after fetch", ("fetch", "unpack"), ("unpack", "unpack"),
     "Store.unpack vs ctr images pull of a fetched image (unpack-only pull; resolves the tag again)"),
    ("first container after fetch (lazy unpack+prepare+mount)", ("lazy", "create_lazy+mount"),
     ("fetch", "first_after_fetch"), "containers.create + mount vs ctr images mount --rw"),
    ("  of which containers.create (lazy unpack+prepare)", ("lazy", "create_lazy"), None, ""),
    ("create after unpack", ("fetch", "create_after_unpack"), ("fetch", "create_after_unpack"),
     "containers.create vs ctr snapshots prepare"),
    ("pull (fresh root)", ("pull", "pull"), ("pull", "pull"), "Store.pull vs ctr images pull"),
    ("create after pull (warm, first)", ("pull", "create_after_pull"), ("pull", "create_after_pull"),
     "containers.create vs ctr snapshots prepare; goal < 50 ms"),
    ("create after pull (warm, next ones)", ("pull", "create_warm_next"), None,
     "median of 5 more creates, no settle"),
    ("import ocistore + Store() open (not in the rows above)", ("pull", "import+open"), None, ""),
]
DISK_ROWS = [
    ("after fetch", ("fetch", "after_fetch"), ("fetch", "after_fetch")),
    ("after fetch + unpack", ("fetch", "after_fetch_unpack"), ("fetch", "after_fetch_unpack")),
    ("after pull", ("pull", "after_pull"), ("pull", "after_pull")),
]


def collect(reps_o: list[dict[str, dict[str, Any]]], reps_c: list[dict[str, dict[str, Any]]]) -> dict[str, Any]:
    """Per-image summary: medians of every step, of the disk figures and of peak RSS."""
    def o_step(rep: dict[str, Any], scen: str, st: str, field: str = "steps") -> float | None:
        s = rep[scen].get(field, {})
        if "+" in st:
            vals = [s.get(k) for k in st.split("+")]
            return None if None in vals else float(sum(v for v in vals if v is not None))
        v = s.get(st)
        return None if v is None else float(v)

    times = []
    for label, o, c, note in TIME_ROWS:
        o_runs = [o_step(r, *o) for r in reps_o]
        c_runs = [r[c[0]]["steps"].get(c[1]) for r in reps_c] if c else []
        o_cpu = [o_step(r, *o, field="cpu") for r in reps_o]
        c_cpu = [r[c[0]]["cpu"].get(c[1]) for r in reps_c] if c else []
        times.append({"step": label, "note": note, "ocistore": C.summarize(o_runs),
                      "containerd": C.summarize(c_runs) if c else None,
                      "ocistore_cpu": C.summarize(o_cpu), "containerd_cpu": C.summarize(c_cpu) if c else None})
    disk = []
    for label, o, c in DISK_ROWS:
        od = [r[o[0]]["disk"][o[1]] for r in reps_o]
        cd = [r[c[0]]["disk"][c[1]] for r in reps_c]
        disk.append({
            "after": label,
            "ocistore_api": {k: C.median(d["api"][k] for d in od) for k in od[0]["api"]},
            "ocistore_du": {k: C.median(d["du"][k] for d in od) for k in od[0]["du"]},
            "ocistore_disk_usage_s": C.median(d["api_s"] for d in od),
            "containerd_du": {k: C.median(d[k] for d in cd) for k in cd[0]},
        })
    rss = []
    rss_rows: list[tuple[str, str | None, str]] = [
        ("fetch, unpack, create", "fetch", "fetch"), ("fetch, lazy create, mount", "lazy", "fetch"),
        ("pull, creates", "pull", "pull"), ("(containerd: content fetch, images pull)", None, "unpack")]
    for label, o_scen, c_scen in rss_rows:
        rss.append({"scenario": label,
                    "ocistore_maxrss_kb": C.median(r[o_scen]["maxrss_kb"] for r in reps_o) if o_scen else None,
                    "containerd_scenario": c_scen,
                    "containerd_daemon_hwm_kb": C.median(r[c_scen].get("daemon_hwm_kb") for r in reps_c)})
    return {"times": times, "disk": disk, "rss": rss}


def render(results: dict[str, Any]) -> str:
    env = results["env"]
    loads = env.get("loadavg_1min_per_repetition") or [env["loadavg_at_start"][0]]
    md: list[str] = []
    md.append(f"Run {env['date']}: `{results['command']}`")
    md.append("")
    md.append(
        f"Machine: {env.get('cpu', '?')}, {env['cpus']} CPUs (shared with other work: 1-min load average "
        f"{min(loads):.1f}-{max(loads):.1f} during the run), {env['mem_total_gb']} GB RAM, kernel {env['kernel']}, "
        f"Python {env['python']}; containerd {env.get('containerd', '?')} (gzip via {env['containerd_gzip']}), "
        f"ocistore {env.get('ocistore_git', '?')}. Filesystem: {env['fs']}. Registry: CNCF distribution, plain "
        f"HTTP on 127.0.0.1. Median of {env['repeat']} runs, each from an empty root; {env['cache']}.")
    md.append("")
    # summary
    md.append("**Summary** (seconds, median; ratio = ocistore / containerd, < 1 means ocistore is faster; "
              "ref = containerd figure from DESIGN/issue)")
    md.append("")
    rows = []
    for image, r in results["images"].items():
        t = {x["step"]: x for x in r["times"]}
        ref = REFERENCE.get(image, {})

        def cell(label: str, refkey: str | None = None, t: dict[str, Any] = t, ref: dict[str, float] = ref
                 ) -> list[str]:
            x = t[label]
            o = x["ocistore"]["median"]
            c = x["containerd"]["median"] if x["containerd"] else None
            out = [C.fmt_s(o), C.fmt_s(c), C.fmt_ratio(o, c)]
            if refkey is not None:
                out.append(C.fmt_s(ref.get(refkey), 2) if ref.get(refkey) is not None else "")
            return out

        rows.append([image, *cell("fetch (fresh root)", "fetch"),
                     *cell("first container after fetch (lazy unpack+prepare+mount)", "first_after_fetch"),
                     *cell("pull (fresh root)", "pull"),
                     C.fmt_s(t["create after pull (warm, first)"]["ocistore"]["median"]),
                     C.fmt_s(t["create after pull (warm, first)"]["containerd"]["median"])])
    md.append(C.markdown_table(
        ["image", "fetch o", "fetch c", "ratio", "ref", "1st run after fetch o", "c", "ratio", "ref",
         "pull o", "pull c", "ratio", "ref", "create after pull o", "prepare after pull c"],
        rows, "l" + "r" * 14))
    md.append("")
    md.append("o = ocistore, c = containerd. \"1st run after fetch\" = ocistore `containers.create` (lazy unpack + "
              "prepare) + mount of the rootfs vs `ctr images mount --rw` (unpack + prepare + mount).")
    md.append("")
    for image, r in results["images"].items():
        info = r.get("image_info", {})
        md.append(f"#### {image}")
        md.append("")
        if info:
            md.append(f"{info['layers']} layer(s), {info['compressed'] / 1e6:.1f} MB compressed, "
                      f"{info['uncompressed'] / 1e6:.1f} MB uncompressed tar.")
            md.append("")
        rows = []
        for x in r["times"]:
            o, c = x["ocistore"], x["containerd"]
            oc, cc = x.get("ocistore_cpu") or {}, x.get("containerd_cpu") or {}
            rows.append([x["step"], C.fmt_s(o["median"]), C.fmt_s(c["median"]) if c else "",
                         C.fmt_ratio(o["median"], c["median"]) if c else "",
                         C.fmt_s(oc.get("median"), 2), C.fmt_s(cc.get("median"), 2),
                         C.fmt_ratio(oc.get("median"), cc.get("median")),
                         " / ".join(C.fmt_s(v) for v in o["runs"]),
                         " / ".join(C.fmt_s(v) for v in c["runs"]) if c else "", x["note"]])
        md.append("CPU s = user + system CPU seconds of the step: ocistore's process (all threads); for "
                  "containerd the ctr client plus what the daemon and the unpigz it runs used meanwhile. Less "
                  "sensitive than wall time to the other load on the machine.")
        md.append("")
        md.append(C.markdown_table(["step", "ocistore s", "containerd s", "ratio", "ocistore CPU s",
                                    "containerd CPU s", "CPU ratio", "ocistore runs", "containerd runs",
                                    "what"], rows, "lrrrrrrlll"))
        md.append("")
        rows = []
        for d in r["disk"]:
            oa, od, cd = d["ocistore_api"], d["ocistore_du"], d["containerd_du"]
            rows.append([d["after"], C.fmt_mb(oa["total"]), C.fmt_mb(oa["content"]), C.fmt_mb(oa["snapshots"]),
                         C.fmt_mb(od["total"]), C.fmt_mb(cd["total"]), C.fmt_mb(cd["content"]),
                         C.fmt_mb(cd["snapshots"]), C.fmt_ratio(od["total"], cd["total"]),
                         C.fmt_s(d["ocistore_disk_usage_s"])])
        md.append(C.markdown_table(
            ["disk (MB allocated)", "ocistore disk_usage() total", "content", "snapshots", "ocistore du -s",
             "containerd du -s", "content", "snapshots", "ratio (du)", "disk_usage() s"], rows, "lrrrrrrrrr"))
        md.append("")
        rows = [[x["scenario"], C.fmt_mb((x["ocistore_maxrss_kb"] or 0) * 1000) if x["ocistore_maxrss_kb"] else "",
                 x["containerd_scenario"], C.fmt_mb((x["containerd_daemon_hwm_kb"] or 0) * 1000)]
                for x in r["rss"]]
        md.append(C.markdown_table(["scenario", "ocistore process peak RSS MB", "containerd scenario",
                                    "containerd daemon peak RSS MB"], rows, "lrlr"))
        md.append("")
    return "\n".join(md)


def default_big_layout() -> str | None:
    for cand in (os.environ.get("OCISTORE_FIXTURES"), str(REPO / ".fixtures" / "images")):
        if cand and (Path(cand) / "index.json").exists():
            return cand
    return None


def layout_has(layout: str, tag: str) -> bool:
    try:
        idx = json.loads((Path(layout) / "index.json").read_text())
    except OSError:
        return False
    return any(m.get("annotations", {}).get("org.opencontainers.image.ref.name") == tag for m in idx["manifests"])


def image_facts(corpus_json: Path, tag: str) -> dict[str, Any] | None:
    try:
        data = json.loads(corpus_json.read_text())
    except OSError:
        return None
    img = data.get("images", {}).get(tag) if isinstance(data.get("images"), dict) else None
    if img is None:
        return None
    layers = img.get("layers", [])
    return {"layers": len(layers), "compressed": img.get("compressed_total", 0),
            "uncompressed": img.get("uncompressed_total", 0)}


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        child_main(sys.argv[2:])
        return
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--images", nargs="+", default=DEFAULT_IMAGES)
    ap.add_argument("--loop-ext4", type=float, default=8, metavar="GB",
                    help="size of the fresh loop ext4 everything runs on (0: use --work's filesystem)")
    ap.add_argument("--out", default=str(REPO / "benches" / "out"))
    ap.add_argument("--work", default="/var/tmp/ocistore-bench-pull",
                    help="scratch dir (loop image file, registry storage); keep it short")
    ap.add_argument("--corpus", default=str(C.FIXTURES_DIR / "corpus"))
    ap.add_argument("--big-layout", default=default_big_layout(),
                    help="OCI layout holding ml:big (build-images --big DIR)")
    ap.add_argument("--settle", type=float, default=1.0)
    ap.add_argument("--drop-caches", action="store_true")
    ap.add_argument("--no-pigz", action="store_true", help="containerd with CONTAINERD_DISABLE_PIGZ=1")
    a = ap.parse_args()
    C.require_root()
    C.exit_on_sigterm()

    images = list(a.images)
    if "ml:big" in images and not (a.big_layout and layout_has(a.big_layout, "ml:big")):
        C.log("ml:big requested but no layout with it (--big-layout); skipping ml:big")
        images.remove("ml:big")
    work = Path(a.work).absolute()
    work.mkdir(parents=True, exist_ok=True)
    load_at_start = os.getloadavg()
    command = "python benches/pull.py " + " ".join(sys.argv[1:])

    with contextlib.ExitStack() as stack:
        reg = stack.enter_context(C.LocalRegistry(work / "reg"))
        C.log(f"registry at {reg.address}; loading images")
        small = [i for i in images if i != "ml:big"]
        if small:
            reg.load(a.corpus, small)
        if "ml:big" in images:
            reg.load(a.big_layout, ["ml:big"])
        if a.loop_ext4:
            fs = stack.enter_context(C.loop_ext4(a.loop_ext4, work))
            fs_desc = f"a fresh {a.loop_ext4:g} GB loop-mounted ext4 (made at the start of the run, shared by both)"
        else:
            fs = work / "fs"
            fs.mkdir(exist_ok=True)
            fs_desc = f"{C._fstype(fs)} at {fs} (no loop ext4)"
        opts = ["--hosts-dir", reg.hosts_dir] if reg.hosts_dir else ["--plain-http"]
        peer = stack.enter_context(C.ContainerdPeer(fs / "c", registry_opts=opts, no_pigz=a.no_pigz))
        oroot, mnt = fs / "o", fs / "m"
        stack.callback(reset_dir, oroot)
        stack.callback(C.unmount_under, fs)

        results: dict[str, Any] = {"command": command, "images": {}, "raw": {}}
        loads: list[float] = []
        for image in images:
            ref = reg.ref(image)
            reps_o: list[dict[str, Any]] = []
            reps_c: list[dict[str, Any]] = []
            for rep in range(a.repeat):
                C.log(f"{image}: repetition {rep + 1}/{a.repeat}")
                loads.append(os.getloadavg()[0])
                o_first = rep % 2 == 1

                for system in (("o", "c") if o_first else ("c", "o")):
                    if system == "o":
                        reps_o.append({s: ocistore_scenario(a, s, oroot, mnt, ref) for s in ("fetch", "lazy", "pull")})
                    else:
                        reps_c.append({s: ctr_scenario(a, s, peer, mnt, ref, opts)
                                       for s in ("fetch", "unpack", "pull")})
                        peer.stop()
            summary = collect(reps_o, reps_c)
            facts = image_facts(Path(a.big_layout if image == "ml:big" else a.corpus) / "corpus.json", image)
            if facts:
                summary["image_info"] = facts
            results["images"][image] = summary
            results["raw"][image] = {"ocistore": reps_o, "containerd": reps_c}
            C.log(f"{image}: " + ", ".join(f"{x['step'].strip()}={C.fmt_s(x['ocistore']['median'])}"
                                            for x in summary["times"][:3]))

        env = C.machine_info(fs)
        env.update({"loadavg_at_start": load_at_start, "fs": fs_desc, "repeat": a.repeat, "settle_s": a.settle,
                    "cache": "page cache dropped before each timed step" if a.drop_caches else
                    "warm page cache (sync + writeback drained + 1 s settle before each timed step)"
                    if a.settle == 1 else f"warm page cache, {a.settle} s settle",
                    "containerd_gzip": "Go compress/gzip" if a.no_pigz or not shutil.which("unpigz")
                    else "unpigz", "loadavg_at_end": os.getloadavg(),
                    "loadavg_1min_per_repetition": loads})
        results["env"] = env
        md = render(results)
        jp, mp = C.write_results(a.out, "pull", results, md)
        print(md)
        C.log(f"wrote {jp} and {mp}")


if __name__ == "__main__":
    main()
