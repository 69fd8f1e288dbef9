"""Shared helpers for ocistore's benchmark scripts (``benches/*.py``).

Stdlib only, so a bench can run before ocistore's test extras are installed. What is here:

* filesystems: :func:`loop_ext4` (a fresh loop-mounted ext4 for the duration of a
  ``with`` block, removed afterwards even on failure), :func:`unmount_under`,
  :func:`du_bytes` (allocated or apparent bytes, hardlinks once), :func:`settle`
  (sync, wait for writeback to drain, optional page-cache drop, short sleep);
* timing: :class:`Timer`, :func:`timed_cmd` (a command's wall time, failing loudly),
  :func:`summarize` / :func:`median`;
* memory: :func:`run_child` runs a command and returns its wall time and its **peak RSS**
  (``ru_maxrss`` from ``wait4`` on that child: the same number
  ``resource.getrusage(RUSAGE_CHILDREN).ru_maxrss`` gives in a parent that has waited for
  that one child only; using ``wait4`` keeps it per child instead of a running maximum);
  :func:`proc_hwm_kb` reads a running daemon's ``VmHWM``;
* external peers: :class:`LocalRegistry` (the fixture kit's ``registry`` script: start on a
  free port, load layouts, stop) and :class:`ContainerdPeer` (the kit's ``containerd-peer``:
  fresh root, ``ctr`` commands, ``du`` of its content store and snapshotter);
* output: :func:`markdown_table`, :func:`fmt_s` / :func:`fmt_mb` / :func:`fmt_ratio`,
  :func:`machine_info`, :func:`write_results`.

All external processes a helper starts are stopped by the matching context manager's exit,
including on exceptions and SIGTERM (call :func:`exit_on_sigterm` first so ``finally``
blocks run).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

__all__ = [
    "FIXTURES_DIR",
    "ChildResult",
    "ContainerdPeer",
    "LocalRegistry",
    "Timer",
    "chain_id",
    "du_bytes",
    "exit_on_sigterm",
    "find_free_port",
    "fmt_mb",
    "fmt_ratio",
    "fmt_s",
    "loop_ext4",
    "machine_info",
    "markdown_table",
    "median",
    "proc_hwm_kb",
    "require_root",
    "run_child",
    "settle",
    "summarize",
    "self_cpu_s",
    "proc_cpu_s",
    "timed_cmd",
    "timed_cmd_cpu",
    "unmount_under",
    "write_results",
]

REPO = Path(__file__).resolve().parents[1]
FIXTURES_DIR = Path(os.environ.get("OCISTORE_FIXTURES_DIR") or REPO.parent / "shared" / "fixtures")


def log(msg: str) -> None:
    sys.stderr.write(f"[bench] {msg}\n")
    sys.stderr.flush()


def require_root() -> None:
    if os.geteuid() != 0:
        sys.exit("this benchmark must run as root (loop mounts, overlay mounts, containerd)")


def exit_on_sigterm() -> None:
    """Turn SIGTERM into SystemExit so ``finally`` blocks (cleanups) run."""
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))


# --------------------------------------------------------------------------------------------
# filesystems


def _mounted_paths() -> list[str]:
    out = []
    with open("/proc/self/mounts") as f:
        for line in f:
            parts = line.split()
            if len(parts) > 1:
                out.append(parts[1].replace("\\040", " "))
    return out


def is_mountpoint(path: str | os.PathLike[str]) -> bool:
    return os.path.abspath(path) in _mounted_paths()


def unmount_under(path: str | os.PathLike[str], include_self: bool = False) -> None:
    """Unmount everything mounted below ``path`` (deepest first); lazily if busy."""
    base = os.path.abspath(path)
    prefix = base.rstrip("/") + "/"
    targets = [m for m in _mounted_paths() if m.startswith(prefix) or (include_self and m == base)]
    for m in sorted(set(targets), key=len, reverse=True):
        if subprocess.run(["umount", m], stderr=subprocess.DEVNULL, check=False).returncode != 0:
            subprocess.run(["umount", "-l", m], stderr=subprocess.DEVNULL, check=False)


@contextlib.contextmanager
def loop_ext4(size_gb: float, work: str | os.PathLike[str], name: str = "fs") -> Iterator[Path]:
    """A freshly made ext4 filesystem (sparse image file under ``work``), mounted at
    ``work/<name>`` for the ``with`` block; unmounted and deleted afterwards, also on errors.

    File creation on a long-lived root filesystem can be 5-20x slower than on a fresh ext4
    and vary run to run; comparing two tools on the same fresh filesystem removes that.
    """
    work = Path(work).absolute()
    work.mkdir(parents=True, exist_ok=True)
    img = work / f"{name}.ext4.img"
    mnt = work / name
    if is_mountpoint(mnt):
        raise RuntimeError(f"{mnt} is already a mount point (a previous run still mounted?); "
                           f"unmount it first: umount {mnt}")
    mnt.mkdir(exist_ok=True)
    img.unlink(missing_ok=True)
    subprocess.run(["truncate", "-s", f"{int(size_gb * 1024)}M", str(img)], check=True)
    mounted = False
    try:
        subprocess.run(["mkfs.ext4", "-q", "-F", "-E", "lazy_itable_init=0,lazy_journal_init=0", str(img)],
                       check=True)
        subprocess.run(["mount", "-o", "loop", str(img), str(mnt)], check=True)
        mounted = True
        yield mnt
    finally:
        if mounted:
            unmount_under(mnt)
            for _ in range(10):
                if subprocess.run(["umount", str(mnt)], stderr=subprocess.DEVNULL, check=False).returncode == 0:
                    break
                time.sleep(0.5)
            else:
                log(f"{mnt} busy; lazy unmount")
                subprocess.run(["umount", "-l", str(mnt)], check=False)
        img.unlink(missing_ok=True)
        with contextlib.suppress(OSError):
            mnt.rmdir()


def du_bytes(path: str | os.PathLike[str], apparent: bool = False) -> int:
    """``du -s``: allocated bytes (default) or apparent bytes; 0 if ``path`` is missing."""
    if not os.path.exists(path):
        return 0
    flag = "-sb" if apparent else "-sB1"
    out = subprocess.run(["du", flag, str(path)], capture_output=True, text=True, check=True).stdout
    return int(out.split()[0])


def _meminfo_kb(*keys: str) -> int:
    total = 0
    with open("/proc/meminfo") as f:
        for line in f:
            k, _, v = line.partition(":")
            if k in keys:
                total += int(v.split()[0])
    return total


def settle(seconds: float = 1.0, drop_caches: bool = False) -> None:
    """Before a timed step: ``sync``, wait (<= 30 s) for dirty + writeback pages to drop
    under 8 MB, optionally drop the page cache, then sleep ``seconds``."""
    os.sync()
    deadline = time.monotonic() + 30
    while _meminfo_kb("Dirty", "Writeback") > 8192 and time.monotonic() < deadline:
        time.sleep(0.1)
    if drop_caches:
        with open("/proc/sys/vm/drop_caches", "w") as f:
            f.write("3\n")
    if seconds > 0:
        time.sleep(seconds)


# --------------------------------------------------------------------------------------------
# timing and memory


class Timer:
    """``with Timer() as t: ...``; then ``t.s`` is the wall time in seconds (monotonic)."""

    def __enter__(self) -> Timer:
        self._t0 = time.perf_counter()
        self.s = 0.0
        return self

    def __exit__(self, *exc: object) -> None:
        self.s = time.perf_counter() - self._t0


def timed_cmd(cmd: Sequence[str], **kw: Any) -> float:
    """Run ``cmd`` (stdout discarded); its wall time, or RuntimeError with its stderr."""
    t0 = time.perf_counter()
    r = subprocess.run(list(cmd), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, **kw, check=False)
    dt = time.perf_counter() - t0
    if r.returncode != 0:
        raise RuntimeError(f"command failed ({r.returncode}): {' '.join(map(str, cmd))}\n"
                           f"{r.stderr.decode(errors='replace')[-2000:]}")
    return dt


class ChildResult:
    """``returncode``, ``stdout``, ``stderr``, ``wall_s``, ``maxrss_kb`` (peak RSS) and
    ``cpu_s`` (user + system CPU seconds of the child and its reaped descendants)."""

    def __init__(self, returncode: int, stdout: str, stderr: str, wall_s: float, maxrss_kb: int,
                 cpu_s: float = 0.0) -> None:
        self.returncode, self.stdout, self.stderr = returncode, stdout, stderr
        self.wall_s, self.maxrss_kb, self.cpu_s = wall_s, maxrss_kb, cpu_s

    def json(self) -> Any:
        """The last stdout line that parses as JSON."""
        for line in reversed(self.stdout.strip().splitlines()):
            with contextlib.suppress(ValueError):
                return json.loads(line)
        raise RuntimeError(f"no JSON on the child's stdout; stderr:\n{self.stderr[-3000:]}")


def run_child(cmd: Sequence[str], env: dict[str, str] | None = None, timeout: float | None = None,
              check: bool = True) -> ChildResult:
    """Run ``cmd``; return its output, wall time and peak RSS (kB, from ``wait4``'s rusage,
    which covers the child and the descendants it waited for)."""
    t0 = time.perf_counter()
    with subprocess.Popen(list(cmd), stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env) as p:
        # read both pipes without deadlock, then reap with wait4 ourselves to get the rusage
        import threading

        chunks: dict[str, bytes] = {}

        def drain(name: str, stream: Any) -> None:
            chunks[name] = stream.read()

        threads = [threading.Thread(target=drain, args=(n, s), daemon=True)
                   for n, s in (("out", p.stdout), ("err", p.stderr))]
        for t in threads:
            t.start()
        deadline = None if timeout is None else t0 + timeout
        while True:
            pid, status, ru = os.wait4(p.pid, os.WNOHANG)
            if pid:
                break
            if deadline is not None and time.perf_counter() > deadline:
                p.kill()
                pid, status, ru = os.wait4(p.pid, 0)
                break
            time.sleep(0.005)
        wall = time.perf_counter() - t0
        p.returncode = os.waitstatus_to_exitcode(status)
        for t in threads:
            t.join()
    res = ChildResult(p.returncode, chunks.get("out", b"").decode(errors="replace"),
                      chunks.get("err", b"").decode(errors="replace"), wall, ru.ru_maxrss,
                      ru.ru_utime + ru.ru_stime)
    if check and res.returncode != 0:
        raise RuntimeError(f"child failed ({res.returncode}): {' '.join(map(str, cmd))}\n{res.stderr[-4000:]}")
    return res


def timed_cmd_cpu(cmd: Sequence[str], daemon_pid: int | None = None) -> tuple[float, float]:
    """Run ``cmd``; (wall seconds, CPU seconds). The CPU seconds are the command's own
    (with its reaped children) plus, with ``daemon_pid``, what that daemon and the children
    it reaped (e.g. unpigz) used meanwhile. Robust to other load on the machine, unlike wall time."""
    before = proc_cpu_s(daemon_pid) if daemon_pid else 0.0
    r = run_child(cmd)
    after = proc_cpu_s(daemon_pid) if daemon_pid else 0.0
    return r.wall_s, r.cpu_s + max(0.0, after - before)


def proc_cpu_s(pid: int) -> float:
    """utime + stime + cutime + cstime of a running process, in seconds (0 if gone)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    ticks = sum(int(x) for x in fields[11:15])  # fields 14-17 of stat(5), after pid and comm
    return ticks / os.sysconf("SC_CLK_TCK")


def self_cpu_s() -> float:
    """CPU seconds used so far by this process (all threads)."""
    import resource

    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


def proc_hwm_kb(pid: int) -> int | None:
    """Peak RSS (``VmHWM``) of a running process, in kB."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def median(xs: Iterable[float | None]) -> float | None:
    vals = [x for x in xs if x is not None]
    return statistics.median(vals) if vals else None


def summarize(runs: Sequence[float | None]) -> dict[str, Any]:
    vals = [x for x in runs if x is not None]
    return {"median": median(vals), "min": min(vals) if vals else None, "max": max(vals) if vals else None,
            "runs": list(runs)}


# --------------------------------------------------------------------------------------------
# peers: a local registry and a containerd


def find_free_port(start: int = 5250, stop: int = 5350, need: int = 1) -> int:
    def free(port: int) -> bool:
        with socket.socket() as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                return False
            return True

    for port in range(start, stop - need + 1):
        if all(free(port + i) for i in range(need)):
            return port
    raise RuntimeError(f"no free port in 127.0.0.1:{start}-{stop - 1}")


class LocalRegistry:
    """The fixture kit's registry (CNCF distribution) in ``directory``; a context manager.

    ``with LocalRegistry(dir) as reg: reg.load(layout, refs)``; ``reg.address``,
    ``reg.hosts_dir``, ``reg.ref("debian:gzip")``. With ``reuse=True`` an already running
    registry in ``directory`` is used and left running.
    """

    def __init__(self, directory: str | os.PathLike[str], mode: str = "plain", port: int | None = None,
                 reuse: bool = False) -> None:
        self.dir = Path(directory).absolute()
        self.mode, self.port, self.reuse = mode, port, reuse
        self.env: dict[str, str] = {}
        self._started = False

    @property
    def script(self) -> str:
        return str(FIXTURES_DIR / "registry")

    def __enter__(self) -> LocalRegistry:
        self.dir.mkdir(parents=True, exist_ok=True)
        status = subprocess.run([self.script, "status", "--dir", str(self.dir)], capture_output=True, text=True,
                                check=False)
        if self.reuse and status.returncode == 0 and (self.dir / "registry.env").exists():
            self._read_env()
            return self
        last = ""
        for _ in range(5):
            port = self.port or find_free_port(need=2 if self.mode == "token" else 1)
            r = subprocess.run([self.script, "start", "--mode", self.mode, "--port", str(port), "--dir",
                                str(self.dir)], capture_output=True, text=True, check=False)
            if r.returncode == 0:
                self._started = True
                break
            last = (r.stderr or r.stdout).strip()
            if self.port or "in use" not in last:
                raise RuntimeError(f"registry start failed: {last}")
        else:
            raise RuntimeError(f"registry start: no port ({last})")
        self._read_env()
        return self

    def _read_env(self) -> None:
        text = (self.dir / "registry.env").read_text()
        self.env = dict(line.split("=", 1) for line in text.splitlines() if "=" in line)

    def __exit__(self, *exc: object) -> None:
        if self._started:
            subprocess.run([self.script, "stop", "--dir", str(self.dir)], capture_output=True, check=False)

    @property
    def address(self) -> str:
        return self.env["address"]

    @property
    def hosts_dir(self) -> str:
        return self.env.get("hosts_dir", "")

    def ref(self, name: str) -> str:
        return f"{self.address}/{name}"

    def load(self, layout: str | os.PathLike[str], refs: Sequence[str] = ()) -> None:
        cmd = [self.script, "load", "--dir", str(self.dir), "--from", str(layout)]
        for name in refs:
            cmd += ["--ref", name]
        r = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if r.returncode != 0:
            raise RuntimeError(f"registry load failed: {r.stderr[-2000:]}")


def chain_id(diff_ids: Sequence[str]) -> str:
    chain = diff_ids[0]
    for d in diff_ids[1:]:
        chain = "sha256:" + hashlib.sha256(f"{chain} {d}".encode()).hexdigest()
    return chain


class ContainerdPeer:
    """containerd 1.6 from the fixture kit, with root/state/socket under ``directory``.

    Keep ``directory`` short (the socket path must stay under 100 characters). Put it on
    the filesystem you measure (e.g. a :func:`loop_ext4`) so containerd's root is there.
    ``fresh()`` wipes and restarts (an empty root); ``stop()`` wipes.
    """

    def __init__(self, directory: str | os.PathLike[str], snapshotter: str = "overlayfs",
                 registry_opts: Sequence[str] = ("--plain-http",), no_pigz: bool = False) -> None:
        self.dir = Path(directory).absolute()
        if len(str(self.dir / "containerd.sock")) >= 100:
            raise ValueError(f"containerd dir {self.dir} is too long for its socket path; use a shorter one")
        self.snapshotter, self.registry_opts, self.no_pigz = snapshotter, list(registry_opts), no_pigz
        self.root = self.dir / "root"

    @property
    def script(self) -> str:
        return str(FIXTURES_DIR / "containerd-peer")

    def fresh(self) -> None:
        subprocess.run([self.script, "wipe", "--dir", str(self.dir)], capture_output=True, check=True)
        cmd = [self.script, "start", "--dir", str(self.dir), "--snapshotter", self.snapshotter]
        if self.no_pigz:
            cmd.append("--no-pigz")
        r = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if r.returncode != 0:
            raise RuntimeError(f"containerd-peer start failed: {r.stderr[-2000:]}")

    def stop(self) -> None:
        if self.dir.exists():
            subprocess.run([self.script, "wipe", "--dir", str(self.dir)], capture_output=True, check=False)

    def __enter__(self) -> ContainerdPeer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def ctr(self, *args: str) -> list[str]:
        return [str(self.dir / "ctr"), *args]

    def out(self, *args: str) -> bytes:
        return subprocess.run(self.ctr(*args), capture_output=True, check=True).stdout

    def pid(self) -> int | None:
        try:
            return int((self.dir / "containerd.pid").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None

    def hwm_kb(self) -> int | None:
        """Peak RSS of the daemon since it started (it is restarted by ``fresh()``)."""
        pid = self.pid()
        return proc_hwm_kb(pid) if pid else None

    def disk(self) -> dict[str, int]:
        """Allocated (``du -sB1``) and apparent (``du -sb``) bytes of the root's parts."""
        parts = {
            "content": self.root / "io.containerd.content.v1.content",
            "snapshots": self.root / f"io.containerd.snapshotter.v1.{self.snapshotter}",
            "metadata": self.root / "io.containerd.metadata.v1.bolt",
            "total": self.root,
        }
        res: dict[str, int] = {}
        for k, p in parts.items():
            res[k] = du_bytes(p)
            res[k + "_apparent"] = du_bytes(p, apparent=True)
        return res

    def image_info(self, ref: str) -> dict[str, Any]:
        """Manifest digest (linux/amd64), layers and top chain ID, read through ctr."""
        lines = self.out("images", "ls").decode().splitlines()[1:]
        target = next(ln.split()[2] for ln in lines if ln.split()[0] == ref)
        m = json.loads(self.out("content", "get", target))
        if "manifests" in m:
            c = next(c for c in m["manifests"] if c.get("platform", {}).get("architecture") == "amd64"
                     and c.get("platform", {}).get("os") == "linux")
            target, m = c["digest"], json.loads(self.out("content", "get", c["digest"]))
        cfg = json.loads(self.out("content", "get", m["config"]["digest"]))
        return {"manifest": target, "layers": m["layers"], "chain_id": chain_id(cfg["rootfs"]["diff_ids"])}


# --------------------------------------------------------------------------------------------
# output


def fmt_s(x: float | None, digits: int = 3) -> str:
    return "" if x is None else f"{x:.{digits}f}"


def fmt_mb(x: float | None) -> str:
    return "" if x is None else f"{x / 1e6:.1f}"


def fmt_ratio(a: float | None, b: float | None) -> str:
    if a is None or b is None or b == 0:
        return ""
    return f"{a / b:.2f}"


def markdown_table(headers: Sequence[str], rows: Iterable[Sequence[Any]], align: str = "") -> str:
    """A GitHub markdown table; ``align`` is one char per column, ``l`` or ``r`` (default l)."""
    def cell(v: Any) -> str:
        return str(v).replace("|", "\\|").replace("\n", " ")

    al = (align or "l" * len(headers)).ljust(len(headers), "l")
    lines = ["| " + " | ".join(cell(h) for h in headers) + " |",
             "|" + "|".join("---:" if a == "r" else "---" for a in al) + "|"]
    lines += ["| " + " | ".join(cell(v) for v in r) + " |" for r in rows]
    return "\n".join(lines)


def _fstype(path: str | os.PathLike[str]) -> str:
    r = subprocess.run(["stat", "-f", "-c", "%T", str(path)], capture_output=True, text=True, check=False)
    return r.stdout.strip()


def machine_info(work: str | os.PathLike[str] | None = None) -> dict[str, Any]:
    info: dict[str, Any] = {
        "kernel": platform.release(),
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "mem_total_gb": round(_meminfo_kb("MemTotal") / 1e6, 1),
        "loadavg_at_start": os.getloadavg(),
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                info["cpu"] = line.split(":", 1)[1].strip()
                break
    if shutil.which("containerd"):
        v = subprocess.run(["containerd", "--version"], capture_output=True, text=True, check=False).stdout.split()
        info["containerd"] = v[2] if len(v) > 2 else " ".join(v)
    if work is not None:
        info["work_fs"] = _fstype(work)
    try:
        import ocistore

        info["ocistore"] = getattr(ocistore, "__version__", "?")
        rev = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True,
                             text=True, check=False).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(REPO), "status", "--porcelain", "--", "ocistore"],
                               capture_output=True, text=True, check=False).stdout.strip()
        info["ocistore_git"] = rev + ("+uncommitted" if dirty else "")
    except Exception:  # informational only
        pass
    return info


def write_results(out_dir: str | os.PathLike[str], name: str, data: Any, markdown: str) -> tuple[Path, Path]:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    jp, mp = out / f"{name}.json", out / f"{name}.md"
    jp.write_text(json.dumps(data, indent=2, default=str) + "\n")
    mp.write_text(markdown.rstrip("\n") + "\n")
    return jp, mp
