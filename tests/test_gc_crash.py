"""GC killed at random points: the next open + gc leaves a clean store and loses nothing kept."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from test_gc_support import blob_exists, build_image, snapshot_dir

from ocistore import Store
from ocistore.oci.digest import digest_bytes

COLLECTOR = r"""
import sys
from ocistore import Store
from ocistore.oci.digest import digest_bytes
with Store(sys.argv[1]) as s:
    print("ready", flush=True)
    sys.stdin.readline()
    s.gc()
print("done", flush=True)
"""


def make_garbage(store: Store, round_no: int) -> None:
    """An image to delete (blobs + snapshots), loose blobs and orphan files."""
    build_image(store, f"example.com/tmp:{round_no}",
                [os.urandom(64) for _ in range(2)], snapshotter="native")
    store.images.delete(f"example.com/tmp:{round_no}")
    with store.lease() as lease:
        for i in range(3):
            store.content.ingest(f"loose {round_no} {i}".encode() * 10)
        store.leases.delete(lease.id)
    for _ in range(20):  # blobs whose records were never written (a crashed committer)
        data = os.urandom(32)
        path = store.root / "content" / "blobs" / "sha256" / digest_bytes(data).partition(":")[2]
        path.write_bytes(data)
    for i in range(5):
        d = store.root / "snapshots" / "native" / str(100000 + round_no * 10 + i) / "fs"
        d.mkdir(parents=True)
        (d / "f").write_bytes(b"x" * 100)


def _spawn(root: Path) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-c", COLLECTOR, str(root)], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)


@pytest.mark.slow
def test_gc_killed_at_random_points(tmp_path: Path) -> None:
    root = tmp_path / "root"
    rng = random.Random(1234)
    with Store(root) as store:
        keep = build_image(store, "example.com/keep:1", [b"base layer", b"top layer"])
        interrupted = 0
        # collectors are started ahead (interpreter start-up dominates a round) and wait for "go"
        pending = [_spawn(root) for _ in range(2)]
        for round_no in range(50):
            make_garbage(store, round_no)
            p = pending.pop(0)
            pending.append(_spawn(root))
            assert p.stdout is not None and p.stdin is not None
            assert p.stdout.readline().strip() == "ready"
            p.stdin.write("go\n")
            p.stdin.flush()
            time.sleep(rng.uniform(0, 0.03))
            p.send_signal(signal.SIGKILL)
            out, _ = p.communicate(timeout=30)
            interrupted += "done" not in out
            store.gc()
            report = store.check()
            assert report.ok, (round_no, report.problems)
            for d in keep.blobs:
                assert blob_exists(store, d.digest)
            for sid in keep.snapshot_ids:
                assert snapshot_dir(store, "native", sid).is_dir()
            leftovers = [p.name for p in (root / "snapshots" / "native").iterdir()
                         if not p.name.isdigit() or int(p.name) >= 100000]
            assert leftovers == []
        for p in pending:
            p.kill()
            p.communicate()
        assert interrupted >= 10, interrupted  # the kills did land inside gc
