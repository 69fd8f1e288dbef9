"""Concurrency on one root (issue 11, part 2): many processes, two Stores in a process, threads.

* 8 processes pull overlapping corpus images into one root, in a loop, while a 9th runs gc in
  a loop and a 10th creates and deletes containers, for a bounded time (``DURATION``);
  afterwards every image is complete, ``check()`` passes and the registry's access log shows
  each blob served exactly once (bytes served == blob size);
* two ``Store`` objects on one root in one process, and threads sharing one ``Store``, pull
  concurrently with the same outcome.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from ocistore import Store

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from benches.torture import blob_bytes  # noqa: E402

pytestmark = [pytest.mark.registry, pytest.mark.slow]

DURATION = 20.0
IMAGES = ("debian:gzip", "debian:zstd", "app:layers", "multi:index")

_PULLER = """
import sys, time
from ocistore import Store
root, until, refs = sys.argv[1], float(sys.argv[2]), sys.argv[3:]
n = 0
with Store(root, plain_http=True) as s:
    while True:
        for r in refs:
            s.pull(r)
            n += 1
        if time.time() > until:
            break
print(n)
"""

_GC = """
import sys, time
from ocistore import Store
root, until = sys.argv[1], float(sys.argv[2])
n = 0
with Store(root, plain_http=True) as s:
    while time.time() < until:
        s.gc()
        n += 1
print(n)
"""

_CONTAINERS = """
import sys, time
from ocistore import Store, errors
root, until, ref = sys.argv[1], float(sys.argv[2]), sys.argv[3]
n = 0
with Store(root, plain_http=True) as s:
    while time.time() < until:
        try:
            s.containers.create(f"c{n}", ref)
        except errors.NotFound:  # the image is not fetched yet
            time.sleep(0.2)
            continue
        s.containers.delete(f"c{n}")
        n += 1
print(n)
"""


def _env() -> dict[str, str]:
    return dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])))


def _expected_blobs(corpus: dict[str, Any], names: tuple[str, ...]) -> dict[str, int]:
    """digest -> size of every blob a default-platform pull of ``names`` downloads."""
    out: dict[str, int] = {}
    for name in names:
        img = corpus["images"][name]
        if name == "multi:index":
            img = corpus["images"]["debian:gzip"]  # its linux/amd64 manifest is debian:gzip's
        out[img["config"]["digest"]] = img["config"]["size"]
        for layer in img["layers"]:
            out[layer["digest"]] = layer["size"]
    return out


def _assert_complete(root: Path, registry: Any, names: tuple[str, ...]) -> None:
    with Store(root, plain_http=True) as s:
        for name in names:
            ref = registry.ref(name)
            assert s.is_unpacked(ref), ref
        report = s.check()
        assert report.ok, report.problems


def _assert_served_once(log: Path, start: int, want: dict[str, int]) -> None:
    _, per, _ = blob_bytes(log, start)
    assert {d: per.get(d, 0) for d in want} == want, "a blob was downloaded more than once (or not at all)"
    assert set(per) <= set(want), f"unexpected blobs downloaded: {set(per) - set(want)}"


def test_ten_processes_on_one_root(tmp_path: Path, registry_plain: Any, corpus: dict[str, Any]) -> None:
    root = tmp_path / "root"
    log = registry_plain.dir / "registry.log"
    _, _, start = blob_bytes(log)
    until = time.time() + DURATION
    procs = []
    for i in range(8):  # every image is pulled by several processes, in different orders
        refs = [registry_plain.ref(IMAGES[(i + k) % 4]) for k in range(3)]
        procs.append(subprocess.Popen([sys.executable, "-c", _PULLER, str(root), str(until), *refs],
                                      env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE))
    procs.append(subprocess.Popen([sys.executable, "-c", _GC, str(root), str(until)], env=_env(),
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE))
    procs.append(subprocess.Popen([sys.executable, "-c", _CONTAINERS, str(root), str(until),
                                   registry_plain.ref("debian:gzip")], env=_env(),
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE))
    results = [p.communicate(timeout=DURATION + 300) for p in procs]
    for p, (_out, err) in zip(procs, results, strict=True):
        assert p.returncode == 0, err.decode()[-3000:]
    counts = [int(out) for out, _ in results]
    print(json.dumps({"pulls": sum(counts[:8]), "gc_runs": counts[8], "containers": counts[9]}))
    assert counts[8] >= 1 and counts[9] >= 1
    _assert_complete(root, registry_plain, IMAGES)
    _assert_served_once(log, start, _expected_blobs(corpus, IMAGES))


def test_two_stores_in_one_process_and_threads_sharing_one(tmp_path: Path, registry_plain: Any,
                                                           corpus: dict[str, Any]) -> None:
    root = tmp_path / "root"
    log = registry_plain.dir / "registry.log"
    _, _, start = blob_bytes(log)
    errors: list[BaseException] = []
    with Store(root, plain_http=True) as a, Store(root, plain_http=True) as b:

        def pull(s: Store, name: str) -> None:
            try:
                s.pull(registry_plain.ref(name))
            except BaseException as e:
                errors.append(e)

        threads = [threading.Thread(target=pull, args=(s, name))
                   for s in (a, b, a) for name in ("app:layers", "debian:gzip", "multi:index")]
        threads.append(threading.Thread(target=lambda: [a.gc() for _ in range(5)]))
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=300)
        assert not errors, errors
    names = ("app:layers", "debian:gzip", "multi:index")
    _assert_complete(root, registry_plain, names)
    _assert_served_once(log, start, _expected_blobs(corpus, names))
