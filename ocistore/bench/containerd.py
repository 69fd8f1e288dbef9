"""containerd 1.6 beside ocistore: an isolated daemon (own root, state and socket under one dir).

:class:`Containerd` writes a config that keeps it off the system's ``/run/containerd`` and
``/var/lib/containerd`` (CRI and the other snapshotters disabled; no tasks are ever
started), starts ``containerd`` from ``PATH`` and drives it with ``ctr``. :meth:`fresh`
gives an empty root for every measurement; :meth:`stop` kills the daemon it started (by
its pid) and deletes its root.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

__all__ = ["Containerd", "unavailable"]

_CONFIG = """version = 2
root = "{root}"
state = "{state}"
disabled_plugins = ["io.containerd.grpc.v1.cri", "io.containerd.snapshotter.v1.aufs",
  "io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.devmapper",
  "io.containerd.snapshotter.v1.zfs", "io.containerd.runtime.v1.linux"]
[grpc]
  address = "{sock}"
[ttrpc]
  address = "{sock}.ttrpc"
[debug]
  address = "{dir}/debug.sock"
[metrics]
  address = ""
[plugins]
  [plugins."io.containerd.internal.v1.opt"]
    path = "{dir}/opt"
"""


def unavailable() -> str | None:
    """None when ``containerd`` and ``ctr`` can be run here, else why not."""
    for tool in ("containerd", "ctr"):
        if shutil.which(tool) is None:
            return f"`{tool}` is not on PATH"
    if os.geteuid() != 0:
        return "containerd needs root (overlay mounts), and this process is not root"
    return None


def version() -> str:
    """``containerd --version``'s version field, or ``?``."""
    out = subprocess.run(["containerd", "--version"], capture_output=True, text=True, check=False).stdout.split()
    return out[2] if len(out) > 2 else "?"


class Containerd:
    """An isolated containerd under ``directory`` (keep it short: the socket path is < 100 chars)."""

    def __init__(self, directory: str | os.PathLike[str], snapshotter: str = "overlayfs") -> None:
        """Nothing runs until :meth:`fresh`."""
        self.dir = Path(directory).absolute()
        self.sock = self.dir / "containerd.sock"
        if len(str(self.sock)) >= 100:
            raise ValueError(f"{self.dir} is too long for a containerd socket path; use a shorter directory")
        self.root = self.dir / "root"
        self.snapshotter = snapshotter
        self._proc: subprocess.Popen[bytes] | None = None

    def ctr(self, *args: str) -> list[str]:
        """The ``ctr`` command line for ``args``, bound to this daemon."""
        return ["ctr", "--address", str(self.sock), "--namespace", "bench", *args]

    def fresh(self) -> None:
        """Stop, wipe and start again: an empty root."""
        self.stop()
        for sub in ("root", "state", "opt"):
            (self.dir / sub).mkdir(parents=True, exist_ok=True)
        config = self.dir / "config.toml"
        config.write_text(_CONFIG.format(root=self.root, state=self.dir / "state", sock=self.sock, dir=self.dir))
        log = open(self.dir / "containerd.log", "ab")  # noqa: SIM115 - closed by the child's end
        self._proc = subprocess.Popen(["containerd", "--config", str(config)], stdout=log, stderr=log,
                                      stdin=subprocess.DEVNULL)
        log.close()
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if subprocess.run(self.ctr("version"), capture_output=True, check=False).returncode == 0:
                return
            if self._proc.poll() is not None:
                break
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"containerd did not come up; see {self.dir / 'containerd.log'}")

    @property
    def pid(self) -> int | None:
        """The daemon's pid while it runs."""
        return self._proc.pid if self._proc is not None and self._proc.poll() is None else None

    def stop(self) -> None:
        """Stop the daemon this object started, unmount what is left under the dir, delete root and state."""
        if self._proc is not None:
            if self._proc.poll() is None:
                self._proc.terminate()
                try:
                    self._proc.wait(10)
                except subprocess.TimeoutExpired:
                    self._proc.kill()
                    self._proc.wait()
            self._proc = None
        _unmount_under(self.dir)
        for sub in ("root", "state"):
            shutil.rmtree(self.dir / sub, ignore_errors=True)


def _unmount_under(path: Path) -> None:
    prefix = str(path).rstrip("/") + "/"
    try:
        with open("/proc/self/mounts") as f:
            targets = [line.split()[1].replace("\\040", " ") for line in f if len(line.split()) > 1]
    except OSError:
        return
    for m in sorted((t for t in targets if t.startswith(prefix)), key=len, reverse=True):
        if subprocess.run(["umount", m], capture_output=True, check=False).returncode != 0:
            subprocess.run(["umount", "-l", m], capture_output=True, check=False)
