"""Crash-consistency torture: kill a store's operations and check what is left (issue 11).

Usage::

    python -m benches.torture [--kills 1000] [--budget SECONDS] [--seed 1] [--work DIR] [--json OUT]

A child process (``python -m benches.torture child ...``) runs the *episode*, a fixed list of
operations on one fresh root, against a real registry (the fixture kit's CNCF distribution
loaded with the corpus) and real archives exported once from that registry's images:

    fetch, pull, lazy unpack by container create, import of a docker-archive (unpacked),
    import of an OCI tar (fetch only, all platforms), unpack into the native snapshotter,
    export, container delete, image delete, gc, a second lazy container create

Each finished step is appended to a journal (fsync'd), so a restarted child resumes at the
first unfinished step -- the operation itself is simply called again, which must resume.
The parent SIGKILLs the child either after a random delay or through a named fault point
(``OCISTORE_FAULT=<name>:<n>``, see ``ocistore/_faults.py``), then, with the child dead:

* reopens the root; ``check()`` must be ok, or report only orphans that ``check(repair=True)``
  removes, after which it must be ok (the enforced invariant: *no damage to anything a
  record references; leftovers are orphans only*);
* compares every committed object with a clean reference run of the same episode: every
  blob, image and committed snapshot that the reference had after the last finished step
  (and that the step in progress does not remove) must be present; each blob re-hashes to its
  digest and each committed snapshot tree (paths, types, modes, sizes, contents, link
  targets) hashes to the reference's tree hash. Anything missing counts as *lost*;
* restarts the child (possibly to be killed again) until the episode finishes, then checks
  the finished store against the reference's final state.

Bytes downloaded are read from the registry's access log (``http.response.written`` of blob
GETs): the re-download ratio is (bytes in the torture run - episodes x bytes of a clean
episode) / (episodes x bytes of a clean episode).

The quick form of this runs in the test suite (``tests/torture/test_crash.py``).
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import random
import re
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
FAULT_POINTS = (
    "content.ingest.write",
    "content.commit.link",
    "metadata.txn.commit",
    "snapshots.rename",
    "unpack.label",
    "dedup.link",
)
SNAPSHOTTERS = ("overlayfs", "native")
MAX_KILLS_PER_EPISODE = 12


def log(msg: str) -> None:
    sys.stderr.write(f"[torture] {msg}\n")
    sys.stderr.flush()


def child_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment of a child: this checkout first on PYTHONPATH, no fault armed."""
    env = dict(os.environ)
    env.pop("OCISTORE_FAULT", None)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), *filter(None, [env.get("PYTHONPATH", "")])])
    env.update(extra or {})
    return env


# -- the episode -------------------------------------------------------------------------------------


def steps(address: str, archives: Path, out: Path) -> list[tuple[str, Callable[[Any], None]]]:
    """The episode: (name, fn(store)) in order. Every fn may be called again after a kill."""
    from ocistore import errors

    gzip, app, multi, zstd = (f"{address}/{n}" for n in ("debian:gzip", "app:layers", "multi:index", "debian:zstd"))

    def create(cid: str, image: str, snapshotter: str) -> Callable[[Any], None]:
        def fn(s: Any) -> None:
            with contextlib.suppress(errors.AlreadyExists):
                s.containers.create(cid, image, snapshotter=snapshotter)
        return fn

    def delete_container(s: Any) -> None:
        with contextlib.suppress(errors.NotFound):
            s.containers.delete("c1")

    def delete_image(s: Any) -> None:
        with contextlib.suppress(errors.NotFound):
            s.images.delete(zstd)

    return [
        ("fetch debian:gzip", lambda s: s.fetch(gzip)),
        ("pull app:layers", lambda s: s.pull(app)),
        ("container create c1 (lazy unpack)", create("c1", gzip, "overlayfs")),
        ("import docker-archive", lambda s: s.import_archive(archives / "zstd.docker.tar")),
        ("import oci tar (fetch only)", lambda s: s.import_archive(archives / "multi.oci.tar", fetch_only=True,
                                                                  all_platforms=True)),
        ("unpack multi:index native", lambda s: s.unpack(multi, snapshotter="native")),
        ("export app:layers", lambda s: s.export_archive(out / "app.tar", [app])),
        ("container delete c1", delete_container),
        ("image delete debian:zstd", delete_image),
        ("gc", lambda s: s.gc()),
        ("container create c2 native", create("c2", gzip, "native")),
    ]


def _journal(work: Path) -> tuple[set[int], set[int]]:
    begun, done = set(), set()
    p = work / "journal"
    if p.exists():
        for line in p.read_text().splitlines():
            what, _, i = line.partition(" ")
            (done if what == "done" else begun).add(int(i))
    return begun, done


def _append(work: Path, line: str) -> None:
    fd = os.open(work / "journal", os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, (line + "\n").encode())
        os.fsync(fd)
    finally:
        os.close(fd)


def run_child(args: argparse.Namespace) -> int:
    """The child: run the unfinished steps of the episode; with --reference, record checkpoints."""
    from ocistore import Store, _faults

    work = Path(args.work)
    counts: dict[str, int] = {}
    if args.reference:
        def count(name: str) -> None:
            counts[name] = counts.get(name, 0) + 1
        _faults.fault_point = count
    checkpoints: list[dict[str, Any]] = []
    step_seconds: list[float] = []
    step_hits: list[dict[str, int]] = []
    trees: dict[tuple[str, str, int], str] = {}
    # dedup on: "unpack multi:index native" links files to the overlayfs snapshots (dedup.link)
    with Store(args.root, plain_http=True, dedup=True) as s:
        if args.reference:
            checkpoints.append(inventory(s, trees))
        _, done = _journal(work)
        for i, (_name, fn) in enumerate(steps(args.address, Path(args.archives), work)):
            if i in done:
                continue
            _append(work, f"begin {i}")
            t0 = time.monotonic()
            fn(s)
            step_seconds.append(time.monotonic() - t0)
            _append(work, f"done {i}")
            if args.reference:
                step_hits.append(dict(counts))
                counts.clear()
                checkpoints.append(inventory(s, trees))
    if args.reference:
        (work / "reference.json").write_text(json.dumps({"checkpoints": checkpoints, "step_hits": step_hits,
                                                            "step_seconds": step_seconds}))
    return 0


# -- inventories -------------------------------------------------------------------------------------


def tree_hash(root: Path) -> str:
    """A digest of a directory tree: sorted (path, type, mode, size, content, link target)."""
    import xxhash

    h = hashlib.sha256()
    entries: list[tuple[str, str]] = []

    def walk(d: Path, rel: str) -> None:
        with os.scandir(d) as it:
            for e in it:
                p = f"{rel}/{e.name}"
                st = e.stat(follow_symlinks=False)
                mode = stat.S_IMODE(st.st_mode)
                if stat.S_ISDIR(st.st_mode):
                    entries.append((p, f"d {mode:o}"))
                    walk(Path(e.path), p)
                elif stat.S_ISLNK(st.st_mode):
                    entries.append((p, f"l {os.readlink(e.path)}"))
                elif stat.S_ISREG(st.st_mode):
                    fh = xxhash.xxh3_128()  # trees are compared with a reference, not authenticated
                    with open(e.path, "rb") as f:
                        while chunk := f.read(1 << 20):
                            fh.update(chunk)
                    entries.append((p, f"f {mode:o} {st.st_size} {fh.hexdigest()}"))
                else:
                    entries.append((p, f"o {stat.S_IFMT(st.st_mode):o} {mode:o} {st.st_rdev}"))

    walk(root, "")
    for p, what in sorted(entries):
        h.update(f"{p}\0{what}\n".encode(errors="surrogateescape"))
    return h.hexdigest()


def inventory(s: Any, trees: dict[tuple[str, str, int], str]) -> dict[str, Any]:
    """What a store holds: content records, images, committed snapshots (tree hashes, cached)."""
    from ocistore import Kind

    snaps: dict[str, str] = {}
    for sn_name in SNAPSHOTTERS:
        sn = s.snapshots(sn_name)
        for info in sn.walk():
            if info.kind is not Kind.COMMITTED:
                continue
            path = sn.path(info.name)
            ident = (sn_name, info.name, os.stat(path).st_ino)
            if ident not in trees:
                trees[ident] = tree_hash(path)
            snaps[f"{sn_name}/{info.name}"] = trees[ident]
    return {
        "blobs": {i.digest: i.size for i in s.content.walk()},
        "images": {i.name: i.target.digest for i in s.images.list()},
        "snapshots": snaps,
    }


def rehash(path: Path, digest: str) -> bool:
    alg, _, want = digest.partition(":")
    h = hashlib.new(alg)
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest() == want


# -- the registry ------------------------------------------------------------------------------------

_WRITTEN = re.compile(r'http\.request\.method=GET .*http\.request\.uri="(/v2/[^"]*/blobs/[^"]*)".*'
                      r'http\.response\.written=(\d+)')


def blob_bytes(log_path: Path, start: int = 0) -> tuple[int, dict[str, int], int]:
    """Blob bytes served since byte offset ``start`` of the registry log: (total, per digest, end)."""
    per: dict[str, int] = {}
    with open(log_path, "rb") as f:
        f.seek(start)
        data = f.read()
    for line in data.decode(errors="replace").splitlines():
        if "response completed" not in line:
            continue
        m = _WRITTEN.search(line)
        if m:
            d = m.group(1).rsplit("/", 1)[1]
            per[d] = per.get(d, 0) + int(m.group(2))
    return sum(per.values()), per, start + len(data)


# -- the parent --------------------------------------------------------------------------------------


class Torture:
    """One torture run against a registry at ``address`` whose log is ``registry_log``."""

    def __init__(self, address: str, registry_log: Path, work: Path, seed: int = 1) -> None:
        self.address = address
        self.registry_log = registry_log
        self.work = work
        self.rng = random.Random(seed)
        self.archives = work / "archives"
        self.stats: dict[str, Any] = {
            "episodes": 0, "kills": 0, "kills_timed": 0, "kills_fault": {}, "runs": 0,
            "inconsistent": 0, "lost": 0, "repaired_orphans": 0, "problems": [],
            "bytes_total": 0, "bytes_clean_episode": 0, "bytes_redownloaded": 0,
        }
        self.trees: dict[tuple[str, str, int], str] = {}
        self.hashed: dict[tuple[str, int, int], bool] = {}
        self.max_kills = MAX_KILLS_PER_EPISODE
        self.startup = 0.3  # seconds from spawn to the first step, measured in prepare()
        # children read byte-compiled modules from here: with PYTHONDONTWRITEBYTECODE=1 (set on
        # our machines) each of the hundreds of children would otherwise recompile the package
        self.pycache = work / "pycache"

    # setup
    def prepare(self) -> None:
        """Export the archives the episode imports, then run the clean reference episode."""
        from ocistore import Store

        self.archives.mkdir(parents=True, exist_ok=True)
        subprocess.run([sys.executable, "-m", "compileall", "-q", str(REPO / "ocistore"), str(REPO / "benches")],
                       env=self._env(), check=True, stdout=subprocess.DEVNULL)
        with Store(self.work / "prep", plain_http=True) as s:
            s.fetch(f"{self.address}/debian:zstd")
            s.fetch(f"{self.address}/multi:index", all_platforms=True)
            s.export_archive(self.archives / "zstd.docker.tar", [f"{self.address}/debian:zstd"], format="docker")
            s.export_archive(self.archives / "multi.oci.tar", [f"{self.address}/multi:index"], all_platforms=True)
        shutil.rmtree(self.work / "prep")
        ref = self.work / "reference"
        ref.mkdir()
        _, _, start = blob_bytes(self.registry_log)
        t0 = time.monotonic()
        p = self._spawn(ref, reference=True)
        _, err = p.communicate()
        if p.returncode != 0:
            raise RuntimeError(f"reference episode failed (exit {p.returncode}): {err.decode()[-3000:]}")
        wall = time.monotonic() - t0
        self.stats["bytes_clean_episode"], _, _ = blob_bytes(self.registry_log, start)
        data = json.loads((ref / "reference.json").read_text())
        self.checkpoints: list[dict[str, Any]] = data["checkpoints"]
        self.step_hits: list[dict[str, int]] = data["step_hits"]
        self.step_seconds: list[float] = data["step_seconds"]
        self.n_steps = len(self.checkpoints) - 1
        self.stats["episode_seconds"] = round(sum(self.step_seconds), 2)
        t0 = time.monotonic()
        subprocess.run([sys.executable, "-c", "import ocistore, ocistore.store"], cwd=REPO, env=self._env(),
                       check=True)
        self.startup = time.monotonic() - t0
        log(f"reference episode: {wall:.1f} s wall, steps {sum(self.step_seconds):.1f} s, "
            f"startup {self.startup:.2f} s")
        self.stats["fault_hits_per_episode"] = {
            p: sum(h.get(p, 0) for h in self.step_hits) for p in FAULT_POINTS}
        shutil.rmtree(ref / "root")

    def _spawn(self, work: Path, reference: bool = False, fault: str = "") -> subprocess.Popen[bytes]:
        cmd = [sys.executable, "-m", "benches.torture", "child", "--root", str(work / "root"), "--work", str(work),
               "--address", self.address, "--archives", str(self.archives)]
        if reference:
            cmd.append("--reference")
        self.stats["runs"] += 1
        return subprocess.Popen(cmd, cwd=REPO, env=self._env({"OCISTORE_FAULT": fault} if fault else {}),
                                stderr=subprocess.PIPE)

    def _env(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        return child_env({"PYTHONPYCACHEPREFIX": str(self.pycache), **(extra or {})})

    # one episode
    def episode(self) -> None:
        """Run one episode on a fresh root, killing it until it finishes; verify after each kill."""
        n = self.stats["episodes"]
        work = self.work / f"ep{n}"
        work.mkdir()
        self.stats["episodes"] += 1
        kills = 0
        while True:
            fault = ""
            delay = None
            if kills < self.max_kills:
                # aim inside what is left to do: the hits and seconds of the unfinished steps
                _, done = _journal(work)
                left = [i for i in range(self.n_steps) if i not in done]
                if self.rng.random() < 0.5:
                    name = FAULT_POINTS[self.rng.randrange(len(FAULT_POINTS))]
                    hits = sum(self.step_hits[i].get(name, 0) for i in left)
                    if hits:  # 0.8: the step in progress is partly done (and resumes where it was)
                        fault = f"{name}:{self.rng.randint(1, max(1, int(hits * 0.8)))}"
                if not fault:
                    delay = self.startup + self.rng.uniform(0, 0.8 * sum(self.step_seconds[i] for i in left))
            p = self._spawn(work, fault=fault)
            if delay is not None:
                try:
                    p.wait(timeout=delay)
                except subprocess.TimeoutExpired:
                    p.send_signal(signal.SIGKILL)
            _, err = p.communicate()
            if p.returncode == 0:
                break
            if p.returncode != -signal.SIGKILL:
                self._problem(f"episode {n}: child failed (exit {p.returncode}): {err.decode()[-3000:]}")
                self.stats["inconsistent"] += 1
                return
            begun, done = _journal(work)
            if not begun - done:  # killed before (or between) operations: not a kill inside one
                continue
            kills += 1
            self.stats["kills"] += 1
            if fault:
                key = fault.split(":")[0]
                self.stats["kills_fault"][key] = self.stats["kills_fault"].get(key, 0) + 1
            else:
                self.stats["kills_timed"] += 1
            self.verify(work, len(done), f"episode {n} kill {kills} ({fault or 'timed'}, in step {min(begun - done)})")
        self.verify(work, self.n_steps, f"episode {n} end", final=True)
        shutil.rmtree(work)

    def _problem(self, msg: str) -> None:
        log(msg)
        if len(self.stats["problems"]) < 50:
            self.stats["problems"].append(msg)

    def verify(self, work: Path, done: int, what: str, final: bool = False) -> None:
        """Check the invariants of a root whose child is dead; ``done`` steps were finished."""
        from ocistore import Store
        from ocistore.metadata.orphans import list_orphans

        with Store(work / "root", plain_http=True) as s:
            report = s.check()
            if not report.ok:
                orphans = {o.describe() for o in list_orphans(s.db, s.layout)}
                other = [p for p in report.problems if p not in orphans]
                repaired = s.check(repair=True)
                after = s.check()
                self.stats["repaired_orphans"] += len(repaired.repaired)
                if other or not after.ok:
                    self.stats["inconsistent"] += 1
                    self._problem(f"{what}: check: {other or after.problems}")
            have = inventory(s, self.trees)
            blob_paths = {d: s.layout.content.blob_path(d) for d in have["blobs"]}
        want = self.checkpoints[done]
        if final:
            required = want
        else:
            nxt = self.checkpoints[done + 1]
            required = {k: {x: v for x, v in want[k].items() if x in nxt[k]} for k in want}
        lost = []
        for kind in ("blobs", "images", "snapshots"):
            for name, value in required[kind].items():
                if name not in have[kind]:
                    lost.append(f"{kind} {name} missing")
                elif have[kind][name] != value:
                    lost.append(f"{kind} {name} differs ({have[kind][name]} != {value})")
        for d in required["blobs"]:
            p = blob_paths.get(d)
            if p is None:
                continue
            st = os.stat(p)
            key = (d, st.st_ino, st.st_mtime_ns)
            if key not in self.hashed:
                self.hashed[key] = rehash(p, d)
            if not self.hashed[key]:
                lost.append(f"blob {d} does not hash to its digest")
        if final:
            extra = set(have["images"]) ^ set(want["images"])
            lost += [f"image {x} unexpected" for x in extra]
        if lost:
            self.stats["lost"] += len(lost)
            self._problem(f"{what}: {lost[:10]}")

    def run(self, kills: int, budget: float) -> dict[str, Any]:
        """Episodes until ``kills`` kills or ``budget`` seconds; returns the figures."""
        t0 = time.monotonic()
        _, _, start = blob_bytes(self.registry_log)
        self.prepare()
        _, _, start = blob_bytes(self.registry_log)
        while self.stats["kills"] < kills and time.monotonic() - t0 < budget:
            self.episode()
            log(f"episode {self.stats['episodes']}: {self.stats['kills']} kills, "
                f"{self.stats['inconsistent']} inconsistent, {self.stats['lost']} lost")
        total, _, _ = blob_bytes(self.registry_log, start)
        clean = self.stats["episodes"] * self.stats["bytes_clean_episode"]
        self.stats["bytes_total"] = total
        self.stats["bytes_redownloaded"] = total - clean
        self.stats["redownload_ratio"] = round((total - clean) / clean, 4) if clean else 0.0
        self.stats["seconds"] = round(time.monotonic() - t0, 1)
        return self.stats


# -- command line ------------------------------------------------------------------------------------


@contextlib.contextmanager
def _registry(work: Path) -> Iterator[tuple[str, Path]]:
    sys.path.insert(0, str(REPO / "tests"))
    from registry_fixtures import start_registry, stop_registry

    d = work / "registry"
    d.mkdir()
    try:
        reg = start_registry("plain", d)
        yield reg.address, d / "registry.log"
    finally:
        stop_registry(d)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benches.torture", description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="cmd")
    c = sub.add_parser("child")
    c.add_argument("--root", required=True)
    c.add_argument("--work", required=True)
    c.add_argument("--address", required=True)
    c.add_argument("--archives", required=True)
    c.add_argument("--reference", action="store_true")
    ap.add_argument("--kills", type=int, default=1000)
    ap.add_argument("--budget", type=float, default=6 * 3600.0, help="seconds (default 6 h)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--work", default="", help="scratch dir (default: a temp dir, removed)")
    ap.add_argument("--json", default="", help="write the figures here too")
    args = ap.parse_args(argv)
    if args.cmd == "child":
        return run_child(args)
    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="ocistore-torture-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        with _registry(work) as (address, reg_log):
            stats = Torture(address, reg_log, work, seed=args.seed).run(args.kills, args.budget)
            out = json.dumps(stats, indent=2)
            print(out)
            if args.json:
                Path(args.json).write_text(out + "\n")
            return 0 if stats["inconsistent"] == 0 and stats["lost"] == 0 else 1
    finally:
        if not args.work:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
