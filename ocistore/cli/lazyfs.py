"""``python -m ocistore.cli.lazyfs``: the helper process that serves one lazy container's rootfs.

Started by ``containers.create(..., lazy=True)`` (``ocistore.transfer.lazyrootfs``), never by
hand. It opens the store, merges the image's eStargz TOCs, prefetches the prioritized files
(``.prefetch.landmark``), mounts the tree with FUSE, writes ``ready <pid>`` to the pipe
``--ready-fd``, fills the image in the background (an ordinary unpack: committed snapshots)
and serves until the mount is unmounted (``containers.delete``) or it gets SIGTERM.
"""

from __future__ import annotations

import argparse
import os
import sys
import threading
import traceback
from pathlib import Path
from typing import TYPE_CHECKING

from ocistore import errors
from ocistore.store import Store

if TYPE_CHECKING:
    from ocistore.transfer import fuseserver

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m ocistore.cli.lazyfs", description=__doc__)
    p.add_argument("--root", required=True)
    p.add_argument("--namespace", required=True)
    p.add_argument("--image", required=True)
    p.add_argument("--snapshotter", default="overlayfs")
    p.add_argument("--mountpoint", required=True)
    p.add_argument("--ready-fd", type=int, required=True)
    p.add_argument("--no-fill", action="store_true", help="do not unpack the image in the background")
    p.add_argument("--no-landmark", action="store_true",
                   help="do not prefetch the prioritized files (the creating process prefetches a profile)")
    return p


_FILL_STOP_TIMEOUT = 8.0  # under lazyrootfs' grace period before SIGKILL


def _fill(store: Store, image: str, snapshotter: str, cancel: threading.Event) -> None:
    try:
        store.unpack(image, snapshotter=snapshotter, cancel=cancel)
        print(f"ocistore lazyfs: {image} filled into {snapshotter}", file=sys.stderr, flush=True)
    except errors.Cancelled:
        print(f"ocistore lazyfs: background fill of {image} stopped (unmounted)", file=sys.stderr, flush=True)
    except errors.Error as exc:
        print(f"ocistore lazyfs: background fill of {image} failed: {exc}", file=sys.stderr, flush=True)


def _answer_profile_requests(ops: fuseserver.LazyFS, directory: Path, stop: threading.Event) -> None:
    """Write the reads served so far to ``profile.json`` whenever ``Container.read_profile``
    asks (a number in ``profile.request`` greater than the last one answered)."""
    from ocistore.transfer import lazyrootfs

    answered = 0
    while not stop.wait(0.05):
        wanted = lazyrootfs.profile_request(directory)
        if wanted > answered:
            lazyrootfs.write_profile(directory, wanted, ops.reads())
            answered = wanted


def main(argv: list[str] | None = None) -> int:
    """Serve until unmounted; 0 on a clean unmount."""
    from ocistore.transfer import fuseserver

    args = _parser().parse_args(argv)
    ready_fd: int | None = args.ready_fd
    try:
        store = Store(args.root, args.namespace)
        image = store._lazy_image(args.image, None)
        ops = fuseserver.LazyFS(image)
        if not args.no_landmark:
            prefetched = ops.prefetch()  # before the mount is ready: create returns after it
            print(f"ocistore lazyfs: {image.name}: prefetched {prefetched} bytes", file=sys.stderr, flush=True)
    except (errors.Error, OSError) as exc:
        print(f"ocistore lazyfs: {exc}", file=sys.stderr, flush=True)
        return 1

    cancel = threading.Event()
    fill: threading.Thread | None = None

    def on_init() -> None:
        nonlocal ready_fd, fill
        if ready_fd is not None:
            os.write(ready_fd, f"ready {os.getpid()}\n".encode())
            os.close(ready_fd)
            ready_fd = None
        if not args.no_fill:
            fill = threading.Thread(target=_fill, args=(store, image.name, args.snapshotter, cancel), daemon=True,
                                    name="ocistore-lazyfs-fill")
            fill.start()

    ops.on_init = on_init
    stop_profile = threading.Event()
    threading.Thread(target=_answer_profile_requests, args=(ops, Path(args.mountpoint).parent, stop_profile),
                     daemon=True, name="ocistore-lazyfs-profile").start()
    try:
        fuseserver.serve(ops, args.mountpoint)
    except Exception:  # anything: the helper's last word goes to its log
        traceback.print_exc()
        return 1
    finally:
        # unmounted: stop the fill, which removes its unfinished extract snapshot, before exiting
        cancel.set()
        stop_profile.set()
        if fill is not None:
            fill.join(_FILL_STOP_TIMEOUT)
        image.close()
        store.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
