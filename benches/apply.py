"""Layer apply throughput: ocistore's apply_layer against GNU tar, pigz | tar and zstd | tar.

Every run extracts into a fresh directory on a freshly made, loop-mounted ext4 file
system (the root disk of the project VMs is slow and erratic at creating files),
methods are interleaved round by round, and each run is its own process so that its
peak RSS (``ru_maxrss`` from ``wait4``) can be reported. Needs root (mount).

    sudo python benches/apply.py [--rounds 5] [--layout DIR] [--images debian:gzip,...]

Reports median seconds, MB/s of uncompressed tar, entries/s, the ratio to
``tar -xzf`` (or ``tar --zstd -xf``) and peak RSS, as a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
DEFAULT_LAYOUT = REPO.parent / "shared/fixtures/corpus"
if not DEFAULT_LAYOUT.exists():
    DEFAULT_LAYOUT = Path("/work/shared/fixtures/corpus")

# The child times the applies itself, after its imports (about 0.3-0.6 s of interpreter
# and package start-up here, which an embedding program pays once, not per layer).
CHILD = """
import sys, time
from ocistore.archive import apply_layer
dest = sys.argv[1]
start = time.perf_counter()
for spec in sys.argv[2:]:
    path, media_type = spec.split("|")
    with open(path, "rb") as f:
        apply_layer(f, dest, media_type=media_type)
print(time.perf_counter() - start)
"""


def blob(layout: Path, digest: str) -> str:
    alg, _, hexpart = digest.partition(":")
    return str(layout / "blobs" / alg / hexpart)


def commands(layout: Path, layers: list[dict[str, Any]], dest: str) -> dict[str, list[str]]:
    """Shell command per method (each extracts all layers in order into dest)."""
    zstd = all("zstd" in layer["mediaType"] for layer in layers)
    blobs = [blob(layout, layer["digest"]) for layer in layers]
    specs = [f"{b}|{layer['mediaType']}" for b, layer in zip(blobs, layers, strict=True)]
    ours = [sys.executable, "-c", CHILD, dest, *specs]
    if zstd:
        return {
            "ocistore": ours,
            "tar --zstd -xf": ["sh", "-c", " && ".join(f"tar --zstd -xf {b} -C {dest}" for b in blobs)],
            "zstd -dc | tar -x": ["sh", "-c", " && ".join(f"zstd -dc {b} | tar -x -C {dest}" for b in blobs)],
        }
    return {
        "ocistore": ours,
        "tar -xzf": ["sh", "-c", " && ".join(f"tar -xzf {b} -C {dest}" for b in blobs)],
        "pigz -dc | tar -x": ["sh", "-c", " && ".join(f"pigz -dc {b} | tar -x -C {dest}" for b in blobs)],
    }


def run_once(argv: list[str]) -> tuple[float, int]:
    """Wall seconds and peak RSS (KiB) of one command (and its children)."""
    env = dict(os.environ, PYTHONPATH=str(REPO))
    start = time.perf_counter()
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE)
    assert proc.stdout is not None
    out = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    elapsed = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"command failed ({proc.returncode}): {argv[:3]}")
    if out.strip():  # the ocistore child reports its own time, start-up excluded
        elapsed = float(out)
    return elapsed, usage.ru_maxrss


class LoopExt4:
    """A sparse file formatted ext4 and loop-mounted under a temp dir."""

    def __init__(self, size_gb: int) -> None:
        self.base = Path(tempfile.mkdtemp(prefix="ocistore-bench-"))
        self.image = self.base / "ext4.img"
        self.mnt = self.base / "mnt"
        self.mnt.mkdir()
        with open(self.image, "wb") as f:
            f.truncate(size_gb << 30)
        subprocess.run(["mkfs.ext4", "-q", "-F", str(self.image)], check=True)
        subprocess.run(["mount", "-o", "loop", str(self.image), str(self.mnt)], check=True)

    def close(self) -> None:
        subprocess.run(["umount", str(self.mnt)], check=False)
        shutil.rmtree(self.base, ignore_errors=True)


def bench(layout: Path, tags: list[str], rounds: int, fs: LoopExt4) -> list[dict[str, Any]]:
    corpus = json.loads((layout / "corpus.json").read_text())
    rows = []
    for tag in tags:
        image = corpus["images"].get(tag)
        if image is None:
            print(f"# {tag}: not in {layout}, skipped", file=sys.stderr)
            continue
        layers = image["layers"]
        size = sum(layer["uncompressed_size"] for layer in layers)
        entries = sum(layer["stats"]["entries"] for layer in layers)
        results: dict[str, list[tuple[float, int]]] = {}
        for _ in range(rounds):
            for method, template in commands(layout, layers, "DEST").items():
                dest = fs.mnt / f"run-{time.monotonic_ns()}"
                dest.mkdir()
                argv = [a.replace("DEST", str(dest)) for a in template]
                subprocess.run(["sync"], check=True)
                results.setdefault(method, []).append(run_once(argv))
                shutil.rmtree(dest)
                subprocess.run(["sync"], check=True)
        tar_method = list(results)[1]  # "tar -xzf" or "tar --zstd -xf"
        baseline = statistics.median(t for t, _ in results[tar_method])
        for method, samples in results.items():
            seconds = statistics.median(t for t, _ in samples)
            rows.append(
                {
                    "image": tag,
                    "layers": len(layers),
                    "method": method,
                    "seconds": seconds,
                    "all": sorted(t for t, _ in samples),
                    "mb_s": size / seconds / 1e6,
                    "files_s": entries / seconds,
                    "ratio": seconds / baseline,
                    "rss_mb": max(r for _, r in samples) / 1024,
                }
            )
    return rows


def markdown(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| image (layers) | method | median s | runs (s) | MB/s (tar) | entries/s | vs tar | peak RSS MB |",
        "|---|---|---:|---|---:|---:|---:|---:|",
    ]
    for r in rows:
        runs = ", ".join(f"{t:.2f}" for t in r["all"])
        lines.append(
            f"| {r['image']} ({r['layers']}) | {r['method']} | {r['seconds']:.3f} | {runs} | {r['mb_s']:.0f} | "
            f"{r['files_s']:.0f} | {r['ratio']:.2f} | {r['rss_mb']:.0f} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--layout", type=Path, default=DEFAULT_LAYOUT, help="OCI layout with corpus.json")
    parser.add_argument("--images", default="debian:gzip,debian:zstd,app:layers,ml:big")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--size-gb", type=int, default=4)
    parser.add_argument("--json", type=Path, help="also write the rows as JSON here")
    args = parser.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("needs root: it loop-mounts a fresh ext4 file system")
    fs = LoopExt4(args.size_gb)
    try:
        rows = bench(args.layout, args.images.split(","), args.rounds, fs)
    finally:
        fs.close()
    with open("/proc/loadavg") as f:
        load = f.read().split()[:3]
    print(f"rounds={args.rounds} load(1,5,15)={' '.join(load)} cpus={os.cpu_count()}")
    print(markdown(rows))
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
