"""GC racing writers in other processes: nothing committed and referenced is ever lost."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from ocistore import Store

TESTS = str(Path(__file__).parent)

WRITER = r"""
import os, sys, time
sys.path.insert(0, sys.argv[1])
from ocistore import Store, errors
from test_gc_support import build_image

root, wid, seconds = sys.argv[2], sys.argv[3], float(sys.argv[4])
deadline = time.time() + seconds
done = 0
with Store(root) as s:
    while time.time() < deadline:
        unpack = done % 2 == 1
        layers = [os.urandom(256), f"w{wid}-{done}".encode() * 50]
        if not unpack:
            layers.append(b"a layer every writer shares" * 20)
        name = f"example.com/w{wid}/img:{done}"
        built = build_image(s, name, layers, snapshotter="native" if unpack else None)
        # the lease is gone: the image alone keeps its graph
        for d in built.blobs:
            assert s.content.info(d.digest).size == d.size, d
            assert len(s.content.read(d.digest)) == d.size, d
        # an unleased ingest (expires in 24 h) survives gc while its writer pauses
        ref = f"w{wid}-ingest-{done}"
        with s.content.writer(ref) as w:
            w.write(b"first half;")
        time.sleep(0.005)
        w = s.content.writer(ref)
        assert w.status().offset == len(b"first half;"), w.status()
        w.write(os.urandom(64))
        with s.lease():
            digest = w.commit()
            assert s.content.exists(digest)
        if done % 3 == 0:
            s.images.delete(name)
        done += 1
print(done)
"""

COLLECTOR = r"""
import sys, time
from ocistore import Store
root, seconds = sys.argv[1], float(sys.argv[2])
deadline = time.time() + seconds
runs = 0
with Store(root) as s:
    while time.time() < deadline:
        s.gc()
        runs += 1
print(runs)
"""


@pytest.mark.slow
def test_gc_races_writers(tmp_path: Path) -> None:
    root = str(tmp_path / "root")
    Store(root).close()
    seconds = 5.0
    procs = [
        subprocess.Popen([sys.executable, "-c", WRITER, TESTS, root, str(i), str(seconds)],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for i in range(3)
    ]
    gc = subprocess.Popen([sys.executable, "-c", COLLECTOR, root, str(seconds + 1)],
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    results = []
    for p in [*procs, gc]:
        out, err = p.communicate(timeout=120)
        assert p.returncode == 0, err
        results.append(int(out.strip()))
    print("writer iterations, gc runs:", results)
    assert all(n > 0 for n in results[:-1]), results
    assert results[-1] > 1, results
    with Store(root) as store:
        images = store.images.list()
        assert len(images) >= sum(results[:-1]) // 2
        store.gc()
        report = store.check()
        assert report.ok, report.problems
        for image in images:
            assert store.content.exists(image.target.digest)
