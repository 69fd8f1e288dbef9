#!/usr/bin/env python3
"""Serving throughput: ``ocistore serve`` vs the fixture registry (CNCF distribution 2.8), same blob.

Usage (from the project root):

    python benches/serve.py [--clients 1 4 16] [--rounds 4] [--repeat 3] [--work /var/tmp/ocistore-bench-serve]
                            [--out benches/out] [--workers 16]

Both servers run as their own processes on 127.0.0.1 (plain HTTP) and serve the largest blob of
the prebuilt corpus (the debian:gzip layer, 30 MB; ``ml:big``'s 196 MB layer when the layout has
it): the registry after ``registry load`` of the corpus, ``ocistore serve`` from a store that
imported the corpus. Clients are ``curl`` processes (C, so the client side is not the
bottleneck); for each concurrency level N, N clients each download the blob ``--rounds`` times
back to back (``-o /dev/null``), all N started together. Reported per server and N, median over
``--repeat`` runs (alternating which server goes first):

* MB/s: all bytes of the run divided by its wall time;
* p50 / p95 latency: over every request of the run (curl's ``time_total``: connect to last byte);
* server CPU s/GB: CPU seconds the server process used per GB sent (from ``/proc/<pid>/stat``).

One warm-up download per server first, so both serve from the page cache. The machine's 2 shared
vCPUs run the clients too: compare the two servers, not absolute numbers.
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(REPO))

import common as C  # noqa: E402

CORPUS = C.FIXTURES_DIR / "corpus"


def largest_blob() -> tuple[str, int]:
    """The largest layer of the corpus that the layout holds (ml:big's when it was built)."""
    corpus = json.loads((CORPUS / "corpus.json").read_text())
    layers = []
    for entry in corpus["images"].values():
        for m in [entry, *entry.get("manifests", [])]:
            layers += m.get("layers", [])
    present = [layer for layer in layers
               if (CORPUS / "blobs" / "sha256" / layer["digest"].removeprefix("sha256:")).exists()]
    best = max(present, key=lambda layer: layer["size"])
    return best["digest"], int(best["size"])


def curl_once(url: str) -> tuple[float, int]:
    out = subprocess.run(["curl", "-sS", "-f", "-o", "/dev/null", "-w", "%{time_total} %{size_download}", url],
                         capture_output=True, text=True, check=True).stdout
    t, size = out.split()
    return float(t), int(size)


def run_level(url: str, clients: int, rounds: int, pid: int) -> dict[str, Any]:
    def client() -> list[tuple[float, int]]:
        return [curl_once(url) for _ in range(rounds)]

    cpu0 = C.proc_cpu_s(pid)
    t0 = time.perf_counter()
    with ThreadPoolExecutor(max_workers=clients) as pool:
        results = [r for f in [pool.submit(client) for _ in range(clients)] for r in f.result()]
    wall = time.perf_counter() - t0
    cpu = C.proc_cpu_s(pid) - cpu0
    total = sum(size for _, size in results)
    lat = sorted(t for t, _ in results)
    p95 = lat[max(0, math.ceil(0.95 * len(lat)) - 1)]  # nearest rank
    return {"mb_s": total / wall / 1e6, "p50": statistics.median(lat), "p95": p95, "wall": wall,
            "requests": len(results), "bytes": total, "cpu_s_per_gb": cpu / (total / 1e9) if total else None}


def start_ocistore(root: Path, port: int, workers: int) -> subprocess.Popen[str]:
    env = {"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"}
    proc = subprocess.Popen([sys.executable, "-m", "ocistore", "--root", str(root), "serve", "--listen",
                             f"127.0.0.1:{port}", "--workers", str(workers)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if "serving" not in line:
        proc.kill()
        raise SystemExit(f"ocistore serve did not start: {line}{proc.stderr.read() if proc.stderr else ''}")
    return proc


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--clients", type=int, nargs="+", default=[1, 4, 16])
    ap.add_argument("--rounds", type=int, default=4, help="downloads per client per run")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--workers", type=int, default=16, help="ocistore serve --workers")
    ap.add_argument("--work", default="/var/tmp/ocistore-bench-serve")
    ap.add_argument("--out", default=str(HERE / "out"))
    args = ap.parse_args()
    if shutil.which("curl") is None:
        raise SystemExit("curl is needed (apt-get install curl)")
    C.exit_on_sigterm()
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    digest, size = largest_blob()
    C.log(f"blob {digest} ({size / 1e6:.1f} MB)")
    results: dict[str, dict[int, list[dict[str, Any]]]] = {"registry": {}, "ocistore": {}}
    with tempfile.TemporaryDirectory(dir=work) as tmp, C.LocalRegistry(Path(tmp) / "reg") as reg:
        subprocess.run([str(FIX_REGISTRY), "load", "--dir", str(reg.dir), "--from", str(CORPUS)],
                       check=True, capture_output=True)
        from ocistore.store import Store

        root = Path(tmp) / "store"
        with Store(root) as store:
            store.import_archive(CORPUS, fetch_only=True, all_platforms=True)
        port = C.find_free_port()
        proc = start_ocistore(root, port, args.workers)
        try:
            servers = {
                "registry": (f"http://{reg.address}/v2/debian/blobs/{digest}", int(reg.env["pid"])),
                "ocistore": (f"http://127.0.0.1:{port}/v2/debian/blobs/{digest}", proc.pid),
            }
            for name, (url, _) in servers.items():
                _, got = curl_once(url)  # warm-up: page cache, and a check that the blob is there
                assert got == size, (name, got)
            for rep in range(args.repeat):
                order = list(servers) if rep % 2 == 0 else list(reversed(servers))
                for n in args.clients:
                    for name in order:
                        url, pid = servers[name]
                        r = run_level(url, n, args.rounds, pid)
                        results[name].setdefault(n, []).append(r)
                        C.log(f"rep {rep} {name} x{n}: {r['mb_s']:.0f} MB/s p95 {r['p95'] * 1000:.0f} ms")
        finally:
            proc.terminate()
            proc.wait(timeout=10)
    rows = []
    summary: dict[str, Any] = {"blob": digest, "size": size, "rounds": args.rounds, "repeat": args.repeat,
                               "machine": C.machine_info(work), "results": {}}
    for n in args.clients:
        for name in ("registry", "ocistore"):
            runs = results[name][n]
            med = {k: C.median([r[k] for r in runs]) for k in ("mb_s", "p50", "p95", "cpu_s_per_gb")}
            summary["results"].setdefault(name, {})[n] = {"median": med, "runs": runs}
            rows.append((name, n, runs[0]["requests"], f"{med['mb_s']:.0f}", f"{med['p50'] * 1000:.0f}",
                         f"{med['p95'] * 1000:.0f}", f"{med['cpu_s_per_gb']:.2f}" if med["cpu_s_per_gb"] else ""))
    table = C.markdown_table(("server", "clients", "requests/run", "MB/s", "p50 ms", "p95 ms", "server CPU s/GB"),
                             rows, "llrrrrr")
    print(table)
    C.write_results(args.out, "serve", summary, table)
    return 0


FIX_REGISTRY = C.FIXTURES_DIR / "registry"

if __name__ == "__main__":
    sys.exit(main())
