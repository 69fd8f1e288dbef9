"""Mounting what snapshotters return, with mount(2) through ctypes (containerd ``core/mount``).

``mount(mounts, target)`` mounts each :class:`~ocistore.snapshots.types.Mount` on ``target``
in order; ``unmount(target)`` removes every mount stacked there. Options are split as mount(8)
does: known flags (``ro``, ``rbind``, ``nosuid``, ...) become mount flags, the rest is the
filesystem's data string. A read-only bind is a bind followed by a read-only remount.

Overlay option strings longer than a page (about 60+ lower layers with long paths) do not
fit into mount(2)'s data page. As containerd does, the lower dirs are then given relative to
their common parent directory, and the mount runs in a helper thread that unshares its
working directory (``unshare(CLONE_FS)``) and changes into that parent first, so the rest of
the process keeps its working directory.

Errors are ocistore's: without the privilege to mount, :class:`errors.FailedPrecondition`.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import attrs

from ocistore import errors
from ocistore.snapshots.overlay import running_in_user_namespace
from ocistore.snapshots.types import Mount

__all__ = ["is_mounted", "mount", "mounted", "unmount"]

MS_RDONLY = 0x1
MS_NOSUID = 0x2
MS_NODEV = 0x4
MS_NOEXEC = 0x8
MS_SYNCHRONOUS = 0x10
MS_REMOUNT = 0x20
MS_MANDLOCK = 0x40
MS_DIRSYNC = 0x80
MS_NOATIME = 0x400
MS_NODIRATIME = 0x800
MS_BIND = 0x1000
MS_REC = 0x4000
MS_SILENT = 0x8000
MS_UNBINDABLE = 0x20000
MS_PRIVATE = 0x40000
MS_SLAVE = 0x80000
MS_SHARED = 0x100000
MS_RELATIME = 0x200000
MS_STRICTATIME = 0x1000000
_PROPAGATION = MS_SHARED | MS_PRIVATE | MS_SLAVE | MS_UNBINDABLE
CLONE_FS = 0x200
MNT_DETACH = 0x2

# option -> (clear?, flag), as mount(8) and containerd's parseMountOptions read them
_FLAGS: dict[str, tuple[bool, int]] = {
    "async": (True, MS_SYNCHRONOUS), "atime": (True, MS_NOATIME), "bind": (False, MS_BIND),
    "defaults": (False, 0), "dev": (True, MS_NODEV), "diratime": (True, MS_NODIRATIME),
    "dirsync": (False, MS_DIRSYNC), "exec": (True, MS_NOEXEC), "mand": (False, MS_MANDLOCK),
    "noatime": (False, MS_NOATIME), "nodev": (False, MS_NODEV), "nodiratime": (False, MS_NODIRATIME),
    "noexec": (False, MS_NOEXEC), "nomand": (True, MS_MANDLOCK), "norelatime": (True, MS_RELATIME),
    "nostrictatime": (True, MS_STRICTATIME), "nosuid": (False, MS_NOSUID),
    "rbind": (False, MS_BIND | MS_REC), "relatime": (False, MS_RELATIME), "remount": (False, MS_REMOUNT),
    "ro": (False, MS_RDONLY), "rw": (True, MS_RDONLY), "strictatime": (False, MS_STRICTATIME),
    "suid": (True, MS_NOSUID), "sync": (False, MS_SYNCHRONOUS),
    "private": (False, MS_PRIVATE), "rprivate": (False, MS_PRIVATE | MS_REC),
    "shared": (False, MS_SHARED), "rshared": (False, MS_SHARED | MS_REC),
    "slave": (False, MS_SLAVE), "rslave": (False, MS_SLAVE | MS_REC),
    "unbindable": (False, MS_UNBINDABLE), "runbindable": (False, MS_UNBINDABLE | MS_REC),
}
# statvfs f_flag bits the kernel locks on mounts inherited into a user namespace
_LOCKED = {0x2: MS_NOSUID, 0x4: MS_NODEV, 0x8: MS_NOEXEC, 0x400: MS_NOATIME,
           0x800: MS_NODIRATIME, 0x1000: MS_RELATIME}

_libc: ctypes.CDLL | None = None
_libc_lock = threading.Lock()


def _lib() -> ctypes.CDLL:
    global _libc
    with _libc_lock:
        if _libc is None:
            lib = ctypes.CDLL(None, use_errno=True)
            lib.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong,
                                  ctypes.c_char_p]
            lib.umount2.argtypes = [ctypes.c_char_p, ctypes.c_int]
            lib.unshare.argtypes = [ctypes.c_int]
            _libc = lib
        return _libc


@attrs.frozen
class _Parsed:
    flags: int
    data: list[str]


def _parse(options: Sequence[str]) -> _Parsed:
    flags = 0
    data: list[str] = []
    for opt in options:
        known = _FLAGS.get(opt)
        if known is None:
            data.append(opt)
        elif known[0]:
            flags &= ~known[1]
        else:
            flags |= known[1]
    return _Parsed(flags, data)


def _page_size() -> int:
    return os.sysconf("SC_PAGE_SIZE")


def _compact_lowerdir(options: list[str]) -> tuple[str, list[str]]:
    """(directory to chdir into, options with lowerdirs relative to it), or ("", options)."""
    idx = next((i for i, o in enumerate(options) if o.startswith("lowerdir=")), -1)
    if idx < 0:
        return "", options
    dirs = options[idx][len("lowerdir=") :].split(":")
    if len(dirs) < 2 or not all(os.path.isabs(d) for d in dirs):
        return "", options
    common = os.path.commonpath(dirs)
    if common in ("/", "") or any(d.rstrip("/") == common for d in dirs):
        return "", options
    relative = [os.path.relpath(d, common) for d in dirs]
    rest = options[:idx] + options[idx + 1 :]
    return common, [*rest, "lowerdir=" + ":".join(relative)]


def _fail(what: str, err: int) -> errors.Error:
    reason = os.strerror(err)
    if err in (errno.EPERM, errno.EACCES):
        return errors.FailedPrecondition(
            f"{what}: {reason}; mounting needs root (CAP_SYS_ADMIN). Without it, use the native "
            "snapshotter and read the snapshot through its path()"
        )
    if err == errno.ENOENT:
        return errors.NotFound(f"{what}: {reason}; create the target and source directories first")
    if err == errno.EBUSY:
        return errors.Unavailable(f"{what}: {reason}; the mount point is in use, retry later")
    if err in (errno.EINVAL, errno.E2BIG):
        return errors.InvalidArgument(f"{what}: {reason}; check the mount type and options")
    return errors.FailedPrecondition(f"{what}: {reason}")


def _sys_mount(source: str, target: str, fstype: str, flags: int, data: str) -> int:
    """mount(2); returns 0 or the errno."""
    res = _lib().mount(source.encode(), target.encode(), fstype.encode(), flags,
                       data.encode() if data else None)
    return int(ctypes.get_errno()) if res != 0 else 0


def _mount_in(source: str, target: str, fstype: str, flags: int, data: str, *, chdir: str) -> int:
    """mount(2) from inside ``chdir``, in a thread with its own working directory."""
    if not chdir:
        return _sys_mount(source, target, fstype, flags, data)
    result: list[int] = []

    def run() -> None:
        lib = _lib()
        if lib.unshare(CLONE_FS) != 0:
            result.append(int(ctypes.get_errno()))
            return
        try:
            os.chdir(chdir)  # only this thread's fs context, after unshare(CLONE_FS)
        except OSError as e:
            result.append(e.errno or errno.EIO)
            return
        result.append(_sys_mount(source, target, fstype, flags, data))

    helper = threading.Thread(target=run, name="ocistore-mount", daemon=True)
    helper.start()
    helper.join()
    return result[0] if result else errno.EIO


def _mount_one(m: Mount, target: str) -> None:
    options = list(m.options)
    chdir = ""
    if m.type == "overlay" and sum(len(o) for o in options) >= _page_size() - 512:
        chdir, options = _compact_lowerdir(options)
    parsed = _parse(options)
    data = ",".join(parsed.data)
    what = f"mount {m.type} {m.source} on {target}"
    if len(data) > _page_size():
        raise errors.InvalidArgument(f"{what}: mount options are too long ({len(data)} bytes)")
    flags = parsed.flags & ~_PROPAGATION
    if not flags & MS_REMOUNT or data:
        err = _mount_in(m.source, target, m.type, flags, data, chdir=chdir)
        if err:
            raise _fail(what, err)
    if parsed.flags & _PROPAGATION:
        pflags = parsed.flags & (_PROPAGATION | MS_REC | MS_SILENT)
        err = _sys_mount("", target, "", pflags, "")
        if err:
            raise _fail(f"{what} (propagation)", err)
    if flags & (MS_BIND | MS_RDONLY) == MS_BIND | MS_RDONLY:
        err = _sys_mount("", target, "", flags | _locked_flags(target) | MS_REMOUNT, "")
        if err:
            raise _fail(f"{what} (read-only remount)", err)


def _locked_flags(target: str) -> int:
    """Flags a remount must keep inside a user namespace (the kernel locks them)."""
    if not running_in_user_namespace():
        return 0
    f_flag = os.statvfs(target).f_flag
    return sum(ms for st, ms in _LOCKED.items() if f_flag & st)


def mount(mounts: Sequence[Mount], target: str | os.PathLike[str]) -> None:
    """Mount every entry of ``mounts`` on ``target``, in order.

    On failure the mounts made so far are undone before the error is raised.

    Raises:
        FailedPrecondition: not privileged to mount (or another refusal of the kernel).
        NotFound: the target or a source is missing.
        InvalidArgument: bad type or options.
    """
    path = os.path.abspath(target)
    done = 0
    try:
        for m in mounts:
            _mount_one(m, path)
            done += 1
    except BaseException:
        for _ in range(done):
            with contextlib.suppress(errors.Error):
                _umount(path, 0)
        raise


def _umount(target: str, flags: int) -> bool:
    """One umount2(2); False when nothing is mounted there, retries while busy."""
    for _ in range(50):
        if _lib().umount2(target.encode(), flags) == 0:
            return True
        err = int(ctypes.get_errno())
        if err == errno.EINVAL:
            return False
        if err != errno.EBUSY:
            raise _fail(f"unmount {target}", err)
        time.sleep(0.05)
    raise _fail(f"unmount {target}", errno.EBUSY)


def unmount(target: str | os.PathLike[str], *, detach: bool = False) -> None:
    """Unmount everything mounted on ``target`` (no-op when nothing is).

    ``detach`` uses a lazy unmount (``MNT_DETACH``) for a mount still in use.
    """
    path = os.path.abspath(target)
    flags = MNT_DETACH if detach else 0
    while _umount(path, flags):
        pass


def is_mounted(target: str | os.PathLike[str]) -> bool:
    """Whether ``target`` is a mount point (by /proc/self/mountinfo; bind mounts included)."""
    path = os.path.realpath(target)
    with open("/proc/self/mountinfo", encoding="utf-8", errors="surrogateescape") as f:
        for line in f:
            point = line.split(" ", 5)[4]
            if _unescape(point) == path:
                return True
    return False


def _unescape(text: str) -> str:
    r"""mountinfo escapes space, tab, newline and backslash as ``\ooo``."""
    if "\\" not in text:
        return text
    out, i = [], 0
    while i < len(text):
        if text[i] == "\\" and i + 3 < len(text) and text[i + 1 : i + 4].isdigit():
            out.append(chr(int(text[i + 1 : i + 4], 8)))
            i += 4
        else:
            out.append(text[i])
            i += 1
    return "".join(out)


@contextlib.contextmanager
def mounted(mounts: Sequence[Mount], target: str | os.PathLike[str]) -> Iterator[Path]:
    """``with mounted(sn.mounts(key), dir) as root:``: mount, yield the target, unmount."""
    mount(mounts, target)
    try:
        yield Path(target)
    finally:
        unmount(target)
