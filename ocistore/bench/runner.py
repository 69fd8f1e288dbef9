"""The bench run: every image x mode x repetition, ocistore (API and CLI) beside containerd.

:func:`run` takes a :class:`BenchConfig` and returns the raw results (a JSON-able dict:
every sample, the machine, versions, date and command); ``ocistore.bench.report`` turns
them into the summary, markdown, plots and the README section.
"""

from __future__ import annotations

import compileall
import contextlib
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import attrs

import ocistore
from ocistore.bench import containerd as ctrd
from ocistore.bench import measure, modes, sources

__all__ = ["BenchConfig", "machine", "run"]

Log = Callable[[str, str, int, int], None]
"""``(image label, what is running, done, total)``: the progress callback."""


@attrs.frozen
class BenchConfig:
    """What to measure and where."""

    sources: tuple[str, ...]
    """Registry references and/or archives (OCI layout dir or tar, docker-archive)."""
    work: Path
    """Scratch directory (keep it short: containerd's socket lives there)."""
    images: tuple[str, ...] = ()
    """Only these labels (``debian:gzip``) of the archives' images; empty: all."""
    modes: tuple[str, ...] = ("fetch", "pull", "discard", "lazy")
    repeat: int = 3
    containerd: bool = True
    """Measure containerd too when it can run here (else skipped with the reason)."""
    cli: bool = True
    """Also time every step as a fresh ``python -m ocistore`` process."""
    loop_ext4_gb: float = 0.0
    """> 0: run both roots on a fresh loop-mounted ext4 of that size (root only)."""
    settle: float = 0.5
    plain_http: bool = False
    """For registry references: talk HTTP (archives are always served on plain HTTP)."""
    node_counts: tuple[int, ...] = (1, 5, 20)
    node_base: str | None = None
    """The image the node model's variants stand on (label or stored name); default: the first."""
    command: str = ""


def machine() -> dict[str, Any]:
    """CPU, memory, kernel, Python, versions and load, for the report."""
    info: dict[str, Any] = {"kernel": platform.release(), "cpus": os.cpu_count(), "python": platform.python_version(),
                            "ocistore": ocistore.__version__, "loadavg": list(os.getloadavg()),
                            "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                info["cpu"] = line.split(":", 1)[1].strip()
                break
    with contextlib.suppress(OSError, ValueError), open("/proc/meminfo") as f:
        info["mem_gb"] = round(int(f.readline().split()[1]) / 1e6, 1)
    pkg = Path(ocistore.__file__).resolve().parent
    rev = subprocess.run(["git", "-C", str(pkg), "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                         check=False)
    if rev.returncode == 0:
        dirty = subprocess.run(["git", "-C", str(pkg), "status", "--porcelain", "--", "."], capture_output=True,
                               text=True, check=False).stdout.strip()
        info["ocistore_git"] = rev.stdout.strip() + ("+uncommitted" if dirty else "")
    if shutil.which("containerd"):
        info["containerd"] = ctrd.version()
    return info


def _child_env(work: Path) -> dict[str, str]:
    """Environment of the measured processes: bytecode cached under ``work`` (precompiled)."""
    env = dict(os.environ)
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env["PYTHONPYCACHEPREFIX"] = str(work / "pycache")
    pkg_parent = str(Path(ocistore.__file__).resolve().parent.parent)
    env["PYTHONPATH"] = pkg_parent + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return env


def _precompile(work: Path) -> float:
    """Byte-compile the package into the children's cache; seconds taken."""
    t0 = time.perf_counter()
    pkg = Path(ocistore.__file__).resolve().parent
    old = sys.pycache_prefix
    sys.pycache_prefix = str(work / "pycache")
    try:
        compileall.compile_dir(str(pkg), quiet=1)
    finally:
        sys.pycache_prefix = old
    return time.perf_counter() - t0


@contextlib.contextmanager
def _filesystem(cfg: BenchConfig) -> Iterator[tuple[Path, str]]:
    work = cfg.work
    if cfg.loop_ext4_gb <= 0:
        fs = work / "fs"
        fs.mkdir(parents=True, exist_ok=True)
        fstype = subprocess.run(["stat", "-f", "-c", "%T", str(fs)], capture_output=True, text=True,
                                check=False).stdout.strip()
        yield fs, f"{fstype} at {fs}"
        return
    img, mnt = work / "fs.img", work / "fs"
    mnt.mkdir(parents=True, exist_ok=True)
    subprocess.run(["truncate", "-s", f"{int(cfg.loop_ext4_gb * 1024)}M", str(img)], check=True)
    mounted = False
    try:
        subprocess.run(["mkfs.ext4", "-q", "-F", "-E", "lazy_itable_init=0,lazy_journal_init=0", str(img)],
                       check=True)
        subprocess.run(["mount", "-o", "loop", str(img), str(mnt)], check=True)
        mounted = True
        yield mnt, f"a fresh {cfg.loop_ext4_gb:g} GB loop-mounted ext4 shared by both systems"
    finally:
        if mounted:
            ctrd._unmount_under(mnt)
            if subprocess.run(["umount", str(mnt)], capture_output=True, check=False).returncode != 0:
                subprocess.run(["umount", "-l", str(mnt)], capture_output=True, check=False)
        img.unlink(missing_ok=True)


def _reset(path: Path) -> None:
    ctrd._unmount_under(path)
    shutil.rmtree(path, ignore_errors=True)


class _Runner:
    def __init__(self, cfg: BenchConfig, fs: Path, log: Log) -> None:
        self.cfg, self.fs, self.log = cfg, fs, log
        self.env = _child_env(cfg.work)
        self.oroot = fs / "o"
        self.peer: ctrd.Containerd | None = None

    def ocistore_api(self, mode: modes.Mode, refs: list[str], plain_http: bool) -> dict[str, Any]:
        _reset(self.oroot)
        spec = {"mode": mode.name, "root": str(self.oroot), "refs": refs, "plain_http": plain_http,
                "settle": self.cfg.settle}
        try:
            r = measure.run_child([sys.executable, "-m", "ocistore.bench.scenario", json.dumps(spec)], self.env)
            if r.returncode != 0:
                return {"error": r.stderr.strip().splitlines()[-1] if r.stderr.strip() else f"exit {r.returncode}"}
            out: dict[str, Any] = json.loads(r.stdout.strip().splitlines()[-1])
            out.update(maxrss_kb=r.maxrss_kb, process_wall_s=r.wall_s, process_cpu_s=r.cpu_s)
            return out
        finally:
            _reset(self.oroot)

    def ocistore_cli(self, mode: modes.Mode, ref: str, plain_http: bool) -> dict[str, Any]:
        _reset(self.oroot)
        base = [sys.executable, "-m", "ocistore", "--root", str(self.oroot)]
        http = ["--plain-http"] if plain_http else []
        out: dict[str, Any] = {"steps": {}, "maxrss_kb": {}}
        first = [[*base, *(ref if a == "{ref}" else a for a in cmd), *(http if "{ref}" in cmd else [])]
                 for cmd in mode.cli_steps]
        try:
            for step, cmds in ((mode.step, first), ("create", [[*base, "containers", "create", "bench-1", ref]])):
                measure.settle(self.cfg.settle)
                wall, rss = 0.0, 0
                for cmd in cmds:
                    r = measure.run_child(cmd, self.env)
                    if r.returncode != 0:
                        return {"error": f"{' '.join(cmd[2:])}: {r.stderr.strip()[-300:]}"}
                    wall, rss = wall + r.wall_s, max(rss, r.maxrss_kb)
                out["steps"][step], out["maxrss_kb"][step] = wall, rss
            return out
        finally:
            _reset(self.oroot)

    def containerd(self, mode: modes.Mode, refs: list[str], plain_http: bool) -> dict[str, Any]:
        assert self.peer is not None and mode.containerd_args is not None
        peer = self.peer
        peer.fresh()
        http = ["--plain-http"] if plain_http else []
        parts = measure.containerd_parts(peer.root, peer.snapshotter)
        res: dict[str, Any] = {"images": []}
        try:
            for i, ref in enumerate(refs):
                one: dict[str, Any] = {"ref": ref, "steps": {}, "disk": {}}
                for step, cmd in ((mode.step, peer.ctr(*mode.containerd_args, *http, ref)),
                                  ("create", peer.ctr("containers", "create", ref, f"bench-{i}"))):
                    measure.settle(self.cfg.settle)
                    r = measure.run_child(cmd)
                    if r.returncode != 0:
                        return {"error": f"ctr {' '.join(cmd[5:])}: {r.stderr.strip()[-300:]}"}
                    one["steps"][step] = r.wall_s
                    one["disk"][step] = measure.root_usage(peer.root, parts)
                res["images"].append(one)
            return res
        finally:
            peer.stop()


def run(cfg: BenchConfig, log: Log | None = None) -> dict[str, Any]:
    """Measure everything ``cfg`` asks for; the raw results (see ``ocistore.bench.report``)."""
    say: Log = log or (lambda *_: None)
    cfg.work.mkdir(parents=True, exist_ok=True)
    t_start = time.time()
    results: dict[str, Any] = {"command": cfg.command, "config": attrs.asdict(cfg, value_serializer=_plain),
                               "machine": machine(), "images": {}, "node": {}, "skipped": {}}
    results["precompile_s"] = _precompile(cfg.work)
    mode_list = [modes.get(m) for m in cfg.modes]
    unavailable = modes.available(cfg.modes)
    results["modes"] = {m.name: {"label": m.label, "step": m.step, "unavailable": unavailable[m.name],
                                 "containerd": None if m.containerd_args else m.containerd_missing}
                        for m in mode_list}
    runnable = [m for m in mode_list if unavailable[m.name] is None]
    why_not = ctrd.unavailable() if cfg.containerd else "turned off (--no-containerd)"
    results["containerd"] = {"unavailable": why_not}
    archives, refs = sources.resolve(cfg.sources)
    staging = sources.Staging(cfg.work / "staging")
    try:
        stored: list[tuple[str, str]] = []  # (stored name, origin)
        for a in archives:
            say("staging", f"importing {a}", 0, 0)
            stored += [(n, a) for n in staging.add_archive(a)]
        wanted = set(cfg.images)
        stored = [(n, o) for n, o in stored if not wanted or sources.short_name(n) in wanted]
        with staging.serving() as address, _filesystem(cfg) as (fs, fs_desc):
            results["filesystem"] = fs_desc
            results["registry"] = {"archives": f"ocistore serve of a staging store at {address} (plain HTTP)"}
            images = [staging.image(n, address, o) for n, o in stored]
            images += [sources.BenchImage(sources.short_name(r), r, "registry") for r in refs]
            runner = _Runner(cfg, fs, say)
            if why_not is None:
                runner.peer = ctrd.Containerd(fs / "c")
            for img in images:
                results["images"][img.label] = _measure_image(cfg, runner, img, runnable, archives, say)
            if cfg.node_counts and images:
                results["node"] = _node_model(cfg, runner, staging, address, images, runnable, say)
    finally:
        staging.close()
    results["duration_s"] = time.time() - t_start
    results["machine"]["loadavg_end"] = list(os.getloadavg())
    return results


def _plain(_inst: object, _field: object, value: Any) -> Any:
    return str(value) if isinstance(value, Path) else value


def _measure_image(cfg: BenchConfig, runner: _Runner, img: sources.BenchImage, runnable: list[modes.Mode],
                   archives: list[str], say: Log) -> dict[str, Any]:
    plain = img.origin != "registry" or cfg.plain_http
    out: dict[str, Any] = {"ref": img.ref, "origin": img.origin, "layers": img.layers, "compressed": img.compressed,
                           "modes": {m.name: {"api": [], "cli": [], "containerd": []} for m in runnable}}
    per_rep = sum(1 + cfg.cli + (runner.peer is not None and m.containerd_args is not None) for m in runnable)
    total, done = per_rep * cfg.repeat, 0
    for rep in range(cfg.repeat):
        for m in runnable:
            order = ["api", "cli", "containerd"]
            if rep % 2:
                order.reverse()  # alternate who goes first
            for system in order:
                if system == "cli" and not cfg.cli:
                    continue
                if system == "containerd" and (runner.peer is None or m.containerd_args is None):
                    continue
                say(img.label, f"{m.name} {system} (repetition {rep + 1}/{cfg.repeat})", done, total)
                if system == "api":
                    sample = runner.ocistore_api(m, [img.ref], plain)
                elif system == "cli":
                    sample = runner.ocistore_cli(m, img.ref, plain)
                else:
                    sample = runner.containerd(m, [img.ref], plain)
                out["modes"][m.name][system].append(sample)
                done += 1
    say(img.label, "done", total, total)
    return out


def _node_model(cfg: BenchConfig, runner: _Runner, staging: sources.Staging, address: str,
                images: list[sources.BenchImage], runnable: list[modes.Mode], say: Log) -> dict[str, Any]:
    base_label = cfg.node_base or images[0].label
    base = next((n for n in (i.name for i in staging.store.images.list()) if sources.short_name(n) == base_label
                 or n == base_label), None)
    if base is None:
        return {"skipped": f"node base {base_label!r} is not an archive image"}
    counts = sorted(set(cfg.node_counts))
    names = sources.build_variants(staging, base, max(counts), cfg.work)
    refs = [staging.image(n, address, "variants").ref for n in names]
    out: dict[str, Any] = {"base": base_label, "app_layer_bytes": 2 << 20, "counts": counts,
                           "modes": {m.name: {} for m in runnable}}
    jobs = [(n, m, s) for n in counts for m in runnable for s in ("api", "containerd")
            if s == "api" or (runner.peer is not None and m.containerd_args is not None)]
    for done, (n, m, system) in enumerate(jobs):
        say(f"node x{n}", f"{m.name} {system}", done, len(jobs))
        sample = (runner.ocistore_api(m, refs[:n], True) if system == "api"
                  else runner.containerd(m, refs[:n], True))
        out["modes"][m.name].setdefault(str(n), {})[system] = sample
    say("node", "done", len(jobs), len(jobs))
    return out
