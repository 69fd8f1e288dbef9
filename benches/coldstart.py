"""Cold start of the ``ocistore`` command in a clean venv: issue 14's "fresh-process create <= 60 ms".

    sudo python3 benches/coldstart.py [--runs 21] [--work DIR] [--image debian:gzip] [--source TREE] [--keep]
                                      [--json FILE]

What it does, from nothing:

1. two fresh venvs (``python3 -m venv``, no system site packages), each with this worktree
   installed **non-editable** (``pip install``, dependencies from the configured index): so
   none of the development interpreter's ``.pth`` hooks (an editable-install finder, a
   sandbox's certifi hook) run at start-up, as for an embedder who ``pip install``-ed
   ocistore. In the one the bytecode of ocistore is removed and then written again by
   ``ocistore compile``; in the other it is removed and stays absent
   (``PYTHONDONTWRITEBYTECODE=1``): every run compiles ocistore's modules it loads;
2. a store on a fresh loop-mounted ext4, into which the first venv's ``ocistore images
   import`` brings the prebuilt corpus (pulled: blobs and unpacked snapshots), so that a
   create is only a snapshot prepare and two LMDB commits;
3. under ``flock /tmp/bench.lock`` (only the timing): ``--runs`` rounds, each running once, in
   this order, ``python -S -c pass`` and ``python -c pass`` (the interpreter's floor, without and
   with ``site``), ``python -c 'import attrs, argparse, ...'`` (the modules not ocistore's that a
   create loads: the floor of any create process), a fresh ``ocistore --root R containers
   create ID IMAGE`` with bytecode, the same without bytecode, and ``python -c 'import
   ocistore'``; wall time of each process (fork/exec/wait included, the same for all); then one
   process that times ``--runs`` in-process ``store.containers.create`` calls after opening
   the store.

Prints median, min, max and spread ((max - min) / median) of each; ``--json`` also writes them.
Needs root (the loop mount). The venvs and the filesystem go away afterwards unless ``--keep``.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common as C

REPO = Path(__file__).resolve().parents[1]
LOCK = "/tmp/bench.lock"

# What a create imports that is not ocistore's (lmdb, attrs and the standard library modules
# that attrs, argparse and ocistore's records need): the floor of any create process.
DEPS = "import attrs, argparse, gettext, locale, pathlib, json, datetime, lmdb, hashlib, shutil, fcntl"

INPROC = """
import json, sys, time
t0 = time.perf_counter()
from ocistore import Store
store = Store(sys.argv[1])
opened = time.perf_counter() - t0
times = []
for i in range(int(sys.argv[3])):
    t = time.perf_counter()
    store.containers.create(f"inproc-{i}", sys.argv[2])
    times.append(time.perf_counter() - t)
store.close()
print(json.dumps({"creates": times, "import_and_open": opened}))
"""


# Every child runs in a directory with no ``ocistore/`` in it (``python -c`` puts the current
# directory first on sys.path: from a checkout it would import the checkout, not the venv).
NEUTRAL_CWD = "/"


def run(cmd: Sequence[str], **kw: Any) -> subprocess.CompletedProcess[Any]:
    """``subprocess.run(cmd, check=True, ...)`` in :data:`NEUTRAL_CWD`."""
    kw.pop("check", None)
    return subprocess.run(cmd, cwd=NEUTRAL_CWD, check=True, **kw)


def clean_env() -> dict[str, str]:
    """The caller's environment without what would point the venv's Python elsewhere."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("OCISTORE_", "PYTHON", "VIRTUAL_ENV")) and k != "PYENV_VERSION"}
    env["PYTHONDONTWRITEBYTECODE"] = "1"  # nothing a run writes changes the next one
    return env


def make_venv(path: Path, src: Path) -> Path:
    """A fresh venv at ``path`` with ``src`` installed (not editable); returns its ``bin``."""
    shutil.rmtree(path, ignore_errors=True)
    base = getattr(sys, "_base_executable", sys.executable)
    run([base, "-m", "venv", str(path)], check=True, env=clean_env())
    run([str(path / "bin" / "python"), "-m", "pip", "install", "-q", str(src)], check=True,
                   env=clean_env(), stderr=subprocess.DEVNULL)
    return path / "bin"


def package_dir(bin_dir: Path) -> Path:
    code = "import ocistore, os; print(os.path.dirname(ocistore.__file__))"
    out = run([str(bin_dir / "python"), "-c", code], check=True, capture_output=True, text=True,
                         env=clean_env()).stdout
    return Path(out.strip())


def drop_bytecode(pkg: Path) -> int:
    dirs = list(pkg.rglob("__pycache__"))
    for d in dirs:
        shutil.rmtree(d)
    return len(dirs)


def copy_source(src: Path, dst: Path) -> Path:
    """The package of the tree ``src`` as it is now (committed or not), without build leftovers."""
    shutil.rmtree(dst, ignore_errors=True)
    dst.mkdir(parents=True)
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(src / name, dst / name)
    shutil.copytree(src / "ocistore", dst / "ocistore", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    return dst


@contextlib.contextmanager
def bench_lock() -> Iterator[None]:
    with open(LOCK, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def timed(cmd: Sequence[str], env: dict[str, str]) -> float:
    t = time.perf_counter()
    run(cmd, env=env, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - t


def stats(xs: list[float]) -> dict[str, Any]:
    med = statistics.median(xs)
    return {"median": med, "min": min(xs), "max": max(xs), "spread": (max(xs) - min(xs)) / med if med else None,
            "n": len(xs)}


ROWS = [
    ("python -S -c pass (interpreter, no site)", "floor_nosite"),
    ("python -c pass (interpreter + venv site)", "floor"),
    ("python -c 'import attrs, argparse, ...' (the create's third-party and stdlib imports)", "floor_deps"),
    ("ocistore containers create, bytecode (goal <= 60 ms)", "create_bytecode"),
    ("ocistore containers create, no bytecode", "create_no_bytecode"),
    ("python -c 'import ocistore', bytecode", "import_ocistore"),
    ("in-process import ocistore + Store(root), once", "inproc_open"),
    ("in-process containers.create (goal <= 10 ms)", "create_inproc"),
]


def measure(bc: Path, nobc: Path, root: Path, image: str, runs: int) -> dict[str, list[float]]:
    env = clean_env()
    create = ["--root", str(root), "containers", "create"]
    res: dict[str, list[float]] = {key: [] for _, key in ROWS}
    for b, tag in ((bc, "warm-bc"), (nobc, "warm-nobc")):  # page cache: venv files, the root
        run([str(b / "ocistore"), *create, tag, image], env=env, check=True, stdout=subprocess.DEVNULL)
    with bench_lock():
        for i in range(runs):
            res["floor_nosite"].append(timed([str(bc / "python"), "-S", "-c", "pass"], env))
            res["floor"].append(timed([str(bc / "python"), "-c", "pass"], env))
            res["floor_deps"].append(timed([str(bc / "python"), "-c", DEPS], env))
            res["create_bytecode"].append(timed([str(bc / "ocistore"), *create, f"bc-{i}", image], env))
            res["create_no_bytecode"].append(timed([str(nobc / "ocistore"), *create, f"nb-{i}", image], env))
            res["import_ocistore"].append(timed([str(bc / "python"), "-c", "import ocistore"], env))
        out = run([str(bc / "python"), "-c", INPROC, str(root), image, str(runs)], env=env, check=True,
                             capture_output=True, text=True).stdout
    inproc = json.loads(out)
    res["create_inproc"] = inproc["creates"]
    res["inproc_open"] = [inproc["import_and_open"]]
    return res


def render(summary: dict[str, dict[str, Any]], header: str) -> str:
    rows = []
    for label, key in ROWS:
        s = summary[key]
        spread = "-" if s["n"] < 2 or s["spread"] is None else f"{100 * s['spread']:.0f}%"
        rows.append([label, f"{1000 * s['median']:.1f}", f"{1000 * s['min']:.1f}", f"{1000 * s['max']:.1f}", spread])
    return header + "\n\n" + C.markdown_table(["figure (ms)", "median", "min", "max", "spread"], rows, "lrrrr")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--runs", type=int, default=21)
    ap.add_argument("--work", type=Path, default=Path("/var/tmp/ocistore-coldstart"))
    ap.add_argument("--corpus", type=Path, default=C.FIXTURES_DIR / "corpus")
    ap.add_argument("--image", default="debian:gzip")
    ap.add_argument("--source", type=Path, default=REPO,
                    help="the source tree to install (default: this worktree; e.g. an export of an older commit)")
    ap.add_argument("--keep", action="store_true", help="keep the venvs (the filesystem always goes)")
    ap.add_argument("--json", type=Path, help="also write the samples and the summary here")
    a = ap.parse_args()
    C.require_root()
    C.exit_on_sigterm()
    work = a.work.absolute()
    work.mkdir(parents=True, exist_ok=True)
    try:
        src = copy_source(a.source, work / "src")
        C.log("venvs: installing ocistore (not editable) twice")
        bc = make_venv(work / "venv-bytecode", src)
        nobc = make_venv(work / "venv-nobytecode", src)
        drop_bytecode(package_dir(nobc))
        drop_bytecode(package_dir(bc))
        run([str(bc / "ocistore"), "compile"], check=True, env=clean_env())
        with C.loop_ext4(2, work, "fs") as fs:
            root = fs / "root"
            C.log(f"importing {a.corpus} into {root}")
            run([str(bc / "ocistore"), "--root", str(root), "images", "import", str(a.corpus)],
                           check=True, env=clean_env(), stdout=subprocess.DEVNULL)
            C.log(f"timing {a.runs} rounds under {LOCK}")
            samples = measure(bc, nobc, root, a.image, a.runs)
    finally:
        if not a.keep:
            for name in ("src", "venv-bytecode", "venv-nobytecode"):
                shutil.rmtree(work / name, ignore_errors=True)
    summary = {key: stats(xs) for key, xs in samples.items()}
    vi = sys.version_info
    header = (f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, Python {vi.major}.{vi.minor}.{vi.micro}, "
              f"{os.cpu_count()} CPUs, 1-min load {os.getloadavg()[0]:.1f}; {a.runs} rounds, image {a.image}")
    print(render(summary, header))
    if a.json:
        a.json.write_text(json.dumps({"summary": summary, "samples": samples, "header": header}, indent=2))


if __name__ == "__main__":
    main()
