"""The lazy rootfs of a container: a detached FUSE helper process and the overlay over it.

``containers.create(..., lazy=True)`` starts one helper per container
(``python -m ocistore.cli.lazyfs``), detached from the creating process (its own session,
reparented to init through an intermediate shell), so that a short-lived
``ocistore containers create --lazy`` leaves a working mount. The helper opens the store,
merges the image's TOCs, prefetches the ``.prefetch.landmark`` files, mounts the merged tree
read-only with FUSE at ``lazyfs/<namespace>/<id>/mnt``, says ``ready <pid>`` on a pipe, and
then fills the image in the background (an ordinary unpack into committed snapshots, so the
next create of the image is not lazy). The container's mounts are an overlay with that mount
as the lower dir and its active snapshot's ``fs``/``work`` as upper and work dirs.

``containers.delete`` unmounts the FUSE mount (the helper's loop then ends), waits for the
helper to exit (SIGKILL after a grace period) and removes the directory.

A helper that is gone (killed, or the machine rebooted: the container's upper dir survives,
its FUSE mount does not) is started again by the next ``Container.mounts``
(:func:`restart_helper`), with the image and options recorded in ``helper.json``; once the
background fill has committed the image, the new helper serves the committed blobs instead
of ranged reads.
"""

from __future__ import annotations

import contextlib
import ctypes.util
import importlib.util
import json
import os
import select
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from ocistore import errors
from ocistore.content.locks import RefLock
from ocistore.layout import RootLayout, work_of
from ocistore.metadata.containers import LAZY_ROOTFS_LABEL
from ocistore.mount import is_mounted, unmount
from ocistore.snapshots.types import Mount

__all__ = ["LAZY_LABEL", "fuse_missing", "lazy_mounts", "profile_request", "read_profile", "restart_helper", "serving",
           "start_helper", "stop_helper", "write_profile"]

LAZY_LABEL = LAZY_ROOTFS_LABEL
"""Container label: the directory of its lazy rootfs helper (mount point ``mnt``, ``pid``, ``log``)."""
_READY_TIMEOUT = 120.0
_STOP_TIMEOUT = 10.0


def fuse_missing() -> str | None:
    """What a FUSE mount lacks on this machine (None when it can be tried)."""
    if not os.path.exists("/dev/fuse"):
        return "/dev/fuse is missing (load the fuse kernel module, or pass the device into the container)"
    if importlib.util.find_spec("mfusepy") is None:
        return "the Python package mfusepy is not installed (pip install 'ocistore[lazy]')"
    if ctypes.util.find_library("fuse3") is None:
        return "libfuse3 is not installed (apt-get install fuse3)"
    return None


def _log_tail(path: Path, n: int = 2000) -> str:
    try:
        text = path.read_bytes()[-n:].decode(errors="replace").strip()
    except OSError:
        return ""
    return text or "(no output)"


def start_helper(layout: RootLayout, namespace: str, cid: str, image: str, snapshotter: str,
                 *, fill: bool = True, timeout: float = _READY_TIMEOUT,
                 meanwhile: Callable[[], object] | None = None) -> Path:
    """Start the helper serving ``image`` for container ``cid``; returns its directory once the
    mount is live. Unavailable (with the helper's log) if it fails or is not ready in time.
    ``meanwhile`` runs here while the helper starts (a prefetch of a profile: the helper then
    skips its own prefetch of the prioritized files); its errors stop the helper."""
    missing = fuse_missing()
    if missing is not None:
        raise errors.FailedPrecondition(f"a lazy rootfs needs FUSE: {missing}; without it, read files with "
                                        "store.read_file or create the container without lazy=True")
    directory = layout.lazy_dir(namespace, cid)
    if directory.exists():
        _cleanup(directory)
    mnt = directory / "mnt"
    mnt.mkdir(parents=True)
    log = directory / "log"
    read_fd, write_fd = os.pipe()
    args = [sys.executable, "-m", "ocistore.cli.lazyfs", "--root", str(layout.root), "--namespace", namespace,
            "--image", image, "--snapshotter", snapshotter, "--mountpoint", str(mnt), "--ready-fd", str(write_fd)]
    if not fill:
        args.append("--no-fill")
    if meanwhile is not None:
        args.append("--no-landmark")
    try:
        with open(log, "ab") as out:
            # sh starts the helper in the background and exits: the helper is reparented to
            # init and outlives this process; the pipe's write end goes with it
            shell = subprocess.run(["sh", "-c", '"$@" </dev/null &', "sh", *args], pass_fds=(write_fd,),
                                   stdout=out, stderr=out, check=False, start_new_session=True,
                                   env=dict(os.environ), timeout=30)
    finally:
        os.close(write_fd)
    failed: BaseException | None = None
    try:
        if shell.returncode != 0:
            raise errors.Unavailable(f"could not start the lazy rootfs helper: {_log_tail(log)}")
        if meanwhile is not None:
            try:
                meanwhile()
            except BaseException as exc:  # the helper is starting: wait for its pid, then stop it
                failed = exc
        pid = _wait_ready(read_fd, timeout, log)
        (directory / "pid").write_text(f"{pid}\n")
        if failed is not None:
            raise failed
    except BaseException:
        _cleanup(directory)
        raise
    finally:
        os.close(read_fd)
    (directory / _HELPER).write_text(json.dumps({"image": image, "snapshotter": snapshotter, "fill": fill}))
    return directory


_HELPER = "helper.json"


def restart_helper(layout: RootLayout, namespace: str, cid: str) -> Path:
    """Start the helper of lazy container ``cid`` again if it is not serving (killed, or the
    machine rebooted); returns its directory. One process restarts it at a time; Unavailable
    if another is doing so, or if the new helper fails (with its log)."""
    directory = layout.lazy_dir(namespace, cid)
    directory.parent.mkdir(parents=True, exist_ok=True)
    lock = RefLock(str(directory.with_name(f".{cid}.restart")), f"the lazy rootfs helper of container {cid!r}")
    lock.acquire()
    try:
        if serving(directory):
            return directory  # another process restarted it first
        try:
            recorded = json.loads((directory / _HELPER).read_text())
            image, snapshotter, fill = str(recorded["image"]), str(recorded["snapshotter"]), bool(recorded["fill"])
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise errors.Unavailable(
                f"the lazy rootfs of container {cid!r} is not served any more and cannot be restarted "
                f"({directory / _HELPER}: {exc}); delete the container and create it again"
            ) from None
        return start_helper(layout, namespace, cid, image, snapshotter, fill=fill)
    finally:
        lock.release(remove=True)


_PROFILE, _PROFILE_REQUEST = "profile.json", "profile.request"


def profile_request(directory: Path) -> int:
    """The number of the last profile asked for in ``directory`` (0: none)."""
    try:
        text = (directory / _PROFILE_REQUEST).read_text().strip()
    except OSError:
        return 0
    return int(text) if text.isdigit() else 0


def write_profile(directory: Path, request: int, reads: dict[str, list[tuple[int, int]]]) -> None:
    """The helper's answer to profile request ``request``: the reads it served (atomically)."""
    tmp = directory / f".{_PROFILE}.tmp"
    tmp.write_text(json.dumps({"request": request, "files": {p: [list(r) for r in rs] for p, rs in reads.items()}}))
    os.replace(tmp, directory / _PROFILE)


def read_profile(directory: Path, cid: str, timeout: float = 10.0) -> dict[str, list[tuple[int, int]]]:
    """The byte ranges of each file the lazy rootfs in ``directory`` has served so far, asked
    of its helper; Unavailable when the helper is gone or does not answer in ``timeout``."""
    if not serving(directory):
        raise errors.Unavailable(f"the lazy rootfs of container {cid!r} is not served (see {directory / 'log'})")
    request = profile_request(directory) + 1
    tmp = directory / f".{_PROFILE_REQUEST}.tmp"
    tmp.write_text(f"{request}\n")
    os.replace(tmp, directory / _PROFILE_REQUEST)
    deadline = time.monotonic() + timeout
    while True:
        try:
            doc = json.loads((directory / _PROFILE).read_text())
            if int(doc["request"]) >= request:
                return {str(p): [(int(a), int(b)) for a, b in rs] for p, rs in doc["files"].items()}
        except (OSError, ValueError, KeyError, TypeError):
            pass
        if time.monotonic() > deadline or not serving(directory):
            raise errors.Unavailable(f"the lazy rootfs helper of container {cid!r} did not answer with its reads "
                                     f"in {timeout:.0f} s (see {directory / 'log'})")
        time.sleep(0.02)


def serving(directory: Path) -> bool:
    """Whether the helper recorded in ``directory`` is alive and its FUSE mount is there."""
    pid = _pid(directory)
    return pid is not None and _alive(pid) and is_mounted(directory / "mnt")


def _wait_ready(fd: int, timeout: float, log: Path) -> int:
    deadline = time.monotonic() + timeout
    buf = b""
    while b"\n" not in buf:
        left = deadline - time.monotonic()
        if left <= 0:
            raise errors.Unavailable(f"the lazy rootfs helper was not ready after {timeout:.0f} s: {_log_tail(log)}")
        ready, _w, _x = select.select([fd], [], [], left)
        if not ready:
            continue
        data = os.read(fd, 256)
        if not data:
            raise errors.Unavailable(f"the lazy rootfs helper exited before its mount was ready: {_log_tail(log)}")
        buf += data
    word, _, pid = buf.partition(b"\n")[0].decode().partition(" ")
    if word != "ready" or not pid.isdigit():
        raise errors.Unavailable(f"the lazy rootfs helper failed: {buf.decode(errors='replace')} {_log_tail(log)}")
    return int(pid)


def _pid(directory: Path) -> int | None:
    try:
        text = (directory / "pid").read_text().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            state = f.read().rpartition(b")")[2].split()[0]
    except (OSError, IndexError):
        return False
    return state not in (b"Z", b"X")


def lazy_mounts(directory: Path, upper: Path, cid: str, restart: Callable[[], object] | None = None) -> list[Mount]:
    """The overlay of a lazy container's rootfs. A helper that is not serving is started again
    with ``restart`` (see :func:`restart_helper`); Unavailable without it, or if that fails."""
    mnt = directory / "mnt"
    if not serving(directory):
        pid = _pid(directory)
        if restart is None:
            raise errors.Unavailable(
                f"the lazy rootfs of container {cid!r} is not served any more (its FUSE helper "
                f"{'pid ' + str(pid) if pid else ''} exited; see {directory / 'log'}); delete the container and "
                "create it again"
            )
        restart()
    return [Mount(type="overlay", source="overlay",
                  options=[f"workdir={work_of(upper.parent)}", f"upperdir={upper}", f"lowerdir={mnt}"])]


def stop_helper(directory: Path) -> None:
    """Unmount the helper's FUSE mount, wait for it to exit (SIGKILL after a grace period), remove its dir."""
    _cleanup(directory)


def _cleanup(directory: Path) -> None:
    mnt = directory / "mnt"
    pid = _pid(directory)
    if is_mounted(mnt):
        try:
            unmount(mnt)
        except errors.Error:
            unmount(mnt, detach=True)  # still in use (an overlay over it): detach
    if pid is not None:
        deadline = time.monotonic() + _STOP_TIMEOUT
        while _alive(pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        if _alive(pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            while _alive(pid) and time.monotonic() < deadline + _STOP_TIMEOUT:
                time.sleep(0.05)
    if is_mounted(mnt):  # the helper died without unmounting: its mount is dead, detach it
        unmount(mnt, detach=True)
    shutil.rmtree(directory, ignore_errors=True)
