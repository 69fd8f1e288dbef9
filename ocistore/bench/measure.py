"""How the bench measures: one disk walk for both systems' roots, child processes with peak RSS.

The disk figures of ocistore and containerd come from the same function
(:func:`root_usage`): ``st_blocks x 512`` of every inode under the root, directories
included, each inode once (hardlinks), symlinks not followed, split by which part of the
root the path is in. Only the map from part to directory differs between the systems.
"""

from __future__ import annotations

import os
import subprocess
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import attrs

from ocistore._files import allocated_bytes
from ocistore.layout import RootLayout

__all__ = ["PARTS", "ChildRun", "containerd_parts", "ocistore_parts", "root_usage", "run_child"]

PARTS = ("content", "snapshots", "metadata", "other")
"""The columns of every disk figure; ``total`` is their sum, ``blobs`` the content's blob files."""


def ocistore_parts(root: str | os.PathLike[str]) -> dict[str, list[Path]]:
    """The directories of an ocistore root, by part (``blobs`` is inside ``content``)."""
    layout = RootLayout(root)
    return {"blobs": [layout.content.blobs], "content": [layout.content.root], "snapshots": [layout.snapshots],
            "metadata": [layout.metadata]}


def containerd_parts(root: str | os.PathLike[str], snapshotter: str = "overlayfs") -> dict[str, list[Path]]:
    """The directories of a containerd root, by part (``blobs`` is inside ``content``)."""
    r = Path(root)
    content = r / "io.containerd.content.v1.content"
    return {"blobs": [content / "blobs"], "content": [content],
            "snapshots": [r / f"io.containerd.snapshotter.v1.{snapshotter}"],
            "metadata": [r / "io.containerd.metadata.v1.bolt"]}


def root_usage(root: str | os.PathLike[str], parts: Mapping[str, Sequence[Path]]) -> dict[str, int]:
    """Allocated bytes of ``root`` split into :data:`PARTS` (+ ``total`` and ``blobs``).

    ``blobs`` is walked first with its own inode set (it is a part of ``content``); then
    content, snapshots, metadata and the rest of the root share one set, so an inode
    linked from two parts counts once, in the first.
    """
    out = {"blobs": sum(allocated_bytes(p, set()) for p in parts.get("blobs", ()))}
    seen: set[tuple[int, int]] = set()
    for name in ("content", "snapshots", "metadata"):
        out[name] = sum(allocated_bytes(p, seen) for p in parts.get(name, ()))
    out["other"] = allocated_bytes(root, seen)
    out["total"] = sum(out[p] for p in PARTS)
    return out


@attrs.frozen
class ChildRun:
    """What one child process did: exit status, output, wall seconds, peak RSS and CPU."""

    returncode: int
    stdout: str
    stderr: str
    wall_s: float
    maxrss_kb: int
    cpu_s: float


def run_child(cmd: Sequence[str], env: Mapping[str, str] | None = None, timeout: float = 3600.0) -> ChildRun:
    """Run ``cmd`` to its end; its wall time and, from ``wait4``, its own peak RSS and CPU."""
    t0 = time.perf_counter()
    with subprocess.Popen(list(cmd), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          env=dict(env) if env is not None else None) as p:
        chunks: dict[str, bytes] = {}

        def drain(name: str, stream: object) -> None:
            chunks[name] = stream.read()  # type: ignore[attr-defined]

        threads = [threading.Thread(target=drain, args=(n, s), daemon=True)
                   for n, s in (("out", p.stdout), ("err", p.stderr))]
        for t in threads:
            t.start()
        deadline = t0 + timeout
        while True:
            pid, status, ru = os.wait4(p.pid, os.WNOHANG)
            if pid:
                break
            if time.perf_counter() > deadline:
                p.kill()
                pid, status, ru = os.wait4(p.pid, 0)
                break
            time.sleep(0.002)
        wall = time.perf_counter() - t0
        p.returncode = os.waitstatus_to_exitcode(status)
        for t in threads:
            t.join()
    return ChildRun(p.returncode, chunks.get("out", b"").decode(errors="replace"),
                    chunks.get("err", b"").decode(errors="replace"), wall, ru.ru_maxrss, ru.ru_utime + ru.ru_stime)


def settle(seconds: float) -> None:
    """Before a timed step: ``sync``, wait (<= 30 s) for dirty and writeback pages to drain, sleep."""
    os.sync()
    deadline = time.monotonic() + 30
    while _dirty_kb() > 8192 and time.monotonic() < deadline:
        time.sleep(0.05)
    if seconds > 0:
        time.sleep(seconds)


def _dirty_kb() -> int:
    total = 0
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                k, _, v = line.partition(":")
                if k in ("Dirty", "Writeback"):
                    total += int(v.split()[0])
    except OSError:
        return 0
    return total
